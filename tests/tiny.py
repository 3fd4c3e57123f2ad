"""Tiny models and tokenizers built from configs, for tests (no hub, no network)."""

from __future__ import annotations

import os

WORDS = """i you he she we they it a an the is am are was were be been to of and or but so in on at for
with my your our me him her them this that what how why when where who do does did not no yes oh
sorry hear feel feeling felt sad happy glad proud scared afraid angry lonely tired worried excited
great good bad awful terrible nice wonderful hard tough day today week job work family friend friends
dog cat home school test exam lost won got new old really very so much too can could would will that's
it's i'm you're don't can't sounds like must be understand know think hope love miss help ? . , !
""".split()

# A small vocabulary for BERT WordPiece tokenizers of the identifier and reward tests.
BERT_WORDS = ("i am so sorry to hear that you feel sad happy what happened how are doing it must be hard "
              "understand why did the job lost my dog today great news ? . !").split()


def make_tokenizer(folder: str | None = None, seq2seq: bool = True):
    """The smoke's word-level tokenizer (emprl.pipeline.smoke.tiny_tokenizer) over WORDS, saved in
    ``folder`` when given."""
    from emprl.pipeline.smoke import tiny_tokenizer

    fast = tiny_tokenizer(seq2seq, words=sorted(set(WORDS)))
    if folder:
        fast.save_pretrained(folder)
    return fast


def make_bert_tokenizer(folder):
    """A BERT WordPiece tokenizer over BERT_WORDS, its vocab.txt written in ``folder``."""
    from transformers import BertTokenizerFast

    vocab = os.path.join(str(folder), "vocab.txt")
    with open(vocab, "w", encoding="utf-8") as fh:
        fh.write("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *BERT_WORDS]) + "\n")
    return BertTokenizerFast(vocab_file=vocab)


def make_tiny_t5(folder: str, seed: int = 0):
    """A 2-layer T5 (d_model 32) with its tokenizer saved in ``folder``; returns (model, tokenizer)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    tokenizer = make_tokenizer(None, seq2seq=True)
    torch.manual_seed(seed)
    config = T5Config(vocab_size=len(tokenizer), d_model=32, d_ff=64, d_kv=16, num_layers=2,
                      num_decoder_layers=2, num_heads=2, pad_token_id=0, eos_token_id=1,
                      decoder_start_token_id=0, dropout_rate=0.0)
    model = T5ForConditionalGeneration(config)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def make_tiny_llama(folder: str, seed: int = 0, chat_template: bool = True):
    """A 2-layer Llama (hidden 32) with its tokenizer saved in ``folder``; returns (model, tokenizer)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = make_tokenizer(None, seq2seq=False)
    if not chat_template:
        tokenizer.chat_template = None
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                         pad_token_id=0, eos_token_id=1, bos_token_id=3, tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def make_tiny_bert(folder: str, seed: int = 0):
    """A 2-layer BERT encoder (hidden 32) with a word-level tokenizer, saved in ``folder``."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = make_tokenizer(None, seq2seq=True)
    torch.manual_seed(seed)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                        num_attention_heads=2, max_position_embeddings=256, pad_token_id=0)
    model = BertModel(config)
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer

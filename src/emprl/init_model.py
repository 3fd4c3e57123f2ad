"""Stage 0 of the T5 lane: a tokenizer trained on our dialogues and a T5 built from a config.

    python -m emprl.init_model recipes/demo/t5_init.yaml

No pretrained weights are needed: the tokenizer (Unigram or BPE over a Metaspace pre-tokenizer, as
T5's SentencePiece model) is trained with the ``tokenizers`` library on the training split's turns
and replies, and ``T5ForConditionalGeneration`` is built from ``T5Config`` with the recipe's sizes
and a seeded initialisation. The folder (tokenizer, ``model.safetensors``, model card, ``stage.json``
last) is a plain transformers folder, so the SFT stage takes it as ``model_name_or_path`` and trains
all its weights.

Token ids follow T5: 0 ``<pad>`` (also the decoder start), 1 ``</s>`` (appended to every encoded
text by the tokenizer), 2 ``<unk>``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from emprl.common.errors import UserError, run_cli
from emprl.pipeline.config import config_to_dict, parse_recipe
from emprl.pipeline.config_limits import CheckedConfig, at_least

logger = logging.getLogger("emprl.init_model")

SPECIAL_TOKENS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as in T5
PAD, EOS, UNK = SPECIAL_TOKENS


@dataclass
class InitModelConfig(CheckedConfig):
    data: str = field(metadata={"help": "dialogue data spec FORMAT:PATH; its train split trains the tokenizer",
                                "existing_path": True})
    output_dir: str = "outputs/demo/t5_init"
    on_bad_rows: Literal["error", "skip"] = "error"
    # tokenizer
    tokenizer_model: Literal["bpe", "unigram"] = field(default="bpe", metadata={"help": "bpe or unigram"})
    vocab_size: int = field(default=6000, metadata={
        "help": "target vocabulary size, special tokens included",
        "limit": at_least(len(SPECIAL_TOKENS) + 1, f" (more than the {len(SPECIAL_TOKENS)} special tokens)")})
    speaker_tag: str = "Speaker:"
    listener_tag: str = "Listener:"
    model_max_length: int = field(default=512, metadata={"help": "longest input the tokenizer accepts"})
    # model (T5Config)
    d_model: int = 256
    d_ff: int = 1024
    d_kv: int = 64
    num_heads: int = 4
    num_layers: int = field(default=4, metadata={"help": "encoder layers"})
    num_decoder_layers: int = 4
    dropout: float = field(default=0.1, metadata={"help": "T5Config.dropout_rate"})
    relative_attention_num_buckets: int = 32
    relative_attention_max_distance: int = 128
    feed_forward_proj: Literal["relu", "gated-gelu"] = "relu"
    seed: int = field(default=42, metadata={"help": "seeds the weight initialisation"})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "rebuild even if output_dir is complete"})


# -- tokenizer -----------------------------------------------------------------------------------------


def training_texts(dataset, speaker_tag: str, listener_tag: str) -> Iterator[str]:
    """Each distinct context, tagged as the model will read it, and each distinct reply, once."""
    from emprl.data import serialize_context

    seen: set[str] = set()
    for row in dataset:
        for text in (serialize_context(row["context"], speaker_tag=speaker_tag, listener_tag=listener_tag),
                     row["response"]):
            if text not in seen:
                seen.add(text)
                yield text


def train_tokenizer(texts, vocab_size: int, kind: str = "unigram", model_max_length: int = 512):
    """A transformers fast tokenizer trained on ``texts``: Metaspace pieces, T5's special ids, and
    ``</s>`` appended to every encoded text (single or pair), as T5's tokenizer does."""
    from tokenizers import (
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    if kind == "unigram":
        tok = Tokenizer(models.Unigram())
        trainer = trainers.UnigramTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                          unk_token=UNK, show_progress=False)
    elif kind == "bpe":
        tok = Tokenizer(models.BPE(unk_token=UNK))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL_TOKENS),
                                      show_progress=False)
    else:
        raise UserError(f"tokenizer_model: expected unigram or bpe, got {kind!r}")
    # NFKC and one space between words, as SentencePiece normalises; case is kept (replies use it).
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace(r"\s+", " "),
                                           normalizers.Strip()])
    # Sentence marks as pieces of their own ("happened" + "?"), so a word is one token whatever follows
    # it; apostrophes stay inside words ("can't"), which keeps sequences short. The Metaspace decoder
    # still restores the text exactly, as a mark carries no word boundary.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(), pre_tokenizers.Split(Regex(r"[.,!?;:()\"]"), behavior="isolated")])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(texts, trainer=trainer)
    ids = [tok.token_to_id(t) for t in SPECIAL_TOKENS]
    if ids != list(range(len(SPECIAL_TOKENS))):
        raise RuntimeError(f"special tokens got ids {ids}, expected 0, 1, 2")
    tok.post_processor = processors.TemplateProcessing(single=f"$A {EOS}", pair=f"$A {EOS} $B {EOS}",
                                                       special_tokens=[(EOS, ids[1])])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=PAD, eos_token=EOS, unk_token=UNK,
                                   model_max_length=model_max_length, padding_side="right",
                                   clean_up_tokenization_spaces=False,
                                   model_input_names=["input_ids", "attention_mask"])


# -- model ---------------------------------------------------------------------------------------------


def build_model(cfg: InitModelConfig, vocab_size: int):
    """A freshly initialised T5 (tied input/output embeddings, decoder starting from ``<pad>``)."""
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    config = T5Config(vocab_size=vocab_size, d_model=cfg.d_model, d_ff=cfg.d_ff, d_kv=cfg.d_kv,
                      num_heads=cfg.num_heads, num_layers=cfg.num_layers, num_decoder_layers=cfg.num_decoder_layers,
                      dropout_rate=cfg.dropout, relative_attention_num_buckets=cfg.relative_attention_num_buckets,
                      relative_attention_max_distance=cfg.relative_attention_max_distance,
                      feed_forward_proj=cfg.feed_forward_proj, tie_word_embeddings=True,
                      pad_token_id=0, eos_token_id=1, decoder_start_token_id=0)
    torch.manual_seed(cfg.seed)
    return T5ForConditionalGeneration(config)


def count_parameters(model) -> int:
    """Distinct parameters (the tied embedding counted once)."""
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# -- stage ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    (cfg,) = parse_recipe((InitModelConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from emprl.pipeline.lifecycle import begin_stage

    run = begin_stage("init_model", cfg.output_dir, (cfg,), inputs=[cfg.data], overwrite=cfg.overwrite_output_dir)
    if run is None:  # finished for this recipe and this corpus
        return None

    from emprl.common.io import atomic_dir, atomic_write_json, write_model_card
    from emprl.data import load_dialogues

    start = time.perf_counter()
    train = load_dialogues(cfg.data, on_bad_rows=cfg.on_bad_rows)["train"]
    if len(train) == 0:
        raise UserError(f"data {cfg.data!r}: the train split is empty; the tokenizer needs text")
    tokenizer = train_tokenizer(training_texts(train, cfg.speaker_tag, cfg.listener_tag), cfg.vocab_size,
                                cfg.tokenizer_model, cfg.model_max_length)
    model = build_model(cfg, len(tokenizer))
    n_params = count_parameters(model)
    info = {"vocab_size": len(tokenizer), "parameters": n_params, "train_examples": len(train),
            "seconds": round(time.perf_counter() - start, 1)}
    with atomic_dir(cfg.output_dir) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        atomic_write_json(os.path.join(tmp, "init_info.json"), info)
        write_model_card(tmp, "EmpRL T5 from a config (untrained)",
                         f"A T5 encoder-decoder of {n_params / 1e6:.2f}M parameters, randomly initialised (seed "
                         f"{cfg.seed}), with a {cfg.tokenizer_model} tokenizer of {len(tokenizer)} tokens trained on "
                         f"the training split of `{cfg.data}`. Train it with the SFT stage "
                         f"(`model_name_or_path: {cfg.output_dir}`).", config_to_dict(cfg), info)
        run.stamp(tmp)  # last: marks the folder complete
    run.release()
    print(f"wrote {cfg.output_dir}: T5 with {n_params / 1e6:.2f}M parameters, vocabulary {len(tokenizer)}, "
          f"{info['seconds']} s")
    return info


if __name__ == "__main__":
    run_cli(main)

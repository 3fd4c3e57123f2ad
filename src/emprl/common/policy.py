"""The generator ("policy") in one place: loading any stage's output, building its prompts and
sampling listener responses in batches. Shared by SFT, generation, chat, PPO and evaluation.

A stage that writes a generator folder also writes ``emprl_prompt.json`` (the prompt settings it
trained with), so every later stage builds the same prompt without repeating them in its recipe.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

from emprl.common.errors import UserError
from emprl.common.models import is_encoder_decoder as _config_is_encoder_decoder
from emprl.common.prompts import PromptBuilder
from emprl.pipeline.config_limits import CheckedConfig

logger = logging.getLogger("emprl.common.policy")

PROMPT_FILE = "emprl_prompt.json"
PROMPT_KEYS = ("max_source_tokens", "speaker_tag", "listener_tag", "system_prompt")
_DTYPES = ("auto", "float32", "float16", "bfloat16")


def load_policy(path: str, *, dtype=None, device=None, for_training: bool = False):
    """Load a generator folder -> ``(model, tokenizer, is_encoder_decoder)``.

    The architecture comes from the config. A folder written by TRL's value-head wrappers holds a
    plain model plus ``v_head.*`` weights: the plain model class loads it and leaves the head out,
    without transformers' notice about unused weights (emprl.common.model_files).
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from emprl.common.model_files import check_model_files, load_pretrained

    check_model_files(path, f"model '{path}'")  # damaged files: one line, not a loader traceback
    if not any(os.path.isfile(os.path.join(path, f)) for f in ("tokenizer_config.json", "tokenizer.json")):
        raise UserError(f"model '{path}': no tokenizer saved beside the model (tokenizer_config.json)")
    enc_dec = _config_is_encoder_decoder(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise UserError(f"dtype: expected one of {', '.join(_DTYPES)}, got {dtype!r}")
        dtype = dtype if dtype == "auto" else getattr(torch, dtype)
    cls = AutoModelForSeq2SeqLM if enc_dec else AutoModelForCausalLM
    # A PPO output's value head is left out (model_files.ALLOWED_UNEXPECTED); anything else missing is an error.
    model = load_pretrained(cls, path, f"model '{path}'", dtype=dtype if dtype is not None else torch.float32)
    ensure_pad_token(model, tokenizer)
    if device is not None:
        model.to(device)
    model.train(for_training)
    return model, tokenizer, enc_dec


def ensure_pad_token(model, tokenizer) -> None:
    """Give the tokenizer a pad token (the model's own pad id if it has one, else eos)."""
    if tokenizer.pad_token is None:
        pad_id = getattr(model.config, "pad_token_id", None)
        token = tokenizer.convert_ids_to_tokens(pad_id) if isinstance(pad_id, int) and pad_id >= 0 else None
        tokenizer.pad_token = token or tokenizer.eos_token
    if getattr(model.config, "pad_token_id", None) is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    gen = getattr(model, "generation_config", None)
    if gen is not None and gen.pad_token_id is None:
        gen.pad_token_id = tokenizer.pad_token_id


# -- prompts -----------------------------------------------------------------------------------------


def save_prompt_settings(output_dir: str, builder: PromptBuilder) -> None:
    from emprl.common.io import atomic_write_json

    atomic_write_json(os.path.join(output_dir, PROMPT_FILE), {k: getattr(builder, k) for k in PROMPT_KEYS})


def prompt_builder_for(path: str, tokenizer, enc_dec: bool, **overrides) -> PromptBuilder:
    """The prompt the model at ``path`` was trained with; ``overrides`` that are not None win."""
    settings = {}
    saved = os.path.join(path, PROMPT_FILE)
    if os.path.isfile(saved):
        with open(saved, encoding="utf-8") as fh:
            settings = {k: v for k, v in json.load(fh).items() if k in PROMPT_KEYS}
    settings.update({k: v for k, v in overrides.items() if v is not None})
    return PromptBuilder(tokenizer, enc_dec, **settings)


def prompt_ids(builder: PromptBuilder, turns: Sequence[str]) -> list[int]:
    """Prompt token ids within ``max_source_tokens``. Old turns go first (PromptBuilder); if the newest
    turn alone is still too long for a decoder-only prompt, its start is cut so the prompt still ends
    where the listener's reply begins."""
    ids = builder.encode(turns)
    limit = builder.max_source_tokens
    if limit and len(ids) > limit and not builder.is_encoder_decoder:
        ids = ids[-limit:]
    return ids


def response_suffix(builder: PromptBuilder) -> tuple[str, str]:
    """How a decoder-only prompt continues into the reply: ``(before, after)`` the response text.

    With a chat template it is whatever the template writes around an assistant message (e.g.
    ``"I see.<|im_end|>\\n"`` -> ``("", "<|im_end|>\\n")``); otherwise a space and the eos token."""
    tok = builder.tokenizer
    if builder.uses_chat_template:
        marker = "\u2063EMPRL\u2063"
        messages = builder._messages(["Hello"])
        prompt = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(messages + [{"role": "assistant", "content": marker}], tokenize=False)
        if full.startswith(prompt) and marker in full[len(prompt):]:
            before, after = full[len(prompt):].split(marker, 1)
            return before, after
        logger.warning("chat template renders replies in an unexpected way; ending them with eos")
        return "", tok.eos_token or ""
    return " ", tok.eos_token or ""


def stop_token_ids(model, tokenizer, builder: PromptBuilder | None = None) -> list[int]:
    """Token ids that end a reply: the model's eos ids, the tokenizer's, and the chat template's
    end-of-turn token (SmolLM2's converted tokenizer names the wrong eos; the template is right)."""
    ids: list[int] = []
    gen_eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (gen_eos, getattr(model.config, "eos_token_id", None), tokenizer.eos_token_id):
        ids += value if isinstance(value, list) else [value] if value is not None else []
    end = end_of_turn_id(tokenizer, builder) if builder is not None and builder.uses_chat_template else None
    return list(dict.fromkeys(ids + ([end] if end is not None else [])))


def end_of_turn_id(tokenizer, builder: PromptBuilder) -> int | None:
    """The token that ends a reply: the chat template's first token after an assistant message (e.g.
    ``<|im_end|>``), else the tokenizer's eos."""
    if builder.uses_chat_template:
        after = response_suffix(builder)[1]
        ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
        if ids:
            return ids[0]
    return tokenizer.eos_token_id


# -- LoRA --------------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class LoraArguments(CheckedConfig):
    """The LoRA recipe keys of SFT, PPO and DPO, and the one peft ``LoraConfig`` they make, through
    TRL's ``ModelConfig`` and ``get_peft_config`` (docs/lora-reference.md)."""

    use_lora: bool = field(default=False, metadata={"help": "train LoRA adapters instead of all weights"})
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "default: PEFT's per architecture"})

    def peft_config(self, enc_dec: bool):
        """The adapters' ``peft.LoraConfig`` for an encoder-decoder or decoder-only policy; None without LoRA."""
        from trl import ModelConfig, get_peft_config

        config = ModelConfig(use_peft=self.use_lora, lora_r=self.lora_r, lora_alpha=self.lora_alpha,
                             lora_dropout=self.lora_dropout,
                             lora_task_type="SEQ_2_SEQ_LM" if enc_dec else "CAUSAL_LM")
        # Set after construction: ModelConfig turns a one-item list into a string, which PEFT would
        # read as a regular expression of the full module name ("q_proj" then matches nothing).
        config.lora_target_modules = None if self.lora_target_modules is None else list(self.lora_target_modules)
        return get_peft_config(config)

    def add_lora(self, model, enc_dec: bool):
        """``model`` with trainable adapters (the recipe must ask for LoRA)."""
        from peft import get_peft_model

        try:
            return get_peft_model(model, self.peft_config(enc_dec))
        except ValueError as err:  # e.g. target modules not found in the model
            raise UserError(f"lora_target_modules: {err}") from None


# -- generation --------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class DecodingArguments(CheckedConfig):
    """How a reply is sampled, with the paper's decoding as the defaults (Ma et al. 2025, Sec. V),
    declared once: the recipe keys of PPO's rollouts and DPO's samples, and the base of
    :class:`GenerationArguments` (evaluation, ``emprl.generate``, ``emprl.chat``)."""

    top_k: int = 20
    top_p: float = 1.0
    temperature: float = 0.9
    max_new_tokens: int = 30
    min_new_tokens: int = field(default=0, metadata={
        "help": "replies end no earlier than this (the authors' PPO: 5); see docs/minimum-length.md"})

    def __post_init__(self):
        super().__post_init__()
        if self.samples() and self.temperature <= 0:
            raise ValueError(f"key 'temperature': expected a positive number when sampling, got {self.temperature}")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"key 'min_new_tokens': expected 0 to max_new_tokens ({self.max_new_tokens}), "
                             f"got {self.min_new_tokens}")

    def samples(self) -> bool:
        return True  # PPO and DPO always sample


@dataclass(kw_only=True)
class GenerationArguments(DecodingArguments):
    """The decoding keys plus greedy or beam search: evaluation's recipe keys and the generate/chat flags."""

    do_sample: bool = field(default=True, metadata={"help": "false: greedy (or beam) search"})
    num_beams: int = 1

    def samples(self) -> bool:
        return self.do_sample


@dataclass(kw_only=True)
class GenerationSettings(GenerationArguments):
    """Generation arguments with a seed, and the ``transformers.GenerationConfig`` they make."""

    seed: int | None = 42

    @classmethod
    def from_recipe(cls, cfg, **overrides) -> GenerationSettings:
        """The decoding keys a recipe config has (a :class:`DecodingArguments`); the rest keep their
        defaults; ``overrides`` win."""
        values = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls) if hasattr(cfg, f.name)}
        return cls(**{**values, **overrides})

    def generation_config(self, **special_tokens):
        """A ``transformers.GenerationConfig`` of these settings and nothing else: no repetition penalty,
        no n-gram ban, no minimum length unless ``min_new_tokens``. Pass it to ``generate`` with
        ``use_model_defaults=False`` so a model's saved generation config adds only its special tokens.
        ``special_tokens``: eos_token_id, pad_token_id, ..."""
        from transformers import GenerationConfig

        kwargs = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample, "num_beams": self.num_beams,
                  "repetition_penalty": 1.0, "no_repeat_ngram_size": 0, **special_tokens}
        if self.min_new_tokens:
            kwargs["min_new_tokens"] = self.min_new_tokens
        if self.do_sample:  # greedy keeps GenerationConfig's neutral sampling values (no warnings)
            kwargs.update(top_k=self.top_k, top_p=self.top_p, temperature=self.temperature)
        return GenerationConfig(**kwargs)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def generate_responses(model, tokenizer, builder: PromptBuilder, contexts: list[list[str]],
                       settings: GenerationSettings | None = None, batch_size: int = 16,
                       progress: bool = True) -> list[str]:
    """One listener reply per context, in batches; the same seed gives the same replies."""
    import torch
    from tqdm.auto import tqdm
    from transformers import set_seed

    settings = settings or GenerationSettings()
    if batch_size < 1:
        raise UserError(f"batch_size: expected a positive integer, got {batch_size}")
    if settings.seed is not None:
        set_seed(settings.seed)
    ensure_pad_token(model, tokenizer)
    config = settings.generation_config(eos_token_id=stop_token_ids(model, tokenizer, builder),
                                        pad_token_id=tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        batches = range(0, len(contexts), batch_size)
        for start in tqdm(batches, desc="generating", unit="batch", disable=not progress or len(batches) < 2):
            chunk = contexts[start:start + batch_size]
            enc = pad_batch([prompt_ids(builder, turns) for turns in chunk], tokenizer.pad_token_id,
                            builder.generation_padding_side, device)
            with torch.no_grad():
                generated = model.generate(**enc, generation_config=config, use_model_defaults=False)
            if not builder.is_encoder_decoder:  # decoder-only output repeats the prompt
                generated = generated[:, enc["input_ids"].shape[1]:]
            out += [clean_response(text, builder)
                    for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]
    finally:
        model.train(was_training)
    return out


def pad_batch(sequences: list[list[int]], pad_id: int, side: str, device=None) -> dict:
    """``input_ids`` and ``attention_mask`` tensors, padded on ``side`` ("left" or "right")."""
    import torch

    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        cols = slice(width - len(seq), width) if side == "left" else slice(0, len(seq))
        ids[row, cols] = torch.tensor(seq, dtype=torch.long)
        mask[row, cols] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def clean_response(text: str, builder: PromptBuilder) -> str:
    """Strip, and cut a transcript-style model where it starts writing the next speaker's turn."""
    text = text.strip()
    if not builder.is_encoder_decoder and not builder.uses_chat_template and builder.speaker_tag:
        text = text.split(builder.speaker_tag, 1)[0].strip()
    return text


def pick_device(name: str | None = None) -> str:
    import torch

    if name and name != "auto":
        return name
    return "cuda" if torch.cuda.is_available() else "cpu"

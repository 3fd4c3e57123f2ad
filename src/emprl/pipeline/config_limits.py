"""What each recipe key accepts beyond its type: numeric ranges and sets of choices, checked while a
recipe is parsed (before any model or data loads), so a bad value is a one-line error and never a
traceback deep in TRL or a deleted run.

One table for every stage: a key means the same thing wherever it appears. A field may name a
stricter :class:`Limit` (``metadata={"limit": ...}``) or a set of values (``metadata={"choices":
...}``); both are read here. Only values the user set (recipe or command line) are checked while
parsing; library defaults are trusted. ``None`` (unset) passes. Rules that relate two keys stay in
the config's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple


class Limit(NamedTuple):
    expected: str  # completes "key 'k': expected ..."
    ok: Callable[[Any], bool]
    numeric: bool = True  # numbers only; in a list or mapping, each number is checked


def at_least(n: int, why: str = "") -> Limit:
    return Limit(f"an integer >= {n}{why}", lambda v: isinstance(v, int) and v >= n)


POSITIVE_INT = Limit("a positive integer", lambda v: isinstance(v, int) and v > 0)
NON_NEGATIVE = Limit("a number >= 0", lambda v: v >= 0)
POSITIVE = Limit("a positive number", lambda v: v > 0)
FRACTION = Limit("a number in (0, 1]", lambda v: 0 < v <= 1)
OPEN_FRACTION = Limit("a number in (0, 1)", lambda v: 0 < v < 1)
PROBABILITY = Limit("a number in [0, 1)", lambda v: 0 <= v < 1)
DISTINCT = Limit("a non-empty list of different values",
                 lambda v: isinstance(v, list) and bool(v) and len(set(map(repr, v))) == len(v), numeric=False)
SPECS = Limit("a mapping of names to non-empty strings", lambda v: isinstance(v, dict) and all(
    isinstance(s, str) and s.strip() for s in v.values()), numeric=False)
NON_EMPTY_SPECS = Limit("a non-empty mapping of names to non-empty strings",
                        lambda v: bool(v) and SPECS.ok(v), numeric=False)

LIMITS: dict[str, Limit] = {
    # steps and sizes
    **dict.fromkeys((
        "steps", "batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs",
        "per_device_train_batch_size", "per_device_eval_batch_size", "eval_batch_size", "generation_batch_size",
        "identifier_batch_size", "epochs", "num_epochs", "max_new_tokens", "max_length", "max_source_tokens",
        "max_target_tokens", "max_context_len", "max_response_len", "identifier_max_context_len",
        "identifier_max_response_len", "max_turns", "max_turn_len", "max_target_len", "max_decode_len",
        "vocab_size", "embedding_dim", "hidden_size", "lora_r", "num_threads", "eval_repeats", "min_freq",
        "max_train_samples", "max_eval_samples", "max_train_examples", "max_eval_examples", "max_examples",
        "max_train_situations",
        "nan_patience", "lr_decay_epochs", "lr_decay_steps", "samples_per_context", "paired_resamples",
        "rounds", "shard_size", "contexts_per_round", "max_rows", "model_max_length", "d_model", "d_ff", "d_kv",
        "num_heads", "num_layers", "num_decoder_layers", "relative_attention_num_buckets",
        "relative_attention_max_distance", "num_beams", "jobs"), POSITIVE_INT),
    # rates and weights
    **dict.fromkeys(("learning_rate", "lr", "head_learning_rate", "lora_alpha", "cliprange", "cliprange_value",
                     "vf_coef", "max_grad_norm", "grad_clip", "lr_decay_over_epochs", "detectable_effect"), POSITIVE),
    **dict.fromkeys(("weight_decay", "warmup_steps", "init_kl_coef", "num_train_epochs", "eval_samples", "top_k",
                     "save_steps", "coverage_weight", "gamma", "lam", "min_reward_margin",
                     "early_stopping_patience"), NON_NEGATIVE),  # patience 0 = no early stopping
    "top_p": FRACTION,
    "lr_decay": FRACTION,
    "validation_fraction": OPEN_FRACTION,
    **dict.fromkeys(("dropout", "lora_dropout", "warmup_ratio"), PROBABILITY),
}


def out_of_range(key: str, value: Any, limit: Limit | None = None) -> str | None:
    """What ``key`` expects when ``value`` is outside its range (``limit``, else the table), else None."""
    limit = limit or LIMITS.get(key)
    if limit is None or value is None:
        return None
    if not limit.numeric:
        return None if limit.ok(value) else limit.expected
    items = value.values() if isinstance(value, dict) else value if isinstance(value, (list, tuple)) else [value]
    for item in items:
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue  # a type error, reported by the parser's coercion
        if (isinstance(item, float) and not math.isfinite(item)) or not limit.ok(item):
            return limit.expected
    return None


def field_problem(f: dataclasses.Field, value: Any) -> str | None:
    """What the field ``f`` expects when ``value`` breaks its choices or range, else None."""
    choices = f.metadata.get("choices")
    if choices is not None and value is not None and value not in choices:
        return f"one of {', '.join(map(str, choices))}"
    return out_of_range(f.name, value, f.metadata.get("limit"))


def check_fields(config: Any) -> None:
    """Every field of a constructed config against its choices and range (ValueError naming the key)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        expected = field_problem(f, value)
        if expected:
            raise ValueError(f"key '{f.name}': expected {expected}, got {value!r}")


@dataclasses.dataclass
class CheckedConfig:
    """Base of the stages' own configs: built directly (tests, the Python API) they check their
    fields as a parsed recipe does. Subclasses add cross-field rules after ``super().__post_init__()``."""

    def __post_init__(self):
        check_fields(self)

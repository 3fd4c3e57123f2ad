"""Allowed ranges of the numeric recipe keys, checked while a recipe is parsed (before any model or
data loads), so a bad number is a one-line error and never a traceback deep in TRL or a deleted run.

One table for every stage: a key means the same thing wherever it appears. Only values the user
set (recipe or command line) are checked; library defaults are trusted. ``None`` (unset) passes.
"""

from __future__ import annotations

import math
from typing import Any

POSITIVE_INT = "a positive integer"
NON_NEGATIVE = "a number >= 0"
POSITIVE = "a positive number"
FRACTION = "a number in (0, 1]"
OPEN_FRACTION = "a number in (0, 1)"
PROBABILITY = "a number in [0, 1)"

LIMITS: dict[str, str] = {
    # steps and sizes
    **dict.fromkeys((
        "steps", "batch_size", "mini_batch_size", "gradient_accumulation_steps", "ppo_epochs",
        "per_device_train_batch_size", "per_device_eval_batch_size", "eval_batch_size", "generation_batch_size",
        "identifier_batch_size", "epochs", "num_epochs", "max_new_tokens", "max_length", "max_source_tokens",
        "max_target_tokens", "max_context_len", "max_response_len", "identifier_max_context_len",
        "identifier_max_response_len", "max_turns", "max_turn_len", "max_target_len", "max_decode_len",
        "vocab_size", "embedding_dim", "hidden_size", "lora_r", "num_threads", "eval_repeats", "min_freq",
        "max_train_samples", "max_eval_samples", "max_train_examples", "max_eval_examples", "max_examples",
        "nan_patience", "lr_decay_epochs", "lr_decay_steps"), POSITIVE_INT),
    # rates and weights
    **dict.fromkeys(("learning_rate", "lr", "head_learning_rate", "lora_alpha", "cliprange", "cliprange_value",
                     "vf_coef", "max_grad_norm", "grad_clip", "lr_decay_over_epochs"), POSITIVE),
    **dict.fromkeys(("weight_decay", "warmup_steps", "init_kl_coef", "num_train_epochs", "eval_samples", "top_k",
                     "save_steps", "coverage_weight", "gamma", "lam",
                     "early_stopping_patience"), NON_NEGATIVE),  # patience 0 = no early stopping
    "top_p": FRACTION,
    "lr_decay": FRACTION,
    "validation_fraction": OPEN_FRACTION,
    **dict.fromkeys(("dropout", "lora_dropout", "warmup_ratio"), PROBABILITY),
}

_CHECKS = {
    POSITIVE_INT: lambda v: isinstance(v, int) and v > 0,
    POSITIVE: lambda v: v > 0,
    NON_NEGATIVE: lambda v: v >= 0,
    FRACTION: lambda v: 0 < v <= 1,
    OPEN_FRACTION: lambda v: 0 < v < 1,
    PROBABILITY: lambda v: 0 <= v < 1,
}


def out_of_range(key: str, value: Any) -> str | None:
    """What ``key`` expects when ``value`` is outside its range, else None."""
    expected = LIMITS.get(key)
    if expected is None or value is None or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return expected
    return None if _CHECKS[expected](value) else expected

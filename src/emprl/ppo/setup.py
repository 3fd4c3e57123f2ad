"""What the PPO stage loads before its first step: the labelled data and its held-out subset, the SFT
policy with a value head and its reference, the precision, the lr schedule, the stop tokens, the
rollout decoding and the empathy reward used for the held-out evaluation."""

from __future__ import annotations

import copy
import logging
import math
import os

import numpy as np
import torch

from emprl.common.errors import UserError
from emprl.common.permutations import derangement
from emprl.data import MECHANISMS, load_dialogues

logger = logging.getLogger("emprl.ppo")


def check_batch_sizes(ppo_cfg, samples_per_context: int = 1) -> None:
    if ppo_cfg.steps <= 0:
        raise UserError(f"steps: expected a positive number of PPO steps, got {ppo_cfg.steps}")
    if ppo_cfg.batch_size % samples_per_context:
        raise UserError(f"batch_size ({ppo_cfg.batch_size}) must be a multiple of samples_per_context "
                        f"({samples_per_context})")
    if ppo_cfg.mini_batch_size > ppo_cfg.batch_size:
        raise UserError(f"mini_batch_size ({ppo_cfg.mini_batch_size}) must not exceed batch_size ({ppo_cfg.batch_size})")


def load_labelled(labelled_data: str, splits: tuple[str, ...] = ("train",)):
    """The labelling stage's output with its gold levels; each of ``splits`` must be there with every
    column, and train must not be empty (one-line errors otherwise). PPO and DPO read it this way."""
    spec = labelled_data if labelled_data.startswith("disk:") else f"disk:{labelled_data}"
    try:
        data = load_dialogues(spec)
    except (FileNotFoundError, ValueError) as err:
        raise UserError(f"labelled_data: cannot load {labelled_data} ({err})") from None
    for split in dict.fromkeys(("train", *splits)):
        if split not in data:
            raise UserError(f"labelled_data: {labelled_data} has no '{split}' split")
        missing = [c for c in ("context", "response", *MECHANISMS) if c not in data[split].column_names]
        if missing:
            raise UserError(f"labelled_data: split '{split}' lacks columns {missing}; "
                            "use the output of `python -m emprl.label`")
    if len(data["train"]) == 0:
        raise UserError(f"labelled_data: {labelled_data} has an empty train split")
    return data


def load_data(cfg, seed: int = 0):
    """PPO's (train, held-out) splits. ``reward_gold: shuffled`` (the placebo control) gives every
    training context the gold levels of another one; the held-out split keeps its own."""
    data = load_labelled(cfg.labelled_data, ("train", cfg.eval_split))
    train = data["train"]
    if cfg.reward_gold == "shuffled":
        train = shuffle_gold_levels(train, seed)
    return train, data[cfg.eval_split]


def shuffle_gold_levels(split, seed: int):
    """The placebo's training data: the three gold level columns moved together along a seeded
    derangement of the rows (no context keeps its own levels), so the reward has R_emp's scale and
    level mix but carries no information about the context (docs/rl-effect.md)."""
    n = len(split)
    if n < 2:
        raise UserError(f"reward_gold: shuffled needs at least 2 training contexts, got {n}")
    source = derangement(n, [seed, 7919])  # one cycle through all rows
    columns = {m: split[m] for m in MECHANISMS}
    for m in MECHANISMS:
        split = split.remove_columns(m).add_column(m, [columns[m][int(j)] for j in source])
    return split


def eval_subset(n: int, k: int, seed: int) -> list[int]:
    if k <= 0 or n == 0:
        return []
    return sorted(int(i) for i in np.random.default_rng(seed).permutation(n)[:k])


def load_value_head_policy(cfg):
    """The SFT policy with a fresh value head, and its reference: LoRA -> adapters off (``None``);
    full fine-tuning -> a frozen copy. An SFT folder holding a LoRA adapter is merged first, so the
    reference is the SFT policy and not the pre-SFT base (docs/lora-reference.md)."""
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    from trl import (
        AutoModelForCausalLMWithValueHead,
        AutoModelForSeq2SeqLMWithValueHead,
        create_reference_model,
    )

    from emprl.common.models import is_encoder_decoder, resolve_model
    from emprl.common.policy import ensure_pad_token

    path = resolve_model(cfg.sft_model_path)
    adapter = os.path.isfile(os.path.join(path, "adapter_config.json"))
    if adapter:
        from peft import PeftConfig

        base_path = PeftConfig.from_pretrained(path).base_model_name_or_path
        enc_dec = is_encoder_decoder(resolve_model(base_path))
    else:
        enc_dec = is_encoder_decoder(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if adapter and not os.path.isfile(os.path.join(path, "tokenizer_config.json")):
        tokenizer = AutoTokenizer.from_pretrained(resolve_model(base_path))
    dtype = torch.bfloat16 if (cfg.bf16 and cfg.use_lora) else torch.float32
    auto = AutoModelForSeq2SeqLM if enc_dec else AutoModelForCausalLM
    if adapter:
        from peft import AutoPeftModelForCausalLM, AutoPeftModelForSeq2SeqLM

        peft_auto = AutoPeftModelForSeq2SeqLM if enc_dec else AutoPeftModelForCausalLM
        base = peft_auto.from_pretrained(path, dtype=dtype).merge_and_unload()
    else:
        from emprl.common.model_files import load_pretrained

        # weights that do not fill the model are an error, never a random start (docs/lifecycle.md)
        base = load_pretrained(auto, path, "sft_model_path", dtype=dtype)
    ensure_pad_token(base, tokenizer)
    wrapper = AutoModelForSeq2SeqLMWithValueHead if enc_dec else AutoModelForCausalLMWithValueHead
    model = wrapper.from_pretrained(base, peft_config=cfg.peft_config(enc_dec))
    ref_model = None if cfg.use_lora else create_reference_model(model)
    return model, ref_model, tokenizer, enc_dec, path


def configure_logging(cfg, ppo_cfg) -> tuple[str | None, dict]:
    """The tracker (``log_with``) and its ``project_kwargs`` for TRL: local tensorboard logs in
    ``output_dir/runs`` unless the recipe says otherwise (log_with: null)."""
    chosen = getattr(ppo_cfg, "_emprl_recipe", {}).get("values", {})
    log_with = ppo_cfg.log_with
    if "log_with" not in chosen and log_with is None:
        log_with = "tensorboard"
    project_kwargs = ppo_cfg.project_kwargs
    if log_with == "tensorboard":
        project_kwargs = {"logging_dir": os.path.join(cfg.output_dir, "runs"), **(project_kwargs or {})}
    return log_with, project_kwargs


def choose_precision(cfg, ppo_cfg) -> tuple[str, dict]:
    """The precision (logged) and the ``accelerator_kwargs`` for TRL that carry it: bf16 autocast where
    the device computes it natively (``mixed_precision: auto``). A LoRA base loaded in bf16
    (``bf16: true``) needs no autocast on top."""
    from emprl.common.precision import choose_mixed_precision

    if cfg.bf16 and cfg.use_lora:
        logger.info("precision: LoRA base weights in bf16 (bf16: true), no autocast")
        return "bf16-weights", ppo_cfg.accelerator_kwargs
    device = "cuda" if torch.cuda.is_available() and not ppo_cfg.accelerator_kwargs.get("cpu") else "cpu"
    chosen, why = choose_mixed_precision(cfg.mixed_precision, device)
    logger.info("precision: %s", why)
    if chosen == "bf16":
        return chosen, {"mixed_precision": "bf16", **(ppo_cfg.accelerator_kwargs or {})}
    return chosen, ppo_cfg.accelerator_kwargs


def trainer_config(ppo_cfg, **fields):
    """A copy of the parsed PPOConfig with ``fields`` set, for TRL; the parsed one stays as the recipe
    said. A shallow copy, not ``dataclasses.replace``: that would rerun PPOConfig's checks and drop the
    recipe record that ``recipe_hash`` reads."""
    out = copy.copy(ppo_cfg)
    for name, value in fields.items():
        setattr(out, name, value)
    return out


def lr_decay_horizon(cfg, ppo_cfg, n_train: int, world: int = 1) -> int:
    """PPO steps over which the schedule runs (reaches 0 for ``linear``): ``lr_decay_steps``, or
    ``lr_decay_over_epochs`` passes over the ``n_train`` training contexts (each step takes
    batch_size / samples_per_context contexts per process), or else ``steps``. The epoch form is the
    authors' rule (epochs x ceil(contexts / contexts per step)) without fixing a dataset size."""
    # (PPOScriptConfig refuses both keys at once.)
    if cfg.lr_decay_steps is not None:
        return cfg.lr_decay_steps
    if cfg.lr_decay_over_epochs is None:
        return ppo_cfg.steps
    per_step = ppo_cfg.batch_size // cfg.samples_per_context * world
    return max(1, math.ceil(cfg.lr_decay_over_epochs * math.ceil(n_train / per_step)))


def build_scheduler(cfg, ppo_cfg, optimizer, world: int, n_train: int):
    from transformers import get_scheduler

    horizon = lr_decay_horizon(cfg, ppo_cfg, n_train, world)
    if horizon < ppo_cfg.steps and cfg.lr_scheduler_type != "constant":
        logger.warning("the %s learning-rate schedule ends at step %d of %d", cfg.lr_scheduler_type, horizon,
                       ppo_cfg.steps)
    logger.info("lr schedule: %s over %d PPO steps (%d run)", cfg.lr_scheduler_type, horizon, ppo_cfg.steps)
    # accelerate steps a prepared scheduler once per process per optimisation step
    return get_scheduler(cfg.lr_scheduler_type, optimizer, num_warmup_steps=cfg.warmup_steps * world,
                         num_training_steps=horizon * world)


def stop_ids(model, tokenizer, builder) -> list[int]:
    """Tokens that end a reply, the one that ends a turn first: it stands in for an empty reply.
    (SmolLM2's converted tokenizer calls <|im_start|> its eos; its chat template ends turns right.)"""
    from emprl.common.policy import response_suffix, stop_token_ids

    stops = stop_token_ids(model, tokenizer, builder)
    end = tokenizer.eos_token_id
    if builder.uses_chat_template:
        after = response_suffix(builder)[1]
        ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else []
        end = ids[0] if ids else end
    return [end, *[i for i in stops if i != end]] if end is not None else stops


def rollout_kwargs(cfg, tokenizer, stop_ids: list[int]) -> dict:
    """The paper's decoding, and nothing from the model's saved generation config. No minimum length
    unless the recipe asks for one: it can push the KL estimate negative (docs/minimum-length.md)."""
    return dict(
        do_sample=True, top_k=cfg.top_k, top_p=cfg.top_p, temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens, repetition_penalty=1.0, no_repeat_ngram_size=0,
        # min_new_tokens overrides a saved min_length; setting both makes transformers warn each call
        **({"min_new_tokens": cfg.min_new_tokens} if cfg.min_new_tokens else {"min_length": 0}),
        pad_token_id=tokenizer.pad_token_id, eos_token_id=stop_ids)


def find_empathy_reward(composite, cfg, device):
    from reward_models.reward import EmpathyReward

    for _, component in composite.components.values():
        if isinstance(getattr(component, "reward", None), EmpathyReward):
            return component.reward
    if not cfg.identifiers_dir:
        raise UserError("identifiers_dir: needed for the held-out R_emp and Emp-F1 when the reward has no "
                        "empathy component")
    return EmpathyReward.from_pretrained(cfg.identifiers_dir, device=device)

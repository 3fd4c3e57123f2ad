"""TRL 0.11.4's classic ``PPOTrainer`` with what the EmpRL stage changes in its behaviour.

1. The first-token fix (docs/first-token-fix.md). For encoder-decoder policies ``batched_forward_pass`` masks
   log-prob index 0, which is log p(y1 | x, <start>): the first generated word never receives a
   policy gradient, a KL term or a value target. We re-enable that index for every response that has
   a token after the decoder start. ``fix_first_token=False`` restores TRL's behaviour (for exact
   replication of the authors' runs).
2. Rollouts: batched sampling that pads T5 batches on the right and decoder-only batches on the left,
   cuts each response after its first end-of-sequence token, and never hands TRL an empty response.
3. Score scaling: TRL's running score moments crash ``use_score_scaling``; ours keep them as tensors.
4. Grouped mini-batches: a context's K samples stay in one mini-batch, so the encoder runs once per
   context (:mod:`emprl.ppo.encoder_reuse`).

Resume and export take the trainer as an argument: :mod:`emprl.ppo.checkpoint`, :mod:`emprl.ppo.export`.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from accelerate import Accelerator
from trl import PPOTrainer
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import RunningMoments

trl_module = sys.modules[PPOTrainer.__module__]  # where TRL looks up the Accelerator class


class EmpRLPPOTrainer(PPOTrainer):
    """``trl.PPOTrainer`` with the first-token fix, rollouts, score scaling repaired and grouped
    mini-batches (see the module doc)."""

    def __init__(self, *args, fix_first_token: bool = True, prompt_builder=None, context_group: int = 1, **kwargs):
        self.fix_first_token = fix_first_token
        # K > 1: TRL's mini-batches take whole groups of a context's K samples (see ``step``).
        self.context_group = context_group
        # Exported folders carry the prompt settings, so chat and evaluation prompt the policy
        # exactly as it was trained (emprl.common.policy.prompt_builder_for reads them back).
        self.prompt_builder = prompt_builder
        with warnings.catch_warnings():  # TRL 0.11 announces its own deprecation; nothing to act on
            warnings.filterwarnings("ignore", category=FutureWarning)
            warnings.filterwarnings("ignore", message="No dataset is provided")
            # TRL prepares the frozen reference like a trained model; on several CPU processes
            # accelerate would wrap it in DDP, which refuses a module without trainable parameters.
            trl_module.Accelerator = _FrozenAwareAccelerator
            try:
                super().__init__(*args, **kwargs)
            finally:
                trl_module.Accelerator = Accelerator
        self.running = _RunningMoments(self.accelerator)

    def step(self, queries, responses, scores, response_masks=None):
        """TRL's step; with ``context_group`` K > 1 its shuffled mini-batches are drawn as whole groups of
        K consecutive rows (a context's K samples), so every mini-batch encodes its contexts once
        (emprl.ppo.encoder_reuse) instead of scattering the copies over mini-batches. Same global RNG as TRL."""
        if self.context_group <= 1 or len(queries) % self.context_group:
            return super().step(queries, responses, scores, response_masks)
        trl_module.np = GroupedNumpy(self.context_group)
        try:
            return super().step(queries, responses, scores, response_masks)
        finally:
            trl_module.np = np

    # -- 1. the first-token fix ------------------------------------------------------------------
    def batched_forward_pass(self, model, queries, responses, model_inputs, return_logits=False,
                             response_masks=None):
        logprobs, logits, values, masks = super().batched_forward_pass(
            model, queries, responses, model_inputs, return_logits=return_logits, response_masks=response_masks)
        if self.is_encoder_decoder and self.fix_first_token:
            # Decoder inputs are [<start>, y1, y2, ...] padded on the right, and log-prob index t is
            # log p(y_{t+1} | ...). TRL zeroes index 0 (y1); turn it back on where y1 exists.
            has_first = model_inputs["decoder_attention_mask"][:, 1].to(masks.dtype)
            if response_masks is not None:
                has_first = has_first * torch.stack([m[0] for m in response_masks]).to(masks)
            masks[:, 0] = torch.maximum(masks[:, 0], has_first)
        return logprobs, logits, values, masks

    # -- 2. rollouts -------------------------------------------------------------------------------
    @property
    def unwrapped_model(self):
        return self.accelerator.unwrap_model(self.model)

    def eos_token_ids(self) -> list[int]:
        """End-of-sequence ids: the generation config's (chat models often list several) and the tokenizer's."""
        ids: list[int] = []
        gen_eos = getattr(getattr(self.unwrapped_model.pretrained_model, "generation_config", None),
                          "eos_token_id", None)
        for value in (gen_eos, self.tokenizer.eos_token_id):
            for i in (value if isinstance(value, (list, tuple)) else [value]):
                if i is not None and int(i) not in ids:
                    ids.append(int(i))
        if not ids:
            raise ValueError("the tokenizer and the generation config define no end-of-sequence token")
        return ids

    @torch.no_grad()
    def sample(self, queries: Sequence[torch.Tensor], generation_kwargs: dict, batch_size: int,
               padding_side: str, eos_token_ids: Sequence[int] | None = None) -> list[torch.Tensor]:
        """Sample one response per query (1-D token tensors, no padding).

        Encoder-decoder responses start with the decoder start token, as TRL's ``step`` expects.
        Each response ends at its first end-of-sequence token (any of ``eos_token_ids``, kept); an
        empty one becomes the first eos token alone, so TRL always has a token to put the reward on.
        """
        eos_ids = list(eos_token_ids or self.eos_token_ids())
        eos = torch.tensor(eos_ids)
        responses: list[torch.Tensor] = []
        old_side = self.tokenizer.padding_side
        self.tokenizer.padding_side = padding_side
        try:
            with unwrap_model_for_generation(self.model, self.accelerator) as model:
                was_training = model.training
                model.eval()  # TRL leaves the policy in train mode after an update; sample without dropout
                for i in range(0, len(queries), batch_size):
                    chunk = [q.tolist() for q in queries[i:i + batch_size]]
                    padded = self.tokenizer.pad({"input_ids": chunk}, padding=True, return_tensors="pt")
                    padded = {k: v.to(self.current_device) for k, v in padded.items()}
                    with self.accelerator.autocast():  # bf16 matmuls when the run chose them (emprl.common.precision)
                        out = model.generate(**padded, **generation_kwargs).cpu()
                    # Decoder-only: the prompt (left-padded to a common length) precedes the new tokens.
                    new = out if self.is_encoder_decoder else out[:, padded["input_ids"].shape[1]:]
                    skip = 1 if self.is_encoder_decoder else 0  # the decoder start token
                    for row in new:
                        hits = torch.isin(row[skip:], eos).nonzero()
                        end = skip + int(hits[0]) + 1 if len(hits) else len(row)
                        responses.append(self.ensure_trainable(row[:end], eos_ids[0]))
                if was_training:
                    model.train()
        finally:
            self.tokenizer.padding_side = old_side
        return responses

    def ensure_trainable(self, response: torch.Tensor, eos_id: int) -> torch.Tensor:
        """Give TRL at least one scored token: an empty response becomes the eos token.

        With TRL's original encoder-decoder masking (``fix_first_token=False``) y1 is never scored,
        so a one-token response gets a second eos token to carry the reward."""
        response = response.to(torch.long)
        if self.is_encoder_decoder:
            start = self.unwrapped_model.pretrained_model.config.decoder_start_token_id
            if len(response) == 0:
                response = torch.tensor([start if start is not None else self.tokenizer.pad_token_id])
            min_len = 2 if self.fix_first_token else 3
        else:
            min_len = 1
        if len(response) < min_len:
            response = torch.cat([response, torch.full((min_len - len(response),), eos_id, dtype=torch.long)])
        return response


# ---------------------------------------------------------------------------------------------------


class _RunningMoments(RunningMoments):
    """TRL 0.11.4 keeps the running score mean/std as Python floats but ``step`` calls ``.to()`` on
    them, so ``use_score_scaling`` crashes; keep them as float64 tensors (exact, like the floats)."""

    def __post_init__(self):
        self.load({k: getattr(self, k) for k in ("mean", "std", "var", "count")})

    def update(self, xs: torch.Tensor):
        out = super().update(xs)
        self.load({k: getattr(self, k) for k in ("mean", "std", "var", "count")})
        return out

    def state(self) -> dict[str, float]:
        return {k: float(getattr(self, k)) for k in ("mean", "std", "var", "count")}

    def load(self, state: dict) -> None:
        self.mean = torch.tensor(float(state["mean"]), dtype=torch.float64)
        self.std = torch.tensor(float(state["std"]), dtype=torch.float64)
        self.var, self.count = float(state["var"]), float(state["count"])


class GroupedNumpy:
    """numpy as TRL's ``step`` sees it while mini-batches follow context groups: ``random.permutation(n)``
    shuffles the n / K groups of K consecutive indices and keeps each group together; all else is numpy."""

    def __init__(self, group: int):
        self.random = _GroupedRandom(group)

    def __getattr__(self, name):
        return getattr(np, name)


class _GroupedRandom:
    def __init__(self, group: int):
        self.group = group

    def permutation(self, n):
        if isinstance(n, (int, np.integer)) and n % self.group == 0:
            groups = np.random.permutation(int(n) // self.group)
            return (groups[:, None] * self.group + np.arange(self.group)).reshape(-1)
        return np.random.permutation(n)

    def __getattr__(self, name):
        return getattr(np.random, name)


class _FrozenAwareAccelerator(Accelerator):
    """Prepares a model without trainable parameters (the reference) for inference only: no DDP."""

    def prepare_model(self, model, device_placement=None, evaluation_mode=False):
        if not any(p.requires_grad for p in model.parameters()):
            evaluation_mode = True
        return super().prepare_model(model, device_placement=device_placement, evaluation_mode=evaluation_mode)

"""TRL 0.11.4's classic ``PPOTrainer`` with what the EmpRL stage needs on top.

1. The first-token fix (docs/first-token-fix.md). For encoder-decoder policies ``batched_forward_pass`` masks
   log-prob index 0, which is log p(y1 | x, <start>): the first generated word never receives a
   policy gradient, a KL term or a value target. We re-enable that index for every response that has
   a token after the decoder start. ``fix_first_token=False`` restores TRL's behaviour (for exact
   replication of the authors' runs).
2. Rollouts: batched sampling that pads T5 batches on the right and decoder-only batches on the left,
   cuts each response after its first end-of-sequence token, and never hands TRL an empty response.
3. Resume: TRL has none. :meth:`save_checkpoint` / :meth:`load_checkpoint` keep the trainable weights
   (policy or LoRA adapter, plus the value head), optimizer, lr scheduler, KL controller, running
   score moments, TRL's step counter, every rank's python/numpy/torch RNG and the caller's own state,
   in one folder written atomically. Weights are safetensors; the rest loads with
   ``torch.load(weights_only=True)`` or JSON.
4. Export: the policy with its value head, reloadable by TRL's ``...WithValueHead.from_pretrained``
   and by a plain ``AutoModelFor...`` (LoRA policies are merged first).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import sys
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from trl import PPOTrainer
from trl.models import unwrap_model_for_generation
from trl.trainer.utils import AdaptiveKLController, RunningMoments

from emprl.io import atomic_dir, atomic_write_json

trl_module = sys.modules[PPOTrainer.__module__]  # where TRL looks up the Accelerator class
CHECKPOINT_PREFIX = "checkpoint-"
TRAINABLE_FILE = "trainable.safetensors"
VALUE_HEAD_FILE = "v_head.safetensors"
STATE_FILE = "trainer_state.json"


class EmpRLPPOTrainer(PPOTrainer):
    """``trl.PPOTrainer`` plus the first-token fix, rollouts and full checkpoints (see module doc)."""

    def __init__(self, *args, fix_first_token: bool = True, prompt_builder=None, **kwargs):
        self.fix_first_token = fix_first_token
        # Exported folders carry the prompt settings, so chat and evaluation prompt the policy
        # exactly as it was trained (emprl.policy.prompt_builder_for reads them back).
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
                    with self.accelerator.autocast():  # bf16 matmuls when the run chose them (emprl.precision)
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

    def sequence_kl(self, queries: Sequence[torch.Tensor], responses: Sequence[torch.Tensor]) -> torch.Tensor:
        """Per-response KL estimate to the reference, sum_t log pi(y_t) - log pi_ref(y_t) over the
        scored tokens (the quantity TRL logs as objective/kl). Runs on the unwrapped model only, so
        ranks may call it with different numbers of responses."""
        model = self.unwrapped_model
        inputs = self.prepare_model_inputs(list(queries), list(responses))
        with torch.no_grad():
            logprobs, _, _, masks = self.batched_forward_pass(model, queries, responses, inputs)
            with self.optional_peft_ctx():
                ref = model if self.is_peft_model else self.accelerator.unwrap_model(self.ref_model)
                ref_logprobs, _, _, _ = self.batched_forward_pass(ref, queries, responses, inputs)
        return ((logprobs - ref_logprobs) * masks).sum(dim=-1).float().cpu()

    # -- 3. checkpoints ------------------------------------------------------------------------------
    def trainable_state(self) -> dict[str, torch.Tensor]:
        """Every parameter that training changes (all of them, or the LoRA adapter), value head included."""
        return {name: p.detach() for name, p in self.unwrapped_model.named_parameters() if p.requires_grad}

    def weights_checksum(self) -> str:
        digest = hashlib.sha256()
        for name, tensor in sorted(self.trainable_state().items()):
            digest.update(name.encode())
            digest.update(tensor.float().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def save_checkpoint(self, path: str, extra_state: dict[str, Any]) -> None:
        """Write the full training state to ``path`` atomically. Call on every rank (RNG states are
        gathered); only the main process writes."""
        from accelerate.utils import gather_object

        rng_states = gather_object([_rng_state()])
        if self.accelerator.is_main_process:
            with atomic_dir(path) as tmp:
                tensors = {k: v.cpu().contiguous() for k, v in self.trainable_state().items()}
                save_file(tensors, os.path.join(tmp, TRAINABLE_FILE))
                torch.save(self.optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
                if self.lr_scheduler is not None:
                    torch.save(self.lr_scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
                for rank, state in enumerate(rng_states):
                    torch.save(state, os.path.join(tmp, f"rng_state_{rank}.pt"))
                state = {
                    "kl_controller": _kl_state(self.kl_ctl),
                    "running_moments": self.running.state(),
                    "trl_current_step": int(self.current_step),
                    "world_size": self.accelerator.num_processes,
                    **extra_state,
                }
                atomic_write_json(os.path.join(tmp, STATE_FILE), state)
        self.accelerator.wait_for_everyone()

    def load_checkpoint(self, path: str) -> dict[str, Any]:
        """Restore what :meth:`save_checkpoint` wrote; returns the whole saved state dict."""
        with open(os.path.join(path, STATE_FILE), encoding="utf-8") as fh:
            state = json.load(fh)
        saved = load_file(os.path.join(path, TRAINABLE_FILE))
        params = dict(self.unwrapped_model.named_parameters())
        expected = {n for n, p in params.items() if p.requires_grad}
        if set(saved) != expected:
            missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
            raise ValueError(f"{path}: checkpoint does not match the policy (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}); was the recipe's model or LoRA setting changed?")
        with torch.no_grad():
            for name, tensor in saved.items():
                params[name].copy_(tensor.to(params[name].device, params[name].dtype))
        self.optimizer.load_state_dict(_torch_load(os.path.join(path, "optimizer.pt")))
        if self.lr_scheduler is not None:
            self.lr_scheduler.load_state_dict(_torch_load(os.path.join(path, "scheduler.pt")))
        kl = state["kl_controller"]
        self.kl_ctl.value = kl["value"]
        if isinstance(self.kl_ctl, AdaptiveKLController):
            self.kl_ctl.target, self.kl_ctl.horizon = kl.get("target", self.kl_ctl.target), kl.get(
                "horizon", self.kl_ctl.horizon)
        self.running.load(state["running_moments"])
        self.current_step = state.get("trl_current_step", 0)
        rank = self.accelerator.process_index
        rng_file = os.path.join(path, f"rng_state_{rank}.pt")
        if state.get("world_size") == self.accelerator.num_processes and os.path.isfile(rng_file):
            _set_rng_state(_torch_load(rng_file))
        else:
            warnings.warn(f"{path}: saved with {state.get('world_size')} processes, resuming with "
                          f"{self.accelerator.num_processes}; random streams restart from the seed", stacklevel=2)
        return state

    # -- 4. export -----------------------------------------------------------------------------------
    def export_policy(self, folder: str, extra_files: dict[str, str] | None = None) -> None:
        """Write the policy for inference and further training into ``folder`` (replaced atomically).

        ``model.safetensors`` holds the policy weights (LoRA merged in) plus ``v_head.*`` keys, which
        TRL's ``...WithValueHead.from_pretrained`` picks up and a plain ``AutoModelFor...`` ignores.
        """
        if not self.accelerator.is_main_process:
            return
        model = self.unwrapped_model
        with atomic_dir(folder) as tmp:
            if self.is_peft_model:
                state = merged_lora_state_dict(model.pretrained_model)
                base = model.pretrained_model.get_base_model()
            else:
                state = dict(model.pretrained_model.state_dict())
                base = model.pretrained_model
            state.update({f"v_head.{k}": v for k, v in model.v_head.state_dict().items()})
            state = {k: v.detach().cpu().contiguous() for k, v in state.items()}
            base.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            self.tokenizer.save_pretrained(tmp)
            if self.prompt_builder is not None:
                from emprl.policy import save_prompt_settings

                save_prompt_settings(tmp, self.prompt_builder)
            for name, text in (extra_files or {}).items():
                with open(os.path.join(tmp, name), "w", encoding="utf-8") as fh:
                    fh.write(text)

    def save_adapter(self, folder: str) -> None:
        """LoRA policies: the adapter (PEFT format) and the value head, for loading on the SFT base."""
        if not (self.accelerator.is_main_process and self.is_peft_model):
            return
        model = self.unwrapped_model
        with atomic_dir(folder) as tmp:
            model.pretrained_model.save_pretrained(tmp, safe_serialization=True)
            save_file({k: v.detach().cpu().contiguous() for k, v in model.v_head.state_dict().items()},
                      os.path.join(tmp, VALUE_HEAD_FILE))

    def load_adapter_weights(self, folder: str) -> None:
        """Load an adapter saved by :meth:`save_adapter` into the live LoRA policy (used to export best/)."""
        from peft import set_peft_model_state_dict

        model = self.unwrapped_model
        set_peft_model_state_dict(model.pretrained_model, load_file(os.path.join(folder, "adapter_model.safetensors")))
        model.v_head.load_state_dict(load_file(os.path.join(folder, VALUE_HEAD_FILE)))


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


class _FrozenAwareAccelerator(Accelerator):
    """Prepares a model without trainable parameters (the reference) for inference only: no DDP."""

    def prepare_model(self, model, device_placement=None, evaluation_mode=False):
        if not any(p.requires_grad for p in model.parameters()):
            evaluation_mode = True
        return super().prepare_model(model, device_placement=device_placement, evaluation_mode=evaluation_mode)


def merged_lora_state_dict(peft_model) -> dict[str, torch.Tensor]:
    """The base model's state dict with each LoRA delta added to its weight, under the plain names
    (what ``merge_and_unload`` would give), without touching the live model."""
    from peft.tuners.lora import LoraLayer

    adapter = peft_model.active_adapter
    base = peft_model.get_base_model()
    deltas = {}
    for name, module in base.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            if getattr(module, "use_dora", {}).get(adapter, False):
                raise NotImplementedError("exporting DoRA adapters merged is not supported")
            deltas[name] = module.get_delta_weight(adapter)
    merged = {}
    for key, value in base.state_dict().items():
        if ".lora_" in key:
            continue
        if ".base_layer." in key:
            owner, _, leaf = key.partition(".base_layer.")
            if leaf == "weight" and owner in deltas:
                value = (value.float() + deltas[owner].float()).to(value.dtype)
            key = f"{owner}.{leaf}"
        merged[key] = value
    return merged


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders in ``output_dir``, oldest first."""
    if not os.path.isdir(output_dir):
        return []
    found = []
    for name in os.listdir(output_dir):
        m = re.fullmatch(re.escape(CHECKPOINT_PREFIX) + r"(\d+)", name)
        path = os.path.join(output_dir, name)
        if m and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(m.group(1)), path))
    return [p for _, p in sorted(found)]


def rotate_checkpoints(output_dir: str, keep: int | None) -> None:
    """Delete the oldest checkpoints beyond ``keep`` (None or <= 0 keeps all)."""
    if not keep or keep <= 0:
        return
    for path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def _kl_state(kl_ctl) -> dict[str, Any]:
    state = {"type": type(kl_ctl).__name__, "value": float(kl_ctl.value)}
    if isinstance(kl_ctl, AdaptiveKLController):
        state.update(target=float(kl_ctl.target), horizon=float(kl_ctl.horizon))
    return state


def _rng_state() -> dict[str, Any]:
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        # numpy's state as plain tensors/numbers, so it loads with weights_only=True
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(_to_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"],
                         n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _to_tuples(value):
    return tuple(_to_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _torch_load(path: str):
    return torch.load(path, map_location="cpu", weights_only=True)

"""Resume for TRL's classic ``PPOTrainer``, which has none; the functions take the trainer.

One folder per checkpoint, written atomically: the trainable weights (policy or LoRA adapter, plus the
value head) as safetensors, the optimizer and lr scheduler, the KL controller, the running score
moments, TRL's step counter, every rank's python/numpy/torch RNG and the caller's own state. Weights
are safetensors; the rest loads with ``torch.load(weights_only=True)`` or JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import warnings
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from trl.trainer.utils import AdaptiveKLController

from emprl.common.io import atomic_dir, atomic_write_json

CHECKPOINT_PREFIX = "checkpoint-"
TRAINABLE_FILE = "trainable.safetensors"
STATE_FILE = "trainer_state.json"
# Left in output_dir by a run stopped by SIGTERM/SIGINT: a plain rerun resumes it (docs/lifecycle.md, "Signals").
PREEMPTED_FILE = ".emprl-preempted"


def save_checkpoint(trainer, path: str, extra_state: dict[str, Any]) -> None:
    """Write ``trainer``'s full training state to ``path`` atomically. Call on every rank (RNG states
    are gathered); only the main process writes."""
    from accelerate.utils import gather_object

    rng_states = gather_object([_rng_state()])
    if trainer.accelerator.is_main_process:
        with atomic_dir(path) as tmp:
            tensors = {k: v.cpu().contiguous() for k, v in trainable_state(trainer).items()}
            save_file(tensors, os.path.join(tmp, TRAINABLE_FILE))
            torch.save(trainer.optimizer.state_dict(), os.path.join(tmp, "optimizer.pt"))
            if trainer.lr_scheduler is not None:
                torch.save(trainer.lr_scheduler.state_dict(), os.path.join(tmp, "scheduler.pt"))
            for rank, state in enumerate(rng_states):
                torch.save(state, os.path.join(tmp, f"rng_state_{rank}.pt"))
            state = {
                "kl_controller": _kl_state(trainer.kl_ctl),
                "running_moments": trainer.running.state(),
                "trl_current_step": int(trainer.current_step),
                "world_size": trainer.accelerator.num_processes,
                **extra_state,
            }
            atomic_write_json(os.path.join(tmp, STATE_FILE), state)
    trainer.accelerator.wait_for_everyone()


def load_checkpoint(trainer, path: str, stacklevel: int = 2) -> dict[str, Any]:
    """Restore into ``trainer`` what :func:`save_checkpoint` wrote; returns the whole saved state dict."""
    with open(os.path.join(path, STATE_FILE), encoding="utf-8") as fh:
        state = json.load(fh)
    saved = load_file(os.path.join(path, TRAINABLE_FILE))
    params = dict(trainer.unwrapped_model.named_parameters())
    expected = {n for n, p in params.items() if p.requires_grad}
    if set(saved) != expected:
        missing, unexpected = sorted(expected - set(saved)), sorted(set(saved) - expected)
        raise ValueError(f"{path}: checkpoint does not match the policy (missing {missing[:3]}, "
                         f"unexpected {unexpected[:3]}); was the recipe's model or LoRA setting changed?")
    with torch.no_grad():
        for name, tensor in saved.items():
            params[name].copy_(tensor.to(params[name].device, params[name].dtype))
    trainer.optimizer.load_state_dict(_torch_load(os.path.join(path, "optimizer.pt")))
    if trainer.lr_scheduler is not None:
        trainer.lr_scheduler.load_state_dict(_torch_load(os.path.join(path, "scheduler.pt")))
    kl, kl_ctl = state["kl_controller"], trainer.kl_ctl
    kl_ctl.value = kl["value"]
    if isinstance(kl_ctl, AdaptiveKLController):
        kl_ctl.target, kl_ctl.horizon = kl.get("target", kl_ctl.target), kl.get("horizon", kl_ctl.horizon)
    trainer.running.load(state["running_moments"])
    trainer.current_step = state.get("trl_current_step", 0)
    acc = trainer.accelerator
    rng_file = os.path.join(path, f"rng_state_{acc.process_index}.pt")
    if state.get("world_size") == acc.num_processes and os.path.isfile(rng_file):
        _set_rng_state(_torch_load(rng_file))
    else:
        warnings.warn(f"{path}: saved with {state.get('world_size')} processes, resuming with "
                      f"{acc.num_processes}; random streams restart from the seed", stacklevel=stacklevel)
    return state


def trainable_state(trainer) -> dict[str, torch.Tensor]:
    """Every parameter that training changes (all of them, or the LoRA adapter), value head included."""
    return {name: p.detach() for name, p in trainer.unwrapped_model.named_parameters() if p.requires_grad}


def weights_checksum(trainer) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(trainable_state(trainer).items()):
        digest.update(name.encode())
        digest.update(tensor.float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


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

"""Processes under ``accelerate launch``: the CPU-rank set-up every stage shares (docs/cpu-ranks.md)."""

from __future__ import annotations

import os


def launched_ranks() -> int:
    """How many processes the launcher started (1 outside ``accelerate launch``/torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def cpu_ranks() -> bool:
    """Several processes and no CUDA: ranks that must be joined as CPU (gloo) ranks."""
    import torch

    return launched_ranks() > 1 and not torch.cuda.is_available()


def join_cpu_ranks() -> None:
    """Join CPU ranks into one process group now, before the stage builds its ``Accelerator``;
    without it each process would train alone on all the data."""
    if cpu_ranks():
        from accelerate import PartialState

        PartialState(cpu=True)


def join_cpu_ranks_for_trainer() -> None:
    """The same for a ``transformers.Trainer`` stage: ``TrainingArguments`` joins the ranks (gloo)
    itself, but only when told the run is on the CPU."""
    if cpu_ranks():
        os.environ.setdefault("ACCELERATE_USE_CPU", "true")

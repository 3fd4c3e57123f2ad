"""Preemption: SIGTERM (what SLURM, Kubernetes and spot instances send before a kill) and SIGINT
(Ctrl-C) let a training stage finish its current step, save a resumable checkpoint and its logs,
print one line on how to resume and exit 128 + the signal (143, 130). docs/lifecycle.md, "Signals".

A second signal stops at once, by the signal's default action. The same signal again within a
second is the same request, not a second one: a terminal's Ctrl-C reaches the launcher and the stage
both, and the launcher forwards what it receives to the stage.

Trainer-based stages (SFT, identifiers, DPO) stop through :class:`PreemptionCallback`, which asks
the Trainer to save and stop at the end of the step (``control.should_save``/``should_training_stop``).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

from transformers import TrainerCallback

SIGNALS = (signal.SIGTERM, signal.SIGINT)
SAME_REQUEST_S = 1.0


class Preemption:
    """The signal handlers of one stage run; ``requested`` once a signal came."""

    def __init__(self, stage: str):
        self.stage = stage
        self.signum: int | None = None
        self._at = 0.0
        self._previous: dict[int, object] = {}

    def install(self) -> Preemption:
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self.handle)
        return self

    def uninstall(self) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def handle(self, signum, frame=None) -> None:
        now = time.monotonic()
        if self.signum is None:
            self.signum, self._at = signum, now
            print(f"emprl.{self.stage}: {signal.Signals(signum).name} received: finishing the current step and "
                  "saving a checkpoint (send it again to stop at once)", file=sys.stderr, flush=True)
        elif signum != self.signum or now - self._at >= SAME_REQUEST_S:
            signal.signal(signum, signal.SIG_DFL)  # a second request: stop now, as the signal does by default
            os.kill(os.getpid(), signum)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def agreed(self, device=None) -> bool:
        """Whether any rank was signalled (every rank must stop at the same step)."""
        import torch
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            return self.requested
        flag = torch.tensor([float(self.signum or 0)], device=device)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX)
        signum = int(flag.item())  # one device sync a step
        if signum and self.signum is None:
            self.signum = signum
        return bool(signum)

    def stop(self, saved: str, resume: str) -> None:
        """The one line on what was saved and how to resume; exits 128 + the signal."""
        self.uninstall()
        name = signal.Signals(self.signum).name
        print(f"emprl.{self.stage}: stopped by {name}; {saved}; to resume: {resume}", file=sys.stderr, flush=True)
        raise SystemExit(128 + self.signum)


class PreemptionCallback(TrainerCallback):
    """A Trainer that was signalled saves a checkpoint at the end of the step and stops."""

    def __init__(self, preemption: Preemption):
        self.preemption = preemption

    def on_step_end(self, args, state, control, **kwargs):
        if self.preemption.agreed(args.device):
            control.should_save = True
            control.should_training_stop = True
        return control

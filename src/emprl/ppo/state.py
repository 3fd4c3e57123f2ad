"""What one PPO run counts and remembers from step to step. ``PPORun`` owns it and hands it to the
held-out evaluation and the outputs; every checkpoint saves it and resume restores it, so a resumed
run continues exactly."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class PPOState:
    step: int = 0                       # PPO steps done
    nan_streak: int = 0                 # steps skipped in a row for NaN or infinite rewards
    skipped_steps: int = 0              # all steps skipped so far
    last_checkpoint: str | None = None  # named when too many NaN steps stop the run
    best: dict | None = None            # the best held-out evaluation (by R_emp), without its bulky parts
    history: list[dict] = field(default_factory=list)  # every held-out evaluation, oldest first

    def evaluated_at(self, step: int) -> bool:
        return any(r["step"] == step for r in self.history)

    def restore(self, saved: dict, path: str) -> None:
        """Take back what a checkpoint (``path``) saved of this state."""
        self.step = int(saved["step"])
        self.nan_streak, self.skipped_steps = saved["nan_streak"], saved["skipped_steps"]
        self.best, self.history, self.last_checkpoint = saved["best"], saved["eval_history"], path

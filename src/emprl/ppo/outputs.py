"""What the PPO stage writes: the per-step logs, checkpoints and resume, and the finished output
folder (final policy, ``best/`` merged, ``metrics.json``, curves, model card, ``stage.json`` last)."""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import warnings

from emprl.common.errors import UserError
from emprl.common.io import atomic_write_json, atomic_write_text, read_jsonl, write_model_card
from emprl.pipeline.config import config_to_dict, recipe_hash
from emprl.pipeline.lifecycle import newest_intact_checkpoint
from emprl.ppo.checkpoint import (
    PREEMPTED_FILE,
    list_checkpoints,
    load_checkpoint,
    rotate_checkpoints,
    save_checkpoint,
    weights_checksum,
)
from emprl.ppo.curves import plot_training_curves
from emprl.ppo.export import export_policy, load_adapter_weights, save_adapter
from emprl.ppo.held_out import summary
from emprl.ppo.state import PPOState
from emprl.ppo.trainer import EmpRLPPOTrainer

logger = logging.getLogger("emprl.ppo")
_RUN_ARTIFACTS = ("log.jsonl", "eval.jsonl", "metrics.json", "stage.json", "training_curves.png", "runs",
                  "best", "adapter")


class RunLog:
    """One JSON line per row in ``output_dir/<name>`` and its finite scalars to the tracker (main process)."""

    def __init__(self, output_dir: str, ppo_cfg, accelerator, is_main: bool):
        self.output_dir, self.ppo_cfg, self.accelerator, self.is_main = output_dir, ppo_cfg, accelerator, is_main

    def write(self, row: dict, name: str) -> None:
        if not self.is_main:
            return
        with open(os.path.join(self.output_dir, name), "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        prefix = "eval/" if name == "eval.jsonl" else "train/"
        scalars = {prefix + k: v for k, v in row.items()
                   if isinstance(v, (int, float)) and not isinstance(v, bool) and k != "step" and math.isfinite(v)}
        if self.ppo_cfg.log_with:
            self.accelerator.log(scalars, step=row["step"])


class RunOutputs:
    """Checkpoints, resume and the finished folder of one run; the run's state is handed in."""

    def __init__(self, cfg, ppo_cfg, trainer: EmpRLPPOTrainer):
        self.cfg, self.ppo_cfg, self.trainer = cfg, ppo_cfg, trainer
        acc = trainer.accelerator
        self.world, self.is_main = acc.num_processes, acc.is_main_process

    def save_checkpoint(self, state: PPOState) -> None:
        cfg, step = self.cfg, state.step
        path = os.path.join(cfg.output_dir, f"checkpoint-{step}")
        save_checkpoint(self.trainer, path, {
            "step": step, "samples_consumed": step * self.ppo_cfg.batch_size * self.world,
            "nan_streak": state.nan_streak, "skipped_steps": state.skipped_steps, "best": state.best,
            "eval_history": state.history, "recipe_hash": recipe_hash(cfg, self.ppo_cfg)})
        if self.is_main:
            rotate_checkpoints(cfg.output_dir, cfg.save_total_limit)
        state.last_checkpoint = path
        self.trainer.accelerator.wait_for_everyone()

    def resume(self, path: str, state: PPOState) -> None:
        """Restore the trainer and ``state`` from the checkpoint ``path``."""
        saved = load_checkpoint(self.trainer, path)
        if saved.get("recipe_hash") != recipe_hash(self.cfg, self.ppo_cfg):
            warnings.warn(f"{path}: the recipe changed since this checkpoint was written", stacklevel=2)
        state.restore(saved, path)
        best_note = os.path.join(self.cfg.output_dir, "best", "best.json")
        if os.path.isfile(best_note):  # best/ may hold a policy evaluated after this checkpoint
            with open(best_note, encoding="utf-8") as fh:
                on_disk = json.load(fh)
            if state.best is None or on_disk["r_emp"] >= state.best["r_emp"]:
                state.best = on_disk
        if self.is_main:
            for name in ("log.jsonl", "eval.jsonl"):  # drop rows written after the checkpoint
                truncate_jsonl(os.path.join(self.cfg.output_dir, name), state.step)
            logger.warning("resuming from %s (step %d)", path, state.step)
        self.trainer.accelerator.wait_for_everyone()

    def finish(self, state: PPOState, stage, minutes: float) -> None:
        trainer, out = self.trainer, self.cfg.output_dir
        checksums = gather_checksums(trainer)
        export_into(trainer, out)                           # the final policy, value head included
        if trainer.is_peft_model:
            _merge_best(trainer, out, self.is_main)
        trainer.accelerator.wait_for_everyone()
        trainer.accelerator.end_training()
        if not self.is_main:
            return
        log_rows = read_jsonl(os.path.join(out, "log.jsonl"))
        trained = [r for r in log_rows if not r.get("skipped")]
        final = summary(state.history[-1]) if state.history else {}
        metrics = {
            "sft": next((summary(r) for r in state.history if r["step"] == 0), None),
            "final": final, "best": state.best, "steps": state.step, "skipped_steps": state.skipped_steps,
            "train_kl_last": trained[-1]["kl"] if trained else None,
            "minutes": minutes, "world_size": self.world, "rank_weight_checksums": checksums,
        }
        atomic_write_json(os.path.join(out, "metrics.json"), metrics)
        plot_training_curves(log_rows, state.history, os.path.join(out, "training_curves.png"))
        sft_r_emp = (metrics["sft"] or {}).get("r_emp", math.nan)
        card_metrics = {"held-out R_emp (SFT, step 0)": sft_r_emp, "held-out R_emp (final)": final.get("r_emp"),
                        "held-out Delta R_emp vs SFT (final, paired)": final.get("delta_r_emp"),
                        "held-out Emp-F1 (final)": final.get("emp_f1"),
                        "held-out KL to reference (final)": final.get("kl"),
                        "held-out R_emp (best)": (state.best or {}).get("r_emp"), "PPO steps": state.step}
        write_model_card(out, "EmpRL PPO policy", _CARD_SUMMARY, config_to_dict(self.cfg, self.ppo_cfg),
                         {k: v for k, v in card_metrics.items() if v is not None}, extra=_CARD_USAGE)
        stage.stamp(out)  # last: marks the folder complete
        print(f"emprl.ppo.train: done in {minutes:.1f} min; {held_out_line(metrics['sft'], final, trained)}; "
              f"outputs in {out}")


def held_out_line(sft: dict | None, final: dict, trained: list[dict]) -> str:
    """What the run's end says about the policy: the held-out change, or, when no held-out evaluation ran
    (eval_samples 0), that fact and the training batches' last figures instead of NaN."""
    if not final or "r_emp" not in final:
        last = trained[-1] if trained else {}
        name, value = ("R_emp", last["r_emp"]) if "r_emp" in last else ("reward", last.get("reward", math.nan))
        tail = f"; last training batch: {name} {value:.4f}, KL {last.get('kl', math.nan):.3f}" if last else ""
        return f"no held-out evaluation ran (eval_samples 0 or eval_steps 0){tail}"
    ci = final.get("delta_r_emp_ci")
    paired = f" (paired Delta {final['delta_r_emp']:+.4f}, 95% CI [{ci[0]:+.4f}, {ci[1]:+.4f}])" if ci else ""
    return (f"held-out R_emp {(sft or {}).get('r_emp', math.nan):.4f} (SFT) -> {final['r_emp']:.4f} (PPO){paired}, "
            f"KL to reference {final.get('kl', math.nan):.3f}")


def _merge_best(trainer: EmpRLPPOTrainer, out: str, is_main: bool) -> None:
    """LoRA runs: save the final adapter, and turn best/ (an adapter so far) into full merged weights."""
    save_adapter(trainer, os.path.join(out, "adapter"))
    trainer.accelerator.wait_for_everyone()
    best = os.path.join(out, "best")
    if os.path.isfile(os.path.join(best, "adapter_model.safetensors")):
        load_adapter_weights(trainer, best)                 # training is over: reuse the live model
        note = _read_text(os.path.join(best, "best.json")) if is_main else ""
        export_policy(trainer, best, extra_files={"best.json": note})
        load_adapter_weights(trainer, os.path.join(out, "adapter"))  # back to the final policy


_CARD_SUMMARY = """Empathetic response generator fine-tuned with PPO (TRL 0.11.4) against the EmpRL empathy
reward R_emp = exp(-sum_i CE(identifier_i(c, y_hat), l_i)), initialised from the SFT policy, with a
KL penalty to it. `model.safetensors` also holds the value head (`v_head.*`)."""
_CARD_USAGE = """## Usage

```python
from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM   # plain inference
from trl import AutoModelForCausalLMWithValueHead, AutoModelForSeq2SeqLMWithValueHead  # + value head
```

Files: `log.jsonl` (per PPO step), `eval.jsonl` (held-out evaluations), `training_curves.png`,
`metrics.json`, `best/` (best held-out R_emp), `runs/` (tensorboard)."""


def prepare_output_dir(cfg) -> str | None:
    """The checkpoint to resume from, or None for a fresh start (after clearing an earlier run)."""
    from accelerate import PartialState

    state = PartialState()
    checkpoints = list_checkpoints(cfg.output_dir)
    finished = os.path.isfile(os.path.join(cfg.output_dir, "stage.json"))
    preempted = os.path.join(cfg.output_dir, PREEMPTED_FILE)
    resume = cfg.resume or os.path.isfile(preempted)  # a run a signal stopped continues on a plain rerun
    if resume and checkpoints and not cfg.overwrite_output_dir:
        intact = newest_intact_checkpoint(checkpoints)  # a damaged newest one falls back to the one before
        if intact:
            if state.is_main_process and os.path.isfile(preempted):
                os.remove(preempted)
            return intact
        raise UserError(f"resume: no checkpoint in {cfg.output_dir} loads; pass --overwrite_output_dir true "
                        "to start over")
    if checkpoints and not finished and not cfg.overwrite_output_dir and not cfg.resume:
        raise UserError(f"output_dir: {cfg.output_dir} holds checkpoints of an interrupted run; pass "
                        "--resume true to continue it or --overwrite_output_dir true to start over")
    if cfg.resume and not checkpoints:
        logger.warning("resume: no checkpoint in %s, starting from the SFT policy", cfg.output_dir)
    if state.is_main_process:
        os.makedirs(cfg.output_dir, exist_ok=True)
        for name in list(os.listdir(cfg.output_dir)):
            path = os.path.join(cfg.output_dir, name)
            if name.startswith("checkpoint-") or name in _RUN_ARTIFACTS or name == PREEMPTED_FILE:
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
    state.wait_for_everyone()
    return None


def export_into(trainer: EmpRLPPOTrainer, output_dir: str) -> None:
    """Export the policy next to the logs: written to a sibling folder, then moved in file by file."""
    staging = os.path.join(output_dir, ".export")
    export_policy(trainer, staging)
    if trainer.accelerator.is_main_process:
        for name in os.listdir(staging):
            os.replace(os.path.join(staging, name), os.path.join(output_dir, name))
        shutil.rmtree(staging, ignore_errors=True)
    trainer.accelerator.wait_for_everyone()


def gather_checksums(trainer: EmpRLPPOTrainer) -> list[str]:
    """Every rank's checksum of its trainable weights (metrics.json: the ranks must agree)."""
    from accelerate.utils import gather_object

    return gather_object([weights_checksum(trainer)])


def _read_text(path: str) -> str:
    with open(path, encoding="utf-8") as fh:
        return fh.read()


def truncate_jsonl(path: str, last_step: int) -> None:
    """Keep the rows of ``path`` up to ``last_step`` (rows written after a checkpoint go on resume)."""
    if os.path.isfile(path):
        kept = [r for r in read_jsonl(path) if r.get("step", 0) <= last_step]
        atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in kept))

"""The PPO stage's held-out evaluation: a fixed subset of contexts, sampled with a fixed seed, scored
for mean R_emp, Emp-F1 and KL to the reference, paired with the step-0 (SFT) evaluation; the best
policy by held-out R_emp is kept in ``best/``."""

from __future__ import annotations

import json
import logging
import os

import numpy as np
import torch

from emprl.common.io import atomic_write_text

logger = logging.getLogger("emprl.ppo")
PER_CONTEXT = "per_context_r_emp"


def _summary(result: dict) -> dict:
    """An evaluation row without its bulky parts (examples, per-context values)."""
    return {k: v for k, v in result.items() if k not in ("examples", PER_CONTEXT)}


class HeldOutEvaluation:
    """Evaluations of one run (``history``) and the best one so far (``best``). Samples through the
    run's own ``rollout`` and logs through its ``log``."""

    def __init__(self, run, data, rows: list[int]):
        self.run, self.data, self.rows = run, data, rows  # rows: the subset, each eval_repeats times
        self.best: dict | None = None
        self.history: list[dict] = []

    def evaluate(self, step: int) -> dict | None:
        """Mean R_emp, Emp-F1 and KL to the reference on the fixed held-out subset, fixed sampling seed."""
        from accelerate.utils import gather_object

        from emprl.evaluate.paired import per_context_means
        from emprl.metrics import emp_f1_scores

        run = self.run
        if not self.rows:  # eval_samples: 0
            return None
        rows = self.rows[run.rank::run.world]
        batch = self.data[rows] if rows else {c: [] for c in self.data.column_names}
        local = {"row": list(rows), "r_emp": [], "gold": [], "pred": [], "kl": [], "words": [], "examples": []}
        if rows:
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):  # the training random streams stay untouched
                torch.manual_seed(run.cfg.eval_seed + run.rank)
                queries, responses, texts, contexts = run.rollout(batch, run.cfg.eval_batch_size)
            gold = torch.tensor([[batch[m][i] for m in run.empathy.mechanisms] for i in range(len(rows))])
            r_emp, pred = run.empathy.reward_and_levels(contexts, texts, gold)
            local["r_emp"], local["pred"] = r_emp.cpu().tolist(), pred.cpu().tolist()
            local["gold"] = gold.tolist()
            local["kl"] = run.trainer.sequence_kl(queries, responses).tolist()
            local["words"] = [len(t.split()) for t in texts]
            local["examples"] = [{"context": c, "response": t} for c, t in zip(contexts[:2], texts[:2])]
        merged = {k: [x for part in gather_object([local[k]]) for x in part] for k in local}
        f1 = emp_f1_scores(merged["pred"], merged["gold"], run.empathy.mechanisms)  # weighted F1 x100
        emp_f1 = f1.pop("emp_f1")
        result = {"step": step, "r_emp": float(np.mean(merged["r_emp"])), "emp_f1": emp_f1,
                  **{f"emp_f1/{m}": v for m, v in f1.items()}, "kl": float(np.mean(merged["kl"])),
                  "response_words": float(np.mean(merged["words"])),
                  "empty_responses": float(np.mean([w == 0 for w in merged["words"]])),
                  "samples": len(merged["r_emp"]), "examples": merged["examples"][:3],
                  PER_CONTEXT: per_context_means(merged["r_emp"], merged["row"])[1].tolist()}
        result.update(self._paired_with_sft(result))
        self.history.append(result)
        run.log.write(result, "eval.jsonl")
        if run.is_main:
            paired = (f"  Delta R_emp vs SFT {result['delta_r_emp']:+.4f} "
                      f"[{result['delta_r_emp_ci'][0]:+.4f}, {result['delta_r_emp_ci'][1]:+.4f}]"
                      if "delta_r_emp" in result else "")
            logger.info("eval step %d: R_emp %.4f  Emp-F1 %.2f  KL %.3f%s", step, result["r_emp"],
                        result["emp_f1"], result["kl"], paired)
        if self.best is None or result["r_emp"] > self.best["r_emp"]:
            self.best = _summary(result)
            self._save_best()
        return result

    def _paired_with_sft(self, result: dict) -> dict:
        """The paired difference to the step-0 evaluation (the SFT policy): same contexts, same
        sampling seed, per-context means over eval_repeats samples, 95% bootstrap CI over contexts."""
        from emprl.evaluate.paired import paired_difference

        base = next((r for r in self.history if r["step"] == 0), None)
        if base is None or PER_CONTEXT not in base or len(base[PER_CONTEXT]) != len(result[PER_CONTEXT]):
            return {}
        d = paired_difference(result[PER_CONTEXT], base[PER_CONTEXT], seed=self.run.cfg.eval_seed)
        return {"delta_r_emp": d["delta"], "delta_r_emp_ci": [d["ci_low"], d["ci_high"]],
                "delta_r_emp_p": d["p_value"], "contexts": d["n"]}

    def evaluated_at(self, step: int) -> bool:
        return any(r["step"] == step for r in self.history)

    def _save_best(self) -> None:
        trainer = self.run.trainer
        folder = os.path.join(self.run.cfg.output_dir, "best")
        note = json.dumps(self.best, indent=2) + "\n"
        if trainer.is_peft_model:  # the adapter now; merged into full weights in finish()
            trainer.save_adapter(folder)
            if self.run.is_main:
                atomic_write_text(os.path.join(folder, "best.json"), note)
        else:
            trainer.export_policy(folder, extra_files={"best.json": note})
        trainer.accelerator.wait_for_everyone()

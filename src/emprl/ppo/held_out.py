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
from emprl.ppo.export import export_policy, save_adapter
from emprl.ppo.state import PPOState

logger = logging.getLogger("emprl.ppo")
PER_CONTEXT = "per_context_r_emp"


def summary(result: dict) -> dict:
    """An evaluation row without its bulky parts (examples, per-context values)."""
    return {k: v for k, v in result.items() if k not in ("examples", PER_CONTEXT)}


class HeldOutEvaluation:
    """The held-out evaluations of one run: ``rows`` of ``data`` sampled through ``rollout`` (the run's
    own), scored by ``empathy``; each one goes to the run's state, ``eval.jsonl`` (``log``) and, when
    it is the best so far, ``best/``."""

    def __init__(self, data, rows: list[int], *, rollout, empathy, trainer, log, seed: int,
                 batch_size: int | None, output_dir: str):
        self.data, self.rows = data, rows  # rows: the subset, each eval_repeats times
        self.rollout, self.empathy, self.trainer, self.log = rollout, empathy, trainer, log
        self.seed, self.batch_size, self.output_dir = seed, batch_size, output_dir
        acc = trainer.accelerator
        self.rank, self.world, self.is_main = acc.process_index, acc.num_processes, acc.is_main_process

    def evaluate(self, step: int, state: PPOState) -> dict | None:
        """Mean R_emp, Emp-F1 and KL to the reference on the fixed held-out subset, fixed sampling seed;
        added to ``state.history``, and to ``state.best`` when it beats it."""
        from accelerate.utils import gather_object

        from emprl.evaluate.paired import per_context_means
        from emprl.metrics import emp_f1_scores

        if not self.rows:  # eval_samples: 0
            return None
        rows = self.rows[self.rank::self.world]
        batch = self.data[rows] if rows else {c: [] for c in self.data.column_names}
        local = {"row": list(rows), "r_emp": [], "gold": [], "pred": [], "kl": [], "words": [], "examples": []}
        if rows:
            devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
            with torch.random.fork_rng(devices=devices):  # the training random streams stay untouched
                torch.manual_seed(self.seed + self.rank)
                queries, responses, texts, contexts = self.rollout(batch, self.batch_size)
            gold = torch.tensor([[batch[m][i] for m in self.empathy.mechanisms] for i in range(len(rows))])
            r_emp, pred = self.empathy.reward_and_levels(contexts, texts, gold)
            local["r_emp"], local["pred"] = r_emp.cpu().tolist(), pred.cpu().tolist()
            local["gold"] = gold.tolist()
            local["kl"] = sequence_kl(self.trainer, queries, responses).tolist()
            local["words"] = [len(t.split()) for t in texts]
            local["examples"] = [{"context": c, "response": t} for c, t in zip(contexts[:2], texts[:2])]
        merged = {k: [x for part in gather_object([local[k]]) for x in part] for k in local}
        f1 = emp_f1_scores(merged["pred"], merged["gold"], self.empathy.mechanisms)  # weighted F1 x100
        emp_f1 = f1.pop("emp_f1")
        result = {"step": step, "r_emp": float(np.mean(merged["r_emp"])), "emp_f1": emp_f1,
                  **{f"emp_f1/{m}": v for m, v in f1.items()}, "kl": float(np.mean(merged["kl"])),
                  "response_words": float(np.mean(merged["words"])),
                  "empty_responses": float(np.mean([w == 0 for w in merged["words"]])),
                  "samples": len(merged["r_emp"]), "examples": merged["examples"][:3],
                  PER_CONTEXT: per_context_means(merged["r_emp"], merged["row"])[1].tolist()}
        result.update(self._paired_with_sft(result, state.history))
        state.history.append(result)
        self.log.write(result, "eval.jsonl")
        if self.is_main:
            paired = (f"  Delta R_emp vs SFT {result['delta_r_emp']:+.4f} "
                      f"[{result['delta_r_emp_ci'][0]:+.4f}, {result['delta_r_emp_ci'][1]:+.4f}]"
                      if "delta_r_emp" in result else "")
            logger.info("eval step %d: R_emp %.4f  Emp-F1 %.2f  KL %.3f%s", step, result["r_emp"],
                        result["emp_f1"], result["kl"], paired)
        if state.best is None or result["r_emp"] > state.best["r_emp"]:
            state.best = summary(result)
            self._save_best(state.best)
        return result

    def _paired_with_sft(self, result: dict, history: list[dict]) -> dict:
        """The paired difference to the step-0 evaluation (the SFT policy): same contexts, same
        sampling seed, per-context means over eval_repeats samples, 95% bootstrap CI over contexts."""
        from emprl.evaluate.paired import paired_difference

        base = next((r for r in history if r["step"] == 0), None)
        if base is None or PER_CONTEXT not in base or len(base[PER_CONTEXT]) != len(result[PER_CONTEXT]):
            return {}
        d = paired_difference(result[PER_CONTEXT], base[PER_CONTEXT], seed=self.seed)
        return {"delta_r_emp": d["delta"], "delta_r_emp_ci": [d["ci_low"], d["ci_high"]],
                "delta_r_emp_p": d["p_value"], "contexts": d["n"]}

    def _save_best(self, best: dict) -> None:
        trainer = self.trainer
        folder = os.path.join(self.output_dir, "best")
        note = json.dumps(best, indent=2) + "\n"
        if trainer.is_peft_model:  # the adapter now; merged into full weights when the run finishes
            save_adapter(trainer, folder)
            if self.is_main:
                atomic_write_text(os.path.join(folder, "best.json"), note)
        else:
            export_policy(trainer, folder, extra_files={"best.json": note})
        trainer.accelerator.wait_for_everyone()


def sequence_kl(trainer, queries, responses) -> torch.Tensor:
    """Per-response KL estimate to the reference, sum_t log pi(y_t) - log pi_ref(y_t) over the scored
    tokens (the quantity TRL logs as objective/kl). Runs on the unwrapped model only, so ranks may
    call it with different numbers of responses."""
    model = trainer.unwrapped_model
    inputs = trainer.prepare_model_inputs(list(queries), list(responses))
    with torch.no_grad():
        logprobs, _, _, masks = trainer.batched_forward_pass(model, queries, responses, inputs)
        with trainer.optional_peft_ctx():
            ref = model if trainer.is_peft_model else trainer.accelerator.unwrap_model(trainer.ref_model)
            ref_logprobs, _, _, _ = trainer.batched_forward_pass(ref, queries, responses, inputs)
    return ((logprobs - ref_logprobs) * masks).sum(dim=-1).float().cpu()

"""Evaluation, the metrics' side: each run's metrics (Dist-n, Emp-F1, R_emp, F_BERT, length, BLEU/ROUGE),
the independent judges' Emp-F1 and level accuracy against the true levels, per-context values pooled over
seeds, the per-sample records, paired differences against a baseline, and mean ± CI over seeds."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from emprl.common.errors import UserError
from emprl.common.mechanisms import MECHANISMS

if TYPE_CHECKING:
    from emprl.evaluate.config import EvaluateConfig

logger = logging.getLogger("emprl.evaluate")


# -- metrics ----------------------------------------------------------------------------------------------


class Scorer:
    """Per-seed metrics on the main process: the identifiers see each context as the labelling stage did."""

    def __init__(self, cfg: EvaluateConfig, device, contexts):
        from emprl.data import serialize_context
        from emprl.metrics import load_metric
        from reward_models import EmpathyReward

        self.reward = EmpathyReward.from_pretrained(
            cfg.identifiers_dir, device=device, max_context_len=cfg.identifier_max_context_len,
            max_response_len=cfg.identifier_max_response_len, batch_size=cfg.identifier_batch_size)
        tok = next(iter(self.reward.tokenizers.values()))
        self.contexts = [serialize_context(turns, tok, cfg.identifier_max_context_len, cfg.speaker_tag or "Speaker:",
                                           cfg.listener_tag or "Listener:") for turns in contexts]
        self.metrics = {name: load_metric(name) for name in ("distinct", "emp_f1", "bleu", "rouge_l")}
        self.relevance = self.device = None
        if cfg.relevance_encoder:
            from emprl.common.models import resolve_model

            self.relevance = load_metric("embedding_similarity", model=resolve_model(cfg.relevance_encoder))
            self.device = str(device)

    def levels(self, responses: list[str]) -> list[list[int]]:
        return self.reward.levels(self.contexts, responses).cpu().tolist()

    def levels_and_reward(self, responses: list[str], gold, contexts=None) -> tuple[list[list[int]], list[float]]:
        """Levels on (c, y_hat) and R_emp of each response from ONE identifier pass (R_emp =
        prod_i p_i(l_i | c, y_hat), EmpathyReward.reward_and_levels); ``contexts``: the serialised
        context of each response (default: the scorer's contexts, one response each)."""
        r_emp, levels = self.reward.reward_and_levels(self.contexts if contexts is None else contexts, responses, gold)
        return levels.cpu().tolist(), r_emp.cpu().tolist()

    def score(self, responses, references, gold, with_refs: bool, context_index=None) -> tuple[dict, dict]:
        """(metrics of one run, per-response values); ``context_index[j]``: the context of response j
        (default: response j answers context j), into the per-context ``references`` and ``gold``."""
        index = list(range(len(responses))) if context_index is None else list(context_index)
        refs, golds = [references[i] for i in index], [gold[i] for i in index]
        out = dict(self.metrics["distinct"].compute(predictions=responses, max_n=2))
        levels, r_emp = self.levels_and_reward(responses, golds, [self.contexts[i] for i in index])
        out["r_emp"] = sum(r_emp) / len(r_emp)
        emp = self.metrics["emp_f1"].compute(predictions=levels, references=golds)
        out["emp_f1"] = emp.pop("emp_f1")
        out["length"] = sum(len(r.split()) for r in responses) / len(responses)
        out.update({f"f1_{m}": v for m, v in emp.items()})
        out["empty_responses"] = sum(not r.strip() for r in responses)
        out["empty_rate"] = 100.0 * out["empty_responses"] / len(responses)
        f_bert = None
        if self.relevance is not None:
            sim = self.relevance.compute(predictions=responses, references=refs, device=self.device)
            out["f_bert"], f_bert = sim["f1"], sim["f1_per_example"]
        if with_refs:
            out.update(self.metrics["bleu"].compute(predictions=responses, references=refs))
            out.update(self.metrics["rouge_l"].compute(predictions=responses, references=refs))
        return out, {"context_index": index, "r_emp": r_emp, "levels": levels, "f_bert": f_bert}


def judge_metrics(counts) -> dict[str, float]:
    """Emp-F1, its per-mechanism F1 and the level accuracy (x100, the share of replies x mechanisms whose
    judged level equals the true level) from level_confusion counts [mechanisms, true, judged]."""
    import numpy as np

    from emprl.metrics import emp_f1_per_mechanism

    counts = np.asarray(counts, dtype=float)
    f1 = emp_f1_per_mechanism(counts)
    out = {"emp_f1": float(f1.mean()), "accuracy": level_accuracy(counts)}
    out.update({f"f1_{m}": float(v) for m, v in zip(MECHANISMS, f1)})
    return out


def level_accuracy(counts) -> float:
    """x100: mean over mechanisms of the diagonal share of confusion counts [..., mechanisms, true, judged]."""
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    hits = np.trace(counts, axis1=-2, axis2=-1)
    total = counts.sum(axis=(-2, -1))
    return float(100.0 * np.mean(np.divide(hits, total, out=np.zeros_like(hits), where=total > 0)))


def score_runs(scorer: Scorer, runs: dict[int, list[str]], k: int, references, gold, with_refs: bool,
               judges: dict | None = None, judge_refs: dict | None = None, contexts=None):
    """Per-seed metrics of a system with K samples per context (sample j of context i at i * K + j), and
    per-context values pooled over all its seeds and samples for the paired comparison: mean R_emp, mean
    F_BERT and the Emp-F1 confusion counts of each context. ``judges``: name -> judge whose levels on each
    response are compared with ``judge_refs[name]`` (one true level triple per context): per-seed metrics
    under ``per_context["judge_runs"]`` and per-context confusion counts under ``per_context["judges"]``.
    ``per_context["samples"]``: one record per response (samples.jsonl without the system name)."""
    import numpy as np

    from emprl.evaluate.paired import group_by_context, per_context_means
    from emprl.metrics import level_confusion

    judges, judge_refs = judges or {}, judge_refs or {}
    per_seed, pooled = {}, {"context_index": [], "r_emp": [], "levels": [], "f_bert": []}
    judged = {name: [] for name in judges}
    judge_runs = {name: {} for name in judges}
    samples = []
    for seed, responses in runs.items():
        if len(responses) != len(references) * k:
            raise UserError(f"seed {seed}: {len(responses)} responses for {len(references)} contexts x {k} samples")
        index = [i for i in range(len(references)) for _ in range(k)]
        per_seed[seed], values = scorer.score(responses, references, gold, with_refs, index)
        for key in pooled:
            pooled[key] += values[key] or []
        levels_by_judge = {}
        for name, judge in judges.items():
            levels_by_judge[name] = judge.levels([contexts[i] for i in index], responses)
            judged[name] += levels_by_judge[name]
            refs = [judge_refs[name][i] for i in index]
            judge_runs[name][seed] = judge_metrics(level_confusion(levels_by_judge[name], refs))
        f_bert = values["f_bert"]
        for j, response in enumerate(responses):
            samples.append({"seed": int(seed), "context": index[j], "sample": j % k, "r_emp": float(values["r_emp"][j]),
                            "f_bert": None if f_bert is None else float(f_bert[j]), "words": len(response.split()),
                            "empty": not response.strip(), "levels": [int(v) for v in values["levels"][j]],
                            "judges": {name: [int(v) for v in lv[j]] for name, lv in levels_by_judge.items()}})
    ids = pooled["context_index"]
    _, r_emp = per_context_means(pooled["r_emp"], ids)
    _, levels = group_by_context(pooled["levels"], ids)
    context_ids = sorted(set(ids))
    confusion = np.stack([level_confusion(lv, [gold[i]] * len(lv)) for i, lv in zip(context_ids, levels)])
    f_bert = per_context_means(pooled["f_bert"], ids)[1] if pooled["f_bert"] else None
    judge_confusion = {}
    for name, judge_levels in judged.items():
        _, groups = group_by_context(judge_levels, ids)
        judge_confusion[name] = np.stack([level_confusion(lv, [judge_refs[name][i]] * len(lv))
                                          for i, lv in zip(context_ids, groups)])
    return per_seed, {"r_emp": r_emp, "f_bert": f_bert, "confusion": confusion, "seeds": len(runs),
                      "judges": judge_confusion, "judge_runs": judge_runs, "samples": samples}


def paired_differences(cfg: EvaluateConfig, results: dict) -> list[dict]:
    """For each (system, baseline) of ``cfg.paired``: paired differences over the test contexts of mean
    R_emp and F_BERT (paired_difference) and of Emp-F1 (paired_bootstrap_statistic over confusion counts)."""

    from emprl.evaluate.paired import paired_bootstrap_statistic, paired_difference
    from emprl.metrics import emp_f1_from_confusion

    def emp_f1(counts):  # counts: [contexts, mechanisms, gold, predicted]
        return emp_f1_from_confusion(counts.sum(axis=0))

    settings = {"n_boot": cfg.paired_resamples, "confidence": 0.95, "seed": 0}
    out = []
    for system, baseline in cfg.paired.items():
        a, b = results[system]["per_context"], results[baseline]["per_context"]
        entry = {"system": system, "baseline": baseline, "n_contexts": len(a["r_emp"]),
                 "samples_per_context": [results[system]["samples_per_context"],
                                         results[baseline]["samples_per_context"]],
                 "seeds": [a["seeds"], b["seeds"]],
                 "r_emp": paired_difference(a["r_emp"], b["r_emp"], **settings),
                 "emp_f1": paired_bootstrap_statistic(emp_f1, a["confusion"], b["confusion"], **settings),
                 "f_bert": None}
        if a["f_bert"] is not None and b["f_bert"] is not None:
            entry["f_bert"] = paired_difference(a["f_bert"], b["f_bert"], **settings)
        # Independent judges against the true levels: the same resampling over per-context confusion counts.
        entry["judges"] = {
            name: {"emp_f1": paired_bootstrap_statistic(emp_f1, a["judges"][name], b["judges"][name], **settings),
                   "accuracy": paired_bootstrap_statistic(lambda c: level_accuracy(c.sum(axis=0)), a["judges"][name],
                                                          b["judges"][name], **settings)}
            for name in a.get("judges") or {} if name in (b.get("judges") or {})}
        logger.info("%s - %s: delta R_emp %+.4f [%+.4f, %+.4f] p=%.3g", system, baseline, entry["r_emp"]["delta"],
                    entry["r_emp"]["ci_low"], entry["r_emp"]["ci_high"], entry["r_emp"]["p_value"])
        out.append(entry)
    return out


def summarise(per_seed: dict[int, dict[str, float]]) -> dict[str, dict]:
    """metric -> mean, 95% CI half-width (Student t over seeds; null for a single run) and n."""
    from emprl.metrics import mean_ci95

    out = {}
    for key in next(iter(per_seed.values())):
        mean, ci = mean_ci95(run[key] for run in per_seed.values())
        out[key] = {"mean": mean, "ci95": None if math.isnan(ci) else ci, "n": len(per_seed)}
    return out

"""The RL study's statistics (``make rl-study``, emprl.study): from the one evaluation of every trained run
and the SFT policy, the pooled comparisons of docs/statistics.md.

Inputs, in the evaluation folder: ``results.json`` (per-system summaries over decoding seeds, PPL) and the
per-sample files ``samples.jsonl`` (or ``samples.jsonl.gz``; one line per system, decoding seed, context
and sample: R_emp, F_BERT, words, empty, the reward identifiers' levels and each independent judge's
levels) and ``contexts.jsonl`` (per context: the gold levels the reward uses and, where the data knows
them, the true levels). An evaluation without the per-sample files still gives pooled R_emp and F_BERT
from results.json's per-context means.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import numpy as np

from emprl.common.errors import UserError
from emprl.common.io import read_jsonl
from emprl.study import rl_stats
from emprl.study.design import contexts_needed, difference_components, power, variance_components

SFT_ROW = "SFT"
ARM_TITLES = {"empathy": "EmpRL (PPO)", "placebo": "placebo (shuffled gold)", "control": "w/o empathy reward",
              "dpo": "EmpRL-DPO"}  # the study's arms, as its tables name them
REWARD_JUDGE = "reward identifiers"  # the reward's own levels against the true levels: not independent
F_BERT_FLOOR = -0.5  # guardrail: the pooled Delta F_BERT lower bound must stay above this
LENGTH_LIMIT = 3.0  # guardrail: |Delta words| below this
SIZING_SAMPLES = (1, 2, 4, 8, 16)


# -- the per-sample files ----------------------------------------------------------------------------------


@dataclass
class SystemSamples:
    pos: np.ndarray  # context position of each sample row
    r_emp: np.ndarray
    f_bert: np.ndarray | None
    words: np.ndarray
    empty: np.ndarray
    levels: np.ndarray  # [rows, 3] the reward identifiers' levels
    judges: dict[str, np.ndarray] = field(default_factory=dict)  # name -> [rows, 3]


@dataclass
class Samples:
    conv_ids: list[str]
    gold: np.ndarray  # [C, 3]
    true: np.ndarray | None  # [C, 3], or None when the data has no true levels
    systems: dict[str, SystemSamples]

    def per_context(self, system: str, key: str) -> np.ndarray | None:
        """Mean of a per-sample value over each context's samples (all decoding seeds)."""
        s = self.systems[system]
        values = getattr(s, key)
        if values is None:
            return None
        n = np.bincount(s.pos, minlength=len(self.gold))
        return np.bincount(s.pos, weights=values.astype(float), minlength=len(self.gold)) / n

    def confusion(self, system: str, judge: str | None = None) -> np.ndarray:
        """[C, 3, 3, 3] counts per context of (reference level, predicted level) per mechanism: the reward
        identifiers against the gold levels, or a judge (or the identifiers) against the true levels."""
        s = self.systems[system]
        pred = s.levels if judge in (None, REWARD_JUDGE) else s.judges[judge]
        ref = (self.gold if judge is None else self.true)[s.pos]
        counts = np.zeros((len(self.gold), 3, 3, 3))
        for m in range(3):
            np.add.at(counts, (s.pos, m, ref[:, m], pred[:, m]), 1)
        return counts

    def agreement(self, system: str, judge: str, true: np.ndarray | None = None) -> np.ndarray:
        """[C, 4] per context: the share of its samples whose judged level equals the true level, per mechanism
        and for all three at once (``true``: the [C, 3] truth to compare with; default the data's own)."""
        s = self.systems[system]
        pred = s.levels if judge == REWARD_JUDGE else s.judges[judge]
        match = pred == (self.true if true is None else true)[s.pos]
        cells = np.concatenate([match, match.all(axis=1, keepdims=True)], axis=1).astype(float)
        n = np.bincount(s.pos, minlength=len(self.gold))
        return np.stack([np.bincount(s.pos, weights=cells[:, k], minlength=len(self.gold)) / n
                         for k in range(cells.shape[1])], axis=1)

    def accuracy(self, system: str, judge: str) -> np.ndarray:
        """Per context, the share of (sample, mechanism) whose judged level equals the true level."""
        return self.agreement(system, judge)[:, :3].mean(axis=1)

    def judge_names(self) -> list[str]:
        if self.true is None:
            return []
        names = sorted({j for s in self.systems.values() for j in s.judges})
        return names + [REWARD_JUDGE]


def load_samples(eval_dir: str) -> Samples | None:
    """The per-sample files of an evaluation, or None when it wrote none (an older evaluation). The samples
    may be gzipped (``samples.jsonl.gz``: the committed copy that emprl.study.export writes)."""
    sample_path, context_path = os.path.join(eval_dir, "samples.jsonl"), os.path.join(eval_dir, "contexts.jsonl")
    if not os.path.isfile(sample_path):
        sample_path += ".gz"
    if not (os.path.isfile(sample_path) and os.path.isfile(context_path)):
        return None
    contexts = sorted(read_jsonl(context_path, strict=True), key=lambda r: r["context"])
    if not contexts:
        raise UserError(f"{context_path}: no contexts")
    position = {r["context"]: i for i, r in enumerate(contexts)}
    gold = np.array([r["gold"] for r in contexts], dtype=int)
    trues = [r.get("true") for r in contexts]
    true = np.array(trues, dtype=int) if all(t is not None for t in trues) else None
    by_system: dict[str, list[dict]] = {}
    for i, row in enumerate(read_jsonl(sample_path, strict=True), 1):
        if row.get("context") not in position:
            raise UserError(f"{sample_path}:{i}: context {row.get('context')!r} is not in {context_path}")
        by_system.setdefault(row["system"], []).append(row)
    systems = {}
    for name, rows in by_system.items():
        pos = np.array([position[r["context"]] for r in rows])
        missing = len(contexts) - len(np.unique(pos))
        if missing:
            raise UserError(f"{sample_path}: system {name!r} has no sample for {missing} of {len(contexts)} contexts")
        f_bert = [r.get("f_bert") for r in rows]
        judge_names = set().union(*(r.get("judges") or {} for r in rows))
        systems[name] = SystemSamples(
            pos=pos, r_emp=np.array([r["r_emp"] for r in rows], dtype=float),
            f_bert=None if any(v is None for v in f_bert) else np.array(f_bert, dtype=float),
            words=np.array([r["words"] for r in rows], dtype=float),
            empty=np.array([bool(r["empty"]) for r in rows]),
            levels=np.array([r["levels"] for r in rows], dtype=int),
            judges={j: np.array([r["judges"][j] for r in rows], dtype=int) for j in sorted(judge_names)
                    if all(j in (r.get("judges") or {}) for r in rows)})
    return Samples([str(r.get("conv_id")) for r in contexts], gold, true, systems)


# -- the statistics ------------------------------------------------------------------------------------------


def comparisons(runs_by_arm: dict[str, list[tuple[int, str]]]) -> list[dict]:
    """What the study compares: every arm against SFT, and EmpRL against the placebo on the same seeds."""
    out = [{"arm": arm, "baseline": SFT_ROW, "seeds": [s for s, _ in runs]} for arm, runs in runs_by_arm.items()]
    if "empathy" in runs_by_arm and "placebo" in runs_by_arm:
        common = sorted({s for s, _ in runs_by_arm["empathy"]} & {s for s, _ in runs_by_arm["placebo"]})
        if common:
            out.append({"arm": "empathy", "baseline": "placebo", "seeds": common})
    return out


def pooled_statistics(runs_by_arm: dict[str, list[tuple[int, str]]], samples: Samples | None, results: dict,
                      n_boot: int, effect: float, primary_judge: str = "oracle") -> dict:
    """The pooled tables of the report: per comparison the R_emp statistics (pooled difference, per-run CIs,
    PoI, IQM), Emp-F1 of the reward identifiers, the judges against the true levels and the guardrails;
    the variance components of R_emp and the design sizing. EmpRL - placebo carries the primary test:
    ``primary_judge``'s level agreement with the true levels, one-sided."""
    def values(system: str, key: str) -> np.ndarray | None:
        if samples is not None:
            return samples.per_context(system, key)
        v = (results.get("systems", {}).get(system, {}).get("per_context") or {}).get(key)
        return None if v is None else np.asarray(v, dtype=float)

    def stack(systems: list[str], key: str) -> np.ndarray | None:
        rows = [values(s, key) for s in systems]
        return None if any(r is None for r in rows) else np.stack(rows)

    settings = {"n_boot": n_boot}
    out = {"comparisons": [], "source": "samples.jsonl" if samples is not None else "results.json per_context"}
    for comp in comparisons(runs_by_arm):
        arm_systems = [name for s, name in runs_by_arm[comp["arm"]] if s in comp["seeds"]]
        base_systems = [SFT_ROW] if comp["baseline"] == SFT_ROW else \
            [name for s, name in runs_by_arm[comp["baseline"]] if s in comp["seeds"]]
        entry = {**comp, "systems": arm_systems, "baseline_systems": base_systems}
        for key in ("r_emp", "f_bert", "words"):
            a, b = stack(arm_systems, key), stack(base_systems, key)
            if a is None or b is None:
                continue
            entry[key] = rl_stats.pooled_difference(a, b, **settings)
            if key == "r_emp":
                entry["poi"] = rl_stats.probability_of_improvement(a, b, **settings)
                entry["iqm"] = rl_stats.interquartile_mean(a, b, **settings)
        if samples is not None:
            entry["emp_f1"] = rl_stats.pooled_corpus_difference(
                np.stack([samples.confusion(s) for s in arm_systems]),
                np.stack([samples.confusion(s) for s in base_systems]), **settings)
            entry["empty"] = {"arm": int(sum(samples.systems[s].empty.sum() for s in arm_systems)),
                              "samples": int(sum(len(samples.systems[s].empty) for s in arm_systems)),
                              "baseline": int(sum(samples.systems[s].empty.sum() for s in base_systems)),
                              "baseline_samples": int(sum(len(samples.systems[s].empty) for s in base_systems))}
            entry["judges"] = {}
            for judge in samples.judge_names():
                if judge != REWARD_JUDGE and not all(judge in samples.systems[s].judges
                                                     for s in arm_systems + base_systems):
                    continue
                acc = [np.stack([100 * samples.accuracy(s, judge) for s in names]) for names in (arm_systems, base_systems)]
                entry["judges"][judge] = {
                    "emp_f1": rl_stats.pooled_corpus_difference(
                        np.stack([samples.confusion(s, judge) for s in arm_systems]),
                        np.stack([samples.confusion(s, judge) for s in base_systems]), **settings),
                    "accuracy": rl_stats.pooled_difference(*acc, **settings)}
                if comp["baseline"] == "placebo" and judge == primary_judge:
                    # The study's one declared test: one-sided, EmpRL above its placebo (docs/statistics.md)
                    entry["primary"] = {"judge": judge, **rl_stats.pooled_difference(*acc, alternative="greater",
                                                                                      **settings)}
        entry["dist_2"] = _summary_difference(results, arm_systems, base_systems, "dist-2")
        out["comparisons"].append(entry)
    if samples is not None and "empathy" in runs_by_arm and SFT_ROW in samples.systems:
        out["variance"] = variance_report(samples, [name for _, name in runs_by_arm["empathy"]], effect)
    return out


def _summary_difference(results: dict, arm: list[str], base: list[str], key: str) -> dict | None:
    """Mean over runs of a results.json summary metric, arm - baseline, with the arm's Student t 95% CI
    over its trained runs (a corpus metric such as Dist-2 has no per-context value to bootstrap)."""
    from emprl.metrics import mean_ci95

    def means(names):
        got = [((results.get("systems", {}).get(n, {}).get("summary") or {}).get(key) or {}).get("mean")
               for n in names]
        return None if any(v is None for v in got) else got

    a, b = means(arm), means(base)
    if a is None or b is None:
        return None
    mean_a, half = mean_ci95(a)
    mean_b = sum(b) / len(b)
    return {"delta": mean_a - mean_b, "ci95": None if math.isnan(half) else half, "mean_arm": mean_a,
            "mean_baseline": mean_b, "runs": len(a)}


def variance_report(samples: Samples, empathy: list[str], effect: float) -> dict:
    """Variance components of per-sample R_emp (SFT: between and within contexts; EmpRL - SFT: runs,
    contexts, run x context, samples) and the contexts needed at 80% power for ``effect`` and for the
    observed pooled effect, for several samples per context and numbers of runs."""
    sft = samples.systems[SFT_ROW]
    base = variance_components(sft.r_emp, sft.pos)
    arms = [variance_components(samples.systems[s].r_emp, samples.systems[s].pos) for s in empathy]
    within_arm = float(np.mean([c["within_context"] for c in arms]))
    n_arm = float(np.mean([c["samples_per_context"] for c in arms]))
    a = np.stack([samples.per_context(s, "r_emp") for s in empathy])
    comp = difference_components(a, samples.per_context(SFT_ROW, "r_emp"), within_arm=within_arm,
                                          within_baseline=base["within_context"], samples_arm=n_arm,
                                          samples_baseline=base["samples_per_context"])
    observed = float((a - samples.per_context(SFT_ROW, "r_emp")).mean())
    runs_options = sorted({len(empathy), 5, 10})
    sizing = []
    for target in (effect, observed):
        rows = []
        for runs in runs_options:
            rows.append({"runs": runs, "contexts": {str(n): contexts_needed(comp, target, runs, n)
                                                    for n in SIZING_SAMPLES}})
        sizing.append({"effect": target, "rows": rows})
    design = {"runs": len(empathy), "contexts": len(samples.gold), "samples": n_arm}
    return {"sft": base, "difference": comp, "design": design,
            "power_at_design": {str(t): power(comp, t, design["runs"], design["contexts"], n_arm)
                                for t in (effect, observed)},
            "sizing": sizing, "samples_options": list(SIZING_SAMPLES)}


def trained_run_intervals(results: dict, runs_by_arm: dict[str, list[tuple[int, str]]]) -> dict:
    """Per arm and metric of results.json's summaries (and PPL): mean ± 95% Student t CI over the trained
    runs (each run's value its mean over decoding seeds): the paper's kind of interval. Beside it, the
    decoding-seed interval: the mean over the arm's runs of each run's ± over its decoding seeds."""
    from emprl.metrics import mean_ci95

    systems = results.get("systems", {})
    arms = {SFT_ROW: [SFT_ROW], **{arm: [name for _, name in runs] for arm, runs in runs_by_arm.items()}}
    keys: list[str] = ["ppl"]
    for res in systems.values():
        keys += [k for k in (res.get("summary") or {}) if k not in keys]
    out = {}
    for arm, names in arms.items():
        found = [systems[n] for n in names if n in systems]
        if not found:
            continue
        row = {}
        for key in keys:
            if key == "ppl":
                vals, dec = [r.get("ppl") for r in found], []
            else:
                cells = [(r.get("summary") or {}).get(key) or {} for r in found]
                vals, dec = [c.get("mean") for c in cells], [c.get("ci95") for c in cells]
            if any(v is None for v in vals):
                continue
            mean, half = mean_ci95(vals)
            dec = [d for d in dec if d is not None]
            row[key] = {"mean": mean, "ci95": None if math.isnan(half) else half, "runs": len(vals),
                        "decoding_ci95": float(np.mean(dec)) if dec else None}
        out[arm] = row
    return out

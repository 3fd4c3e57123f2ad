"""``make rl-study``: does PPO (and DPO) against R_emp raise empathy-level alignment, beyond seed noise?

    python -m emprl.study recipes/demo/rl_study.yaml [--seeds [11, 12]] [--jobs 2]
    python -m emprl.study --prerequisites recipes/demo/rl_study.yaml   (the pipeline targets it reads)

1. Train each arm once per seed, each into ``output_dir/<arm>_seed<k>``: EmpRL (the PPO recipe), the
   placebo (the same PPO against a shuffled context's gold levels: same reward scale, no information),
   optionally the control (empathy reward weighted 0) and EmpRL-DPO; up to ``jobs`` at once, one log
   per run in ``output_dir/logs``. A finished run (its stage stamp) is not retrained.
2. Evaluate every run and the SFT policy they start from in ONE evaluation call (SFT scored once), on
   the same held-out contexts with the same sampling seeds.
3. Write ``report.md`` / ``report.json`` (emprl.study.report, docs/statistics.md): the trained runs
   pooled with a two-level bootstrap (runs, then contexts), Delta R_emp against SFT and against the
   placebo of the same seed with a sign-flip permutation p, runs with a positive delta, per-run CIs,
   probability of improvement and IQM; each independent judge's Delta Emp-F1 and level accuracy
   against the true levels; guardrails (F_BERT, empty replies, length, Dist-2); the variance
   components of R_emp and the design they call for; mean ± 95% CI over trained runs for every metric
   (the paper's kind of interval) beside the decoding-seed interval; the per-run table; a verdict
   line per criterion.

With ``dpo_recipe`` set, EmpRL-DPO (``emprl.dpo``, docs/dpo.md) runs with the same seeds as another
arm, sized to the PPO recipe's number of reward evaluations (steps x batch size), and the report states both.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field

from emprl.common.errors import UserError, run_cli
from emprl.common.io import atomic_write_json, atomic_write_text
from emprl.pipeline.config import load_recipe_values, parse_recipe
from emprl.pipeline.processes import run_steps
from emprl.pipeline.run import Step, default_jobs
from emprl.pipeline.stages import DPO, EVALUATE, PPO, Stage
from emprl.study.report import (
    F_BERT_FLOOR,
    LENGTH_LIMIT,
    REWARD_JUDGE,
    SFT_ROW,
    load_samples,
    pooled_statistics,
    trained_run_intervals,
)

logger = logging.getLogger("emprl.study")
ARMS = ("empathy", "placebo", "control", "dpo")
ARM_TITLES = {"empathy": "EmpRL (PPO)", "placebo": "placebo (shuffled gold)", "control": "w/o empathy reward",
              "dpo": "EmpRL-DPO"}
ARM_KINDS = {"empathy": PPO, "placebo": PPO, "control": PPO, "dpo": DPO}  # the stage table's rows each arm runs


@dataclass
class RLStudyConfig:
    ppo_recipe: str = field(metadata={"help": "the EmpRL PPO recipe (its sft_model_path is the SFT row)",
                                      "existing_path": True})
    evaluate_recipe: str = field(metadata={"help": "evaluation recipe (data, split, K, seeds, decoding); its "
                                                   "systems and paired keys are replaced by the study's",
                                           "existing_path": True})
    placebo_recipe: str | None = field(default=None, metadata={
        "help": "placebo: the same PPO against a shuffled context's gold levels (null: no placebo arm)",
        "existing_path": True})
    control_recipe: str | None = field(default=None, metadata={
        "help": "control: the same PPO with the empathy reward weighted 0 (null: no control arm)",
        "existing_path": True})
    output_dir: str = "outputs/rl_study"
    seeds: list[int] = field(default_factory=lambda: [11, 12, 13, 14, 15],
                             metadata={"help": "one training run per seed and arm"})
    choice_seeds: list[int] = field(default_factory=list, metadata={
        "help": "seeds of the runs that chose the settings; the verdict checks the study's seeds are fresh"})
    ppo_overrides: list[str] = field(default_factory=list, metadata={
        "help": "extra --key value arguments for every PPO run, e.g. [--steps, '40']"})
    dpo_recipe: str | None = field(default=None, metadata={
        "help": "EmpRL-DPO recipe: another arm with the same seeds (null: none)", "existing_path": True})
    dpo_overrides: list[str] = field(default_factory=list, metadata={
        "help": "extra --key value arguments for every DPO run"})
    arm_seeds: dict[str, list[int]] = field(default_factory=dict, metadata={
        "help": "an arm's own seeds when it runs on fewer than `seeds`, e.g. {dpo: [11]} for one equal-budget "
                "DPO row (arms: empathy, placebo, control, dpo)"})
    resamples: int = field(default=10_000, metadata={"help": "bootstrap and permutation resamples of the report"})
    detectable_effect: float = field(default=0.012, metadata={
        "help": "the Delta R_emp the design is sized for (contexts x samples at 80% power, two-sided 0.05)"})
    prerequisites: list[str] = field(default_factory=list, metadata={
        "help": "pipeline stages (recipe file names) the study reads, run first by `make rl-study`"})
    jobs: int | None = field(default=None, metadata={"help": "runs at once (default: 2 on a CPU machine)"})

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("key 'seeds': expected at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"key 'seeds': seeds repeat: {self.seeds}")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"key 'jobs': expected a positive integer, got {self.jobs}")
        for arm, seeds in self.arm_seeds.items():
            if arm not in ARM_TITLES:
                raise ValueError(f"key 'arm_seeds': unknown arm {arm!r} (expected one of {', '.join(ARM_TITLES)})")
            if not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds):
                raise ValueError(f"key 'arm_seeds': {arm}: expected a non-empty list of different seeds, got {seeds!r}")
        if self.resamples < 100:
            raise ValueError(f"key 'resamples': expected at least 100, got {self.resamples}")
        if not self.detectable_effect > 0:
            raise ValueError(f"key 'detectable_effect': expected a positive effect, got {self.detectable_effect}")

    def recipes(self) -> dict[str, str | None]:
        return {"empathy": self.ppo_recipe, "placebo": self.placebo_recipe, "control": self.control_recipe,
                "dpo": self.dpo_recipe}


def main(argv: list[str] | None = None) -> dict | None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--prerequisites"]:  # for `make rl-study`: the stages to bring up to date first
        (cfg,) = parse_recipe((RLStudyConfig,), argv[1:])
        print(" ".join(cfg.prerequisites))
        return None
    (cfg,) = parse_recipe((RLStudyConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sft = load_recipe_values(cfg.ppo_recipe).get("sft_model_path")
    if not sft:
        raise UserError(f"{cfg.ppo_recipe}: missing required key 'sft_model_path'")
    runs = plan_runs(cfg)
    python = sys.executable

    # 1. Training runs, every arm, one per seed.
    started = time.time()
    minutes = run_steps([r.step for r in runs], lambda step: [python, "-m", step.stage.module, *step_args(step, cfg)],
                        jobs=cfg.jobs or default_jobs(), log_dir=os.path.join(cfg.output_dir, "logs"))
    # 2. Every run and SFT in one evaluation, each run paired against SFT.
    systems = {SFT_ROW: sft, **{r.title: r.step.output_dir for r in runs}}
    paired = {r.title: SFT_ROW for r in runs}
    eval_dir = os.path.join(cfg.output_dir, "eval")
    command = [python, "-m", "emprl.evaluate", cfg.evaluate_recipe, "--systems", json.dumps(systems),
               "--paired", json.dumps(paired), "--output_dir", eval_dir]
    run_steps([Step(Stage("evaluate", EVALUATE, "evaluate.yaml"), cfg.evaluate_recipe, eval_dir, True, ())],
              lambda _: command, jobs=1)
    # 3. The report.
    report = build_report(cfg, runs, eval_dir, minutes, (time.time() - started) / 60)
    text = report_markdown(report)
    atomic_write_json(os.path.join(cfg.output_dir, "report.json"), _json_safe(report))
    atomic_write_text(os.path.join(cfg.output_dir, "report.md"), text)
    print(text)
    print(f"emprl.study.run: report in {os.path.join(cfg.output_dir, 'report.md')}")
    return report


@dataclass
class Run:
    arm: str
    seed: int
    step: Step

    @property
    def title(self) -> str:
        return f"{ARM_TITLES[self.arm]}, seed {self.seed}"


def plan_runs(cfg: RLStudyConfig) -> list[Run]:
    runs = []
    for seed in dict.fromkeys([*cfg.seeds, *(s for seeds in cfg.arm_seeds.values() for s in seeds)]):
        for arm, recipe in cfg.recipes().items():
            if recipe is None or seed not in cfg.arm_seeds.get(arm, cfg.seeds):
                continue
            # Always started: the stage itself skips a run that is complete for the same recipe values.
            out = os.path.join(cfg.output_dir, f"{arm}_seed{seed}")
            runs.append(Run(arm, seed, Step(Stage(f"{arm} seed {seed}", ARM_KINDS[arm], f"{arm}_seed{seed}.yaml"),
                                            recipe, out, True, ())))
    return runs


def step_args(step: Step, cfg: RLStudyConfig) -> list[str]:
    seed = int(step.output_dir.rsplit("_seed", 1)[1])
    overrides = cfg.dpo_overrides if step.stage.module == "emprl.dpo" else cfg.ppo_overrides
    return [step.recipe_path, "--output_dir", step.output_dir, "--seed", str(seed), *overrides]


def reward_evaluations(cfg: RLStudyConfig, run: Run, metrics: dict) -> int | None:
    """Samples scored by the reward in training: PPO steps x batch size (held-out evaluations not
    counted); DPO the K samples of every context of every round, as its metrics.json counts them."""
    if run.arm == "dpo":
        return metrics.get("reward_evaluations")
    values = load_recipe_values(run.step.recipe_path)
    over = dict(zip(cfg.ppo_overrides[::2], cfg.ppo_overrides[1::2]))
    steps, batch = over.get("--steps", values.get("steps")), over.get("--batch_size", values.get("batch_size"))
    return int(steps) * int(batch) if steps and batch else None


def build_report(cfg: RLStudyConfig, runs: list[Run], eval_dir: str, minutes: dict[str, float],
                 total_minutes: float) -> dict:
    path = os.path.join(eval_dir, "results.json")
    try:
        with open(path, encoding="utf-8") as fh:
            results = json.load(fh)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read the evaluation's results ({err})") from None
    paired = {entry["system"]: entry for entry in results.get("paired") or []}
    rows = []
    for run in runs:
        metrics = _read_json(os.path.join(run.step.output_dir, "metrics.json"))
        system = results.get("systems", {}).get(run.title, {}).get("summary", {})
        rows.append({
            "arm": run.arm, "seed": run.seed, "system": run.title,
            "paired": paired.get(run.title, {}),
            "kl": (metrics.get("final") or {}).get("kl"),
            "length": _mean_of(system, "length"), "empty_rate": _mean_of(system, "empty_rate"),
            "minutes": metrics.get("minutes", minutes.get(run.step.stage.name)),  # training time, not a skip
            "reward_evaluations": reward_evaluations(cfg, run, metrics),
        })
    runs_by_arm: dict[str, list[tuple[int, str]]] = {}
    for run in runs:
        runs_by_arm.setdefault(run.arm, []).append((run.seed, run.title))
    samples = load_samples(eval_dir)
    pooled = pooled_statistics(runs_by_arm, samples, results, cfg.resamples, cfg.detectable_effect)
    report = {"ppo_recipe": cfg.ppo_recipe, "placebo_recipe": cfg.placebo_recipe,
              "control_recipe": cfg.control_recipe, "dpo_recipe": cfg.dpo_recipe,
              "evaluate_recipe": cfg.evaluate_recipe, "seeds": cfg.seeds, "choice_seeds": cfg.choice_seeds,
              "ppo_overrides": cfg.ppo_overrides, "resamples": cfg.resamples,
              "design": {"contexts": results.get("num_examples"), "seeds": results.get("seeds"),
                         "samples_per_context": results.get("samples_per_context",
                                                            (results.get("recipe") or {}).get("samples_per_context"))},
              "rows": rows, "pooled": pooled, "trained_runs": trained_run_intervals(results, runs_by_arm),
              "minutes_total": total_minutes}
    report["verdict"] = verdict(report)
    return report


def _mean_of(system: dict, key: str):
    value = system.get(key)
    return value.get("mean") if isinstance(value, dict) else value


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _json_safe(value):
    """NaN and inf as null: report.json stays standard JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# -- the verdict: one line per criterion of the study -------------------------------------------------------


def _comparison(report: dict, arm: str, baseline: str = SFT_ROW) -> dict | None:
    for c in (report.get("pooled") or {}).get("comparisons", []):
        if c["arm"] == arm and c["baseline"] == baseline:
            return c
    return None


def _line(criterion: str, met: bool | None, value: str) -> dict:
    return {"criterion": criterion, "met": met, "value": value}


def verdict(report: dict) -> list[dict]:
    """Each criterion with whether it is met (None: not measured in this study) and the figure behind it."""
    emp, vs_placebo = _comparison(report, "empathy"), _comparison(report, "empathy", "placebo")
    lines = []
    reused = sorted(set(report["seeds"]) & set(report.get("choice_seeds") or []))
    lines.append(_line("fresh seeds (none used for choosing settings)", not reused,
                       f"seeds {report['seeds']}; choice seeds {report.get('choice_seeds') or []}"))
    for name, comp in (("SFT", emp), ("the placebo (same seed)", vs_placebo)):
        r = (comp or {}).get("r_emp")
        lines.append(_line(f"pooled Delta R_emp vs {name}: lower bound > 0", None if r is None else r["ci_low"] > 0,
                           "not measured" if r is None else _fmt_ci(r, 4)))
    r = (emp or {}).get("r_emp")
    if r is None:
        lines.append(_line("at least 4 of 5 seeds positive", None, "not measured"))
    else:
        need = math.ceil(0.8 * r["runs"])
        lines.append(_line(f"at least {need} of {r['runs']} seeds positive", r["runs_positive"] >= need,
                           f"{r['runs_positive']}/{r['runs']}"))
    judged = [(j, k, v) for j, entry in ((emp or {}).get("judges") or {}).items() if j != REWARD_JUDGE
              for k, v in entry.items()]
    lines.append(_line("an independent judge's pooled Delta Emp-F1 or level accuracy (true levels): lower bound > 0",
                       any(v["ci_low"] > 0 for _, _, v in judged) if judged else None,
                       "; ".join(f"{j} {k} {_fmt_ci(v, 2)}" for j, k, v in judged) or "no judge in the evaluation"))
    f = (emp or {}).get("f_bert")
    lines.append(_line(f"guardrail: Delta F_BERT lower bound > {F_BERT_FLOOR}",
                       None if f is None else f["ci_low"] > F_BERT_FLOOR, "not measured" if f is None else _fmt_ci(f, 2)))
    empty = (emp or {}).get("empty")
    lines.append(_line("guardrail: 0 empty replies", None if empty is None else empty["arm"] == 0,
                       "not measured" if empty is None else f"{empty['arm']} of {empty['samples']} samples"))
    w = (emp or {}).get("words")
    lines.append(_line(f"guardrail: length change < {LENGTH_LIMIT:g} words",
                       None if w is None else abs(w["delta"]) < LENGTH_LIMIT, "not measured" if w is None else _fmt_ci(w, 2)))
    d2 = (emp or {}).get("dist_2")
    lines.append(_line("Dist-2 change reported", d2 is not None, "not measured" if d2 is None else _fmt_pm(d2)))
    dpo = [r for r in report["rows"] if r["arm"] == "dpo"]
    if dpo:
        ppo = [r["reward_evaluations"] for r in report["rows"] if r["arm"] == "empathy"]
        got = [r["reward_evaluations"] for r in dpo]
        lines.append(_line("DPO at PPO's reward evaluations, same evaluation call",
                           bool(ppo) and None not in got and set(got) == set(ppo), f"DPO {got}, PPO {ppo}"))
    return lines


# -- report.md -----------------------------------------------------------------------------------------------


def _fmt_delta(d: dict, digits: int) -> str:
    if not d or "delta" not in d:
        return "–"
    return (f"{d['delta']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}] "
            f"p={d.get('p_value', float('nan')):.3g}")


def _fmt_ci(d: dict | None, digits: int, key: str = "delta") -> str:
    if not d:
        return "–"
    return f"{d[key]:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}]"


def _fmt_pm(d: dict | None, digits: int = 2, key: str = "delta") -> str:
    if not d:
        return "–"
    half = d.get("ci95")
    return f"{d[key]:+.{digits}f}" + ("" if half is None else f" ± {half:.{digits}f}")


def _fmt(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _fmt_p(d: dict | None) -> str:
    return "–" if not d else f"{d['p_value']:.3g}"


def _fmt_poi(d: dict | None) -> str:
    return "–" if not d else f"{d['poi']:.3f} [{d['ci_low']:.3f}, {d['ci_high']:.3f}]"


def _title(comp: dict) -> str:
    base = SFT_ROW if comp["baseline"] == SFT_ROW else f"{ARM_TITLES[comp['baseline']]} (same seed)"
    return f"{ARM_TITLES[comp['arm']]} - {base}"


def report_markdown(report: dict) -> str:
    design = report.get("design") or {}
    arms = ", ".join(f"{ARM_TITLES[a]} `{report.get(k)}`" for a, k in
                     (("empathy", "ppo_recipe"), ("placebo", "placebo_recipe"), ("control", "control_recipe"),
                      ("dpo", "dpo_recipe")) if report.get(k))
    lines = [
        "# RL study: EmpRL against SFT and its controls, trained runs pooled",
        "",
        f"Arms: {arms}; trained seeds {report['seeds']}"
        f"{', overrides ' + ' '.join(report['ppo_overrides']) if report.get('ppo_overrides') else ''}. "
        f"One evaluation `{report['evaluate_recipe']}`"
        + (f": {design.get('contexts')} contexts x {design.get('samples_per_context')} samples x "
           f"decoding seeds {design.get('seeds')}" if design else "") + ", SFT scored once.",
        "",
    ]
    lines += _verdict_lines(report.get("verdict"))
    pooled = report.get("pooled")
    if pooled:
        lines += _pooled_lines(report, pooled)
    if report.get("trained_runs"):
        lines += _trained_run_lines(report["trained_runs"])
    lines += [
        "## Per run (each trained run against SFT, from the evaluation)", "",
        "Delta = run - SFT on the same contexts and sampling seeds, 95% bootstrap CI over contexts, p from the "
        "evaluation's paired test (see its results.md).", "",
        "| run | Delta R_emp | Delta Emp-F1 | Delta F_BERT | KL to ref | length | empty | reward evals | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        p = r["paired"]
        lines.append(f"| {r['system']} | {_fmt_delta(p.get('r_emp', {}), 4)} | {_fmt_delta(p.get('emp_f1', {}), 2)} | "
                     f"{_fmt_delta(p.get('f_bert', {}), 4)} | {_fmt(r['kl'], 3)} | {_fmt(r['length'])} | "
                     f"{_fmt(r['empty_rate'], 3)} | {r.get('reward_evaluations') or '–'} | {_fmt(r['minutes'], 1)} |")
    lines += ["", "Reward evals: samples scored by R_emp in training (PPO: steps x batch; DPO: contexts x K x rounds).",
              "", f"Wall time: {report['minutes_total']:.1f} min", ""]
    return "\n".join(lines)


def _verdict_lines(verdict_list) -> list[str]:
    if not verdict_list:
        return []
    if isinstance(verdict_list, dict):  # a report written before the criteria became a list
        return ["## Verdict", "", *(f"- {k}: **{v}**" for k, v in verdict_list.items()), ""]
    mark = {True: "met", False: "NOT met", None: "not measured"}
    return ["## Verdict (the study's criteria)", "",
            *(f"- {v['criterion']}: **{mark[v['met']]}** ({v['value']})" for v in verdict_list), ""]


def _pooled_lines(report: dict, pooled: dict) -> list[str]:
    comps = pooled["comparisons"]
    n_boot = report.get("resamples")
    lines = [
        "## Pooled effect on R_emp (trained runs pooled)", "",
        f"Delta: mean over trained runs and contexts of arm - baseline (per-context means over all samples). "
        f"95% CI: two-level percentile bootstrap, {n_boot} resamples: trained runs drawn with replacement, then "
        "contexts, the same context draw for every arm in a replicate. p: sign-flip permutation test of the "
        "pooled mean (each context's run-averaged difference flipped at random). PoI: probability that a run "
        "of the arm scores a context higher than a run of the baseline (rliable). IQM: interquartile mean of "
        "all run x context values, arm minus baseline (rliable). Emp-F1 (reward): the reward identifiers' "
        f"Emp-F1 against the gold levels, pooled the same way. Source: {pooled.get('source')}.", "",
        "| comparison | runs | Delta R_emp [95% CI] | p | runs positive | PoI [95% CI] | Delta IQM [95% CI] | "
        "Delta Emp-F1 (reward) [95% CI] |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in comps:
        r = c.get("r_emp")
        poi, iqm = c.get("poi"), (c.get("iqm") or {}).get("delta")
        lines.append(f"| {_title(c)} | {len(c['systems'])} | {_fmt_ci(r, 4)} | {_fmt_p(r)} | "
                     f"{'–' if not r else str(r['runs_positive']) + '/' + str(r['runs'])} | "
                     f"{_fmt_poi(poi)} | "
                     f"{_fmt_ci(iqm, 4, 'iqm')} | {_fmt_ci(c.get('emp_f1'), 2)} |")
    lines += ["", "### Per-run intervals (one-level bootstrap over contexts)", "",
              "| comparison | seed | Delta R_emp [95% CI] |", "| --- | --- | --- |"]
    for c in comps:
        for seed, run in zip(c["seeds"], (c.get("r_emp") or {}).get("per_run", [])):
            lines.append(f"| {_title(c)} | {seed} | {_fmt_ci(run, 4)} |")
    judged = [(c, j, e) for c in comps for j, e in (c.get("judges") or {}).items()]
    lines += ["", "## Judges against the true levels", ""]
    if judged:
        lines += ["Emp-F1 and level accuracy (% of samples x mechanisms) of each judge's levels on the generated "
                  "replies against the true levels the data's composer wrote; pooled like R_emp (Emp-F1: per run "
                  f"from summed per-context counts). `{REWARD_JUDGE}`: the reward model itself, not independent.", "",
                  "| judge | comparison | Delta Emp-F1 [95% CI] | p | Delta accuracy [95% CI] | p |",
                  "| --- | --- | --- | --- | --- | --- |"]
        lines += [f"| {j} | {_title(c)} | {_fmt_ci(e['emp_f1'], 2)} | {_fmt_p(e['emp_f1'])} | "
                  f"{_fmt_ci(e['accuracy'], 2)} | {_fmt_p(e['accuracy'])} |" for c, j, e in judged]
    else:
        lines.append("No true levels or judges in this evaluation (contexts.jsonl has no `true` levels).")
    lines += ["", "## Guardrails", "",
              f"F_BERT (relevance, x100) and words pooled like R_emp; the guardrails ask for a Delta F_BERT lower "
              f"bound above {F_BERT_FLOOR}, no empty reply and a length change under {LENGTH_LIMIT:g} words. Dist-2: "
              "corpus level, mean over runs ± 95% Student t over trained runs.", "",
              "| comparison | Delta F_BERT [95% CI] | empty replies | Delta words [95% CI] | Delta Dist-2 |",
              "| --- | --- | --- | --- | --- |"]
    for c in comps:
        empty = c.get("empty")
        lines.append(f"| {_title(c)} | {_fmt_ci(c.get('f_bert'), 2)} | "
                     f"{'–' if not empty else str(empty['arm']) + ' / ' + str(empty['samples'])} | "
                     f"{_fmt_ci(c.get('words'), 2)} | "
                     f"{_fmt_pm(c.get('dist_2'))} |")
    if pooled.get("variance"):
        lines += _variance_lines(pooled["variance"])
    return lines + [""]


def _variance_lines(v: dict) -> list[str]:
    sft, d, design = v["sft"], v["difference"], v["design"]
    lines = ["", "## Variance of R_emp and the design it calls for", "",
             f"SFT, per sample: between-context variance {sft['between_context']:.5f}, within-context (between "
             f"samples) {sft['within_context']:.5f} (ICC {sft['icc']:.2f}, {sft['contexts']} contexts x "
             f"{sft['samples_per_context']:.1f} samples).",
             f"EmpRL - SFT, per-context difference: between trained runs {d['run']:.2e}, between contexts "
             f"{d['context']:.2e}, run x context {d['run_x_context']:.2e}, per sample {d['within_arm']:.4f} (EmpRL) "
             f"and {d['within_baseline']:.4f} (SFT); SD of the run-averaged per-context difference "
             f"{d['sd_context_difference']:.4f}.",
             "Var(pooled Delta) = run/S + (context + within_SFT/n)/K + (run x context + within_EmpRL/n)/(S K). "
             f"Power of this design ({design['runs']} runs x {design['contexts']} contexts x "
             f"{design['samples']:g} samples): " + ", ".join(f"{float(e):+.4f}: {p:.2f}" for e, p in
                                                         v["power_at_design"].items()) + ".", ""]
    for block in v["sizing"]:
        lines += [f"Contexts needed for 80% power (two-sided 0.05) at Delta R_emp {block['effect']:+.4f} "
                  "('–': the between-run variance alone is too large for that many runs):", "",
                  "| runs | " + " | ".join(f"n = {n}" for n in v["samples_options"]) + " |",
                  "| --- " * (len(v["samples_options"]) + 1) + "|"]
        for row in block["rows"]:
            lines.append(f"| {row['runs']} | " + " | ".join(
                "–" if row["contexts"][str(n)] is None else str(row["contexts"][str(n)])
                for n in v["samples_options"]) + " |")
        lines.append("")
    return lines


def _digits(metric: str) -> int:
    return 4 if metric == "r_emp" else 2  # R_emp lies in (0, 1] and moves by hundredths


def _trained_run_lines(table: dict) -> list[str]:
    keys: list[str] = []
    for row in table.values():
        keys += [k for k in row if k not in keys]
    titles = {SFT_ROW: SFT_ROW, **ARM_TITLES}
    lines = ["## Mean ± 95% CI over trained runs (the paper's kind of interval)", "",
             "Each trained run's value is its mean over the decoding seeds; the interval is Student t over the "
             "arm's trained runs (n runs), as the paper's ± over 5 trained EmpRL runs (PPL therefore has one). "
             "SFT is one trained run: no interval.", "",
             "| arm | n | " + " | ".join(keys) + " |", "| --- | --- " + "| --- " * len(keys) + "|"]
    for arm, row in table.items():
        n = max((c["runs"] for c in row.values()), default=0)
        lines.append(f"| {titles.get(arm, arm)} | {n} | " + " | ".join(
            _fmt_pm(row.get(k), _digits(k), key="mean").lstrip("+") if row.get(k) else "–" for k in keys) + " |")
    lines += ["", "### Decoding-seed interval (the second figure)", "",
              "Mean over the arm's runs of each run's 95% Student t half-width over its decoding seeds (the same "
              "trained weights sampled again): it leaves out how training varies and is not the paper's interval.", "",
              "| arm | " + " | ".join(keys) + " |", "| --- " * (len(keys) + 1) + "|"]
    for arm, row in table.items():
        lines.append(f"| {titles.get(arm, arm)} | " + " | ".join(
            "–" if not row.get(k) or row[k]["decoding_ci95"] is None else f"± {row[k]['decoding_ci95']:.{_digits(k)}f}"
            for k in keys) + " |")
    return lines + [""]


if __name__ == "__main__":
    run_cli(main)

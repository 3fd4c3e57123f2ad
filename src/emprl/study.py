"""``make rl-study``: does PPO (and DPO) against R_emp raise empathy-level alignment, beyond seed noise?

    python -m emprl.study recipes/demo/rl_study.yaml [--seeds [1, 2]] [--jobs 2]

1. Train the PPO recipe (EmpRL) and its control (the same recipe with the empathy reward weighted 0,
   so only the KL term acts) once per seed, each into ``output_dir/<arm>_seed<k>``; up to ``jobs`` at
   once, one log per run in ``output_dir/logs``. A finished run (its stage stamp) is not retrained.
2. Evaluate every policy and the SFT policy they start from on the same held-out contexts with the
   same sampling seeds (the evaluation stage with ``samples_per_context`` and ``paired``), so each
   policy is compared with SFT context by context.
3. Write ``report.md`` / ``report.json``: per run the paired Delta R_emp, Delta Emp-F1 and
   Delta F_BERT against SFT with 95% bootstrap CIs and p-values, the KL to the reference, the mean
   response length, the empty-response rate, the reward evaluations it used and the minutes it
   trained; and the verdict the study asks for (every EmpRL seed's Delta R_emp CI above 0, the
   control's not).

With ``dpo_recipe`` set, EmpRL-DPO (``emprl.dpo``, docs/dpo.md) runs with the same seeds as a third
arm, evaluated the same way, so the table shows DPO beside PPO; the DPO recipe is sized to the PPO
recipe's number of reward evaluations (steps x batch size), and the report states both.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from emprl.config import load_recipe_values, parse_recipe
from emprl.errors import UserError, run_cli
from emprl.io import atomic_write_json, atomic_write_text
from emprl.pipeline import Stage, Step, default_jobs, run_steps

logger = logging.getLogger("emprl.study")
ARMS = ("empathy", "control", "dpo")
ARM_TITLES = {"empathy": "EmpRL (PPO)", "control": "w/o empathy reward", "dpo": "EmpRL-DPO"}
ARM_MODULES = {"empathy": "emprl.ppo", "control": "emprl.ppo", "dpo": "emprl.dpo"}
SFT_ROW = "SFT"


@dataclass
class RLStudyConfig:
    ppo_recipe: str = field(metadata={"help": "the EmpRL PPO recipe (its sft_model_path is the SFT row)",
                                      "existing_path": True})
    control_recipe: str = field(metadata={"help": "the control: the same PPO with the empathy reward weighted 0",
                                          "existing_path": True})
    evaluate_recipe: str = field(metadata={"help": "evaluation recipe (data, split, K, seeds, decoding); its "
                                                   "systems and paired keys are replaced by the study's",
                                           "existing_path": True})
    output_dir: str = "outputs/rl_study"
    seeds: list[int] = field(default_factory=lambda: [1, 2, 3], metadata={"help": "one PPO run per seed and arm"})
    ppo_overrides: list[str] = field(default_factory=list, metadata={
        "help": "extra --key value arguments for every PPO run, e.g. [--steps, '40']"})
    dpo_recipe: str | None = field(default=None, metadata={
        "help": "EmpRL-DPO recipe: a third arm with the same seeds (null: PPO and control only)",
        "existing_path": True})
    dpo_overrides: list[str] = field(default_factory=list, metadata={
        "help": "extra --key value arguments for every DPO run"})
    jobs: int | None = field(default=None, metadata={"help": "runs at once (default: 2 on a CPU machine)"})

    def __post_init__(self):
        if not self.seeds:
            raise ValueError("key 'seeds': expected at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"key 'seeds': seeds repeat: {self.seeds}")
        if self.jobs is not None and self.jobs < 1:
            raise ValueError(f"key 'jobs': expected a positive integer, got {self.jobs}")


def main(argv: list[str] | None = None) -> dict:
    (cfg,) = parse_recipe((RLStudyConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    sft = load_recipe_values(cfg.ppo_recipe).get("sft_model_path")
    if not sft:
        raise UserError(f"{cfg.ppo_recipe}: missing required key 'sft_model_path'")
    runs = plan_runs(cfg)
    python = sys.executable

    # 1. PPO runs, EmpRL and control, one per seed.
    started = time.time()
    minutes = run_steps([r.step for r in runs], lambda step: [python, "-m", step.stage.module, *step_args(step, cfg)],
                        jobs=cfg.jobs or default_jobs(), log_dir=os.path.join(cfg.output_dir, "logs"))
    # 2. Every policy against SFT, paired.
    systems = {SFT_ROW: sft, **{r.title: r.step.output_dir for r in runs}}
    paired = {r.title: SFT_ROW for r in runs}
    eval_dir = os.path.join(cfg.output_dir, "eval")
    command = [python, "-m", "emprl.evaluate", cfg.evaluate_recipe, "--systems", json.dumps(systems),
               "--paired", json.dumps(paired), "--output_dir", eval_dir]
    run_steps([Step(Stage("evaluate", "emprl.evaluate", "evaluate.yaml"), cfg.evaluate_recipe, eval_dir, True, ())],
              lambda _: command, jobs=1)
    # 3. The report.
    report = build_report(cfg, runs, eval_dir, minutes, (time.time() - started) / 60)
    atomic_write_json(os.path.join(cfg.output_dir, "report.json"), report)
    atomic_write_text(os.path.join(cfg.output_dir, "report.md"), report_markdown(report))
    print(report_markdown(report))
    print(f"emprl.study: report in {os.path.join(cfg.output_dir, 'report.md')}")
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
    for seed in cfg.seeds:
        for arm, recipe in zip(ARMS, (cfg.ppo_recipe, cfg.control_recipe, cfg.dpo_recipe)):
            if recipe is None:
                continue
            # Always started: the stage itself skips a run that is complete for the same recipe values.
            out = os.path.join(cfg.output_dir, f"{arm}_seed{seed}")
            runs.append(Run(arm, seed, Step(Stage(f"{arm} seed {seed}", ARM_MODULES[arm], f"{arm}_seed{seed}.yaml"),
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
    with open(os.path.join(eval_dir, "results.json"), encoding="utf-8") as fh:
        results = json.load(fh)
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
    verdict = _verdict(rows)
    return {"ppo_recipe": cfg.ppo_recipe, "control_recipe": cfg.control_recipe, "dpo_recipe": cfg.dpo_recipe,
            "evaluate_recipe": cfg.evaluate_recipe, "seeds": cfg.seeds, "ppo_overrides": cfg.ppo_overrides,
            "design": {"contexts": results.get("num_examples"), "seeds": results.get("seeds"),
                       "samples_per_context": (results.get("recipe") or {}).get("samples_per_context")},
            "rows": rows, "verdict": verdict,
            "minutes_total": total_minutes}


def _mean_of(system: dict, key: str):
    value = system.get(key)
    return value.get("mean") if isinstance(value, dict) else value


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


def _ci(d: dict) -> tuple[float, float] | None:
    return (d["ci_low"], d["ci_high"]) if d and "ci_low" in d else None


def _verdict(rows: list[dict]) -> dict:
    def r_emp_ci(row):
        return _ci(row["paired"].get("r_emp", {}))

    emp = [r for r in rows if r["arm"] == "empathy"]
    ctl = [r for r in rows if r["arm"] == "control"]
    emp_f1 = [r["paired"].get("emp_f1", {}).get("delta") for r in emp]
    dpo = [r for r in rows if r["arm"] == "dpo"]
    extra = {}
    if dpo:  # the criteria for DPO: R_emp CI above 0, F_BERT CI not wholly below 0
        extra = {"dpo_r_emp_ci_above_0_every_seed": all((r_emp_ci(r) or (0, 0))[0] > 0 for r in dpo),
                 "dpo_f_bert_ci_not_below_0_every_seed": all(
                     (_ci(r["paired"].get("f_bert", {})) or (-1, -1))[1] >= 0 for r in dpo)}
    return {**extra,
        "empathy_r_emp_ci_above_0_every_seed": bool(emp) and all((r_emp_ci(r) or (0, 0))[0] > 0 for r in emp),
        "empathy_mean_delta_emp_f1": (sum(emp_f1) / len(emp_f1)) if emp_f1 and None not in emp_f1 else None,
        "control_r_emp_ci_not_above_0": bool(ctl) and all((r_emp_ci(r) or (1, 1))[0] <= 0 for r in ctl),
    }


def _fmt_delta(d: dict, digits: int) -> str:
    if not d or "delta" not in d:
        return "–"
    return (f"{d['delta']:+.{digits}f} [{d['ci_low']:+.{digits}f}, {d['ci_high']:+.{digits}f}] "
            f"p={d.get('p_value', float('nan')):.3g}")


def _fmt(x, digits: int = 2) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def report_markdown(report: dict) -> str:
    design = report.get("design") or {}
    lines = [
        "# RL study: EmpRL against its control, paired with the SFT policy",
        "",
        f"PPO recipe `{report['ppo_recipe']}`, control `{report['control_recipe']}` (empathy reward weighted 0), "
        f"seeds {report['seeds']}{', overrides ' + ' '.join(report['ppo_overrides']) if report['ppo_overrides'] else ''}. "
        f"Evaluation `{report['evaluate_recipe']}`"
        + (f": {design.get('contexts')} contexts x {design.get('samples_per_context')} samples x "
           f"seeds {design.get('seeds')}" if design else "") + ".",
        "Delta = policy - SFT on the same contexts and sampling seeds, mean over contexts, 95% bootstrap CI "
        "over contexts, p from a paired test (see results.md of the evaluation for which).",
        "",
        "| run | Delta R_emp | Delta Emp-F1 | Delta F_BERT | KL to ref | length | empty | reward evals | minutes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in report["rows"]:
        p = r["paired"]
        lines.append(f"| {r['system']} | {_fmt_delta(p.get('r_emp', {}), 4)} | {_fmt_delta(p.get('emp_f1', {}), 2)} | "
                     f"{_fmt_delta(p.get('f_bert', {}), 4)} | {_fmt(r['kl'], 3)} | {_fmt(r['length'])} | "
                     f"{_fmt(r['empty_rate'], 3)} | {r.get('reward_evaluations') or '–'} | {_fmt(r['minutes'], 1)} |")
    v = report["verdict"]
    lines += [
        "",
        f"- EmpRL's Delta R_emp CI above 0 for every seed: **{'yes' if v['empathy_r_emp_ci_above_0_every_seed'] else 'no'}**",
        f"- EmpRL's mean Delta Emp-F1: **{_fmt(v['empathy_mean_delta_emp_f1'])}**",
        f"- control's Delta R_emp CI contains 0 or lies below it for every seed: "
        f"**{'yes' if v['control_r_emp_ci_not_above_0'] else 'no'}**",
        *([f"- EmpRL-DPO (`{report['dpo_recipe']}`): Delta R_emp CI above 0 for every seed: "
           f"**{'yes' if v['dpo_r_emp_ci_above_0_every_seed'] else 'no'}**; Delta F_BERT CI not wholly below 0 "
           f"for every seed: **{'yes' if v['dpo_f_bert_ci_not_below_0_every_seed'] else 'no'}**. Reward "
           "evaluations = samples scored by R_emp in training (PPO: steps x batch; DPO: contexts x K x rounds)"]
          if "dpo_r_emp_ci_above_0_every_seed" in v else []),
        f"- wall time: {report['minutes_total']:.1f} min",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    run_cli(main)

"""``make rl-study``: does PPO (and DPO) against R_emp raise empathy-level alignment, beyond seed noise?

    python -m emprl.study recipes/demo/rl_study.yaml [--seeds [11, 12]] [--jobs 2]
    python -m emprl.study --prerequisites recipes/demo/rl_study.yaml   (the pipeline targets it reads)

1. Train each arm once per seed, each into ``output_dir/<arm>_seed<k>``: EmpRL (the PPO recipe), the
   placebo (the same PPO against a shuffled context's gold levels: same reward scale, no information),
   optionally the control (empathy reward weighted 0) and EmpRL-DPO; up to ``jobs`` at once, one log
   per run in ``output_dir/logs``. A finished run (its stage stamp) is not retrained.
2. Evaluate every run and the SFT policy they start from in ONE evaluation call (SFT scored once), on
   the same held-out contexts with the same sampling seeds.
3. Write ``report.md`` / ``report.json`` and ``runs.json``, the record the report was built from
   (emprl.study.assemble; statistics: emprl.study.report; verdict and text: emprl.study.summary;
   docs/statistics.md): the trained runs pooled with a two-level bootstrap
   (runs, then contexts), Delta R_emp against SFT and against the placebo of the same seed with a
   sign-flip permutation p, runs with a positive delta, per-run CIs, probability of improvement and
   IQM; each independent judge's Delta Emp-F1 and level accuracy against the true levels; guardrails
   (F_BERT, empty replies, length, Dist-2); the variance components of R_emp and the design they call
   for; mean ± 95% CI over trained runs for every metric (the paper's kind of interval) beside the
   decoding-seed interval; the per-run table; a verdict line per criterion.
4. With ``results_dir`` set, export the evidence without models, to commit (emprl.study.export):
   ``python -m emprl.study.verdict RESULTS_DIR`` recomputes the statistics and the verdict from it.

With ``dpo_recipe`` set, EmpRL-DPO (``emprl.dpo``, docs/dpo.md) runs with the same seeds as another
arm, sized to the PPO recipe's number of reward evaluations (steps x batch size), and the report states both.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field

from emprl.common.errors import UserError, run_cli
from emprl.common.io import atomic_write_json, atomic_write_text, read_stage_stamp
from emprl.evaluate.formats import json_safe
from emprl.pipeline.config import load_recipe_values, parse_recipe
from emprl.pipeline.config_limits import DISTINCT, CheckedConfig, Limit, at_least
from emprl.pipeline.processes import run_steps
from emprl.pipeline.run import Step, default_jobs
from emprl.pipeline.stages import DPO, EVALUATE, PPO, Stage
from emprl.study.assemble import STUDY_KEYS, assemble_report, read_results
from emprl.study.export import export, policy_fingerprint
from emprl.study.report import ARM_TITLES, SFT_ROW, load_samples
from emprl.study.summary import report_markdown

logger = logging.getLogger("emprl.study")
ARM_KINDS = {"empathy": PPO, "placebo": PPO, "control": PPO, "dpo": DPO}  # the stage table's rows each arm runs
ARM_SEEDS = Limit(f"a mapping of arms ({', '.join(ARM_TITLES)}) to non-empty lists of different seeds",
                  lambda v: isinstance(v, dict) and all(arm in ARM_TITLES and DISTINCT.ok(seeds)
                                                        for arm, seeds in v.items()), numeric=False)


@dataclass
class RLStudyConfig(CheckedConfig):
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
                             metadata={"help": "one training run per seed and arm", "limit": DISTINCT})
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
                "DPO row (arms: empathy, placebo, control, dpo)", "limit": ARM_SEEDS})
    resamples: int = field(default=10_000, metadata={"help": "bootstrap and permutation resamples of the report",
                                                     "limit": at_least(100)})
    detectable_effect: float = field(default=0.012, metadata={
        "help": "the Delta R_emp the design is sized for (contexts x samples at 80% power, two-sided 0.05)"})
    prerequisites: list[str] = field(default_factory=list, metadata={
        "help": "pipeline stages (recipe file names) the study reads, run first by `make rl-study`"})
    jobs: int | None = field(default=None, metadata={"help": "runs at once (default: 2 on a CPU machine)"})
    results_dir: str | None = field(default=None, metadata={
        "help": "where to export the study's evidence without models, to commit (report, runs.json, the "
                "evaluation's results and per-sample files; emprl.study.export); null: no export"})
    primary_judge: str = field(default="oracle", metadata={
        "help": "the evaluation's independent judge whose level agreement with the true levels, EmpRL - placebo "
                "pooled, is the study's primary test (declared before the run; docs/statistics.md)"})

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
    record = study_record(cfg, runs, minutes, (time.time() - started) / 60)
    report = assemble_report(record, read_results(eval_dir), load_samples(eval_dir))
    text = report_markdown(report)
    # runs.json first: a report.json always has the record it was built from beside it
    atomic_write_json(os.path.join(cfg.output_dir, "runs.json"), json_safe(record))
    atomic_write_json(os.path.join(cfg.output_dir, "report.json"), json_safe(report))
    atomic_write_text(os.path.join(cfg.output_dir, "report.md"), text)
    print(text)
    print(f"emprl.study.run: report in {os.path.join(cfg.output_dir, 'report.md')}")
    if cfg.results_dir:
        export(cfg.output_dir, cfg.results_dir)
        print(f"emprl.study.run: evidence to commit in {cfg.results_dir} (recompute the verdict: "
              f"python -m emprl.study.verdict {cfg.results_dir})")
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


def study_record(cfg: RLStudyConfig, runs: list[Run], minutes: dict[str, float], total_minutes: float) -> dict:
    """runs.json: what the report reads of the recipe and of the run folders (metrics.json, which sit beside
    the models), each run's recipe values and overrides, and which SFT policy (its weights' hash) the SFT
    row scored, so the report can be rebuilt, and studies pooled, without the models."""
    rows = []
    for run in runs:
        metrics = _read_json(os.path.join(run.step.output_dir, "metrics.json"))
        rows.append({
            "arm": run.arm, "seed": run.seed, "system": run.title,
            # held-out KL at PPO's last evaluation; with its evaluation off, the last training batch's
            "kl": (metrics.get("final") or {}).get("kl", metrics.get("train_kl_last")),
            "minutes": metrics.get("minutes", minutes.get(run.step.stage.name)),  # training time, not a skip
            "reward_evaluations": reward_evaluations(cfg, run, metrics),
            "recipe": run.step.recipe_path, "recipe_values": load_recipe_values(run.step.recipe_path),
            "overrides": step_args(run.step, cfg)[1:],
            "recipe_hash": (read_stage_stamp(run.step.output_dir) or {}).get("recipe_hash"),
        })
    study = {**{key: getattr(cfg, key) for key in STUDY_KEYS}, "dpo_overrides": cfg.dpo_overrides,
             "arm_seeds": cfg.arm_seeds, "minutes_total": total_minutes}
    sft = load_recipe_values(cfg.ppo_recipe).get("sft_model_path")
    return {"study": study, "sft": policy_fingerprint(sft), "runs": rows}


def build_report(cfg: RLStudyConfig, runs: list[Run], eval_dir: str, minutes: dict[str, float],
                 total_minutes: float) -> dict:
    """The report from the config, the run folders and the evaluation (main keeps the record as well)."""
    return assemble_report(study_record(cfg, runs, minutes, total_minutes), read_results(eval_dir),
                           load_samples(eval_dir))


def _read_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return {}


if __name__ == "__main__":
    run_cli(main)

"""The RL study's report from its inputs alone: the study's record (``runs.json``: its settings and one row
per trained run, what the report reads from the recipe and the run folders) and the evaluation's files.

The study run (emprl.study.run) and the recomputation from committed results (emprl.study.verdict) both
call ``assemble_report``, so the statistics and the verdict come from the same code on either path.
Nothing here reads a model or a run folder.
"""

from __future__ import annotations

import os

from emprl.common.io import read_json
from emprl.study.report import Samples, pooled_statistics, trained_run_intervals
from emprl.study.summary import verdict

# What the report reads of the study's settings (RLStudyConfig keys) and of each run's training.
STUDY_KEYS = ("ppo_recipe", "placebo_recipe", "control_recipe", "dpo_recipe", "evaluate_recipe", "seeds",
              "choice_seeds", "primary_judge", "ppo_overrides", "resamples", "detectable_effect")
RUN_KEYS = ("arm", "seed", "system", "kl", "minutes", "reward_evaluations")


def read_results(eval_dir: str) -> dict:
    """The evaluation's results.json."""
    return read_json(os.path.join(eval_dir, "results.json"), "the evaluation's results")


def assemble_report(record: dict, results: dict, samples: Samples | None) -> dict:
    """report.json's content. ``record``: {"study": STUDY_KEYS and minutes_total, "runs": rows with RUN_KEYS}.
    The runs' order matters: the bootstrap gives the i-th run of an arm the i-th run stream."""
    study, runs = record["study"], record["runs"]
    paired = {entry["system"]: entry for entry in results.get("paired") or []}
    rows = []
    for run in runs:
        system = results.get("systems", {}).get(run["system"], {}).get("summary", {})
        rows.append({
            "arm": run["arm"], "seed": run["seed"], "system": run["system"],
            "paired": paired.get(run["system"], {}), "kl": run["kl"],
            "length": _mean_of(system, "length"), "empty_rate": _mean_of(system, "empty_rate"),
            "minutes": run["minutes"], "reward_evaluations": run["reward_evaluations"],
        })
    runs_by_arm: dict[str, list[tuple[int, str]]] = {}
    for run in runs:
        runs_by_arm.setdefault(run["arm"], []).append((run["seed"], run["system"]))
    pooled = pooled_statistics(runs_by_arm, samples, results, study["resamples"], study["detectable_effect"],
                               study["primary_judge"])
    report = {**{k: study[k] for k in ("ppo_recipe", "placebo_recipe", "control_recipe", "dpo_recipe",
                                       "evaluate_recipe", "seeds", "choice_seeds")},
              "all_seeds": sorted({run["seed"] for run in runs}), "primary_judge": study["primary_judge"],
              "ppo_overrides": study["ppo_overrides"], "resamples": study["resamples"],
              "design": {"contexts": results.get("num_examples"), "seeds": results.get("seeds"),
                         "samples_per_context": results.get("samples_per_context",
                                                            (results.get("recipe") or {}).get("samples_per_context"))},
              "rows": rows, "pooled": pooled, "trained_runs": trained_run_intervals(results, runs_by_arm),
              "minutes_total": study["minutes_total"]}
    report["verdict"] = verdict(report)
    return report


def _mean_of(system: dict, key: str):
    value = system.get(key)
    return value.get("mean") if isinstance(value, dict) else value

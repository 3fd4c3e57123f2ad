"""``make train-all``: every stage of an experiment, in order, each through ``accelerate launch``.

    python -m emprl.pipeline --recipe recipes/demo [--accelerate_config recipes/accelerate/cpu.yaml] [--force]

A stage is skipped when its output folder holds a ``stage.json`` stamp for the same recipe values
and no earlier stage ran in this invocation; ``--force`` reruns everything. Stages whose recipe file
the experiment does not have are left out (an experiment without ``ethreed.yaml`` has no baseline).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass

from emprl.config import load_recipe_values, recipe_file_hash
from emprl.errors import UserError, run_cli
from emprl.io import read_stage_stamp


@dataclass(frozen=True)
class Stage:
    name: str
    module: str
    recipe: str  # file name inside the experiment folder
    required: bool = True


# The paper's order: SFT, identifiers, gold-level labelling, PPO (and its ablations), the
# ETHREED baseline, then evaluation of every system side by side.
STAGES = (
    Stage("sft", "emprl.sft", "sft.yaml"),
    Stage("identifiers", "emprl.identifiers", "identifiers.yaml"),
    Stage("label", "emprl.label", "label.yaml"),
    Stage("ppo", "emprl.ppo", "ppo.yaml"),
    Stage("ppo (w/o KL)", "emprl.ppo", "ppo_no_kl.yaml", required=False),
    Stage("ppo (w/o empathy reward)", "emprl.ppo", "ppo_no_empathy.yaml", required=False),
    Stage("ethreed emotion labels", "emprl.emotion_classifier", "emotion_classifier.yaml", required=False),
    Stage("ethreed", "emprl.baselines.ethreed.train", "ethreed.yaml", required=False),
    Stage("evaluate", "emprl.evaluate", "evaluate.yaml"),
)


def plan(experiment: str, force: bool = False) -> list[tuple[Stage, str, str, bool]]:
    """(stage, recipe path, output_dir, run?) for each stage the experiment has."""
    if not os.path.isdir(experiment):
        raise UserError(f"{experiment}: experiment folder does not exist (expected recipes/<experiment>)")
    steps, upstream_ran = [], force
    for stage in STAGES:
        path = os.path.join(experiment, stage.recipe)
        if not os.path.isfile(path):
            if stage.required:
                raise UserError(f"{path}: recipe file does not exist (every experiment needs {stage.recipe})")
            continue
        output_dir = load_recipe_values(path).get("output_dir")
        if not output_dir:
            raise UserError(f"{path}: missing required key 'output_dir'")
        stamp = read_stage_stamp(output_dir)
        done = bool(stamp and stamp.get("complete") and stamp.get("recipe_hash") == recipe_file_hash(path))
        run = upstream_ran or not done
        upstream_ran = upstream_ran or run
        steps.append((stage, path, output_dir, run))
    return steps


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emprl.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="recipes/demo", help="experiment folder recipes/<experiment>")
    parser.add_argument("--accelerate_config", default="recipes/accelerate/cpu.yaml")
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and stop")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.accelerate_config):
        raise UserError(f"{args.accelerate_config}: accelerate config does not exist")

    steps = plan(args.recipe, args.force)
    launcher = [os.path.join(os.path.dirname(sys.executable), "accelerate"), "launch",
                "--config_file", args.accelerate_config]
    started = time.time()
    for stage, path, output_dir, run in steps:
        if not run:
            print(f"[train-all] {stage.name}: up to date in {output_dir}, skipped", flush=True)
            continue
        command = launcher + ["-m", stage.module, path]
        print(f"\n[train-all] {stage.name}: {shlex.join(command)}", flush=True)
        if args.dry_run:
            continue
        t0 = time.time()
        code = subprocess.call(command)
        if code != 0:
            print(f"[train-all] {stage.name} failed (exit {code}); fix it and rerun: finished stages are skipped",
                  file=sys.stderr)
            sys.exit(code)
        print(f"[train-all] {stage.name}: done in {(time.time() - t0) / 60:.1f} min", flush=True)
    if args.dry_run:
        return
    print(f"\n[train-all] all stages done in {(time.time() - started) / 60:.1f} min")
    _print_where(steps)


def _print_where(steps: list[tuple[Stage, str, str, bool]]) -> None:
    dirs = {stage.recipe: output_dir for stage, _, output_dir, _ in steps}
    python = shlex.quote(os.path.relpath(sys.executable))
    print(f"  results table:     {os.path.join(dirs['evaluate.yaml'], 'results.md')}")
    print(f"  side-by-side:      {os.path.join(dirs['evaluate.yaml'], 'examples.md')}")
    print(f"  PPO curves:        {os.path.join(dirs['ppo.yaml'], 'training_curves.png')}")
    print(f"  identifier report: {os.path.join(dirs['identifiers.yaml'], 'report.png')}")
    print(f"  chat with it:      {python} -m emprl.chat --model {dirs['ppo.yaml']}")


if __name__ == "__main__":
    run_cli(main)

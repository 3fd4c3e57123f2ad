"""``make train-all``: every stage of an experiment, each through ``emprl launch`` (accelerate's launcher).

    python -m emprl.pipeline --recipe recipes/demo [--accelerate_config recipes/accelerate/cpu.yaml]
                             [--jobs 2] [--force] [--dry_run]
    python -m emprl.pipeline --check --recipe DIR    every path a stage reads is written earlier or exists
    python -m emprl.pipeline --smoke --recipe DIR    the whole chain, a few steps, tiny models, demo data

Stages form a small graph (SFT and the identifiers are independent, PPO and its ablations need both,
the ETHREED baseline needs neither, evaluation needs everything). With ``--jobs N`` up to N stages
whose inputs are ready run at once, each with its share of the CPU threads and its output in
``<log_dir>/<stage>.log``; a stage that ends up running alone gets every thread. On a small CPU
machine two one-thread stages side by side finish sooner than the same stages one after the other
with two threads each: much of the work (token-by-token generation, recurrent steps) is too small
to keep two threads busy.

A stage is skipped when its output folder holds a ``stage.json`` stamp for the same recipe values,
the inputs it recorded there (data files, upstream stamps, models) are unchanged, and none of the
stages it reads from runs in this invocation; ``--force`` reruns everything. Stages
whose recipe file the experiment does not have are left out (no ``ethreed.yaml``: no baseline).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from dataclasses import dataclass

from emprl.common.errors import UserError, run_cli
from emprl.pipeline import stages as table
from emprl.pipeline.chain import on_demand
from emprl.pipeline.config import load_recipe_values, recipe_file_hash
from emprl.pipeline.lifecycle import stamp_is_current
from emprl.pipeline.processes import run_steps
from emprl.pipeline.stages import EVERYTHING, Stage


@dataclass
class Step:
    stage: Stage
    recipe_path: str
    output_dir: str
    run: bool
    after: tuple[str, ...]  # recipe files of this experiment's stages that must finish first


def plan(experiment: str, force: bool = False, stages: tuple[Stage, ...] | None = None,
         targets: list[str] | None = None) -> list[Step]:
    """One Step per stage the experiment has; ``run`` is false for a finished, unchanged stage.
    On-demand stages (the stage's flag, or the experiment's chain.yaml ``on_demand`` list) are planned
    only when ``targets`` names them or a stage that reads them."""
    if not os.path.isdir(experiment):
        raise UserError(f"{experiment}: experiment folder does not exist (expected recipes/<experiment>)")
    stages = table.STAGES if stages is None else stages
    present = {s.recipe: s for s in stages if os.path.isfile(os.path.join(experiment, s.recipe))}
    demand = {s.recipe for s in stages if s.on_demand} | set(on_demand(experiment))
    wanted = _closure([t for t in targets or [] if t in present],
                      lambda r: present if present[r].after == EVERYTHING else present[r].after)
    steps: list[Step] = []
    for stage in stages:
        path = os.path.join(experiment, stage.recipe)
        if not os.path.isfile(path):
            if stage.required:
                raise UserError(f"{path}: recipe file does not exist (every experiment needs {stage.recipe})")
            continue
        if stage.recipe in demand and stage.recipe not in wanted:
            continue
        output_dir = load_recipe_values(path).get("output_dir")
        if not output_dir:
            raise UserError(f"{path}: missing required key 'output_dir'")
        present = {s.stage.recipe: s for s in steps}
        after = tuple(present) if stage.after == EVERYTHING else tuple(r for r in stage.after if r in present)
        # finished for these recipe values AND the inputs it read then (data, upstream stamps, models)
        done = stamp_is_current(output_dir, recipe_file_hash(path))
        run = force or not done or any(present[r].run for r in after)
        steps.append(Step(stage, path, output_dir, run, after))
    return steps


def _closure(targets: list[str], after_of) -> set[str]:
    """``targets`` and every recipe they come after, directly or not (``after_of(recipe)``)."""
    wanted, todo = set(), list(targets)
    while todo:
        recipe = todo.pop()
        if recipe not in wanted:
            wanted.add(recipe)
            todo.extend(after_of(recipe))
    return wanted


def only_targets(steps: list[Step], targets: list[str]) -> list[Step]:
    """The steps that produce ``targets`` (recipe file names), in plan order."""
    by_recipe = {s.stage.recipe: s for s in steps}
    unknown = [t for t in targets if t not in by_recipe]
    if unknown:
        raise UserError(f"--targets: no stage reads {', '.join(unknown)} in this experiment "
                        f"(has {', '.join(by_recipe)})")
    wanted = _closure(targets, lambda r: by_recipe[r].after)
    return [s for s in steps if s.stage.recipe in wanted]


def default_jobs() -> int:
    """Two stages at once on a CPU machine with at least two cores; one on a GPU (they would share it)."""
    try:
        import torch

        if torch.cuda.is_available():
            return 1
    except ImportError:
        pass
    return 2 if len(os.sched_getaffinity(0)) >= 2 else 1


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emprl.pipeline", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", default="recipes/demo", help="experiment folder recipes/<experiment>")
    parser.add_argument("--accelerate_config", default="recipes/accelerate/cpu.yaml")
    parser.add_argument("--jobs", type=int, default=None,
                        help="stages run at once (default: 2 on a CPU machine with 2+ cores, 1 with a GPU)")
    parser.add_argument("--log_dir", default=None, help="stage logs when jobs > 1 (default: <outputs>/logs)")
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    parser.add_argument("--dry_run", action="store_true", help="print the plan and stop")
    parser.add_argument("--targets", nargs="+", default=None, metavar="RECIPE_FILE",
                        help="only these stages (recipe file names, e.g. t5_sft.yaml) and the stages they read from")
    parser.add_argument("--check", action="store_true",
                        help="check the chain (every path a stage reads is written by an earlier stage or exists)")
    parser.add_argument("--smoke", action="store_true",
                        help="run every stage a few steps with tiny models on the demo data (src/emprl/pipeline/smoke.py)")
    parser.add_argument("--smoke_root", default=None,
                        help="smoke outputs (default: a new temporary folder, removed when the smoke passes)")
    args = parser.parse_args(argv)
    if args.check:
        check_command(args.recipe)
        return
    if not os.path.isfile(args.accelerate_config):
        raise UserError(f"{args.accelerate_config}: accelerate config does not exist")
    if args.jobs is not None and args.jobs < 1:
        raise UserError(f"--jobs: expected a positive integer, got {args.jobs}")

    # `emprl launch` (accelerate's launcher inside): it passes a stage's exit code through, and a
    # SIGTERM/SIGINT on to the stage, which saves before it stops (docs/lifecycle.md, "Signals").
    launcher = [sys.executable, "-m", "emprl.pipeline.cli", "launch", "--config_file", args.accelerate_config]
    if args.smoke:
        smoke_command(args.recipe, launcher, args.jobs or default_jobs(), args.smoke_root)
        return
    steps = plan(args.recipe, args.force, targets=args.targets)
    left_out = () if args.targets else on_demand(args.recipe)
    if args.targets:
        steps = only_targets(steps, args.targets)
    if left_out:
        print(f"[train-all] left out (on_demand in chain.yaml; run them with --targets): {', '.join(left_out)}",
              flush=True)

    def command_for(step: Step) -> list[str]:
        return launcher + [step.stage.kind.command, step.recipe_path]

    if args.dry_run:
        for step in steps:
            after = f"  (after {', '.join(step.after)})" if step.after else ""
            state = "run" if step.run else f"up to date in {step.output_dir}, skipped"
            print(f"[train-all] {step.stage.name}: {state}{after}\n    {shlex.join(command_for(step))}")
        return
    for step in steps:
        if not step.run:
            print(f"[train-all] {step.stage.name}: up to date in {step.output_dir}, skipped", flush=True)
    jobs = args.jobs or default_jobs()
    log_dir = args.log_dir or os.path.join(_common_parent([s.output_dir for s in steps]), "logs")
    started = time.time()
    minutes = run_steps(steps, command_for, jobs=jobs, log_dir=log_dir)
    total = (time.time() - started) / 60
    print(f"\n[train-all] all stages done in {total:.1f} min ({jobs} at a time)")
    for name, m in minutes.items():
        print(f"  {name:<28} {m:5.1f} min")
    if not args.targets:
        _print_where(steps)


def check_command(experiment: str) -> None:
    from emprl.pipeline.chain import check_chain

    links = check_chain(experiment)
    print(f"[check] {experiment}: {len(links)} stages, every path they read is written earlier or exists")


def smoke_command(experiment: str, launcher: list[str], jobs: int, root: str | None = None) -> None:
    """The chain (with the stages of its ``after`` experiments it needs) at smoke size, through the
    same stage commands as train-all, under ``root``; fails like train-all on a failed stage."""
    import shutil
    import tempfile

    from emprl.pipeline.chain import check_chain, needed_links, writer_of
    from emprl.pipeline.chain import path_of as spec_path
    from emprl.pipeline.smoke import move_outputs, write_smoke_recipes

    links = needed_links(experiment, check_chain(experiment))
    made_root = root is None
    root = os.path.abspath(root or tempfile.mkdtemp(prefix="emprl-smoke-"))
    started = time.time()
    rewritten = write_smoke_recipes(links, root)
    print(f"[smoke] {experiment}: {len(links)} stages under {root} (tiny models built in "
          f"{time.time() - started:.0f} s)", flush=True)
    # Stage keys unique across experiments (two folders may both have sft.yaml).
    keys = {id(link): f"{os.path.basename(os.path.normpath(link.experiment))}__{link.stage.recipe}"
            for link in links}
    steps = []
    for i, (link, path) in enumerate(rewritten):
        writers = {id(writer_of(spec_path(spec), links[:i])) for _, spec in link.reads}
        stage = Stage(keys[id(link)].replace("__", ": "), link.stage.kind, keys[id(link)])
        steps.append(Step(stage, path, move_outputs(link.output_dir, root), True,
                          tuple(keys[id(w)] for w in links[:i] if id(w) in writers)))
    minutes = run_steps(steps, lambda step: launcher + [step.stage.kind.command, step.recipe_path], jobs=jobs,
                        log_dir=os.path.join(root, "logs"))
    total = (time.time() - started) / 60
    # CPU seconds of the stage processes: what the run costs on a machine that other work also loads.
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"[smoke] {experiment}: all {len(steps)} stages passed in {total:.1f} min ({jobs} at a time; "
          f"stage processes used {usage.ru_utime + usage.ru_stime:.0f} CPU s): "
          + ", ".join(f"{name} {m * 60:.0f} s" for name, m in minutes.items()), flush=True)
    if made_root:
        shutil.rmtree(root, ignore_errors=True)


def _common_parent(paths: list[str]) -> str:
    try:
        return os.path.relpath(os.path.commonpath([os.path.abspath(p) for p in paths]))
    except ValueError:  # different drives
        return "."


def _print_where(steps: list[Step]) -> None:
    """Where the results of the stages that ran are (a folder may lack some stages, or leave them out)."""
    dirs = {s.stage.recipe: s.output_dir for s in steps}
    python = shlex.quote(os.path.relpath(sys.executable))
    where = (("results table:", "evaluate.yaml", "results.md"), ("side-by-side:", "evaluate.yaml", "examples.md"),
             ("PPO curves:", "ppo.yaml", "training_curves.png"),
             ("T5 lane curves:", "t5_ppo.yaml", "training_curves.png"),
             ("identifier report:", "identifiers.yaml", "report.png"))
    for label, recipe, name in where:
        if recipe in dirs:
            print(f"  {label:<19}{os.path.join(dirs[recipe], name)}")
    policy = next((dirs[r] for r in ("ppo.yaml", "t5_ppo.yaml") if r in dirs), None)
    if policy:
        print(f"  {'chat with it:':<19}{python} -m emprl.chat --model {policy}")
        print(f"  {'compare, rate:':<19}{python} -m emprl.app --outputs {os.path.dirname(policy) or '.'}"
              "   (the web page, docs/app.md)")


if __name__ == "__main__":
    run_cli(main)

"""`make train-all`'s driver: stage order, skipping finished stages, rerunning downstream ones."""

import subprocess
import sys

import pytest

from emprl.config import recipe_file_hash
from emprl.errors import UserError
from emprl.io import write_stage_stamp
from emprl.pipeline import plan

REQUIRED = ("sft", "identifiers", "label", "ppo", "evaluate")


def make_experiment(tmp_path, extra=()):
    exp = tmp_path / "exp"
    exp.mkdir()
    for name in REQUIRED + tuple(extra):
        (exp / f"{name}.yaml").write_text(f"output_dir: {tmp_path}/out/{name}\nseed: 1\n")
    return exp


def stamp(tmp_path, name, recipe):
    from dataclasses import dataclass

    @dataclass
    class Cfg:
        output_dir: str = ""
        seed: int = 0

    from emprl.config import parse_recipe

    (cfg,) = parse_recipe((Cfg,), [str(recipe)])
    write_stage_stamp(f"{tmp_path}/out/{name}", name, cfg)


def names(steps):
    return [(s.recipe, run) for s, _, _, run in steps]


def test_fresh_experiment_runs_every_stage_in_order(tmp_path):
    exp = make_experiment(tmp_path, extra=("ppo_no_kl",))
    steps = plan(str(exp))
    assert names(steps) == [("sft.yaml", True), ("identifiers.yaml", True), ("label.yaml", True),
                            ("ppo.yaml", True), ("ppo_no_kl.yaml", True), ("evaluate.yaml", True)]


def test_finished_stages_are_skipped_until_a_recipe_changes(tmp_path):
    exp = make_experiment(tmp_path)
    for name in REQUIRED:
        stamp(tmp_path, name, exp / f"{name}.yaml")
        assert recipe_file_hash(str(exp / f"{name}.yaml"))
    assert all(not run for _, run in names(plan(str(exp))))
    assert all(run for _, run in names(plan(str(exp), force=True)))
    # Changing the identifiers recipe reruns it and everything downstream, not SFT.
    (exp / "identifiers.yaml").write_text(f"output_dir: {tmp_path}/out/identifiers\nseed: 2\n")
    assert names(plan(str(exp))) == [("sft.yaml", False), ("identifiers.yaml", True), ("label.yaml", True),
                                     ("ppo.yaml", True), ("evaluate.yaml", True)]


def test_missing_required_recipe_is_a_user_error(tmp_path):
    exp = make_experiment(tmp_path)
    (exp / "label.yaml").unlink()
    with pytest.raises(UserError, match=r"label.yaml: recipe file does not exist"):
        plan(str(exp))


def test_dry_run_prints_accelerate_commands(tmp_path):
    exp = make_experiment(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "emprl.pipeline", "--recipe", str(exp), "--dry_run"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("launch --config_file recipes/accelerate/cpu.yaml -m emprl.") == 5

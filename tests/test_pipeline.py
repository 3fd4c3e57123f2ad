"""`make train-all`'s driver: stage order, skipping finished stages, rerunning downstream ones."""

import os
import subprocess
import sys

import pytest

from emprl.common.errors import UserError
from emprl.common.io import write_stage_stamp
from emprl.pipeline.config import recipe_file_hash
from emprl.pipeline.processes import run_steps
from emprl.pipeline.run import Step, plan
from emprl.pipeline.stages import Stage, StageKind

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

    from emprl.pipeline.config import parse_recipe

    (cfg,) = parse_recipe((Cfg,), [str(recipe)])
    write_stage_stamp(f"{tmp_path}/out/{name}", name, cfg, inputs={})  # read nothing beyond its recipe


def names(steps):
    return [(s.stage.recipe, s.run) for s in steps]


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
    # Changing the identifiers recipe reruns it and what reads its output, not SFT.
    (exp / "identifiers.yaml").write_text(f"output_dir: {tmp_path}/out/identifiers\nseed: 2\n")
    assert names(plan(str(exp))) == [("sft.yaml", False), ("identifiers.yaml", True), ("label.yaml", True),
                                     ("ppo.yaml", True), ("evaluate.yaml", True)]


def test_a_rerun_reaches_only_the_stages_that_read_its_output(tmp_path):
    exp = make_experiment(tmp_path, extra=("emotion_classifier", "ethreed"))
    for name in REQUIRED + ("emotion_classifier", "ethreed"):
        stamp(tmp_path, name, exp / f"{name}.yaml")
    (exp / "emotion_classifier.yaml").write_text(f"output_dir: {tmp_path}/out/emotion_classifier\nseed: 5\n")
    steps = plan(str(exp))
    assert [s.stage.recipe for s in steps if s.run] == ["emotion_classifier.yaml", "ethreed.yaml", "evaluate.yaml"]
    assert next(s for s in steps if s.stage.recipe == "evaluate.yaml").after == (
        "sft.yaml", "identifiers.yaml", "label.yaml", "ppo.yaml", "emotion_classifier.yaml", "ethreed.yaml")


def test_missing_required_recipe_is_a_user_error(tmp_path):
    exp = make_experiment(tmp_path)
    (exp / "label.yaml").unlink()
    with pytest.raises(UserError, match=r"label.yaml: recipe file does not exist"):
        plan(str(exp))


def test_dry_run_prints_launch_commands(tmp_path):
    exp = make_experiment(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "emprl.pipeline", "--recipe", str(exp), "--dry_run"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.count("-m emprl.pipeline.cli launch --config_file recipes/accelerate/cpu.yaml ") == 5


# --- running stages side by side -------------------------------------------------------------------
def fake_steps(tmp_path, spec):
    """spec: (name, after, exit code, seconds). Each fake stage records when it ran and its threads."""
    steps = [Step(Stage(name, StageKind(name, "x", ()), f"{name}.yaml"), "", str(tmp_path / name), True,
                  tuple(f"{a}.yaml" for a in after)) for name, after, _, _ in spec]
    behaviour = {name: (code, seconds) for name, _, code, seconds in spec}

    def command_for(step):
        code, seconds = behaviour[step.stage.name]
        script = (f"import os, sys, time, json; t0 = time.time(); time.sleep({seconds}); "
                  f"print('working on {step.stage.name}'); "
                  f"print('emprl: error: bad key' if {code} else '', file=sys.stderr); print('launcher noise\\n' * 30); "
                  f"open({str(tmp_path / step.stage.name)!r} + '.json', 'w').write(json.dumps("
                  f"[t0, time.time(), os.environ.get('OMP_NUM_THREADS')])); sys.exit({code})")
        return [sys.executable, "-c", script]
    return steps, command_for


def ran(tmp_path, name):
    import json

    path = tmp_path / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def test_independent_stages_run_side_by_side_and_dependants_wait(tmp_path, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    steps, command_for = fake_steps(tmp_path, [("a", (), 0, 1.0), ("b", (), 0, 1.0), ("c", ("a", "b"), 0, 0.1)])
    minutes = run_steps(steps, command_for, jobs=2, log_dir=str(tmp_path / "logs"), cpus=2, poll_s=0.05)
    a, b, c = (ran(tmp_path, n) for n in "abc")
    assert b[0] < a[1] and a[0] < b[1]          # a and b overlapped
    assert c[0] >= max(a[1], b[1])              # c waited for both
    assert a[2] == b[2] == "1" and c[2] == "2"  # a share of the cores each; c ran alone with all of them
    assert set(minutes) == {"a", "b", "c"}
    assert "working on a" in (tmp_path / "logs" / "a.log").read_text()


def test_one_job_runs_stages_one_after_the_other(tmp_path):
    steps, command_for = fake_steps(tmp_path, [("a", (), 0, 0.3), ("b", (), 0, 0.3)])
    run_steps(steps, command_for, jobs=1, cpus=2, poll_s=0.05)
    a, b = ran(tmp_path, "a"), ran(tmp_path, "b")
    assert b[0] >= a[1]


def test_a_failed_stage_stops_what_needs_it_and_reports_its_log(tmp_path, capsys):
    steps, command_for = fake_steps(tmp_path, [("a", (), 3, 0.1), ("b", (), 0, 1.0), ("c", ("a",), 0, 0.1),
                                               ("d", ("b",), 0, 0.1)])
    with pytest.raises(SystemExit) as exit_info:
        run_steps(steps, command_for, jobs=2, log_dir=str(tmp_path / "logs"), cpus=2, poll_s=0.05)
    assert exit_info.value.code == 3
    assert ran(tmp_path, "b") is not None                      # the running stage was let finish
    assert ran(tmp_path, "c") is None and ran(tmp_path, "d") is None  # nothing new started
    err = capsys.readouterr().err
    assert "a failed (exit 3)" in err and "emprl: error: bad key" in err and "a.log" in err


def test_a_signal_goes_on_to_the_running_stage_and_its_code_comes_back(tmp_path, capsys):
    """Ctrl-C or SIGTERM to train-all: the running stage gets it (and saves, here: writes a file), nothing
    new starts, and train-all exits with the signal's code (issue 26)."""
    import signal
    import threading

    ready = tmp_path / "ready"
    steps, _ = fake_steps(tmp_path, [("a", (), 0, 0), ("b", ("a",), 0, 0)])
    script = ("import signal, sys, time, pathlib; "
              "signal.signal(signal.SIGTERM, lambda s, f: (pathlib.Path(sys.argv[1] + '.saved').write_text('x'), "
              "sys.exit(143))); pathlib.Path(sys.argv[2]).write_text('x'); time.sleep(60)")

    def command_for(step):
        return [sys.executable, "-c", script, str(tmp_path / step.stage.name), str(ready)]

    def signal_when_ready():
        while not ready.exists():
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=signal_when_ready, daemon=True).start()
    with pytest.raises(SystemExit) as exit_info:
        run_steps(steps, command_for, jobs=1, cpus=1, poll_s=0.05)
    assert exit_info.value.code == 143
    assert (tmp_path / "a.saved").exists() and not (tmp_path / "b.saved").exists()
    err = capsys.readouterr().err
    assert "a: stopped after saving a checkpoint (exit 143)" in err and "rerun the same command" in err


def test_targets_keep_only_the_stages_they_read_from(tmp_path):
    from emprl.common.errors import UserError
    from emprl.pipeline.run import Step, only_targets
    from emprl.pipeline.stages import STAGES

    steps = [Step(s, f"{tmp_path}/{s.recipe}", f"{tmp_path}/out/{s.recipe}", True,
                  tuple(r for r in s.after if r != "*")) for s in STAGES]
    kept = [s.stage.recipe for s in only_targets(steps, ["t5_ppo.yaml"])]
    assert kept == ["identifiers.yaml", "t5_init.yaml", "t5_sft.yaml", "label.yaml", "t5_ppo.yaml"]
    with pytest.raises(UserError, match="no stage reads nope.yaml"):
        only_targets(steps, ["nope.yaml"])


def test_on_demand_stages_are_left_out_of_train_all_unless_targeted(tmp_path):
    exp = make_experiment(tmp_path, extra=("ppo_no_kl",))
    (exp / "chain.yaml").write_text("on_demand: [ppo_no_kl.yaml]\n")
    proc = subprocess.run([sys.executable, "-m", "emprl.pipeline", "--recipe", str(exp), "--dry_run"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ppo_no_kl" not in proc.stdout.split("left out")[1].split("\n", 1)[1]
    assert "left out (on_demand in chain.yaml" in proc.stdout and proc.stdout.count("-m emprl.") == 5
    proc = subprocess.run([sys.executable, "-m", "emprl.pipeline", "--recipe", str(exp), "--dry_run",
                           "--targets", "ppo_no_kl.yaml"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ppo_no_kl.yaml" in proc.stdout and "left out" not in proc.stdout
    (exp / "chain.yaml").write_text("on_demand: [nope.yaml]\n")
    proc = subprocess.run([sys.executable, "-m", "emprl.pipeline", "--recipe", str(exp), "--dry_run"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "key 'on_demand'" in proc.stderr and "nope.yaml" in proc.stderr

"""The study's evidence without models (emprl.study.export) and its verdict recomputed from the committed
files alone (emprl.study.verdict): what the export writes, report.json reproduced exactly, folders of
disjoint seeds pooled into the same result as one folder, and the refusals. No model is trained: the
evaluation is test_study's fixture, the training runs leave only the metrics.json the report reads."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
from test_study import ROOT, write_fixture_eval

from emprl.common.errors import run_cli

EXPORTED = {"report.md", "report.json", "runs.json", "export.json", "eval/results.json", "eval/contexts.jsonl",
            "eval/samples.jsonl.gz"}
SEEDS = {"a": [11, 12], "b": [13, 14], "all": [11, 12, 13, 14]}


def subset_eval(master: str, out: str, systems) -> None:
    """The master evaluation cut down to ``systems``, as if the study had evaluated only those."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(master, "results.json")) as fh:
        results = json.load(fh)
    results["systems"] = {n: s for n, s in results["systems"].items() if n in systems}
    results["paired"] = [p for p in results["paired"] if p["system"] in systems]
    with open(os.path.join(out, "results.json"), "w") as fh:
        json.dump(results, fh)
    with open(os.path.join(master, "samples.jsonl")) as src, open(os.path.join(out, "samples.jsonl"), "w") as dst:
        dst.writelines(line for line in src if json.loads(line)["system"] in systems)
    shutil.copyfile(os.path.join(master, "contexts.jsonl"), os.path.join(out, "contexts.jsonl"))


def run_study(mp, root, name: str) -> None:
    """``python -m emprl.study`` with seeds SEEDS[name] into root/name, exported to root/name_results."""
    from emprl.study import run as study

    def fake_run_steps(steps, command_for, jobs=1, log_dir=None):
        for step in steps:
            command = command_for(step)
            if "emprl.evaluate" in command:
                subset_eval(str(root / "master"), command[command.index("--output_dir") + 1],
                            json.loads(command[command.index("--systems") + 1]))
            else:
                os.makedirs(step.output_dir, exist_ok=True)
                with open(os.path.join(step.output_dir, "metrics.json"), "w") as fh:
                    json.dump({"final": {"kl": 0.25}, "minutes": 3.0}, fh)
        return {}

    mp.setattr(study, "run_steps", fake_run_steps)
    mp.chdir(ROOT)
    study.main(["recipes/demo/rl_study.yaml", "--output_dir", str(root / name), "--ppo_recipe", str(root / "ppo.yaml"),
                "--dpo_recipe", "null", "--control_recipe", "null", "--resamples", "200",
                "--seeds", json.dumps(SEEDS[name]), "--results_dir", str(root / f"{name}_results")])


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    """One master evaluation of SFT and EmpRL / placebo on seeds 11-14 (EmpRL better by the oracle), an SFT
    folder with weights, and three studies on it, each exported: seeds 11-12 (a), 13-14 (b), 11-14 (all)."""
    root = tmp_path_factory.mktemp("studies")
    systems = {"SFT": (0.0, 0.5)}
    for seed in SEEDS["all"]:
        systems[f"EmpRL (PPO), seed {seed}"] = (0.05, 0.8)
        systems[f"placebo (shuffled gold), seed {seed}"] = (0.0, 0.5)
    write_fixture_eval(root / "master", systems)
    (root / "sft").mkdir()
    (root / "sft" / "model.safetensors").write_bytes(b"the SFT policy's weights")
    (root / "ppo.yaml").write_text(f"base: {ROOT}/recipes/demo/t5_ppo.yaml\nsft_model_path: {root / 'sft'}\n")
    with pytest.MonkeyPatch.context() as mp:
        for name in SEEDS:
            run_study(mp, root, name)
    return root


def _files(folder) -> set[str]:
    return {os.path.relpath(os.path.join(d, n), folder) for d, _, names in os.walk(folder) for n in names}


def test_export_holds_what_the_report_read_and_no_model(root, capsys):
    from emprl.study.export import main as export_main

    out, study = root / "a_results", root / "a"
    assert _files(out) == EXPORTED
    for name in ("report.md", "report.json", "eval/results.json", "eval/contexts.jsonl"):
        assert (out / name).read_bytes() == (study / name).read_bytes()
    packed = (out / "eval" / "samples.jsonl.gz").read_bytes()
    assert packed[4:8] == b"\0\0\0\0" and gzip.decompress(packed) == (study / "eval" / "samples.jsonl").read_bytes()
    record = json.loads((out / "runs.json").read_text())
    assert [(r["arm"], r["seed"], r["kl"], r["minutes"]) for r in record["runs"]] == [
        ("empathy", 11, 0.25, 3.0), ("placebo", 11, 0.25, 3.0), ("empathy", 12, 0.25, 3.0), ("placebo", 12, 0.25, 3.0)]
    first = record["runs"][0]
    assert first["system"] == "EmpRL (PPO), seed 11" and first["reward_evaluations"] and "--seed" in first["overrides"]
    assert first["recipe_values"]["sft_model_path"] == str(root / "sft") and record["sft"]["weights_sha256"]
    assert record["study"]["seeds"] == [11, 12] and record["study"]["primary_judge"] == "oracle"
    # the command again, into the folder it made: replaced whole, the same bytes
    before = {name: (out / name).read_bytes() for name in EXPORTED}
    export_main([str(study), str(out)])
    assert {name: (out / name).read_bytes() for name in EXPORTED} == before
    assert "python -m emprl.study.verdict" in capsys.readouterr().out


def test_the_verdict_is_recomputed_exactly_from_the_exported_files_alone(root, tmp_path, capsys):
    from emprl.study.verdict import main as verdict_main

    out = tmp_path / "results"
    shutil.copytree(root / "a_results", out)  # away from the study folder and its run folders
    committed = json.loads((out / "report.json").read_text())
    capsys.readouterr()
    report = verdict_main([str(out)])
    printed = capsys.readouterr().out
    assert report["verdict"] == committed["verdict"] and report == committed
    assert (out / "report.md").read_text() in printed
    assert "the recomputed verdict equals the committed one" in printed and "so does every other figure" in printed
    verdict_main([str(out), "--resamples", "100"])
    assert "not compared" in capsys.readouterr().out
    # a committed verdict that the files do not give: named, exit 1
    committed["verdict"][0]["met"] = not committed["verdict"][0]["met"]
    (out / "report.json").write_text(json.dumps(committed))
    with pytest.raises(SystemExit) as exit_:
        verdict_main([str(out)])
    assert exit_.value.code == 1 and "DIFFERS" in capsys.readouterr().out


def test_the_command_imports_no_torch(root):
    code = ("import runpy, sys\ntry:\n    runpy.run_module('emprl.study.verdict', run_name='__main__')\n"
            "finally:\n    print('torch imported:', 'torch' in sys.modules)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code, str(root / "a_results")], capture_output=True, text=True,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "torch imported: False" in done.stdout and "verdict equals the committed one" in done.stdout


def test_pooled_folders_of_disjoint_seeds_equal_one_folder_of_all_runs(root, capsys):
    from emprl.study.verdict import main as verdict_main

    def without_wall_time(report):
        return {k: v for k, v in report.items() if k != "minutes_total"}

    whole = verdict_main([str(root / "all_results")])
    pooled = verdict_main([str(root / "a_results"), str(root / "b_results")])
    assert "pooled 2 folders (8 runs" in capsys.readouterr().out
    assert without_wall_time(pooled) == without_wall_time(whole)
    assert pooled["minutes_total"] == pytest.approx(sum(
        json.loads((root / f"{n}_results" / "runs.json").read_text())["study"]["minutes_total"] for n in "ab"))
    assert verdict_main([str(root / "b_results"), str(root / "a_results")]) == pooled  # the folders' order
    assert [r["seed"] for r in whole["rows"]] == [11, 11, 12, 12, 13, 13, 14, 14]


def _refused(main, argv, capsys) -> str:
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        run_cli(main, argv)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.startswith("emprl: error: ") and err.count("\n") == 1
    return err


def test_folders_that_cannot_be_pooled_are_one_line_errors(root, tmp_path, capsys):
    from emprl.study.verdict import main as verdict_main

    a, b = str(root / "a_results"), tmp_path / "b"
    shutil.copytree(root / "b_results", b)
    contexts = (b / "eval" / "contexts.jsonl").read_text().splitlines()
    first = json.loads(contexts[0])
    first["gold"] = [(level + 1) % 3 for level in first["gold"]]
    (b / "eval" / "contexts.jsonl").write_text("\n".join([json.dumps(first), *contexts[1:]]) + "\n")
    assert "contexts.jsonl differs" in _refused(verdict_main, [a, str(b)], capsys)

    shutil.copytree(root / "a_results", tmp_path / "a_again")
    err = _refused(verdict_main, [a, str(tmp_path / "a_again")], capsys)
    assert "EmpRL (PPO), seed 11" in err and a in err and str(tmp_path / "a_again") in err

    other_sft = tmp_path / "other_sft"
    shutil.copytree(root / "b_results", other_sft)
    record = json.loads((other_sft / "runs.json").read_text())
    record["sft"]["weights_sha256"] = "0" * 64  # the same SFT path, retrained
    (other_sft / "runs.json").write_text(json.dumps(record))
    assert "another SFT policy" in _refused(verdict_main, [a, str(other_sft)], capsys)


def test_export_replaces_only_a_folder_it_made(root, tmp_path, capsys):
    from emprl.study.export import main as export_main

    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert "not written by emprl.study.export" in _refused(export_main, [str(root / "a"), str(foreign)], capsys)
    assert _files(foreign) == {"notes.txt"}

    ours = tmp_path / "ours"
    shutil.copytree(root / "a_results", ours)
    (ours / "eval" / "extra.txt").write_text("added by hand")
    assert "eval/extra.txt" in _refused(export_main, [str(root / "a"), str(ours)], capsys)
    assert (ours / "eval" / "extra.txt").is_file()
    assert "not a finished RL study" in _refused(export_main, [str(tmp_path / "nothing"), str(tmp_path / "x")], capsys)
    assert not (tmp_path / "x").exists()


def test_a_study_finished_before_runs_json_exports_from_its_report(root, tmp_path, capsys):
    """An older study folder has no runs.json: the record comes from report.json, and reproduces it."""
    from emprl.study.export import main as export_main
    from emprl.study.verdict import main as verdict_main

    study = tmp_path / "study"
    shutil.copytree(root / "a", study)
    os.remove(study / "runs.json")
    export_main([str(study), str(tmp_path / "results")])
    record = json.loads((tmp_path / "results" / "runs.json").read_text())
    assert record["study"]["detectable_effect"] == pytest.approx(0.012) and len(record["runs"]) == 4
    assert record["sft"] == {"path": None, "weights_sha256": None}  # the fixture's results.json names no source
    committed = json.loads((study / "report.json").read_text())
    assert verdict_main([str(tmp_path / "results")]) == committed
    assert "so does every other figure" in capsys.readouterr().out


def test_figures_equal_up_to_rounding_but_not_beyond():
    from emprl.study.verdict import same

    assert same({"a": [0.1 + 0.2, 1]}, {"a": [0.3, 1]})  # last-digit differences (thread count) are not a change
    assert not same({"a": [0.3001, 1]}, {"a": [0.3, 1]})
    assert not same({"a": 1.0}, {"a": 1.0, "b": 2})
    assert not same([0.3], [0.3, 0.3]) and same(float("nan"), float("nan"))

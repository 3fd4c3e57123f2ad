"""Bad inputs and faults (issue 13), one test per case. Each one that refuses asserts exit code 2,
a single `emprl: error:` line, and that the files of an earlier finished run (built directly as
folders, no training) are byte-identical afterwards."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys

import pytest
import tiny
import yaml
from test_evaluate import make_identifiers, write_ed
from test_ppo import build_assets
from test_ppo import write_recipe as write_ppo_recipe
from test_readers import write_epitome

from emprl.common.errors import run_cli
from emprl.common.io import write_stage_stamp
from emprl.pipeline.lifecycle import fingerprint_inputs

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ("sft", "identifiers", "label", "ppo", "evaluate")


# -- helpers -----------------------------------------------------------------------------------------------


def snapshot(folder) -> dict[str, str]:
    """sha256 of every file under ``folder`` (hidden ones too), by relative path."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            path = os.path.join(root, name)
            with open(path, "rb") as fh:
                out[os.path.relpath(path, folder)] = hashlib.sha256(fh.read()).hexdigest()
    return out


def refused(main, argv, capsys) -> str:
    """Run a command as its console entry does; it must exit 2 with one error line and no traceback
    (``capsys`` or ``capfd``). Returns the line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(main, [str(a) for a in argv])
    err = capsys.readouterr().err
    assert info.value.code == 2, err
    ours = [line for line in err.splitlines() if line.startswith("emprl: error:")]
    assert len(ours) == 1 and "Traceback" not in err and "CalledProcessError" not in err, err
    return ours[0]


def fake_finished_run(folder, stage: str, extra_files=()) -> None:
    """A finished stage folder: a few result files and the stage's stamp."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "metrics.json"), "w") as fh:
        json.dump({"stage": stage, "score": 0.5}, fh)
    with open(os.path.join(folder, "model.safetensors"), "wb") as fh:
        fh.write(os.urandom(2048))
    for name in extra_files:
        os.makedirs(os.path.join(folder, os.path.dirname(name)), exist_ok=True)
        with open(os.path.join(folder, name), "wb") as fh:
            fh.write(os.urandom(256))
    with open(os.path.join(folder, "stage.json"), "w") as fh:
        json.dump({"stage": stage, "recipe_hash": "0123456789abcdef", "complete": True, "inputs": {}}, fh)


@pytest.fixture
def experiment(tmp_path):
    """outputs/<experiment> after a finished run: one folder per stage, each with its stamp."""
    exp = tmp_path / "outputs" / "demo"
    for stage in STAGES:
        fake_finished_run(exp / stage, stage, extra_files=("best/model.safetensors", "checkpoint-2/x.pt")
                          if stage == "ppo" else ())
    return exp


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    """Tiny models, identifiers, labelled data, ED and EPITOME files: the inputs stages validate."""
    root = tmp_path_factory.mktemp("fault_assets")
    out = build_assets(str(root))
    out.ed = write_ed(root / "ed")
    out.ids = make_identifiers(root)  # identifiers on the tiny BERT (evaluation's form)
    out.bert = str(root / "bert")
    out.epitome = str(write_epitome(root / "epitome"))
    return out


def recipe_file(tmp_path, name, values) -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(values), encoding="utf-8")
    return str(path)


def stage_recipe(stage, assets, tmp_path, output_dir) -> tuple:
    """(main, argv) of a stage whose inputs are all valid, writing ``output_dir``."""
    if stage == "evaluate":
        from emprl.evaluate.run import main
        values = {"systems": {"sft": assets.t5}, "data": assets.ed, "identifiers_dir": assets.ids, "seeds": [0]}
    elif stage == "identifiers":
        from emprl.identifiers import main
        values = {"data": assets.epitome, "encoder": assets.bert}
    elif stage == "label":
        from emprl.label import main
        values = {"data": assets.ed, "identifiers_dir": assets.ids}
    elif stage == "emotion_classifier":
        from emprl.emotion_classifier import main
        values = {"data": assets.ed, "model": assets.bert}
    else:
        from emprl.baselines.ethreed.train import main
        values = {"data": assets.ed}
    return main, [recipe_file(tmp_path, f"{stage}.yaml", {**values, "output_dir": str(output_dir)})]


# -- 1. a stage replaces only its own folder -------------------------------------------------------------


@pytest.mark.parametrize("stage", ["evaluate", "identifiers", "label", "emotion_classifier", "ethreed"])
def test_stage_refuses_to_replace_a_folder_it_did_not_make(stage, assets, experiment, tmp_path, capsys):
    before = snapshot(experiment)
    main, argv = stage_recipe(stage, assets, tmp_path, experiment)  # the whole experiment folder
    assert f"carries no {stage} stamp" in refused(main, argv, capsys)
    main, argv = stage_recipe(stage, assets, tmp_path, experiment / "sft")  # another stage's results
    assert "holds the results of the 'sft' stage" in refused(main, argv, capsys)
    assert snapshot(experiment) == before


# -- 2. PPO validates everything before it touches its folder -----------------------------------------------


@pytest.mark.parametrize("override,message", [
    (["--steps", "0"], "key 'steps': expected a positive integer, got 0"),
    (["--batch_size", "0"], "key 'batch_size': expected a positive integer, got 0"),
    (["--learning_rate", "-1e-5"], "key 'learning_rate': expected a positive number"),
    (["--mini_batch_size", "8"], "`batch_size` must be a multiple of `mini_batch_size"),
])
def test_ppo_bad_number_leaves_the_finished_run(override, message, assets, experiment, tmp_path, capsys):
    from emprl.ppo.train import main

    before = snapshot(experiment)
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(experiment / "ppo"))
    assert message in refused(main, [recipe, *override], capsys)
    assert snapshot(experiment) == before


def test_ppo_into_the_sft_folder_is_refused(assets, experiment, tmp_path, capsys):
    from emprl.ppo.train import main

    before = snapshot(experiment)
    recipe = write_ppo_recipe(tmp_path, assets)
    line = refused(main, [recipe, "--output_dir", experiment / "sft"], capsys)
    assert "holds the results of the 'sft' stage" in line
    assert snapshot(experiment) == before


# -- 3. stale results: fingerprints of the inputs decide ----------------------------------------------------


def test_train_all_reruns_what_read_changed_data(tmp_path, assets, capsys):
    """An EPITOME row added, then a relabelling: recipe hashes alone said "up to date" both times."""
    from emprl.pipeline.run import main as pipeline_main
    from emprl.pipeline.run import plan

    epitome = tmp_path / "epitome"
    write_epitome(epitome)
    exp, out = tmp_path / "recipes", tmp_path / "out"
    exp.mkdir()
    reads = {"sft": [assets.ed], "identifiers": [str(epitome)], "label": [assets.ed, str(out / "identifiers")],
             "ppo": [str(out / "sft"), str(out / "label")], "evaluate": [str(out / "ppo"), str(out / "sft")]}
    for stage in STAGES:
        (exp / f"{stage}.yaml").write_text(f"output_dir: {out / stage}\nseed: 1\n")

    def finish(*stages, **extra):  # in order, so each stamp fingerprints its upstream stamp as it is now
        for stage in stages:
            stamp_like_a_stage(out / stage, stage, exp / f"{stage}.yaml", fingerprint_inputs(reads[stage]), **extra)

    finish(*STAGES)
    assert not [s.stage.name for s in plan(str(exp)) if s.run]
    results = snapshot(out)
    with open(epitome / "interpretations-reddit.csv", "a") as fh:
        fh.write("s100,r100,a new post,a new reply,1,\n")
    assert [s.stage.name for s in plan(str(exp)) if s.run] == ["identifiers", "label", "ppo", "evaluate"]
    pipeline_main(["--recipe", str(exp), "--dry_run"])
    printed = capsys.readouterr().out
    assert "sft: up to date" in printed and "identifiers: run" in printed
    assert snapshot(out) == results  # planning reads, never writes

    finish(*STAGES)
    assert not [s.stage.name for s in plan(str(exp)) if s.run]
    finish("label", relabelled=True)  # labels made again (by hand, outside train-all)
    assert [s.stage.name for s in plan(str(exp)) if s.run] == ["ppo", "evaluate"]


def stamp_like_a_stage(folder, stage, recipe, inputs, **extra) -> None:
    from dataclasses import dataclass

    from emprl.pipeline.config import parse_recipe

    @dataclass
    class Cfg:
        output_dir: str = ""
        seed: int = 0

    (cfg,) = parse_recipe((Cfg,), [str(recipe)])
    write_stage_stamp(str(folder), stage, cfg, inputs=inputs, **extra)


def test_stage_run_alone_reruns_when_an_input_changed(assets, tmp_path, capsys):
    from emprl.label import main

    data = write_ed(tmp_path / "ed")
    recipe = recipe_file(tmp_path, "label.yaml", {"data": data, "identifiers_dir": assets.ids,
                                                  "output_dir": str(tmp_path / "labelled"), "max_context_len": 32})
    first = main([recipe])
    assert main([recipe]) is None
    assert "nothing to do" in capsys.readouterr().out
    with open(tmp_path / "ed" / "test.csv", "a") as fh:
        fh.write("hit:9_conv:9,1,sad,x,1,i feel sad,,\nhit:9_conv:9,2,sad,x,2,i am sorry,,\n")
    stats = main([recipe])
    assert "inputs changed since the last run" in capsys.readouterr().out
    assert stats["test"]["rows"] == first["test"]["rows"] + 1 and json.loads((tmp_path / "labelled" / "stage.json").read_text())["inputs"]


# -- 4. one run per folder -------------------------------------------------------------------------------


def test_second_run_on_a_locked_folder_names_the_holder(assets, experiment, tmp_path, capsys):
    from emprl.ppo.train import main

    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from emprl.pipeline.lifecycle import acquire_lock; "
        f"acquire_lock({str(experiment / 'ppo')!r}, 'ppo'); print('locked', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "locked"
        before = snapshot(experiment)
        recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(experiment / "ppo"))
        line = refused(main, [recipe], capsys)
        assert f"is in use by emprl.ppo (pid {holder.pid}" in line
        assert snapshot(experiment) == before
    finally:
        holder.kill()
        holder.wait()


# -- 5. resume falls back; a killed run is cleaned up ---------------------------------------------------------


def write_checkpoint(folder, step: int, damaged: bool = False) -> None:
    import torch
    from safetensors.torch import save_file

    path = os.path.join(folder, f"checkpoint-{step}")
    os.makedirs(path)
    save_file({"w": torch.ones(64)}, os.path.join(path, "trainable.safetensors"))
    torch.save({"state": {}}, os.path.join(path, "optimizer.pt"))
    with open(os.path.join(path, "trainer_state.json"), "w") as fh:
        json.dump({"step": step}, fh)
    if damaged:  # a save cut short by a crash
        with open(os.path.join(path, "trainable.safetensors"), "rb+") as fh:
            fh.truncate(100)


def ppo_cfg(assets, output_dir, **kw):
    from emprl.ppo.config import PPOScriptConfig

    return PPOScriptConfig(sft_model_path=assets.t5, labelled_data=assets.labelled, output_dir=str(output_dir), **kw)


def test_resume_skips_a_damaged_newest_checkpoint(assets, tmp_path, capsys):
    from emprl.common.errors import UserError
    from emprl.ppo.outputs import prepare_output_dir

    out = tmp_path / "ppo"
    out.mkdir()
    write_checkpoint(out, 2)
    write_checkpoint(out, 4, damaged=True)
    before = snapshot(out)
    assert prepare_output_dir(ppo_cfg(assets, out, resume=True)) == str(out / "checkpoint-2")
    said = capsys.readouterr().out
    assert f"skipped {out / 'checkpoint-4'}: it does not load" in said and "checkpoint-2:" not in said
    assert snapshot(out) == before
    with open(out / "checkpoint-2" / "trainable.safetensors", "rb+") as fh:
        fh.truncate(10)
    with pytest.raises(UserError, match="no checkpoint in .* loads"):
        prepare_output_dir(ppo_cfg(assets, out, resume=True))


def test_interrupted_run_after_sigkill_is_kept_and_its_temporaries_removed(assets, tmp_path, capsys):
    """A PPO run killed with SIGKILL mid-save: its lock dies with it, its checkpoints stay, its
    half-written folders go, and a plain rerun asks for --resume instead of starting over."""
    from emprl.ppo.train import main

    out = tmp_path / "ppo"
    script = ("import os, signal; from emprl.pipeline.lifecycle import begin_stage, OWNER_FILE; "
              f"out = {str(out)!r}; begin_stage('ppo', out, (), in_place=True); "
              "os.makedirs(os.path.join(out, '.tmp-checkpoint-4-x')); "
              "open(os.path.join(out, '.tmp-checkpoint-4-x', 'trainable.safetensors'), 'wb').write(b'0' * 999); "
              "os.kill(os.getpid(), signal.SIGKILL)")
    killed = subprocess.run([sys.executable, "-c", script], env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert killed.returncode == -signal.SIGKILL
    write_checkpoint(out, 2)
    kept = snapshot(out / "checkpoint-2")
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(out))
    line = refused(main, [recipe], capsys)
    assert "holds checkpoints of an interrupted run; pass --resume true" in line  # not "in use"
    assert not (out / ".tmp-checkpoint-4-x").exists()
    assert snapshot(out / "checkpoint-2") == kept


def test_temporary_folder_of_a_killed_stage_is_removed_by_the_next_run(assets, tmp_path, capsys):
    from emprl.identifiers import IdentifiersConfig, main
    from emprl.pipeline.config import parse_recipe

    out = tmp_path / "identifiers"
    main_, argv = stage_recipe("identifiers", assets, tmp_path, out)
    (cfg,) = parse_recipe((IdentifiersConfig,), argv)
    fake_finished_run(out, "identifiers")
    write_stage_stamp(str(out), "identifiers", cfg, inputs=fingerprint_inputs([assets.epitome, assets.bert]))
    leftover = tmp_path / ".tmp-identifiers-abc123"
    leftover.mkdir()
    (leftover / "emotional_reactions.safetensors").write_bytes(b"0" * 4096)
    before = snapshot(out)
    assert main(argv) is None  # finished and current: nothing to do, but the leftover goes
    assert "nothing to do" in capsys.readouterr().out
    assert not leftover.exists() and snapshot(out) == before


# -- 6. readers refuse what they cannot read faithfully ---------------------------------------------------------


def ed_copy(assets, tmp_path):
    import shutil

    folder = tmp_path / "ed"
    shutil.copytree(assets.ed.split(":", 1)[1], folder)
    return folder


@pytest.mark.parametrize("damage,message", [
    ("cut", r"train.csv:\d+: expected 8 comma-separated fields \(9 with reply candidates\), got 6"),
    ("utf8", r"train.csv:\d+: not valid UTF-8 \(byte 0xe9 at column \d+\)"),
    ("empty", r"\[test\]: no usable examples"),
])
def test_dialogue_file_that_cannot_be_read_faithfully(damage, message, assets, experiment, tmp_path, capsys):
    import re

    from emprl.label import main

    folder = ed_copy(assets, tmp_path)
    if damage == "cut":
        with open(folder / "train.csv", "a") as fh:
            fh.write("hit:9_conv:9,1,sad,x,1,i feel s")  # the file ends mid-reply
    elif damage == "utf8":
        with open(folder / "train.csv", "ab") as fh:
            fh.write(b"hit:9_conv:9,1,sad,x,1,caf\xe9 time,,\n")
    else:
        (folder / "test.csv").write_text((folder / "test.csv").read_text().splitlines()[0] + "\n")
    before = snapshot(experiment)
    recipe = recipe_file(tmp_path, "label.yaml", {"data": f"empathetic_dialogues:{folder}",
                                                  "identifiers_dir": assets.ids, "output_dir": str(experiment / "label")})
    assert re.search(message, refused(main, [recipe], capsys))
    assert snapshot(experiment) == before


def test_epitome_with_every_row_bad_and_skip_fails_cleanly(assets, experiment, tmp_path, capsys):
    from emprl.identifiers import main

    folder = write_epitome(tmp_path / "epitome")
    path = folder / "explorations-reddit.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0]] + [line.replace(",", ";", 1) for line in lines[1:]]) + "\n")
    before = snapshot(experiment)
    recipe = recipe_file(tmp_path, "identifiers.yaml", {"data": str(folder), "encoder": assets.bert,
                                                        "on_bad_rows": "skip", "output_dir": str(experiment / "identifiers")})
    line = refused(main, [recipe], capsys)
    assert "explorations-reddit.csv: no usable rows (20 malformed rows skipped so far)" in line
    assert snapshot(experiment) == before


# -- 7. one line instead of a traceback --------------------------------------------------------------------------


def test_generate_with_a_missing_dataset_or_a_folder_as_output(assets, experiment, tmp_path, capsys):
    from emprl.generate import main

    before = snapshot(experiment)
    line = refused(main, ["--model", assets.t5, "--data", f"disk:{tmp_path / 'missing'}", "--out", tmp_path / "p.jsonl"],
                   capsys)
    assert "missing' does not exist" in line
    (tmp_path / "notdata").mkdir()
    line = refused(main, ["--model", assets.t5, "--data", f"disk:{tmp_path / 'notdata'}", "--out", tmp_path / "p.jsonl"],
                   capsys)
    assert "not a dataset saved with save_to_disk" in line
    line = refused(main, ["--model", assets.t5, "--data", assets.ed, "--out", experiment / "sft"], capsys)
    assert "is a folder; expected the path of a JSONL file" in line
    assert snapshot(experiment) == before


@pytest.mark.parametrize("command", ["chat", "generate", "ppo"])
def test_truncated_model_weights_are_one_line(command, assets, experiment, tmp_path, capsys):
    import shutil

    model = tmp_path / "model"
    shutil.copytree(assets.t5, model)
    size = os.path.getsize(model / "model.safetensors")
    with open(model / "model.safetensors", "rb+") as fh:
        fh.truncate(size // 2)
    before = snapshot(experiment)
    if command == "chat":
        from emprl.chat import main
        argv = ["--model", model]
    elif command == "generate":
        from emprl.generate import main
        argv = ["--model", model, "--data", assets.ed, "--out", tmp_path / "p.jsonl"]
    else:
        from emprl.ppo.train import main
        argv = [write_ppo_recipe(tmp_path, assets, sft_model_path=str(model), output_dir=str(experiment / "ppo"))]
    assert "model.safetensors is damaged or cut short" in refused(main, argv, capsys)
    assert snapshot(experiment) == before


# -- 8. exit code 2 survives accelerate launch ---------------------------------------------------------------------


def test_emprl_launch_keeps_exit_code_2_and_one_line(assets, experiment, tmp_path, capfd, monkeypatch):
    """`emprl launch` as its console script runs it (in this process; accelerate starts the stage)."""
    from emprl.pipeline.cli import main

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(sys.path))
    before = snapshot(experiment)
    config = os.path.join(ROOT, "recipes", "accelerate", "cpu.yaml")
    # caught here, before accelerate starts anything
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(experiment / "ppo"))
    line = refused(main, ["launch", "--config_file", config, "ppo", recipe, "--steps", "0"], capfd)
    assert line == "emprl: error: command line: key 'steps': expected a positive integer, got 0"
    # caught inside the launched stage: its exit code and its line come through, no launcher traceback
    _, argv = stage_recipe("evaluate", assets, tmp_path, experiment)
    line = refused(main, ["launch", "--config_file", config, "evaluate", *argv], capfd)
    assert "carries no evaluate stamp" in line
    assert snapshot(experiment) == before


# -- 9. hub ids pin a revision ------------------------------------------------------------------------------------------


def test_hub_id_takes_the_pinned_revision_and_names_it(tmp_path, monkeypatch, caplog):
    from emprl.common.errors import UserError
    from emprl.common.models import hub_revision, resolve_model

    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot_dir = tmp_path / "hub" / "models--org--tiny" / "snapshots" / commit
    tiny.make_tiny_t5(str(snapshot_dir))
    (tmp_path / "hub" / "models--org--tiny" / "refs").mkdir()
    (tmp_path / "hub" / "models--org--tiny" / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    path = resolve_model("org/tiny", revision=commit)
    assert os.path.samefile(path, snapshot_dir) and hub_revision(path) == commit
    resolve_model("org/tiny")
    assert "without model_revision" in caplog.text
    with pytest.raises(UserError, match="not in the local hub cache and HF_HUB_OFFLINE is set"):
        resolve_model("org/tiny", revision="f" * 40)


# -- 10. cases that already behaved, kept that way ------------------------------------------------------------------------


def test_unknown_key_and_yaml_syntax_error(assets, experiment, tmp_path, capsys):
    from emprl.ppo.train import main

    before = snapshot(experiment)
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(experiment / "ppo"))
    assert "unknown key 'learnin_rate' (did you mean 'learning_rate'?)" in refused(
        main, [recipe, "--learnin_rate", "1e-5"], capsys)
    broken = tmp_path / "broken.yaml"
    broken.write_text(open(recipe).read() + "steps: [1, 2\n")
    line = refused(main, [broken], capsys)
    assert f"{broken}:" in line and "invalid YAML" in line
    assert snapshot(experiment) == before


def test_base_loop_and_missing_files(assets, experiment, tmp_path, capsys):
    from emprl.ppo.train import main

    before = snapshot(experiment)
    (tmp_path / "a.yaml").write_text("base: b.yaml\nsteps: 2\n")
    (tmp_path / "b.yaml").write_text("base: a.yaml\n")
    assert "recipes include each other in a cycle" in refused(main, [tmp_path / "a.yaml"], capsys)
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(experiment / "ppo"),
                              sft_model_path=str(tmp_path / "no-such-model"))
    assert "key 'sft_model_path': path" in refused(main, [recipe], capsys)
    assert "recipe file does not exist" in refused(main, [tmp_path / "nope.yaml"], capsys)
    assert snapshot(experiment) == before


def test_epitome_bad_level_names_file_and_line(assets, experiment, tmp_path, capsys):
    from emprl.identifiers import main

    folder = write_epitome(tmp_path / "epitome", bad_line=True)
    before = snapshot(experiment)
    recipe = recipe_file(tmp_path, "identifiers.yaml", {"data": str(folder), "encoder": assets.bert,
                                                        "output_dir": str(experiment / "identifiers")})
    assert "interpretations-reddit.csv:22: level must be 0, 1 or 2, got 'high'" in refused(main, [recipe], capsys)
    assert snapshot(experiment) == before


# -- 11. issue 26: the fault campaign's rows, each one line and exit code 2 (or a signal's code) ---------------------
# Campaign categories (83 cases): bad recipes 31, bad data 16, bad model folders 7, faults 15 (kill -9, SIGTERM,
# SIGINT, disk full, read-only folder, damaged checkpoints), concurrency 2, paths 12. The rows that misbehaved
# are tested below; the others are the sections above.


def model_copy(assets, tmp_path, name="model"):
    import shutil

    folder = tmp_path / name
    shutil.copytree(assets.t5, folder)
    return folder


class Payload:
    """A pickle that would write a file when unpickled without weights_only."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def damage_model(folder, how: str) -> None:
    import torch

    if how == "unrelated_weights":  # row 0: every tensor would start from random values
        os.remove(folder / "model.safetensors")
        torch.save({"unrelated.weight": torch.ones(4)}, folder / "pytorch_model.bin")
    elif how == "config_cut":  # row 4
        text = (folder / "config.json").read_text()
        (folder / "config.json").write_text(text[: len(text) // 2])
    elif how == "pickle":  # row 5
        os.remove(folder / "model.safetensors")
        torch.save({"w": Payload(folder / "payload-ran")}, folder / "pytorch_model.bin")


@pytest.mark.parametrize("how,message", [
    ("unrelated_weights", r"tensors are missing from its weights .* would start from random values"),
    ("config_cut", r"config.json is not valid JSON"),
    ("pickle", r"pytorch_model.bin is a pickle file that does not load as plain tensors"),
])
def test_bad_model_folder_is_one_line_before_any_output_folder(how, message, assets, tmp_path, capsys):
    import re

    from emprl.ppo.train import main

    model = model_copy(assets, tmp_path)
    damage_model(model, how)
    out = tmp_path / "new" / "ppo"
    recipe = write_ppo_recipe(tmp_path, assets, sft_model_path=str(model), output_dir=str(out))
    line = refused(main, [recipe], capsys)
    assert re.search(message, line) and str(model) in line, line
    assert not (tmp_path / "new").exists()  # nothing made, not even the parent
    assert not (model / "payload-ran").exists()


def test_unrelated_weights_refused_by_every_loader(assets, tmp_path):
    from emprl.common.errors import UserError
    from emprl.common.policy import load_policy

    model = model_copy(assets, tmp_path)
    damage_model(model, "unrelated_weights")
    with pytest.raises(UserError, match=r"(\d+) of the model's \1 tensors are missing"):
        load_policy(str(model))


def test_value_head_policy_loads_for_generation_without_the_unused_weights_notice(assets, tmp_path, capfd):
    import torch
    from transformers import AutoModelForSeq2SeqLM
    from trl import AutoModelForSeq2SeqLMWithValueHead

    from emprl.common.policy import load_policy

    folder = model_copy(assets, tmp_path, "ppo_out")
    AutoModelForSeq2SeqLMWithValueHead.from_pretrained(AutoModelForSeq2SeqLM.from_pretrained(assets.t5)).save_pretrained(
        folder)
    capfd.readouterr()
    model = load_policy(str(folder))[0]
    err = capfd.readouterr().err
    assert "were not used" not in err and "v_head" not in err, err
    plain = AutoModelForSeq2SeqLM.from_pretrained(assets.t5)
    assert all(torch.equal(v, plain.state_dict()[k]) for k, v in model.state_dict().items())


def test_duplicate_key_in_a_recipe_or_on_the_command_line(assets, experiment, tmp_path, capsys):
    from emprl.ppo.train import main

    before = snapshot(experiment)
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(experiment / "ppo"))
    text = "".join(line for line in open(recipe) if not line.startswith("steps:"))
    twice = tmp_path / "twice.yaml"
    twice.write_text("steps: 100\n" + text + "steps: 5\n")  # the campaign's case
    n = len(twice.read_text().splitlines())
    line = refused(main, [twice], capsys)
    assert f"{twice}:{n}: key 'steps' is given twice (lines 1 and {n})" in line
    line = refused(main, [recipe, "--steps", "3", "--seed", "1", "--steps=4"], capsys)
    assert "command line: key 'steps' is given twice (--steps and --steps=4)" in line
    assert snapshot(experiment) == before


def test_recipe_bytes_that_are_not_utf8(assets, experiment, tmp_path, capsys):
    from emprl.ppo.train import main

    before = snapshot(experiment)
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(experiment / "ppo"))
    with open(recipe, "ab") as fh:
        fh.write(b"# caf\xe9\n")
    n = len(open(recipe, "rb").read().splitlines())
    assert f"{recipe}:{n}: not valid UTF-8 (byte 0xe9 at column 6)" in refused(main, [recipe], capsys)
    assert snapshot(experiment) == before


# -- 12. faults of the machine: full or read-only disk, names too long (issue 26, rows 2, 3, 7) -------------------


def test_output_folder_name_too_long_is_refused_before_anything_is_made(assets, tmp_path, capsys):
    from emprl.ppo.train import main

    out = tmp_path / "runs" / ("x" * 5000)
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(out))
    line = refused(main, [recipe], capsys)
    assert "output_dir: a folder name of 5000 bytes" in line and "choose a shorter output_dir" in line
    assert not (tmp_path / "runs").exists()


def test_read_only_output_folder_is_refused_before_anything_is_made(assets, tmp_path, capsys, monkeypatch):
    """A read-only mount (os.access says no: the test may run as root, whom chmod does not stop)."""
    from emprl.ppo.train import main

    parent = tmp_path / "mount"
    parent.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if str(p) == str(parent) else real_access(p, mode, **kw))
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(parent / "ppo"))
    line = refused(main, [recipe], capsys)
    assert f"output_dir: {parent} is not writable" in line
    assert os.listdir(parent) == []


@pytest.mark.parametrize("errno_name,advice", [("EROFS", "choose an output_dir on a writable one"),
                                                ("ENOSPC", "free space on that disk")])
def test_a_write_fault_while_running_is_one_line(errno_name, advice, tmp_path, capsys):
    """Faults only the kernel can report (the lock file on a read-only bind mount, a full disk): one
    line naming the file, whichever stage meets them."""
    import errno

    def main(argv):
        raise OSError(getattr(errno, errno_name), os.strerror(getattr(errno, errno_name)), str(tmp_path / ".sft.lock"))

    line = refused(main, [], capsys)
    assert f"{tmp_path / '.sft.lock'}: {os.strerror(getattr(errno, errno_name))}; " in line and advice in line


def sft_recipe(tmp_path, model, data, name="sft", **extra):
    from test_sft import write_recipe as write_sft_recipe

    values = dict(model_name_or_path=str(model), data=data, output_dir=str(tmp_path / name), max_source_tokens=48,
                  max_target_tokens=16, per_device_train_batch_size=4, per_device_eval_batch_size=8,
                  learning_rate=1e-2, max_steps=4, eval_strategy="no", save_strategy="steps", save_steps=100,
                  load_best_model_at_end=False, report_to="none", logging_steps=1, seed=0, disable_tqdm=True)
    return write_sft_recipe(tmp_path / f"{name}.yaml", **{**values, **extra})


def test_disk_full_mid_save_leaves_no_checkpoint_that_resume_would_take(assets, tmp_path, capsys, monkeypatch):
    """SFT on a full disk (row 2): safetensors fails after the config files are written. One line,
    the cut checkpoint is removed, and resume would skip such a folder anyway."""
    from safetensors import SafetensorError
    from test_sft import write_ed_dataset
    from transformers import PreTrainedModel

    from emprl.common.classifier_trainer import check_checkpoint
    from emprl.pipeline.lifecycle import newest_intact_checkpoint
    from emprl.sft import main

    data = write_ed_dataset(str(tmp_path / "ed"), n_copies=1)
    real_save = PreTrainedModel.save_pretrained

    def full_disk(self, folder, *args, **kwargs):
        if "checkpoint-" in str(folder):
            self.config.save_pretrained(folder)
            raise SafetensorError("Error while serializing: I/O error: No space left on device (os error 28)")
        return real_save(self, folder, *args, **kwargs)

    monkeypatch.setattr(PreTrainedModel, "save_pretrained", full_disk)
    recipe = sft_recipe(tmp_path, assets.t5, data, max_steps=2, save_steps=2)
    line = refused(main, [recipe], capsys)
    assert f"{tmp_path / 'sft'}: No space left on device; free space on that disk" in line
    assert not (tmp_path / "sft" / "checkpoint-2").exists()
    # A partial checkpoint left by a kill at the same moment: resume does not take it.
    partial = tmp_path / "sft" / "checkpoint-2"
    partial.mkdir()
    (partial / "config.json").write_text("{}")
    (partial / "generation_config.json").write_text("{}")
    assert newest_intact_checkpoint([str(partial)], check=check_checkpoint) is None  # SFT's resume check
    assert "skipped" in capsys.readouterr().out


# -- 13. preemption: SIGTERM and SIGINT save a resumable checkpoint (issue 26, row 8) ---------------------------------


def signal_after(monkeypatch, cls, method, calls: int, signum):
    """``cls.method`` sends ``signum`` to this process at the end of its ``calls``-th call."""
    real, count = getattr(cls, method), []

    def wrapped(self, *args, **kwargs):
        out = real(self, *args, **kwargs)
        count.append(1)
        if len(count) == calls:
            os.kill(os.getpid(), signum)
        return out

    monkeypatch.setattr(cls, method, wrapped)
    return real


def test_ppo_stopped_by_sigterm_resumes_to_the_same_weights(assets, tmp_path, monkeypatch, capsys):
    import torch
    from test_ppo import trainable

    from emprl.ppo import train as ppo

    common = dict(steps=4, save_steps=100, eval_steps=2)  # no checkpoint of its own before the signal
    expected = trainable(ppo.main([write_ppo_recipe(tmp_path / "a", assets, **common)]))
    recipe = write_ppo_recipe(tmp_path / "b", assets, **common)
    real = signal_after(monkeypatch, ppo.PPORun, "train_step", 3, signal.SIGTERM)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(ppo.main, [recipe])
    monkeypatch.setattr(ppo.PPORun, "train_step", real)
    err = capsys.readouterr().err
    out = tmp_path / "b" / "out"
    assert info.value.code == 143 and "Traceback" not in err
    stopped = [line for line in err.splitlines() if "stopped by SIGTERM" in line]
    assert stopped == [f"emprl.ppo: stopped by SIGTERM; saved {out / 'checkpoint-3'}; to resume: rerun the same "
                       "command (it continues from there)"]
    assert [json.loads(r)["step"] for r in open(out / "log.jsonl")] == [1, 2, 3]
    assert not (out / "stage.json").exists()

    resumed = ppo.main([recipe])  # a plain rerun continues
    got = trainable(resumed)
    assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in expected)
    assert [json.loads(r)["step"] for r in open(out / "log.jsonl")] == [1, 2, 3, 4]
    assert (out / "stage.json").exists() and not (out / ".emprl-preempted").exists()


def test_sft_stopped_by_sigint_resumes_to_the_same_weights(assets, tmp_path, monkeypatch, capsys):
    from safetensors.torch import load_file
    from test_sft import write_ed_dataset
    from transformers import Trainer

    from emprl.sft import main

    data = write_ed_dataset(str(tmp_path / "ed"), n_copies=1)
    main([sft_recipe(tmp_path, assets.t5, data, name="straight")])
    recipe = sft_recipe(tmp_path, assets.t5, data, name="signalled")
    real = signal_after(monkeypatch, Trainer, "training_step", 2, signal.SIGINT)
    capsys.readouterr()
    with pytest.raises(SystemExit) as info:
        run_cli(main, [recipe])
    monkeypatch.setattr(Trainer, "training_step", real)
    err = capsys.readouterr().err
    assert info.value.code == 130 and "Traceback" not in err, err
    assert f"stopped by SIGINT; saved {tmp_path / 'signalled' / 'checkpoint-2'}" in err
    assert not (tmp_path / "signalled" / "stage.json").exists()
    assert main([recipe])["resumed_from"] == "checkpoint-2"
    a = load_file(str(tmp_path / "straight" / "model.safetensors"))
    b = load_file(str(tmp_path / "signalled" / "model.safetensors"))
    import torch

    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_second_signal_stops_at_once_and_a_repeat_within_a_second_does_not(monkeypatch):
    from emprl.common import preemption

    sent = []
    monkeypatch.setattr(preemption.os, "kill", lambda pid, sig: sent.append(sig))
    monkeypatch.setattr(preemption.signal, "signal", lambda sig, handler: None)
    clock = iter([100.0, 100.2, 102.0])
    monkeypatch.setattr(preemption.time, "monotonic", lambda: next(clock))
    p = preemption.Preemption("sft")
    p.handle(signal.SIGINT)
    p.handle(signal.SIGINT)  # the terminal's Ctrl-C, forwarded by the launcher as well
    assert p.requested and sent == []
    p.handle(signal.SIGINT)
    assert sent == [signal.SIGINT]


def test_emprl_launch_passes_a_signal_on_and_its_code_through(assets, tmp_path):
    """SIGTERM to `emprl launch` (what a scheduler sends): the stage saves, both exit 143 (not 241)."""
    import time

    out = tmp_path / "ppo"
    recipe = write_ppo_recipe(tmp_path, assets, output_dir=str(out), steps=500, eval_steps=0, save_steps=0)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "OMP_NUM_THREADS": "1"}
    launcher = subprocess.Popen([sys.executable, "-m", "emprl.pipeline.cli", "launch", "--config_file",
                                 os.path.join(ROOT, "recipes", "accelerate", "cpu.yaml"), "ppo", recipe],
                                env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, cwd=ROOT)
    try:
        while not (out / "log.jsonl").exists() and launcher.poll() is None:
            time.sleep(0.5)
        launcher.send_signal(signal.SIGTERM)
        _, err = launcher.communicate(timeout=300)
    finally:
        launcher.kill()
    assert launcher.returncode == 143, err
    assert "Traceback" not in err and "emprl.ppo: stopped by SIGTERM; saved" in err
    assert (out / ".emprl-preempted").exists() and list(out.glob("checkpoint-*"))


def test_dpo_stopped_by_sigterm_while_training_continues_the_round_from_its_checkpoint(assets, tmp_path, monkeypatch,
                                                                                    capsys):
    from test_dpo import write_recipe as write_dpo_recipe
    from transformers import Trainer

    from emprl.dpo import train as dpo

    recipe = write_dpo_recipe(tmp_path, assets, "t5", rounds=1, contexts_per_round=8, per_device_train_batch_size=2)
    real = signal_after(monkeypatch, Trainer, "training_step", 1, signal.SIGTERM)
    with pytest.raises(SystemExit) as info:
        run_cli(dpo.main, [recipe])
    monkeypatch.setattr(Trainer, "training_step", real)
    err = capsys.readouterr().err
    out = tmp_path / "out"
    assert info.value.code == 143 and "Traceback" not in err
    assert f"emprl.dpo: stopped by SIGTERM; saved {out / 'trainer-checkpoints' / 'checkpoint-1'}" in err
    monkeypatch.setattr(dpo.DPORun, "sample", lambda *a: pytest.fail("sampled pairs were sampled again"))
    steps = []
    monkeypatch.setattr(Trainer, "training_step", lambda self, *a, **k: (steps.append(1), real(self, *a, **k))[1])
    run = dpo.main([recipe])
    assert len(run.rounds) == 1 and run.rounds[0]["train"]["steps"] == len(steps) + 1  # step 1 was not redone
    assert not (out / "trainer-checkpoints").exists() and (out / "stage.json").exists()


def test_damaged_identifier_is_one_line_before_any_output_folder(assets, tmp_path, capsys):
    import shutil

    from emprl.ppo.train import main

    ids = tmp_path / "identifiers"
    shutil.copytree(assets.identifiers, ids)
    weights = ids / "explorations" / "model.safetensors"
    with open(weights, "rb+") as fh:
        fh.truncate(os.path.getsize(weights) // 2)
    out = tmp_path / "new" / "ppo"
    recipe = write_ppo_recipe(tmp_path, assets, identifiers_dir=str(ids), output_dir=str(out))
    assert f"{weights} is damaged or cut short" in refused(main, [recipe], capsys)
    assert not (tmp_path / "new").exists()


def test_identifiers_refuse_an_encoder_whose_weights_do_not_fill_it_before_any_folder(assets, tmp_path, capsys):
    import shutil

    import torch

    from emprl.identifiers import main

    encoder = tmp_path / "bert"
    shutil.copytree(assets.bert, encoder)
    for name in os.listdir(encoder):
        if name.endswith(".safetensors"):
            os.remove(encoder / name)
    torch.save({"unrelated.weight": torch.ones(4)}, encoder / "pytorch_model.bin")
    out = tmp_path / "new" / "identifiers"
    recipe = recipe_file(tmp_path, "identifiers.yaml", {"data": assets.epitome, "encoder": str(encoder),
                                                        "output_dir": str(out)})
    line = refused(main, [recipe], capsys)
    assert f"encoder: {encoder}: " in line and "tensors are missing from its weights" in line
    assert not (tmp_path / "new").exists()

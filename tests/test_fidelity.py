"""Fidelity to the authors' runs: the PPO learning-rate horizon, the identifier recipe values, and the
human evaluation's fourth-evaluator rule. Recipes are read through the real recipe loader."""

import csv
import json

import pytest
import torch

from emprl.common.errors import UserError
from emprl.pipeline.config import parse_recipe

ED = "recipes/t5-base_empathetic-dialogues"
# One example per listener turn of the ED release's train split: about 40k (19,533 conversations of
# ~4.3 turns). The spread covers the plausible counts of the authors' preprocessing.
ED_TRAIN = (38_500, 40_000, 42_000)


def _ppo_configs(recipe, tmp_path, *extra):
    from trl import PPOConfig

    from emprl.ppo.config import PPOScriptConfig

    for name in ("sft", "labelled", "identifiers"):
        (tmp_path / name).mkdir(exist_ok=True)
    return parse_recipe((PPOScriptConfig, PPOConfig), [
        recipe, "--sft_model_path", str(tmp_path / "sft"), "--labelled_data", str(tmp_path / "labelled"),
        "--identifiers_dir", str(tmp_path / "identifiers"), *extra])


def _lr_fraction_at(cfg, ppo_cfg, n_train, step, world=1):
    """The scheduler's LR after ``step`` PPO steps, as a fraction of the peak (the real build_scheduler)."""
    from emprl.ppo.setup import build_scheduler

    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.Adam([param], lr=ppo_cfg.learning_rate)
    scheduler = build_scheduler(cfg, ppo_cfg, optimizer, world, n_train=n_train)
    for _ in range(step * world):  # accelerate steps it once per process per PPO step
        optimizer.step()
        scheduler.step()
    return optimizer.param_groups[0]["lr"] / ppo_cfg.learning_rate


@pytest.mark.parametrize("n_train", ED_TRAIN)
def test_ed_recipe_lr_at_checkpoint_1600_is_55_to_60_percent_of_peak(tmp_path, n_train):
    cfg, ppo_cfg = _ppo_configs(f"{ED}/ppo.yaml", tmp_path)
    assert (ppo_cfg.steps, cfg.lr_scheduler_type, cfg.lr_decay_over_epochs) == (1600, "linear", 3)
    assert 0.55 <= _lr_fraction_at(cfg, ppo_cfg, n_train, 1600) <= 0.60


def test_lr_horizon_follows_the_authors_rule(tmp_path):
    from emprl.ppo.setup import lr_decay_horizon

    cfg, ppo_cfg = _ppo_configs(f"{ED}/ppo.yaml", tmp_path)
    assert lr_decay_horizon(cfg, ppo_cfg, 40_000) == 3 * 1250
    assert lr_decay_horizon(cfg, ppo_cfg, 40_001) == 3 * 1251  # a partial last batch is a step
    assert lr_decay_horizon(cfg, ppo_cfg, 40_000, world=2) == 3 * 625  # two ranks: 64 contexts a step
    # w/o KL and w/o empathy keep EmpRL's horizon; w/o KL stops at 600 with ~84% of the peak LR left.
    no_kl, no_kl_ppo = _ppo_configs(f"{ED}/ppo_no_kl.yaml", tmp_path)
    assert no_kl_ppo.steps == 600 and no_kl.lr_decay_over_epochs == 3
    assert _lr_fraction_at(no_kl, no_kl_ppo, 40_000, 600) == pytest.approx(1 - 600 / 3750)
    assert _ppo_configs(f"{ED}/ppo_no_empathy.yaml", tmp_path)[0].lr_decay_over_epochs == 3
    # PEC: the same rule on the paper's 56,808 training contexts.
    pec, pec_ppo = _ppo_configs("recipes/t5-base_pec/ppo.yaml", tmp_path)
    assert lr_decay_horizon(pec, pec_ppo, 56_808) == 3 * 1776
    # Two ranks step the prepared scheduler twice a PPO step; the fraction at 1,600 is unchanged.
    assert _lr_fraction_at(cfg, ppo_cfg, 40_000, 10, world=2) == pytest.approx(1 - 10 / 1875)


def test_lr_decay_keys(tmp_path):
    from emprl.ppo.setup import lr_decay_horizon

    plain, plain_ppo = _ppo_configs(f"{ED}/ppo.yaml", tmp_path, "--lr_decay_over_epochs", "null")
    assert lr_decay_horizon(plain, plain_ppo, 40_000) == 1600  # null: decay to 0 at `steps`
    assert _lr_fraction_at(plain, plain_ppo, 40_000, 1600) == 0.0
    fixed, fixed_ppo = _ppo_configs(f"{ED}/ppo.yaml", tmp_path, "--lr_decay_over_epochs", "null",
                                    "--lr_decay_steps", "3200")
    assert _lr_fraction_at(fixed, fixed_ppo, 10, 1600) == pytest.approx(0.5)
    with pytest.raises(UserError, match="set one of them, not both"):
        _ppo_configs(f"{ED}/ppo.yaml", tmp_path, "--lr_decay_steps", "3000")
    with pytest.raises(UserError, match="key 'lr_decay_steps': expected a positive integer"):
        _ppo_configs(f"{ED}/ppo.yaml", tmp_path, "--lr_decay_over_epochs", "null", "--lr_decay_steps", "0")
    with pytest.raises(UserError, match="key 'lr_decay_over_epochs': expected a positive number"):
        _ppo_configs(f"{ED}/ppo.yaml", tmp_path, "--lr_decay_over_epochs", "-1")


@pytest.mark.parametrize("folder", [ED, "recipes/t5-base_pec", "recipes/llama-3-8b-lora_empathetic-dialogues"])
def test_identifier_recipes_train_as_the_authors_did(tmp_path, folder):
    from emprl.identifiers import IdentifiersConfig
    from emprl.label import LabelConfig

    (cfg,) = parse_recipe((IdentifiersConfig,), [f"{folder}/identifiers.yaml", "--data", str(tmp_path)])
    # The authors' identifier on EPITOME: 250 tokens of seeker post, 250 of response.
    assert (cfg.max_context_len, cfg.max_response_len) == (250, 250)
    assert cfg.class_weighting == "none"  # an explicit choice, its reason beside it in the recipe
    text = open(f"{ED}/identifiers.yaml").read()
    assert "class_weighting: none" in text and "(the authors' code)" not in text
    # Dialogue pairs are scored as the authors' reward and Emp-F1 code does: 200 / 50.
    (label,) = parse_recipe((LabelConfig,), [f"{folder}/label.yaml", "--data", str(tmp_path),
                                            "--identifiers_dir", str(tmp_path)])
    assert (label.max_context_len, label.max_response_len) == (200, 50)


# ----------------------------------------------------------------------------- fourth evaluator


def test_majority_rule():
    from collections import Counter

    from emprl.human_eval.run import UNRESOLVED, majority

    assert majority(Counter(win=2, lose=1)) == "win"
    assert majority(Counter(win=1, tie=2)) == "tie"  # the answer most evaluators gave
    assert majority(Counter(win=1, lose=1, tie=1)) == UNRESOLVED
    assert majority(Counter(win=1, lose=1, tie=1), "lose") == "lose"
    assert majority(Counter(win=1, lose=1)) == "tie"  # two evaluators who disagree


def _kit(tmp_path):
    from emprl.human_eval import run as human_eval

    gens = {}
    for name in ("EmpRL", "T5"):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"context": [f"c {i}"], "reference": "r", "response": f"{name} {i}"})
                                + "\n" for i in range(6)))
        gens[name] = str(path)
    out = human_eval.export(gens, 6, 0, str(tmp_path / "kit"))
    key = json.loads((out / "key.json").read_text())
    with open(out / "ab.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return out, key, rows


def _fill(path, rows, choices):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**r, "choice": c} for r, c in zip(rows, choices))
    return str(path)


def test_fourth_evaluator_resolves_three_way_splits(tmp_path, capsys):
    from emprl.common.errors import run_cli
    from emprl.human_eval import run as human_eval

    out, key, rows = _kit(tmp_path)
    # The first system's side in each row's own A/B order.
    main_wins = ["win" if key["ab"][r["item_id"]]["a"] == "EmpRL" else "lose" for r in rows]
    main_loses = ["lose" if c == "win" else "win" for c in main_wins]
    # Items 0 and 1 split 1-1-1; the others: all three prefer EmpRL.
    copies = [_fill(tmp_path / "a1.csv", rows, main_wins),
              _fill(tmp_path / "a2.csv", rows, main_loses[:2] + main_wins[2:]),
              _fill(tmp_path / "a3.csv", rows, ["tie", "tie"] + main_wins[2:])]
    split = [rows[0]["item_id"], rows[1]["item_id"]]

    report = human_eval.score(str(out / "key.json"), [], copies, str(tmp_path / "r.md"))
    assert report["ab_unresolved"] == split
    assert report["ab"]["T5"]["items"] == {"win": 4, "lose": 0, "tie": 0}
    assert report["ab"]["T5"]["items_unresolved"] == 2
    assert "Unresolved: 2 item(s) split 1-1-1" in (tmp_path / "r.md").read_text()
    run_cli(human_eval.main, ["score", "--key", str(out / "key.json"), "--ab", *copies,
                              "--out", str(tmp_path / "r.md")])
    assert "2 A/B item(s) split 1-1-1 are unresolved" in capsys.readouterr().out

    # The fourth evaluator answers only the split items (EmpRL better on item 0, a tie on item 1);
    # their answer on a unanimous item is not read.
    fourth = _fill(tmp_path / "a4.csv", rows, [main_wins[0], "tie", main_loses[2]] + [""] * (len(rows) - 3))
    report = human_eval.score(str(out / "key.json"), [], copies, str(tmp_path / "r.md"), ab_fourth=fourth)
    assert report["ab_unresolved"] == [] and report["ab_split_items"] == split
    assert report["ab"]["T5"]["items"] == {"win": 5, "lose": 0, "tie": 1}
    assert report["ab"]["T5"]["items_unresolved"] == 0

    blank = _fill(tmp_path / "a5.csv", rows, [main_wins[0]] + [""] * (len(rows) - 1))
    with pytest.raises(UserError, match=f"item {split[1]} was split 1-1-1 .* needs a choice"):
        human_eval.score(str(out / "key.json"), [], copies, str(tmp_path / "r.md"), ab_fourth=blank)
    with pytest.raises(UserError, match="--ab-fourth: .* three A/B copies, got 2"):
        human_eval.score(str(out / "key.json"), [], copies[:2], str(tmp_path / "r.md"), ab_fourth=fourth)

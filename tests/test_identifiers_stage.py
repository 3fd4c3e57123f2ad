"""The identifiers stage and the labelling step, end to end on tiny data and a tiny BERT encoder."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch
import yaml
from datasets import load_from_disk

from emprl.common.errors import UserError
from emprl.data import MECHANISMS, serialize_context
from reward_models import EmpathyIdentifier, EmpathyReward

SEEKERS = ["i feel so sad today , my dog is lost", "i lost my job this week and i am worried",
           "my exam is tomorrow and i am scared", "i am lonely since my friend moved", "work is so hard , i am tired"]
# Level words per mechanism (0 no, 1 weak, 2 strong), drawn from the tiny tokenizer's vocabulary.
RESPONSES = {
    "emotional_reactions": ["do you have a dog ?", "oh that is bad", "i am so sorry , that sounds really awful"],
    "interpretations": ["nice day", "i know", "i understand how tough that must be for you"],
    "explorations": ["ok", "what happened ?", "how are you feeling about it ? what do you think would help ?"],
}


def write_epitome(folder, n_per_level=12, seed=0):
    rng = random.Random(seed)
    names = {"emotional_reactions": "emotional-reactions-reddit.csv",
             "interpretations": "interpretations-reddit.csv", "explorations": "explorations-reddit.csv"}
    folder.mkdir()
    for mech, filename in names.items():
        with open(folder / filename, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["sp_id", "rp_id", "seeker_post", "response_post", "level", "rationales"])
            for i in range(3 * n_per_level):
                level = i % 3
                response = RESPONSES[mech][level] + rng.choice(["", " .", " !", " really"])
                w.writerow([f"s{i}", f"r{i}", rng.choice(SEEKERS), response, level, ""])
    return folder


def write_dialogues(folder):
    folder.mkdir()
    items = [{"input": ["i lost my job", "oh no", "yes and i am worried"], "output": "i am so sorry , what happened ?"},
             {"input": "my exam went great", "output": "nice"},
             {"input": ["i am sad", "why ?"], "output": "how are you feeling ?"}]
    for name in ("train.json", "valid.json", "test.json"):
        (folder / name).write_text(json.dumps(items))
    return folder


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tiny import make_tiny_bert

    from emprl.identifiers import main

    root = tmp_path_factory.mktemp("stage")
    make_tiny_bert(str(root / "encoder"))
    write_epitome(root / "epitome")
    recipe = root / "identifiers.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": str(root / "epitome"), "encoder": str(root / "encoder"), "output_dir": str(root / "identifiers"),
        "num_epochs": 3, "batch_size": 8, "head_learning_rate": 3e-3, "learning_rate": 1e-3,
        "class_weighting": "balanced", "early_stopping_patience": 2, "max_context_len": 24, "max_response_len": 16,
    }))
    report = main([str(recipe), "--pooling", "mean"])
    # Same recipe and inputs again: the finished stage is skipped.
    assert main([str(recipe), "--pooling", "mean"]) is None
    return root, report


def test_stage_writes_identifiers_and_report(trained):
    root, returned = trained
    out = root / "identifiers"
    report = json.loads((out / "report.json").read_text())
    assert list(report["mechanisms"]) == list(MECHANISMS)
    assert report["mechanisms"]["explorations"]["identifier"]["macro_f1"] == returned["mechanisms"]["explorations"][
        "identifier"]["macro_f1"]
    for entry in report["mechanisms"].values():
        n_valid = sum(entry["class_counts"]["validation"].values())
        assert n_valid == 8  # the 80/20 split of 36 rows (scikit-learn rounds the validation share up)
        assert sum(entry["class_counts"]["train"].values()) + n_valid == 36
        for system in ("identifier", "baseline"):
            m = entry[system]
            assert 0.0 <= m["macro_f1"] <= 1.0 and 0.0 <= m["accuracy"] <= 1.0
            cm = torch.tensor(m["confusion_matrix"])
            assert cm.shape == (3, 3) and int(cm.sum()) == n_valid
            assert abs(m["accuracy"] - float(cm.diag().sum()) / n_valid) < 1e-9
        history = entry["identifier"]["history"]
        assert 1 <= len(history) <= 3 and 1 <= entry["identifier"]["best_epoch"] <= len(history)
        # The kept epoch is the best one on validation macro-F1.
        assert entry["identifier"]["macro_f1"] == max(h["val_macro_f1"] for h in history)
    assert (out / "report.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "README.md").is_file()
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folders left


def test_saved_identifiers_reproduce_reported_validation_scores(trained):
    root, report = trained
    from emprl.data import load_epitome

    reward = EmpathyReward.from_pretrained(root / "identifiers", max_context_len=24, max_response_len=16)
    assert all(reward.identifiers[m].config.pooling == "mean" for m in MECHANISMS)
    valid = load_epitome(str(root / "epitome"), seed=42)
    for i, mech in enumerate(MECHANISMS):
        split = valid[mech]["validation"]
        levels = reward.levels(split["seeker_post"], split["response_post"])[:, i].tolist()
        correct = sum(int(a == b) for a, b in zip(levels, split["level"]))
        assert abs(correct / len(split) - report["mechanisms"][mech]["identifier"]["accuracy"]) < 1e-9


def test_label_step_adds_level_columns(trained, tmp_path):
    from emprl.label import main as label_main

    root, _ = trained
    data = write_dialogues(tmp_path / "dialogues")
    recipe = tmp_path / "label.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": f"emprl_json:{data}", "identifiers_dir": str(root / "identifiers"),
        "output_dir": str(tmp_path / "labelled"), "batch_size": 2, "max_context_len": 24, "max_response_len": 16,
    }))
    stats = label_main([str(recipe)])
    ds = load_from_disk(str(tmp_path / "labelled"))
    assert set(ds) == {"train", "validation", "test"}
    reward = EmpathyReward.from_pretrained(root / "identifiers", max_context_len=24, max_response_len=16)
    tok = reward.tokenizers["emotional_reactions"]
    for name, split in ds.items():
        assert set(MECHANISMS) <= set(split.column_names) and len(split) == 3
        contexts = [serialize_context(t, tokenizer=tok, max_tokens=24) for t in split["context"]]
        expected = reward.levels(contexts, split["response"])
        got = torch.tensor([split[m] for m in MECHANISMS]).T
        assert torch.equal(got, expected)
        assert sum(stats[name]["explorations"].values()) == 3
    saved = json.loads((tmp_path / "labelled" / "label_stats.json").read_text())
    assert saved["splits"] == stats


def test_balanced_loss_weights():
    from emprl.identifiers import loss_weights

    assert loss_weights([0, 0, 1, 2], "none") is None
    w = loss_weights([0, 0, 0, 0, 1, 1, 2, 2], "balanced")
    assert torch.allclose(w, torch.tensor([8 / 12, 8 / 6, 8 / 6]))
    assert loss_weights([0, 1, 1], "balanced")[2] == 0  # an absent level gets no weight


def test_bad_recipe_values_are_user_errors(tmp_path):
    from emprl.identifiers import main

    write_epitome(tmp_path / "epitome", n_per_level=2)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"data": str(tmp_path / "epitome"), "mechanisms": ["empathy"]}))
    with pytest.raises(UserError, match="mechanisms"):
        main([str(recipe)])
    with pytest.raises(UserError, match="pooling"):
        main([str(recipe), "--mechanisms", "[explorations]", "--pooling", "avg"])


def test_overwrite_retrains_and_replaces_atomically(tmp_path):
    from tiny import make_tiny_bert

    from emprl.identifiers import main

    make_tiny_bert(str(tmp_path / "encoder"))
    write_epitome(tmp_path / "epitome", n_per_level=4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": str(tmp_path / "epitome"), "encoder": str(tmp_path / "encoder"), "output_dir": str(tmp_path / "out"),
        "mechanisms": ["interpretations"], "num_epochs": 1, "batch_size": 4, "baseline": False,
        "freeze_embeddings": True, "head_learning_rate": 1e-2, "learning_rate": 1e-2}))
    first = main([str(recipe)])
    from transformers import BertModel

    saved = EmpathyIdentifier.from_pretrained(tmp_path / "out" / "interpretations")
    start = BertModel.from_pretrained(str(tmp_path / "encoder"))
    # Frozen token embeddings stay as pretrained; the layers above them moved.
    assert torch.equal(saved.response_encoder.embeddings.word_embeddings.weight, start.embeddings.word_embeddings.weight)
    assert not torch.equal(saved.response_encoder.encoder.layer[0].attention.self.query.weight,
                           start.encoder.layer[0].attention.self.query.weight)
    stamp = (tmp_path / "out" / "stage.json").stat().st_mtime_ns
    second = main([str(recipe), "--overwrite_output_dir", "true"])
    assert first is not None and second is not None
    assert (tmp_path / "out" / "stage.json").stat().st_mtime_ns > stamp
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "README.md", "interpretations", "report.json", "report.png", "stage.json"]
    assert "baseline" not in json.loads((tmp_path / "out" / "report.json").read_text())["mechanisms"]["interpretations"]


def test_length_grouped_batches_cover_every_example_once_and_cut_padding():
    from emprl.identifiers import LengthGroupedBatches

    lengths = [(i * 37) % 101 for i in range(100)]
    sampler = LengthGroupedBatches(lengths, batch_size=8, shuffle=True, seed=3, group=4)
    first, second = list(sampler), list(sampler)
    for epoch in (first, second):
        assert sorted(i for batch in epoch for i in batch) == list(range(100)) and len(epoch) == len(sampler)
    assert first != second                                     # a new order each epoch
    assert first == list(LengthGroupedBatches(lengths, 8, True, seed=3, group=4))  # seeded

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    plain = [list(range(k, min(k + 8, 100))) for k in range(0, 100, 8)]
    assert padding(first) < padding(plain) / 2
    ordered = list(LengthGroupedBatches(lengths, 8, shuffle=False, seed=0))
    assert [lengths[b[0]] for b in ordered] == sorted((lengths[b[0]] for b in ordered), reverse=True)

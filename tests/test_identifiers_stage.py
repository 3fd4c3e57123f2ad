"""The identifiers stage and the labelling step, end to end on tiny data and a tiny BERT encoder."""

from __future__ import annotations

import csv
import json
import random

import pytest
import torch
import yaml
from datasets import load_from_disk
from transformers import TrainerCallback

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
    from emprl.common.classifier_trainer import loss_weights

    assert loss_weights([0, 0, 1, 2], "none", 3) is None
    w = loss_weights([0, 0, 0, 0, 1, 1, 2, 2], "balanced", 3)
    assert torch.allclose(w, torch.tensor([8 / 12, 8 / 6, 8 / 6]))
    assert loss_weights([0, 1, 1], "balanced", 3)[2] == 0  # an absent level gets no weight


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


def test_trainer_groups_lengths_keeps_validation_order_and_has_two_learning_rates(tmp_path):
    from tiny import make_tiny_bert

    from emprl.data import load_epitome
    from emprl.identifiers import IdentifiersConfig, build_trainer

    make_tiny_bert(str(tmp_path / "encoder"))
    write_epitome(tmp_path / "epitome", n_per_level=40)
    data = load_epitome(str(tmp_path / "epitome"), seed=42)["explorations"]
    fewer_none = data["train"].filter(lambda r, i: r["level"] != 0 or i % 3 == 0, with_indices=True)
    data = {"train": fewer_none, "validation": data["validation"]}  # imbalanced: class weights matter
    cfg = IdentifiersConfig(data=str(tmp_path / "epitome"), batch_size=8, max_context_len=24, max_response_len=24,
                            learning_rate=1e-4, head_learning_rate=3e-3, freeze_embeddings=True,
                            class_weighting="balanced")
    trainer = build_trainer(data, str(tmp_path / "encoder"), cfg, str(tmp_path / "work"))
    assert trainer.args.group_by_length

    # the pretrained encoders at learning_rate, the new attention and head at head_learning_rate
    lr_of = {id(p): g["lr"] for g in trainer.optimizer.param_groups for p in g["params"]}
    for name, p in trainer.model.named_parameters():
        if "word_embeddings" in name:
            assert id(p) not in lr_of  # frozen
        else:
            assert lr_of[id(p)] == (1e-4 if name.startswith(("context_encoder.", "response_encoder.")) else 3e-3)

    def padding(batches):
        return sum(int((b["response_attention_mask"] == 0).sum()) for b in batches)

    grouped = list(trainer.get_train_dataloader())
    # every training pair once per epoch, in batches of similar-length pairs: less padding than in order
    assert sum(len(b["labels"]) for b in grouped) == len(data["train"])
    assert sorted(torch.cat([b["labels"] for b in grouped]).tolist()) == sorted(data["train"]["level"])
    plain = [trainer.data_collator([data["train"][j] for j in range(i, min(i + 8, len(data["train"])))])
             for i in range(0, len(data["train"]), 8)]
    assert padding(grouped) < padding(plain)
    # validation: longest pairs first and read in that order, so predict() lines up with the rows
    valid = trainer.eval_dataset
    assert valid["length"] == sorted(valid["length"], reverse=True) and len(valid) == len(data["validation"])
    labels = torch.cat([b["labels"] for b in trainer.get_eval_dataloader()]).tolist()
    assert labels == valid["level"]

    # class_weighting: balanced weighs each level's loss by n / (3 * its count in training)
    batch = next(iter(trainer.get_eval_dataloader()))
    trainer.model.eval()
    with torch.no_grad():
        loss = trainer.compute_loss(trainer.model, batch)
        logits = trainer.model(**{k: v for k, v in batch.items() if k != "labels"})
    weights = torch.bincount(torch.tensor(data["train"]["level"]), minlength=3).float().reciprocal() * len(
        data["train"]) / 3
    assert torch.allclose(loss, torch.nn.functional.cross_entropy(logits, batch["labels"], weight=weights))
    assert not torch.allclose(loss, torch.nn.functional.cross_entropy(logits, batch["labels"]))


class StopAfterEpoch(TrainerCallback):
    """Stops the run the way a kill would, just after the checkpoint of ``epoch`` of the Trainer whose
    folder ends with ``folder``."""

    def __init__(self, folder: str, epoch: int):
        self.folder, self.epoch = folder, epoch

    def on_save(self, args, state, control, **kwargs):
        if args.output_dir.endswith(self.folder) and round(state.epoch) >= self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, monkeypatch):
    from tiny import make_tiny_bert

    import emprl.common.classifier_trainer as classifier_trainer
    import emprl.identifiers as stage

    make_tiny_bert(str(tmp_path / "encoder"))
    write_epitome(tmp_path / "epitome", n_per_level=4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": str(tmp_path / "epitome"), "encoder": str(tmp_path / "encoder"), "output_dir": str(tmp_path / "out"),
        "mechanisms": ["interpretations", "explorations"], "num_epochs": 3, "batch_size": 4, "baseline": False,
        "early_stopping_patience": 0, "head_learning_rate": 1e-2, "learning_rate": 1e-3, "max_context_len": 24,
        "max_response_len": 16}))
    whole = stage.main([str(recipe), "--output_dir", str(tmp_path / "whole")])  # never interrupted

    stop = StopAfterEpoch("explorations", 2)
    monkeypatch.setattr(classifier_trainer, "early_stopping", lambda patience: [stop])
    with pytest.raises(KeyboardInterrupt):
        stage.main([str(recipe)])
    monkeypatch.undo()
    out = tmp_path / "out"
    assert not (out / "stage.json").exists()
    done = json.loads((out / "checkpoints" / "interpretations" / "result.json").read_text())
    kept = [int(p.name.split("-")[1]) for p in (out / "checkpoints" / "explorations").glob("checkpoint-*")]
    assert max(kept) == 6  # 12 training pairs in batches of 4: epoch 2 ends at step 6

    resumed = stage.main([str(recipe)])
    assert resumed["mechanisms"]["interpretations"] == done  # finished before the interruption: not retrained
    assert resumed["mechanisms"]["explorations"]["resumed_from"] == "checkpoint-6"
    for mech in ("interpretations", "explorations"):
        # epoch 3 picks up the weights, optimiser, schedule and random state of the checkpoint: the same
        # numbers as the run that was never interrupted
        assert resumed["mechanisms"][mech]["identifier"] == whole["mechanisms"][mech]["identifier"]
    assert [h["epoch"] for h in resumed["mechanisms"]["explorations"]["identifier"]["history"]] == [1, 2, 3]
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md", "explorations", "interpretations", "report.json", "report.png", "stage.json"]


def test_checkpoints_of_another_recipe_are_not_resumed(tmp_path, monkeypatch):
    from tiny import make_tiny_bert

    import emprl.common.classifier_trainer as classifier_trainer
    import emprl.identifiers as stage

    make_tiny_bert(str(tmp_path / "encoder"))
    write_epitome(tmp_path / "epitome", n_per_level=4)
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": str(tmp_path / "epitome"), "encoder": str(tmp_path / "encoder"), "output_dir": str(tmp_path / "out"),
        "mechanisms": ["explorations"], "num_epochs": 2, "batch_size": 4, "baseline": False,
        "early_stopping_patience": 0, "max_context_len": 24, "max_response_len": 16}))
    stop = StopAfterEpoch("explorations", 1)
    monkeypatch.setattr(classifier_trainer, "early_stopping", lambda patience: [stop])
    with pytest.raises(KeyboardInterrupt):
        stage.main([str(recipe)])
    monkeypatch.undo()
    assert (tmp_path / "out" / "checkpoints" / "explorations" / "checkpoint-3").is_dir()
    other = stage.main([str(recipe), "--learning_rate", "1e-3"])
    assert other["mechanisms"]["explorations"]["resumed_from"] is None
    assert len(other["mechanisms"]["explorations"]["identifier"]["history"]) == 2

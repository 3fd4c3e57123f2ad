"""The ``transformers.Trainer`` set-up both classifier stages share: the empathy identifiers
(``emprl.identifiers``) and the ETHREED emotion classifier (``emprl.emotion_classifier``).

- cross-entropy on the model's logits, optionally class-weighted (``class_weighting: balanced``);
- one learning rate for the pretrained encoder and one for the new head (AdamW param groups);
- a validation pass and a checkpoint each epoch, early stopping, the best epoch kept at the end;
- resuming: checkpoints go to ``<output_dir>/checkpoints`` beside ``run.json``, which names the recipe
  hash and input fingerprints they belong to. A rerun of the same recipe continues from the newest
  checkpoint that loads (docs/lifecycle.md); any other run empties the folder first. Both stages replace
  their output folder whole when they finish, so the checkpoints go with it.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from collections.abc import Callable
from typing import Any

import torch
from transformers import EarlyStoppingCallback, Trainer, TrainingArguments

from emprl.common.errors import fault_error
from emprl.common.io import atomic_write_json
from emprl.common.preemption import Preemption, PreemptionCallback
from emprl.pipeline.lifecycle import check_folder_files, newest_intact_checkpoint

logger = logging.getLogger("emprl.common.classifier_trainer")
WORK_DIR = "checkpoints"   # inside the stage's output folder while it runs
RUN_FILE = "run.json"      # the recipe hash and inputs the checkpoints belong to
RESULT_FILE = "result.json"  # written once a model is trained: a rerun reuses it instead of training again


# ----------------------------------------------------------------------------- loss and optimiser
def loss_weights(labels, how: str, num_classes: int) -> torch.Tensor | None:
    """``balanced``: n / (K * count_k) per class; a class absent from training gets 0 (never a target)."""
    if how == "none":
        return None
    counts = torch.bincount(torch.as_tensor(list(labels)), minlength=num_classes).float()
    return torch.where(counts > 0, counts.sum() / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))


def param_groups(model: torch.nn.Module, encoder_prefixes: tuple[str, ...], learning_rate: float,
                 head_learning_rate: float, weight_decay: float) -> list[dict]:
    """AdamW groups: encoder (names starting with ``encoder_prefixes``) or head, with or without weight
    decay (none on biases and norms). Frozen parameters are left out."""
    groups: dict[tuple[bool, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        encoder = name.startswith(encoder_prefixes)
        decay = p.dim() > 1 and "norm" not in name.lower()
        groups.setdefault((encoder, decay), {"params": [], "lr": learning_rate if encoder else head_learning_rate,
                                             "weight_decay": weight_decay if decay else 0.0})["params"].append(p)
    return list(groups.values())


def make_optimizer(groups: list[dict]) -> torch.optim.Optimizer:
    # The fused AdamW kernel (CPU and CUDA) is several times faster than the per-tensor loop on CPU.
    try:
        return torch.optim.AdamW(groups, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return torch.optim.AdamW(groups)


class ClassifierTrainer(Trainer):
    """Cross-entropy on the logits (a tensor, or ``.logits`` of a transformers output), weighted per class
    when ``class_weights`` is given; the model's own loss is never used."""

    def __init__(self, *args, class_weights: torch.Tensor | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.class_weights = class_weights
        self.model_accepts_loss_kwargs = False  # compute_loss returns a mean: Trainer scales it for accumulation

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        outputs = model(**inputs)
        logits = outputs if isinstance(outputs, torch.Tensor) else outputs.logits
        weight = None if self.class_weights is None else self.class_weights.to(logits.device)
        loss = torch.nn.functional.cross_entropy(logits.float(), labels, weight=weight)
        return (loss, {"logits": logits}) if return_outputs else loss

    def _get_eval_sampler(self, eval_dataset):
        # transformers 4.57 applies group_by_length to evaluation too, in a random order: predict() would
        # return its predictions shuffled. Evaluation reads the dataset in order (each process its share).
        if eval_dataset is None:
            return None
        return torch.utils.data.SequentialSampler(eval_dataset) if self.args.world_size <= 1 else None


def build_classifier_trainer(model, args: TrainingArguments, *, encoder_prefixes: tuple[str, ...],
                             learning_rate: float, head_learning_rate: float, weight_decay: float,
                             train_labels, class_weighting: str, num_classes: int, early_stopping_patience: int,
                             **trainer_kwargs: Any) -> ClassifierTrainer:
    """A stage's Trainer: encoder and head learning rates as AdamW param groups, the class-weighted loss,
    early stopping. ``trainer_kwargs``: the datasets, the collator and compute_metrics."""
    optimizer = make_optimizer(param_groups(model, encoder_prefixes, learning_rate, head_learning_rate, weight_decay))
    return ClassifierTrainer(model=model, args=args, optimizers=(optimizer, None),
                             callbacks=early_stopping(early_stopping_patience),
                             class_weights=loss_weights(train_labels, class_weighting, num_classes), **trainer_kwargs)


# ----------------------------------------------------------------------------- arguments
def training_arguments(output_dir: str, *, metric: str | None, bf16: bool | None, report_to: str,
                       progress: bool = True, **values: Any) -> TrainingArguments:
    """Evaluate, checkpoint and log once per epoch; keep the epoch with the highest ``metric`` (None: no
    validation data, the last epoch). ``bf16`` None: as the accelerate config says. ``values``: the stage's
    sizes and rates under their TrainingArguments names."""
    if bf16 is not None:  # TrainingArguments alone cannot turn off a bf16 accelerate config
        os.environ["ACCELERATE_MIXED_PRECISION"] = "bf16" if bf16 else "no"
    cuda = torch.cuda.is_available()
    return TrainingArguments(
        output_dir=output_dir, logging_dir=os.path.join(output_dir, "runs"), report_to=report_to,
        eval_strategy="epoch" if metric else "no", save_strategy="epoch", logging_strategy="epoch",
        load_best_model_at_end=metric is not None, metric_for_best_model=metric, greater_is_better=True,
        save_total_limit=1,  # with load_best_model_at_end: the best and the newest checkpoint
        restore_callback_states_from_checkpoint=True,  # early stopping's count of stale epochs
        lr_scheduler_type="linear", remove_unused_columns=False,  # the collators tokenise the raw text
        label_names=["labels"], bf16=bool(bf16), use_cpu=bool(bf16) and not cuda, dataloader_pin_memory=cuda,
        save_safetensors=False,  # non-transformers models: torch.save keeps T5's tied embeddings shared
        disable_tqdm=not progress, **values)


def early_stopping(patience: int) -> list:
    """The callbacks for ``early_stopping_patience`` (0: none)."""
    return [EarlyStoppingCallback(early_stopping_patience=patience)] if patience else []


# ----------------------------------------------------------------------------- checkpoints and resuming
def prepare_work_dir(output_dir: str, recipe_hash: str, inputs: dict, fresh: bool) -> str:
    """``output_dir/checkpoints``, kept when it belongs to this recipe and these inputs (a rerun resumes
    from it) and emptied otherwise or when ``fresh`` (overwrite_output_dir). Main process only."""
    work = os.path.join(output_dir, WORK_DIR)
    owner = {"recipe_hash": recipe_hash, "inputs": inputs}
    if not fresh and read_json(os.path.join(work, RUN_FILE)) == json.loads(json.dumps(owner)):
        return work
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    atomic_write_json(os.path.join(work, RUN_FILE), owner)
    return work


def read_json(path: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


def check_checkpoint(folder: str) -> None:
    """Raise unless the checkpoint's files load (a save cut short by a kill or a full disk leaves a
    partial folder; trainer_state.json is the last file the Trainer writes)."""
    check_folder_files(folder)
    if not os.path.isfile(os.path.join(folder, "trainer_state.json")):
        raise FileNotFoundError("trainer_state.json missing")
    if not any(f.endswith((".safetensors", ".bin")) and f != "training_args.bin" for f in os.listdir(folder)):
        raise FileNotFoundError("no model weights")
    weights = os.path.join(folder, "pytorch_model.bin")
    if os.path.isfile(weights):
        torch.load(weights, map_location="cpu", weights_only=True)


def resume_point(folder: str) -> str | None:
    """The newest checkpoint in ``folder`` whose files load, or None."""
    found = glob.glob(os.path.join(folder, "checkpoint-*"))
    steps = sorted((int(p.rsplit("-", 1)[1]), p) for p in found if p.rsplit("-", 1)[1].isdigit() and os.path.isdir(p))
    return newest_intact_checkpoint([p for _, p in steps], check=check_checkpoint)


def fit(trainer: Trainer, stage: str) -> str | None:
    """Train, continuing from the newest intact checkpoint of ``args.output_dir``; returns its name or None."""
    resume = resume_point(trainer.args.output_dir)
    if resume:
        logger.info("resuming from %s", resume)
    train_preemptible(trainer, stage, resume, "rerun the same command (it continues from that checkpoint)")
    return os.path.basename(resume) if resume else None


def train_preemptible(trainer: Trainer, stage: str, resume: str | None, how_to_resume: str,
                      preemption: Preemption | None = None):
    """``trainer.train``; a SIGTERM or SIGINT saves a checkpoint after the current step and exits 143/130
    (docs/lifecycle.md, "Signals"); a full or read-only disk is one line, and the checkpoint it cut
    short is removed. ``preemption``: the stage's own handlers, when installed already (else this
    call installs them for the training). Returns the Trainer's TrainOutput."""
    own = preemption is None
    preemption = Preemption(stage).install() if own else preemption
    trainer.add_callback(PreemptionCallback(preemption))
    try:
        result = trainer.train(resume_from_checkpoint=resume)
    except Exception as err:
        fault = fault_error(err, trainer.args.output_dir)
        if fault is None:
            raise
        if trainer.is_world_process_zero():
            drop_partial_checkpoints(trainer.args.output_dir)
        raise fault from None
    finally:
        if own:
            preemption.uninstall()
    if preemption.requested:
        saved = os.path.join(trainer.args.output_dir, f"checkpoint-{trainer.state.global_step}")
        preemption.stop(f"saved {saved}", how_to_resume)
    return result


def drop_partial_checkpoints(folder: str) -> None:
    """Remove the checkpoints of ``folder`` that a failed save left incomplete (resume skips them anyway)."""
    for path in glob.glob(os.path.join(folder, "checkpoint-*")):
        if os.path.isdir(path) and not os.path.isfile(os.path.join(path, "trainer_state.json")):
            shutil.rmtree(path, ignore_errors=True)


def drop_checkpoints(folder: str) -> None:
    """Remove the Trainer's checkpoints once the trained model is saved (t5-base: gigabytes each)."""
    for path in glob.glob(os.path.join(folder, "checkpoint-*")):
        shutil.rmtree(path, ignore_errors=True)


def finished_result(folder: str, model_file: str) -> dict | None:
    """The result a finished training wrote into ``folder``, if its saved model is there too."""
    result = read_json(os.path.join(folder, RESULT_FILE))
    return result if result is not None and os.path.isfile(model_file) else None


def train_and_record(trainer: Trainer, history_columns: dict[str, str], stage: str) -> dict:
    """Train (continuing an interrupted run) and return the record: the kept epoch, the per-epoch
    history (``history_columns`` as in epoch_history) and the checkpoint it resumed from."""
    resumed = fit(trainer, stage)
    return {"best_epoch": best_epoch(trainer), "history": epoch_history(trainer.state.log_history, history_columns),
            "resumed_from": resumed}


def save_result(trainer: Trainer, folder: str, result: dict, save_model: Callable[[], None]) -> None:
    """On the main process: the trained model (``save_model``), then RESULT_FILE in ``folder`` (after the
    model: it marks the training done), then the checkpoints go. Every process waits for it."""
    if trainer.is_world_process_zero():
        save_model()
        atomic_write_json(os.path.join(folder, RESULT_FILE), result)
        drop_checkpoints(folder)
    trainer.accelerator.wait_for_everyone()


# ----------------------------------------------------------------------------- history
def epoch_history(log_history: list[dict], columns: dict[str, str]) -> list[dict]:
    """One row per epoch from the Trainer's log: ``train_loss`` (the epoch's mean) and each of ``columns``
    (row key -> logged key, e.g. ``val_macro_f1`` -> ``eval_macro_f1``)."""
    rows: dict[int, dict] = {}
    for entry in log_history:
        if "epoch" not in entry or "train_runtime" in entry:
            continue
        row = rows.setdefault(round(entry["epoch"]), {"epoch": round(entry["epoch"])})
        if "loss" in entry:
            row["train_loss"] = entry["loss"]
        row.update({name: entry[key] for name, key in columns.items() if key in entry})
    return [rows[e] for e in sorted(rows)]


def best_epoch(trainer: Trainer) -> int:
    """The epoch whose weights the Trainer kept: the best on validation, else the last one trained."""
    state = trainer.state
    for entry in state.log_history:
        if state.best_global_step is not None and entry.get("step") == state.best_global_step and "epoch" in entry:
            return round(entry["epoch"])
    return round(state.epoch or 0)

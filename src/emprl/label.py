"""Stage 3: label every (context, reference) pair with the identifiers' levels, once.

    python -m emprl.label recipes/demo/label.yaml

These levels are the gold l_i of the empathy reward (PPO) and the references of Emp-F1, so they are
computed here and stored as int columns ``emotional_reactions``, ``interpretations``, ``explorations``
of a saved DatasetDict (``load_dialogues("disk:<output_dir>")``), never per PPO step.

Composed data knows better than the identifiers: where an EmpatheticDialogues-format folder has a
``<split>_levels.csv`` sidecar (the demo composer writes one), its levels are attached as
``true_emotional_reactions``, ``true_interpretations``, ``true_explorations``, the reference an
independent judge is scored against (docs/judges.md). Real data has no sidecar and gets no such columns.
"""

from __future__ import annotations

import csv
import logging
import os
from dataclasses import dataclass, field
from typing import Literal

import torch
from tqdm.auto import tqdm

from emprl.common.errors import UserError, run_cli
from emprl.common.io import atomic_dir, atomic_write_json, write_model_card
from emprl.common.policy import pick_device
from emprl.common.ranks import launched_ranks
from emprl.data import LEVEL_NAMES, MECHANISMS, load_dialogues, serialize_context
from emprl.pipeline.config import config_to_dict, parse_recipe
from emprl.pipeline.config_limits import CheckedConfig
from emprl.pipeline.lifecycle import begin_stage
from reward_models import EmpathyReward

logger = logging.getLogger("emprl.label")


@dataclass
class LabelConfig(CheckedConfig):
    data: str = field(metadata={"help": "dialogue data spec FORMAT:PATH (see emprl.data.load_dialogues)",
                                "existing_path": True})
    identifiers_dir: str = field(default="outputs/demo/identifiers",
                                 metadata={"help": "output folder of the identifiers stage", "existing_path": True})
    output_dir: str = "outputs/demo/labelled"
    batch_size: int = 64
    max_context_len: int = 200
    max_response_len: int = 50
    speaker_tag: str = "Speaker:"
    listener_tag: str = "Listener:"
    on_bad_rows: Literal["error", "skip"] = "error"
    max_rows: dict[str, int] = field(default_factory=dict, metadata={
        "help": "label at most N rows of a split, a seeded random subset kept in corpus order, e.g. {train: 1200}: "
                "PPO reads only the contexts its steps reach"})
    seed: int = 42
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:1 ..."})
    overwrite_output_dir: bool = field(default=False, metadata={"help": "relabel even if output_dir is complete"})


def serialize_all(contexts, tokenizer, cfg: LabelConfig) -> list[str]:
    return [serialize_context(turns, tokenizer=tokenizer, max_tokens=cfg.max_context_len,
                              speaker_tag=cfg.speaker_tag, listener_tag=cfg.listener_tag) for turns in contexts]


def label_split(split, reward: EmpathyReward, cfg: LabelConfig, name: str):
    """The split with one int column per mechanism (existing level columns are replaced)."""
    tokenizer = next(iter(reward.tokenizers.values()))
    levels = []
    for start in tqdm(range(0, len(split), cfg.batch_size), desc=f"label {name}", unit="batch"):
        rows = split[start:start + cfg.batch_size]
        contexts = serialize_all(rows["context"], tokenizer, cfg)
        levels.append(reward.levels(contexts, rows["response"]).cpu())
    levels = torch.cat(levels) if levels else torch.zeros((0, len(reward.mechanisms)), dtype=torch.long)
    split = split.remove_columns([m for m in reward.mechanisms if m in split.column_names])
    for i, mech in enumerate(reward.mechanisms):
        split = split.add_column(mech, levels[:, i].tolist())
    return split


TRUE_PREFIX = "true_"
TRUE_COLUMNS = tuple(TRUE_PREFIX + m for m in MECHANISMS)
SIDECAR_FILES = {"train": "train_levels.csv", "validation": "valid_levels.csv", "test": "test_levels.csv"}
_SIDECAR_HEADER = ["conv_id", "utterance_idx", *MECHANISMS]


def read_sidecar(data_spec: str, split: str) -> tuple[str, dict[tuple[str, int], list[int]]] | None:
    """(path, (conv_id, utterance_idx) -> true levels) of a split's sidecar, or None where there is none."""
    fmt, _, folder = data_spec.partition(":")
    if fmt != "empathetic_dialogues" or split not in SIDECAR_FILES:
        return None
    path = os.path.join(folder, SIDECAR_FILES[split])
    if not os.path.isfile(path):
        return None
    table = {}
    with open(path, encoding="utf-8", newline="") as fh:
        for lineno, row in enumerate(csv.reader(fh), start=1):
            if lineno == 1:
                if row != _SIDECAR_HEADER:
                    raise UserError(f"{path}:1: expected the header {','.join(_SIDECAR_HEADER)}")
                continue
            try:
                conv_id, idx, *levels = row
                key, levels = (conv_id, int(idx)), [int(v) for v in levels]
                if len(levels) != 3 or not all(0 <= v <= 2 for v in levels) or key in table:
                    raise ValueError
            except ValueError:
                raise UserError(f"{path}:{lineno}: expected a new conv_id,utterance_idx and three levels 0-2, "
                                f"got {','.join(row)[:80]!r}") from None
            table[key] = levels
    return path, table


def attach_true_levels(split, data_spec: str, name: str, strict: bool = True):
    """The split with the sidecar's levels as ``true_*`` columns (unchanged where there is no sidecar).
    A reply is row (conv_id, utterance position = number of earlier turns + 1) of the sidecar; a reply
    without a row, or (``strict``) a row without a reply, is a UserError."""
    found = read_sidecar(data_spec, name)
    if found is None:
        return split
    path, table = found
    keys = [(conv_id, len(context) + 1) for conv_id, context in zip(split["conv_id"], split["context"])]
    missing = next((k for k in keys if k not in table), None)
    if missing:
        raise UserError(f"{path}: no row for the reply conv_id {missing[0]} utterance_idx {missing[1]} of the "
                        f"{name} split; regenerate the sidecar with its data")
    extra = next((k for k in table if k not in set(keys)), None) if strict else None
    if extra:
        raise UserError(f"{path}: row conv_id {extra[0]} utterance_idx {extra[1]} matches no reply of the {name} "
                        "split; regenerate the sidecar with its data")
    split = split.remove_columns([c for c in TRUE_COLUMNS if c in split.column_names])
    for i, column in enumerate(TRUE_COLUMNS):
        split = split.add_column(column, [table[k][i] for k in keys])
    return split


def subset(split, n: int | None, seed: int):
    """At most ``n`` rows: a seeded random choice, kept in corpus order."""
    if n is None or n >= len(split):
        return split
    import numpy as np

    return split.select(sorted(np.random.default_rng(seed).permutation(len(split))[:n].tolist()))


def label_stats(dataset, mechanisms) -> dict:
    return {name: {"rows": len(split), **{m: {lvl: split[m].count(i) for i, lvl in enumerate(LEVEL_NAMES)}
                                          for m in mechanisms}}
            for name, split in dataset.items()}


def gold_vs_true(dataset, mechanisms) -> dict:
    """Per split with the composer's true levels: how well the gold levels (the identifiers' reading of each
    reference, what the reward aims at) agree with the truth: per mechanism accuracy, macro-F1 and the
    confusion matrix (rows: true no/weak/strong, columns: gold), and the share of references whose three
    gold levels are all right. A reward can teach no more than its gold reads (docs/rl-effect.md)."""
    from sklearn.metrics import confusion_matrix, f1_score

    out = {}
    for name, split in dataset.items():
        if not all(TRUE_PREFIX + m in split.column_names for m in mechanisms) or len(split) == 0:
            continue
        row, joint = {"rows": len(split)}, None
        for m in mechanisms:
            gold, true = split[m], split[TRUE_PREFIX + m]
            hits = [g == t for g, t in zip(gold, true)]
            joint = hits if joint is None else [a and b for a, b in zip(joint, hits)]
            row[m] = {"accuracy": sum(hits) / len(hits),
                      "macro_f1": float(f1_score(true, gold, labels=[0, 1, 2], average="macro", zero_division=0)),
                      "confusion": confusion_matrix(true, gold, labels=[0, 1, 2]).tolist()}
        row["joint_accuracy"] = sum(joint) / len(joint)
        out[name] = row
    return out


def print_agreement(agreement: dict, mechanisms) -> None:
    for name, row in agreement.items():
        print(f"gold vs true levels, {name} ({row['rows']} references): " + "; ".join(
            f"{m} accuracy {row[m]['accuracy']:.3f}, macro-F1 {row[m]['macro_f1']:.3f}" for m in mechanisms)
            + f"; all three right {row['joint_accuracy']:.3f}")
        for m in mechanisms:
            print(f"  {m} confusion (rows true no/weak/strong, columns gold): {row[m]['confusion']}")


def agreement_main(folder: str) -> dict:
    """``python -m emprl.label --agreement FOLDER``: gold vs true levels of a labelled folder, no model loaded."""
    if not os.path.isfile(os.path.join(folder, "dataset_dict.json")):
        raise UserError(f"{folder}: not a labelled folder (no dataset_dict.json); expected the label stage's output_dir")
    dataset = load_dialogues(f"disk:{folder}")
    agreement = gold_vs_true(dataset, MECHANISMS)
    if not agreement:
        raise UserError(f"{folder}: no split has the composer's true_* columns; only composed data knows its truth")
    print_agreement(agreement, MECHANISMS)
    return agreement


def main(argv: list[str] | None = None) -> dict | None:
    import sys

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--agreement"]:
        if len(argv) != 2:
            raise UserError("usage: python -m emprl.label --agreement LABELLED_FOLDER")
        return agreement_main(argv[1])
    (cfg,) = parse_recipe((LabelConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    dataset = load_dialogues(cfg.data, on_bad_rows=cfg.on_bad_rows)  # inputs checked before the folder is touched
    unknown = sorted(set(cfg.max_rows) - set(dataset))
    if unknown:
        raise UserError(f"max_rows: no split {', '.join(unknown)} in {cfg.data} (has {', '.join(dataset)})")
    for name in list(dataset):  # the composer's true levels, where the folder has them (checked here too)
        dataset[name] = attach_true_levels(dataset[name], cfg.data, name, strict=cfg.on_bad_rows == "error")
    run = begin_stage("label", cfg.output_dir, (cfg,), inputs=[cfg.data, cfg.identifiers_dir],
                      overwrite=cfg.overwrite_output_dir)
    if run is None:
        return None
    from accelerate import PartialState

    # Labelling is one pass of inference: under a multi-process launch the main rank does it, others wait.
    want_cpu = cfg.device == "cpu" or not torch.cuda.is_available()
    state = PartialState(cpu=want_cpu) if launched_ranks() > 1 else None
    if state is not None and not state.is_main_process:
        state.wait_for_everyone()
        return None
    device = pick_device(cfg.device)
    if state is not None and cfg.device == "auto":
        device = state.device
    reward = EmpathyReward.from_pretrained(cfg.identifiers_dir, device=device, max_context_len=cfg.max_context_len,
                                           max_response_len=cfg.max_response_len, batch_size=cfg.batch_size)
    for name in list(dataset):
        dataset[name] = label_split(subset(dataset[name], cfg.max_rows.get(name), cfg.seed), reward, cfg, name)
    stats = label_stats(dataset, reward.mechanisms)
    agreement = gold_vs_true(dataset, reward.mechanisms)
    with atomic_dir(cfg.output_dir) as tmp:
        dataset.save_to_disk(tmp)
        atomic_write_json(os.path.join(tmp, "label_stats.json"),
                          {"recipe_hash": run.recipe_hash, "identifiers_dir": cfg.identifiers_dir, "splits": stats,
                           "gold_vs_true": agreement})
        write_model_card(tmp, "EmpRL labelled dialogues",
                         f"`{cfg.data}` with the empathy levels of the identifiers in `{cfg.identifiers_dir}` on "
                         f"every (context, reference) pair. Load with `load_dialogues(\"disk:{cfg.output_dir}\")`.",
                         config_to_dict(cfg))
        run.stamp(tmp)  # last: marks the folder complete
    for name, s in stats.items():
        print(f"{name}: {s['rows']} rows; " + "; ".join(
            f"{m}: " + "/".join(str(s[m][lvl]) for lvl in LEVEL_NAMES) for m in reward.mechanisms)
            + ("; with the composer's true levels" if TRUE_COLUMNS[0] in dataset[name].column_names else ""))
    print_agreement(agreement, reward.mechanisms)
    print(f"wrote {cfg.output_dir} (levels as no/weak/strong counts)")
    run.release()
    if state is not None:
        state.wait_for_everyone()
    return stats


if __name__ == "__main__":
    run_cli(main)

"""Atomic writes for results and checkpoints, and the model card every stage leaves behind."""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from emprl.common.errors import UserError


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see either the old file or the whole new one."""
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


def atomic_write_json(path: str, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str, expected: str) -> Any:
    """A JSON file; a missing or broken one is a UserError naming it and ``expected`` (what should be there)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError) as err:
        raise UserError(f"{path}: cannot read it ({err}); expected {expected}") from None


def read_jsonl(path: str, strict: bool = False) -> list[dict]:
    """The rows of a JSONL file, [] when it is missing. A log's line cut short by a crash is skipped;
    ``strict`` (files written whole, e.g. an evaluation's samples.jsonl): such a line is a UserError
    naming it. Blank lines are skipped either way. A ``.gz`` file is read through gzip."""
    rows = []
    if os.path.isfile(path):
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rt", encoding="utf-8") as fh:
            for i, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    rows.append(json.loads(line))
                except ValueError as err:
                    if strict:
                        raise UserError(f"{path}:{i}: not a JSON object ({err})") from None
    return rows


def atomic_write_jsonl(path: str, rows: list[dict]) -> None:
    atomic_write_text(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))


@contextlib.contextmanager
def atomic_dir(path: str) -> Iterator[str]:
    """Yield a temporary sibling folder; on success it replaces ``path`` whole, on error it is removed."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".tmp-{os.path.basename(path)}-", dir=parent)
    os.chmod(tmp, 0o777 & ~_umask())
    try:
        yield tmp
        if os.path.isdir(path):
            old = tempfile.mkdtemp(prefix=f".old-{os.path.basename(path)}-", dir=parent)
            os.replace(path, os.path.join(old, "x"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


STAGE_STAMP = "stage.json"


def write_stage_stamp(output_dir: str, stage: str, *configs: Any, **extra: Any) -> None:
    """Written LAST by a stage: its output is complete for this recipe (``make train-all`` skips it)."""
    import datetime

    from emprl.pipeline.config import recipe_hash

    atomic_write_json(os.path.join(output_dir, STAGE_STAMP), {
        "stage": stage, "recipe_hash": recipe_hash(*configs), "complete": True,
        "finished_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **extra})


def inputs_fingerprint(paths) -> dict[str, str]:
    """What a stage's output depends on beyond its recipe: the newest modification time and total
    size of the files under each input path (a ``{seed}`` pattern stands for its folder)."""
    out = {}
    for path in map(str, paths):
        path = path.split("{seed}")[0] if "{seed}" in path else path
        stats = []
        if os.path.isdir(path):
            for root, _, files in os.walk(path):
                stats += [os.stat(os.path.join(root, f)) for f in files if not f.startswith(".")]
        elif os.path.exists(path):
            stats.append(os.stat(path))
        out[path] = f"{max((s.st_mtime for s in stats), default=0):.0f}:{sum(s.st_size for s in stats)}"
    return out


def read_stage_stamp(output_dir: str) -> dict | None:
    try:
        with open(os.path.join(output_dir, STAGE_STAMP), encoding="utf-8") as fh:
            return json.load(fh)
    except (OSError, ValueError):
        return None


# Recipe keys that name what a stage started from (first found wins) and the data it read.
_BASE_MODEL_KEYS = ("sft_model_path", "model_name_or_path", "encoder", "model")
_DATASET_KEYS = ("data", "labelled_data")


def write_model_card(output_dir: str, title: str, summary: str, recipe: dict[str, Any],
                     metrics: dict[str, Any] | None = None, extra: str = "") -> None:
    """A README.md stating what produced the folder: stage, recipe values, data and metrics.

    A ``huggingface_hub.ModelCard`` whose YAML metadata names the base model, the datasets and the
    metrics (as the hub reads them); the body keeps the metric values and every recipe value."""
    from huggingface_hub import ModelCard, ModelCardData

    base_model = next((recipe[k] for k in _BASE_MODEL_KEYS if isinstance(recipe.get(k), str)), None)
    datasets = [recipe[k] for k in _DATASET_KEYS if isinstance(recipe.get(k), str)]
    card_data = ModelCardData(base_model=base_model, datasets=datasets or None,
                              metrics=list(metrics) if metrics else None, tags=["emprl"])
    lines = ["---", card_data.to_yaml(), "---", f"# {title}", "", summary.strip(), ""]
    if metrics:
        lines += ["## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v:.4g} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in metrics.items()]
        lines.append("")
    lines += ["## Recipe", "", "```yaml"]
    lines += [f"{k}: {json.dumps(v, ensure_ascii=False)}" for k, v in recipe.items()]
    lines += ["```", ""]
    if extra:
        lines += [extra.strip(), ""]
    lines.append("Produced by the EmpRL pipeline.")
    card = ModelCard("\n".join(lines) + "\n")
    atomic_write_text(os.path.join(output_dir, "README.md"), str(card))

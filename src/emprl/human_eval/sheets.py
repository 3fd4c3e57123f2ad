"""Human evaluation, the sheets: blind rating and A/B sheets (with their key) from generation files,
and the annotators' filled copies read back, every answer checked (``emprl.human_eval`` scores them)."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import random
import shutil
import tempfile
from pathlib import Path

from emprl.common.errors import UserError
from emprl.human_eval.answers import answer_rows, is_answer_log

ASPECTS = ("empathy", "relevance", "fluency")
CHOICES = ("win", "lose", "tie")  # win: response A is better, lose: B is better
RATING_COLUMNS = ("item_id", "context", "response", *ASPECTS)
AB_COLUMNS = ("item_id", "context", "response_a", "response_b", "choice")

_INSTRUCTIONS = """# Annotation instructions

Each row shows a dialogue context (the last turn is the speaker's) and a listener's reply.
The systems are hidden and rows are shuffled. Fill your own copy and leave every item_id unchanged.

ratings.csv: give each reply an integer from 1 (very poor) to 5 (excellent) for
- empathy: does the reply show understanding of the speaker's feelings and experience?
- relevance: does it fit the context and follow on from it?
- fluency: is it natural, grammatical and easy to read?

ab.csv: compare reply A with reply B and write `choice` = win (A is better), lose (B is better)
or tie (equally good or equally bad), judging empathy first, then relevance and fluency.
"""


# ----------------------------------------------------------------------------- files


def _csv_text(columns, rows) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    writer.writerows(rows)
    return buf.getvalue()


def read_generations(path: str) -> list[dict]:
    """Rows of a generation JSONL file: context (list[str] or str), reference (str), response (str)."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read generation file ({err})") from None
    rows = []
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise UserError(f"{path}:{lineno}: not valid JSON ({err.msg})") from None
        if not isinstance(row, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object with context, reference, response")
        ctx = row.get("context")
        ok_ctx = isinstance(ctx, str) or (isinstance(ctx, list) and all(isinstance(t, str) for t in ctx))
        if not ok_ctx:
            raise UserError(f"{path}:{lineno}: 'context' must be a string or a list of strings")
        for key in ("reference", "response"):
            if not isinstance(row.get(key), str):
                raise UserError(f"{path}:{lineno}: '{key}' must be a string")
        rows.append(
            {"context": ctx, "reference": row["reference"], "response": row["response"], "line": lineno}
        )
    if not rows:
        raise UserError(f"{path}: no generations in file")
    return rows


def render_context(context: list[str] | str) -> str:
    """One readable cell: turns on separate lines, roles counted from the end (last = Speaker)."""
    if isinstance(context, str):
        return context
    n = len(context)
    return "\n".join(
        f"{'Speaker' if (n - 1 - i) % 2 == 0 else 'Listener'}: {t}" for i, t in enumerate(context)
    )


def read_sheet(path: str, columns: tuple[str, ...]):
    """Yield (line number where the record starts, {column: value}) for a filled CSV copy."""
    try:
        f = open(path, newline="", encoding="utf-8-sig")  # utf-8-sig: spreadsheets often add a BOM
    except OSError as err:
        raise UserError(f"{path}: cannot open sheet ({err.strerror})") from None
    with f:
        reader = csv.reader(f)
        try:
            header = [h.strip() for h in next(reader, [])]
            missing = [c for c in columns if c not in header]
            if missing:
                raise UserError(f"{path}:1: header lacks column(s) {', '.join(missing)}")
            start = reader.line_num + 1
            for row in reader:
                if any(cell.strip() for cell in row):
                    if len(row) != len(header):
                        raise UserError(f"{path}:{start}: expected {len(header)} fields, found {len(row)}")
                    yield start, dict(zip(header, row))
                start = reader.line_num + 1
        except (csv.Error, UnicodeDecodeError) as err:
            raise UserError(f"{path}:{reader.line_num}: unreadable CSV ({err})") from None


# ----------------------------------------------------------------------------- export


def export(generations: dict[str, str], n: int, seed: int, out: str) -> Path:
    """Sample n shared contexts and write the blind sheets and the key into the new folder `out`."""
    if len(generations) < 2:
        raise UserError("--generations: give at least two systems as NAME=path.jsonl")
    if n < 1:
        raise UserError(f"--n must be positive, got {n}")
    out_dir = Path(out)
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UserError(f"--out {out} already exists and is not an empty folder (it may hold a key in use)")
    systems = list(generations)
    data = {name: read_generations(path) for name, path in generations.items()}
    first = systems[0]
    for name in systems[1:]:
        path = generations[name]
        if len(data[name]) != len(data[first]):
            raise UserError(
                f"{path}: {len(data[name])} generations but {generations[first]} has {len(data[first])}"
            )
        for mine, theirs in zip(data[name], data[first]):
            if mine["context"] != theirs["context"]:
                raise UserError(
                    f"{path}:{mine['line']}: context differs from {generations[first]}:{theirs['line']} "
                    "(files must share the same contexts in the same order)"
                )
    total = len(data[first])
    if n > total:
        raise UserError(f"--n {n} but the generation files hold only {total} contexts")

    rng = random.Random(seed)
    picked = rng.sample(range(total), n)  # random order of contexts, one block of rows each
    rating_rows, ab_rows = [], []
    key = {
        "systems": systems,
        "main": first,
        "generations": generations,
        "n": n,
        "seed": seed,
        "rows": picked,
        "ratings": {},
        "ab": {},
    }
    for idx in picked:
        ctx = render_context(data[first][idx]["context"])
        for name in rng.sample(systems, len(systems)):  # shuffled inside the block: no position cue
            item = f"R{len(rating_rows) + 1:04d}"
            key["ratings"][item] = {"system": name, "row": idx}
            rating_rows.append([item, ctx, data[name][idx]["response"], "", "", ""])
        for other in rng.sample(systems[1:], len(systems) - 1):
            a, b = (first, other) if rng.random() < 0.5 else (other, first)
            item = f"AB{len(ab_rows) + 1:04d}"
            key["ab"][item] = {"a": a, "b": b, "other": other, "row": idx}
            ab_rows.append([item, ctx, data[a][idx]["response"], data[b][idx]["response"], ""])

    # Build everything in a sibling temp folder and rename it into place in one step.
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(dir=out_dir.parent, prefix=f".{out_dir.name}."))
    try:
        (tmp_dir / "ratings.csv").write_text(
            _csv_text(RATING_COLUMNS, rating_rows), encoding="utf-8", newline=""
        )
        (tmp_dir / "ab.csv").write_text(_csv_text(AB_COLUMNS, ab_rows), encoding="utf-8", newline="")
        (tmp_dir / "instructions.md").write_text(_INSTRUCTIONS, encoding="utf-8")
        (tmp_dir / "key.json").write_text(json.dumps(key, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp_dir, out_dir)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        raise
    return out_dir


# ----------------------------------------------------------------------------- score


def load_key(path: str) -> dict:
    try:
        key = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read key file ({err})") from None
    if not isinstance(key, dict) or not all(k in key for k in ("systems", "main", "ratings", "ab")):
        raise UserError(f"{path}: not a key.json written by `emprl.human_eval export`")
    return key


def read_copy(path: str, columns, items: dict, parse, complete: bool = True) -> dict:
    """{item_id: parsed answer} of one annotator's copy (a filled CSV sheet, or the rating page's answer
    log ``*.jsonl``); every item of the key at most once, and exactly
    once when ``complete`` (an answer that ``parse`` returns as None is left out)."""
    seen: dict[str, object] = {}
    lines: set[str] = set()
    # The rating page's answer log (emprl.human_eval.answers) gives the same rows as a filled copy.
    kind = "ab" if "choice" in columns else "ratings"
    rows = answer_rows(path, kind, columns) if is_answer_log(path) else read_sheet(path, columns)
    for line, row in rows:
        item = row["item_id"].strip()
        if item not in items:
            raise UserError(f"{path}:{line}: unknown item_id {item!r} (is this the right key?)")
        if item in lines:
            raise UserError(f"{path}:{line}: item_id {item} appears twice")
        lines.add(item)
        value = parse(row, f"{path}:{line}")
        if value is not None:
            seen[item] = value
    missing = sorted(set(items) - set(seen))
    if complete and missing:
        raise UserError(f"{path}: {len(missing)} item(s) missing, first {missing[0]}")
    return seen


def read_fourth_copy(path: str, items: dict) -> dict:
    """{item_id: choice} of the fourth evaluator's ab.csv copy: only the items the three evaluators
    split 1-1-1 need an answer, so blank choices are allowed (and left out)."""
    return read_copy(path, AB_COLUMNS, items, complete=False,
                      parse=lambda row, where: parse_choice(row, where) if row["choice"].strip() else None)


def parse_scores(row: dict, where: str) -> dict:
    scores = {}
    for aspect in ASPECTS:
        raw = row[aspect].strip()
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if value not in (1, 2, 3, 4, 5):
            raise UserError(
                f"{where}: {aspect} of item {row['item_id'].strip()} is {raw!r}; expected an integer 1-5"
            )
        scores[aspect] = int(value)
    return scores


def parse_choice(row: dict, where: str) -> str:
    choice = row["choice"].strip().lower()
    if choice not in CHOICES:
        raise UserError(
            f"{where}: choice of item {row['item_id'].strip()} is {row['choice']!r}; "
            "expected win, lose or tie"
        )
    return choice

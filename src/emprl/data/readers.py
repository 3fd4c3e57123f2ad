"""Readers for the dialogue and empathy datasets, in their official release formats.

Every dialogue reader returns a ``DatasetDict`` with splits ``train``/``validation``/``test`` and the
columns ``context`` (list of turns, oldest first, the last one the speaker's), ``response`` (the
listener's reply), ``conv_id``, ``emotion`` and ``situation`` ("" when the format has none).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator

from datasets import Dataset, DatasetDict

from emprl.common.errors import UserError
from emprl.common.mechanisms import MECHANISMS

logger = logging.getLogger("emprl.data")

SPLITS = ("train", "validation", "test")
EPITOME_FILES = {
    "emotional_reactions": "emotional-reactions-reddit.csv",
    "interpretations": "interpretations-reddit.csv",
    "explorations": "explorations-reddit.csv",
}
DIALOGUE_FORMATS = ("empathetic_dialogues", "pec", "dailydialog", "emprl_json", "disk")
_ON_BAD_ROWS = ("error", "skip")


class _BadRows:
    """Either stops at the first malformed row (file:line and why) or counts and skips them."""

    def __init__(self, policy: str):
        if policy not in _ON_BAD_ROWS:
            raise UserError(f"on_bad_rows: expected one of {', '.join(_ON_BAD_ROWS)}, got {policy!r}")
        self.policy, self.skipped = policy, 0

    def __call__(self, path: str, line: int, reason: str) -> None:
        if self.policy == "error":
            raise UserError(f"{path}:{line}: {reason} (set on_bad_rows: skip to skip such rows)")
        self.skipped += 1

    def report(self, what: str) -> None:
        if self.skipped:
            logger.warning("%s: skipped %d malformed rows", what, self.skipped)
            print(f"emprl: {what}: skipped {self.skipped} malformed rows (on_bad_rows: skip)", flush=True)

    def none_left(self, path: str, what: str = "rows") -> UserError:
        """The error for a file with nothing usable in it."""
        why = f" ({self.skipped} malformed rows skipped so far)" if self.skipped else ""
        return UserError(f"{path}: no usable {what}{why}")


def _lines(path: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of a UTF-8 file; a byte sequence that is not UTF-8 is an error naming
    the line and column (replacing it with U+FFFD would train on damaged text)."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                yield lineno, raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise UserError(f"{path}:{lineno}: not valid UTF-8 (byte 0x{raw[err.start]:02x} at column "
                                f"{err.start + 1}); convert the file to UTF-8") from None


def load_dialogues(spec: str, on_bad_rows: str = "error", splits: Iterable[str] | None = None,
                   counts: dict[str, Counter] | None = None) -> DatasetDict:
    """Load ``FORMAT:PATH`` (see ``DIALOGUE_FORMATS``) into train/validation/test splits.

    ``splits``: only these are read, so a folder needs only the files of the splits a stage uses
    (DailyDialog's test/ alone for an evaluation); None: all three (``disk``: all it saved).
    ``counts``: if given, filled per split with what the reader did beyond returning rows (PEC:
    threads read, continuation lines joined, threads skipped and repeated contexts dropped)."""
    fmt, sep, path = spec.partition(":")
    if not sep or fmt not in DIALOGUE_FORMATS:
        raise UserError(f"data spec {spec!r}: expected FORMAT:PATH with FORMAT one of {', '.join(DIALOGUE_FORMATS)}")
    wanted = tuple(SPLITS if splits is None else splits)
    unknown = [s for s in wanted if s not in SPLITS]
    if unknown or not wanted:
        raise UserError(f"data spec {spec!r}: splits must be some of {', '.join(SPLITS)}, got {list(wanted)}")
    if not os.path.exists(path):
        raise UserError(f"data spec {spec!r}: path '{path}' does not exist")
    if fmt == "disk":
        from datasets import load_from_disk

        try:
            saved = load_from_disk(path)
        except (FileNotFoundError, ValueError) as err:
            raise UserError(f"data spec {spec!r}: not a dataset saved with save_to_disk "
                            f"({' '.join(str(err).split())[:120]})") from None
        if splits is None:
            return saved
        missing = [s for s in wanted if s not in saved]
        if missing:
            raise UserError(f"data spec {spec!r}: no split {', '.join(missing)} (has {', '.join(saved)})")
        return DatasetDict({s: saved[s] for s in wanted})
    bad = _BadRows(on_bad_rows)
    reader = {"empathetic_dialogues": _read_empathetic_dialogues, "pec": _read_pec,
              "dailydialog": _read_dailydialog, "emprl_json": _read_emprl_json}[fmt]
    notes = {split: Counter() for split in wanted}
    rows = {split: reader(path, split, bad, notes[split]) for split in wanted}
    bad.report(spec)
    for split, note in notes.items():
        if note:
            logger.info("%s [%s]: %s", spec, split, ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in note.items()))
    if counts is not None:
        counts.update(notes)
    return DatasetDict({split: _to_dataset(r, f"{spec} [{split}]", bad) for split, r in rows.items()})


def _to_dataset(rows: list[dict], what: str, bad: _BadRows | None = None) -> Dataset:
    kept = [r for r in rows if r["context"] and r["response"].strip() and all(t.strip() for t in r["context"])]
    if len(kept) < len(rows):
        logger.warning("%s: dropped %d examples with an empty context or response", what, len(rows) - len(kept))
    if not kept:  # an empty split would give "0 examples" results downstream, silently
        raise (bad or _BadRows("error")).none_left(what, "examples (a speaker turn followed by a reply)")
    columns = ("context", "response", "conv_id", "emotion", "situation")
    levels = [m for m in MECHANISMS if kept and m in kept[0]]
    data = {c: [r.get(c, "") for r in kept] for c in columns}
    data.update({m: [r[m] for r in kept] for m in levels})
    return Dataset.from_dict(data)


def _example(context: list[str], response: str, conv_id: str, emotion: str = "", situation: str = "") -> dict:
    return {"context": [t.strip() for t in context], "response": response.strip(), "conv_id": conv_id,
            "emotion": emotion, "situation": situation}


def _required_file(path: str) -> str:
    if not os.path.isfile(path):
        raise UserError(f"{path}: file not found")
    return path


# -- EmpatheticDialogues ---------------------------------------------------------------------------

_ED_HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"
_ED_SPLIT_FILES = {"train": "train.csv", "validation": "valid.csv", "test": "test.csv"}


def _ed_text(text: str) -> str:
    return text.replace("_comma_", ",").strip()


def _read_empathetic_dialogues(folder: str, split: str, bad: _BadRows, counts: Counter) -> list[dict]:
    """One example per listener turn (even ``utterance_idx``), with all earlier turns as context.

    The official files escape commas in text as ``_comma_`` and do not quote, so every row has
    exactly the 8 header fields, or 9 where the release appends reply candidates (ignored here). Any
    other count means a raw comma in the text or a line cut short: refused, not guessed at."""
    path = _required_file(os.path.join(folder, _ED_SPLIT_FILES[split]))
    conversations: OrderedDict[str, list[tuple[int, str, str, str]]] = OrderedDict()
    lines = _lines(path)
    header = next(lines, (1, ""))[1].strip()
    if header.split(",")[:6] != _ED_HEADER.split(",")[:6]:
        raise UserError(f"{path}:1: expected the header '{_ED_HEADER}', got '{header[:80]}'")
    for lineno, line in lines:
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        parts = line.split(",")
        if len(parts) not in (8, 9):
            bad(path, lineno, f"expected 8 comma-separated fields (9 with reply candidates), got {len(parts)}: "
                "a line cut short, or a raw comma in the text (the format writes _comma_)")
            continue
        try:
            idx = int(parts[1])
        except ValueError:
            bad(path, lineno, f"utterance_idx must be an integer, got {parts[1]!r}")
            continue
        conversations.setdefault(parts[0], []).append(
            (idx, _ed_text(parts[5]), parts[2].strip(), _ed_text(parts[3])))
    rows = []
    for conv_id, turns in conversations.items():
        turns.sort(key=lambda t: t[0])
        for pos, (idx, text, emotion, situation) in enumerate(turns):
            if idx % 2 == 0:
                rows.append(_example([t[1] for t in turns[:pos]], text, conv_id, emotion, situation))
    return rows


# -- PEC ---------------------------------------------------------------------------------------------

_PEC_SEPARATOR = "*" * 20
_PEC_SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}


def _read_pec(folder: str, split: str, bad: _BadRows, counts: Counter) -> list[dict]:
    """One example per thread (the lines between two separator lines): its last utterance answers all
    the earlier ones. Kept, as the paper describes its data: threads of exactly two speakers who take
    turns (dyadic), and of the threads that share a context (replies to the same post or comment)
    only the first in file order, happy/ before offmychest/ (one response per context; see
    docs/deviations.md for the counts to expect)."""
    subfolders = [d for d in ("happy", "offmychest") if os.path.isdir(os.path.join(folder, d))]
    if not subfolders:
        raise UserError(f"{folder}: expected subfolders happy/ and/or offmychest/")
    rows, seen = [], set()
    for key in ("conversations", "continuation_lines_joined", "non_dyadic_skipped", "repeated_contexts_dropped"):
        counts[key] = 0  # reported even when 0, so a count of the release reads the same every time
    for sub in subfolders:
        path = _required_file(os.path.join(folder, sub, _PEC_SPLIT_FILES[split]))
        for k, turns in enumerate(_pec_conversations(path, bad, counts)):
            counts["conversations"] += 1
            speakers = [s for s, _ in turns]
            alternating = all(a != b for a, b in zip(speakers, speakers[1:]))
            if not (len(turns) >= 2 and len(set(speakers)) == 2 and alternating):
                counts["non_dyadic_skipped"] += 1
                continue
            context = tuple(t for _, t in turns[:-1])
            if context in seen:
                counts["repeated_contexts_dropped"] += 1
                continue
            seen.add(context)
            rows.append(_example(list(context), turns[-1][1], f"{sub}:{split}:{k}", sub))
    return rows


def _pec_conversations(path: str, bad: _BadRows, counts: Counter) -> Iterator[list[tuple[str, str]]]:
    """The threads of one file as (speaker, utterance) lists. The release keeps the line breaks of
    a Reddit post: a line without ``---+---`` continues the utterance before it (joined by a space)."""
    turns: list[tuple[str, str]] = []
    for lineno, line in _lines(path):
        line = line.strip()
        if line == _PEC_SEPARATOR:
            if turns:
                yield turns
            turns = []
        elif line:
            speaker, sep, text = line.partition("---+---")
            if sep:
                turns.append((speaker.strip(), text.strip()))
            elif turns:
                turns[-1] = (turns[-1][0], f"{turns[-1][1]} {line}".strip())
                counts["continuation_lines_joined"] += 1
            else:
                bad(path, lineno, "expected 'speaker---+---utterance' (a line without ---+--- continues an "
                    "utterance, but none precedes it in this thread)")
    if turns:
        yield turns


# -- DailyDialog ---------------------------------------------------------------------------------------


def _read_dailydialog(folder: str, split: str, bad: _BadRows, counts: Counter) -> list[dict]:
    """Every turn after the first is a response to the turns before it."""
    path = _required_file(os.path.join(folder, split, f"dialogues_{split}.txt"))
    rows = []
    for lineno, line in _lines(path):
        if not line.strip():
            continue
        if "__eou__" not in line:
            bad(path, lineno, "expected turns ended by __eou__")
            continue
        turns = [t.strip() for t in line.split("__eou__") if t.strip()]
        for i in range(1, len(turns)):
            rows.append(_example(turns[:i], turns[i], f"dd:{split}:{lineno}"))
    return rows


# -- EmpRL preprocessed JSON ----------------------------------------------------------------------------

_JSON_SPLIT_FILES = {"train": ("train.json",), "validation": ("valid.json", "validation.json", "dev.json"),
                     "test": ("test.json",)}


def _read_emprl_json(folder: str, split: str, bad: _BadRows, counts: Counter) -> list[dict]:
    """A JSON array of {input, output[, level columns]}; ``input`` is one string or a list of turns."""
    candidates = [os.path.join(folder, name) for name in _JSON_SPLIT_FILES[split]]
    path = next((p for p in candidates if os.path.isfile(p)), None)
    if path is None:
        raise UserError(f"{folder}: none of {', '.join(_JSON_SPLIT_FILES[split])} found")
    try:
        with open(path, encoding="utf-8") as fh:
            items = json.load(fh)
    except UnicodeDecodeError as err:
        raise UserError(f"{path}: not valid UTF-8 (byte {err.start}); convert the file to UTF-8") from None
    except json.JSONDecodeError as err:
        raise UserError(f"{path}:{err.lineno}: invalid JSON ({err.msg})") from None
    if not isinstance(items, list):
        raise UserError(f"{path}: expected a JSON array of objects")
    rows = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or not isinstance(item.get("output"), str) or \
                not isinstance(item.get("input"), (str, list)):
            bad(path, i + 1, f"item {i}: expected an object with string 'input' and 'output'")
            continue
        turns = item["input"] if isinstance(item["input"], list) else [item["input"]]
        row = _example([str(t) for t in turns], item["output"], f"{split}:{i}")
        levels = {m: item.get(m) for m in MECHANISMS}
        if all(v is not None for v in levels.values()):
            if not all(v in (0, 1, 2) for v in levels.values()):
                bad(path, i + 1, f"item {i}: empathy levels must be 0, 1 or 2")
                continue
            row.update(levels)
        rows.append(row)
    return rows


# -- EPITOME ---------------------------------------------------------------------------------------------

_EPITOME_HEADER = ["sp_id", "rp_id", "seeker_post", "response_post", "level", "rationales"]


def read_epitome_file(path: str, bad: _BadRows) -> list[dict]:
    rows = []
    # csv reads quoted fields across lines; _lines keeps the UTF-8 check per physical line
    reader = csv.reader(line for _, line in _lines(_required_file(path)))
    header = next(reader, None)
    if header is None or [h.strip() for h in header[:5]] != _EPITOME_HEADER[:5]:
        raise UserError(f"{path}:1: expected the header '{','.join(_EPITOME_HEADER)}'")
    for record in _records(reader, path):
        lineno = reader.line_num
        if not record or not any(f.strip() for f in record):
            continue
        if len(record) < 5:
            bad(path, lineno, f"expected at least 5 fields, got {len(record)}")
            continue
        level = record[4].strip()
        if level not in ("0", "1", "2"):
            bad(path, lineno, f"level must be 0, 1 or 2, got {level!r}")
            continue
        seeker, response = record[2].strip(), record[3].strip()
        if not seeker or not response:
            bad(path, lineno, "empty seeker_post or response_post")
            continue
        rows.append({"sp_id": record[0], "rp_id": record[1], "seeker_post": seeker,
                     "response_post": response, "level": int(level)})
    if not rows:
        raise bad.none_left(path)
    return rows


def _records(reader, path: str) -> Iterator[list[str]]:
    try:
        yield from reader
    except csv.Error as err:
        raise UserError(f"{path}:{reader.line_num}: malformed CSV ({err})") from None


def load_epitome(path: str, seed: int = 42, validation_fraction: float = 0.2,
                 on_bad_rows: str = "error") -> dict[str, DatasetDict]:
    """EPITOME's three CSVs -> per mechanism a seeded, level-stratified train/validation split."""
    from sklearn.model_selection import train_test_split

    if not os.path.isdir(path):
        raise UserError(f"{path}: expected a folder with {', '.join(EPITOME_FILES.values())}")
    if not 0.0 < validation_fraction < 1.0:
        raise UserError(f"validation_fraction: expected a number between 0 and 1, got {validation_fraction}")
    bad = _BadRows(on_bad_rows)
    out = {}
    for mechanism, filename in EPITOME_FILES.items():
        rows = read_epitome_file(os.path.join(path, filename), bad)
        levels = [r["level"] for r in rows]
        stratify = levels if min(levels.count(v) for v in set(levels)) >= 2 else None
        try:
            train, valid = train_test_split(rows, test_size=validation_fraction, random_state=seed,
                                            stratify=stratify)
        except ValueError as err:  # too few rows to split
            raise UserError(f"{os.path.join(path, filename)}: {len(rows)} usable rows cannot be split into train "
                            f"and validation ({err})") from None
        out[mechanism] = DatasetDict({
            "train": Dataset.from_list(train).select_columns(["seeker_post", "response_post", "level"]),
            "validation": Dataset.from_list(valid).select_columns(["seeker_post", "response_post", "level"]),
        })
    bad.report(path)
    return out

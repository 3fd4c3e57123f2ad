"""A rater's answer log: what the rating page (``emprl serve``, docs/app.md) saves, one JSON object a line,
and what ``human_eval score`` reads in place of a filled sheet.

    {"format": "emprl-answers-1", "rater": "alice", "sheet": "<digest of the sheet's item ids>"}
    {"item_id": "R0003", "sheet": "ratings", "empathy": "4", "relevance": "3", "fluency": "5", "at": "..."}
    {"item_id": "AB0001", "sheet": "ab", "choice": "tie", "at": "..."}

The log only grows: changing an answer adds a line, and the last line of an item is its answer. Each
save rewrites the whole file through a temporary file that is flushed to disk (fsync) and renamed over
the old one, so a reader, a crash or ``kill -9`` finds either the old log or the new one, never a part.
A save names how many answers its writer has seen; when the log holds more (another tab or process
answered meanwhile) the save is refused, so no tab overwrites what another one wrote unseen.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence

from emprl.common.errors import UserError

FORMAT = "emprl-answers-1"
SUFFIX = ".jsonl"
SHEET_KINDS = ("ratings", "ab")


class StaleLog(Exception):
    """The log holds answers this writer has not seen (``seen`` < ``found``)."""

    def __init__(self, path: str, seen: int, found: int):
        super().__init__(f"{path}: {found - seen} answer(s) were saved by another tab or process since this "
                         "one last read the log")
        self.seen, self.found = seen, found


def is_answer_log(path: str) -> bool:
    return str(path).endswith(SUFFIX)


def sheet_digest(item_ids: Sequence[str]) -> str:
    """Which sheet a log belongs to: a digest of its item ids in order (the same export, the same digest)."""
    return hashlib.sha256("\n".join(item_ids).encode("utf-8")).hexdigest()[:16]


def read_log(path: str) -> tuple[dict, list[tuple[int, dict]]]:
    """(header, [(line, answer), ...]) of an answer log; anything else is a UserError naming the line."""
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{path}: cannot read answer log ({err})") from None
    entries = []
    header = None
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as err:
            raise UserError(f"{path}:{lineno}: not a JSON object ({err})") from None
        if header is None:
            if not isinstance(row, dict) or row.get("format") != FORMAT:
                raise UserError(f"{path}:{lineno}: not an answer log of the rating page (expected a first line "
                                f"with \"format\": \"{FORMAT}\")")
            header = row
            continue
        if not isinstance(row, dict) or not isinstance(row.get("item_id"), str) or row.get("sheet") not in SHEET_KINDS:
            raise UserError(f"{path}:{lineno}: expected an answer with item_id and sheet (ratings or ab)")
        entries.append((lineno, row))
    if header is None:
        raise UserError(f"{path}: empty answer log (expected a first line with \"format\": \"{FORMAT}\")")
    return header, entries


def latest(entries: list[tuple[int, dict]]) -> dict[str, tuple[int, dict]]:
    """item_id -> (line, answer) of its last answer."""
    out: dict[str, tuple[int, dict]] = {}
    for lineno, row in entries:
        out.pop(row["item_id"], None)  # re-inserted: the order is that of the last answers
        out[row["item_id"]] = (lineno, row)
    return out


def answer_rows(path: str, kind: str, columns: Sequence[str]) -> Iterator[tuple[int, dict]]:
    """(line, {column: text}) per answered item of ``kind`` ("ratings" or "ab"), as a filled sheet's rows
    read (``emprl.human_eval.sheets.read_copy``): the texts the page shows are not in the log, only answers."""
    _, entries = read_log(path)
    for item, (lineno, row) in latest(entries).items():
        if row["sheet"] == kind:
            yield lineno, {c: item if c == "item_id" else str(row.get(c, "")) for c in columns}


class AnswerLog:
    """One rater's log for one sheet, at ``path``; ``append`` is the only way it changes."""

    def __init__(self, path: str, rater: str, sheet: str):
        self.path, self.rater, self.sheet = path, rater, sheet

    def read(self) -> list[tuple[int, dict]]:
        """The answers so far ([] for a new log); a log of another rater or sheet is a UserError."""
        if not os.path.exists(self.path):
            return []
        header, entries = read_log(self.path)
        if header.get("sheet") != self.sheet:
            raise UserError(f"{self.path}:1: these answers belong to another sheet (its item ids differ); "
                            "open the sheet they were given for, or rate as another name")
        if header.get("rater") != self.rater:
            raise UserError(f"{self.path}:1: rater {header.get('rater')!r} wrote this log, not {self.rater!r}")
        return entries

    def append(self, answer: dict, seen: int) -> int:
        """Add one answer when the log holds exactly ``seen`` answers; returns the new count.
        Raises :class:`StaleLog` (nothing written) when it holds more."""
        with self._locked():
            entries = self.read()
            if len(entries) != seen:
                raise StaleLog(self.path, seen, len(entries))
            stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
            old = ""
            if os.path.exists(self.path):
                with open(self.path, encoding="utf-8") as fh:
                    old = fh.read()
            else:
                old = json.dumps({"format": FORMAT, "rater": self.rater, "sheet": self.sheet}) + "\n"
            line = json.dumps({**answer, "at": stamp}, ensure_ascii=False)
            durable_write(self.path, old + line + "\n")
            return len(entries) + 1

    @contextlib.contextmanager
    def _locked(self):
        """An exclusive lock beside the log, held across read and write (other processes too)."""
        folder = os.path.dirname(os.path.abspath(self.path))
        os.makedirs(folder, exist_ok=True)
        lock = os.path.join(folder, f".{os.path.basename(self.path)}.lock")
        with open(lock, "a") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)


def durable_write(path: str, text: str) -> None:
    """``path`` replaced by ``text`` whole: temp file, fsync, rename, fsync of the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; answers are read by whoever scores them
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    dir_fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)

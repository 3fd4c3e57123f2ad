"""The rating page's model: a blind sheet written by ``human_eval export``, one item at a time, and each
answer saved at once in the rater's log (``emprl.human_eval.answers``; docs/app.md).

The items come in the sheet's order: every row of ratings.csv (1-5 for empathy, relevance, fluency),
then every row of ab.csv (A better, tie, B better). The page never reads the systems from key.json; it
reads the key, where it lies beside the sheet, only to check that every item id of the sheet is one of
its ids. A rater's log is ``<sheet folder>/answers/<rater>.jsonl``; ``human_eval score`` reads it.
"""

from __future__ import annotations

import csv
import datetime
import json
import os
import re
import secrets
import threading
from dataclasses import dataclass

from emprl.common.errors import UserError
from emprl.human_eval.answers import AnswerLog, latest, sheet_digest
from emprl.human_eval.sheets import AB_COLUMNS, ASPECTS, CHOICES, RATING_COLUMNS, read_sheet

ANSWERS_DIR = "answers"
SHEET_FILES = {"ratings": "ratings.csv", "ab": "ab.csv"}
COLUMNS = {"ratings": RATING_COLUMNS, "ab": AB_COLUMNS}
RATER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,39}")


@dataclass(frozen=True)
class Item:
    item_id: str
    kind: str  # "ratings" or "ab"
    context: str
    responses: tuple[str, ...]  # the reply; or reply A and reply B
    where: str  # file:line


@dataclass
class Sheet:
    folder: str
    files: list[str]
    items: list[Item]

    @property
    def digest(self) -> str:
        return sheet_digest([i.item_id for i in self.items])

    def log_path(self, rater: str) -> str:
        return os.path.join(self.folder, ANSWERS_DIR, f"{rater}.jsonl")


def sheet_kind(path: str) -> str:
    """"ratings" or "ab", from a single CSV's header."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = [h.strip() for h in next(csv.reader(fh), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise UserError(f"{path}: cannot read sheet ({err})") from None
    for kind in ("ab", "ratings"):
        if all(c in header for c in COLUMNS[kind]):
            return kind
    raise UserError(f"{path}:1: header {','.join(header)[:80]!r} is neither a ratings sheet "
                    f"({','.join(RATING_COLUMNS)}) nor an A/B sheet ({','.join(AB_COLUMNS)})")


def load_sheet(path: str) -> Sheet:
    """The items of an exported folder (ratings.csv, then ab.csv) or of one sheet file, checked."""
    path = os.path.abspath(os.path.expanduser(str(path).strip()))
    if os.path.isdir(path):
        files = [(k, os.path.join(path, f)) for k, f in SHEET_FILES.items() if os.path.isfile(os.path.join(path, f))]
        if not files:
            raise UserError(f"{path}: no ratings.csv or ab.csv (expected a folder written by "
                            "`python -m emprl.human_eval export`)")
        folder = path
    elif os.path.isfile(path):
        files, folder = [(sheet_kind(path), path)], os.path.dirname(path)
    else:
        raise UserError(f"{path}: no such sheet (give the export folder or its ratings.csv / ab.csv)")
    key = _key_ids(folder)
    items: list[Item] = []
    seen: dict[str, str] = {}
    for kind, file in files:
        for line, row in read_sheet(file, COLUMNS[kind]):
            item_id, where = row["item_id"].strip(), f"{file}:{line}"
            if not item_id:
                raise UserError(f"{where}: empty item_id")
            if item_id in seen:
                raise UserError(f"{where}: item_id {item_id} appears twice (first at {seen[item_id]})")
            if key is not None and item_id not in key[kind]:
                raise UserError(f"{where}: unknown item_id {item_id!r}: not in {os.path.join(folder, 'key.json')} "
                                "(is this sheet from that export?)")
            seen[item_id] = where
            replies = (row["response"],) if kind == "ratings" else (row["response_a"], row["response_b"])
            items.append(Item(item_id, kind, row["context"], replies, where))
    if not items:
        raise UserError(f"{files[0][1]}: the sheet has no items")
    return Sheet(folder, [f for _, f in files], items)


def _key_ids(folder: str) -> dict[str, set[str]] | None:
    """The item ids of key.json beside the sheet (only the ids: the systems stay unread), or None."""
    path = os.path.join(folder, "key.json")
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            key = json.load(fh)
        return {kind: set(key[kind]) for kind in SHEET_FILES}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise UserError(f"{path}: not a key.json written by `emprl.human_eval export` ({err})") from None


def check_rater(name: str) -> str:
    name = (name or "").strip()
    if not RATER_NAME.fullmatch(name):
        raise UserError(f"rater name {name!r}: use 1-40 letters, digits, '.', '_' or '-' (it names your answer file)")
    return name


class Owners:
    """Which open tab may save for each log: the newest one a rater opened (in this server)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._owners: dict[str, tuple[str, str]] = {}  # log path -> (token, opened at)

    def claim(self, path: str) -> tuple[str, str | None]:
        """(a new token that owns ``path`` now, when the tab it replaces was opened, or None)."""
        token = secrets.token_hex(8)
        opened = datetime.datetime.now().strftime("%H:%M:%S")
        with self._lock:
            before = self._owners.get(path)
            self._owners[path] = (token, opened)
        return token, before[1] if before else None

    def owner(self, path: str) -> tuple[str, str] | None:
        with self._lock:
            return self._owners.get(path)


class RatingSession:
    """One tab's rater on one sheet: the answers so far, and saving the next one."""

    def __init__(self, sheet: Sheet, rater: str, owners: Owners):
        self.sheet, self.rater, self.owners = sheet, check_rater(rater), owners
        self.log = AnswerLog(sheet.log_path(self.rater), self.rater, sheet.digest)
        self.reload()
        self.token, self.replaced = owners.claim(self.log.path)

    def reload(self) -> None:
        entries = self.log.read()
        kinds = {i.item_id: i.kind for i in self.sheet.items}
        for line, row in entries:
            if kinds.get(row["item_id"]) != row["sheet"]:
                raise UserError(f"{self.log.path}:{line}: item_id {row['item_id']!r} is not a {row['sheet']} item "
                                "of this sheet")
        self.answers = {item: row for item, (_, row) in latest(entries).items()}
        self.seen = len(entries)

    @property
    def total(self) -> int:
        return len(self.sheet.items)

    def first_unrated(self) -> int:
        """The index of the first item without an answer (``total`` when every item has one)."""
        return next((i for i, item in enumerate(self.sheet.items) if item.item_id not in self.answers), self.total)

    def answer(self, index: int) -> dict | None:
        return self.answers.get(self.sheet.items[index].item_id) if index < self.total else None

    def save(self, index: int, values: dict) -> None:
        """Save the answer to item ``index`` (``values``: the aspects 1-5, or ``choice``) at once.
        A UserError (nothing saved) when it is incomplete or another tab now owns this rater."""
        item = self.sheet.items[index]
        fields = ASPECTS if item.kind == "ratings" else ("choice",)
        allowed = [str(v) for v in range(1, 6)] if item.kind == "ratings" else list(CHOICES)
        answer = {"item_id": item.item_id, "sheet": item.kind}
        for name in fields:
            value = "" if values.get(name) is None else str(values[name]).strip()
            if value not in allowed:
                raise UserError(f"Not saved: choose {name} for item {index + 1} ({' / '.join(allowed)})")
            answer[name] = value
        owner = self.owners.owner(self.log.path)
        if owner is None or owner[0] != self.token:
            raise UserError(f"Not saved: {self.rater} was opened in another tab at {owner[1] if owner else '?'}; "
                            "this tab no longer saves. Press Open here to continue in this tab.")
        previous = self.answers.get(item.item_id)
        if previous is not None and all(previous.get(k) == answer[k] for k in fields):
            return  # unchanged: the log keeps only changes
        self.seen = self.log.append(answer, self.seen)  # StaleLog when another writer got there first
        self.answers[item.item_id] = answer

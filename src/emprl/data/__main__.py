"""``python -m emprl.data stats --format FORMAT --path PATH``: row counts as one JSON object (PEC adds
the threads read, continuation lines joined, non-dyadic threads skipped, repeated contexts dropped)."""

from __future__ import annotations

import argparse
import json
from collections import Counter

from emprl.common.errors import UserError, run_cli
from emprl.common.mechanisms import LEVEL_NAMES, MECHANISMS
from emprl.data.readers import DIALOGUE_FORMATS, load_dialogues, load_epitome

# Examples per split the paper reports for PEC (happy + offmychest), beside ours for comparison
PEC_PAPER_ROWS = {"train": 56808, "validation": 7115, "test": 7131}


def stats(fmt: str, path: str, on_bad_rows: str = "error", seed: int = 42) -> dict:
    if fmt == "epitome":
        mechanisms = {}
        for mechanism, dd in load_epitome(path, seed=seed, on_bad_rows=on_bad_rows).items():
            mechanisms[mechanism] = {split: {"rows": len(ds), "levels": _level_counts(ds["level"])}
                                     for split, ds in dd.items()}
        return {"format": fmt, "path": path, "mechanisms": mechanisms}
    counts: dict = {}
    dd = load_dialogues(f"{fmt}:{path}", on_bad_rows=on_bad_rows, counts=counts)
    splits = {}
    for split, ds in dd.items():
        entry = {"rows": len(ds), "conversations": len(set(ds["conv_id"]))}
        # PEC: one thread per example, so "conversations" becomes the threads read, beside what was
        # joined, skipped and dropped on the way to "rows" (docs/deviations.md has the paper's counts)
        entry.update(counts.get(split, {}))
        if "emotion" in ds.column_names and any(ds["emotion"]):
            entry["emotions"] = len(set(ds["emotion"]) - {""})
        levels = {m: _level_counts(ds[m]) for m in MECHANISMS if m in ds.column_names}
        if levels:
            entry["levels"] = levels
        splits[split] = entry
    out = {"format": fmt, "path": path, "splits": splits}
    if fmt == "pec":
        out["paper_rows"] = PEC_PAPER_ROWS
    return out


def _level_counts(levels: list[int]) -> dict[str, int]:
    counts = Counter(levels)
    return {name: counts.get(i, 0) for i, name in enumerate(LEVEL_NAMES)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emprl.data")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("stats", help="print row counts per split (and per mechanism/level) as JSON")
    p.add_argument("--format", required=True, choices=("epitome",) + DIALOGUE_FORMATS)
    p.add_argument("--path", required=True)
    p.add_argument("--on_bad_rows", default="error", choices=("error", "skip"))
    p.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    if args.command == "stats":
        print(json.dumps(stats(args.format, args.path, args.on_bad_rows, args.seed), indent=2))
    else:  # pragma: no cover - argparse rejects other commands
        raise UserError(f"unknown command {args.command}")


if __name__ == "__main__":
    run_cli(main)

"""Human evaluation kit: blind sheets from generation files, and the report from filled copies.

    python -m emprl.human_eval export --generations EmpRL=a.jsonl T5=b.jsonl --n 50 --seed 0 --out DIR
    python -m emprl.human_eval score --key DIR/key.json --ratings r1.csv r2.csv --ab a1.csv a2.csv \
        --out report.md

`export` writes ratings.csv (every system's response to each sampled context, 1-5 scores for
empathy, relevance and fluency), ab.csv (the first system against each other one; `choice` is win =
A better, lose = B better, tie), instructions.md, and key.json, which maps item ids to systems and
must not reach the annotators. Each annotator fills a copy; `score` reads all copies.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

from emprl.errors import UserError, run_cli
from emprl.metrics import mean_ci95

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


# ----------------------------------------------------------------------------- statistics


def fleiss_kappa(table: list[list[int]]) -> float:
    """Fleiss' kappa for an items x categories table of rater counts (same number of raters per item),
    computed by ``statsmodels``; our checks turn a malformed table into a ValueError first.

    NaN when agreement by chance is already perfect (every rating in one category).
    """
    import numpy as np
    from statsmodels.stats.inter_rater import fleiss_kappa as _statsmodels_fleiss_kappa

    if not table:
        raise ValueError("fleiss_kappa needs at least one item")
    raters = sum(table[0])
    if raters < 2 or any(sum(row) != raters for row in table):
        raise ValueError("fleiss_kappa needs the same number (>= 2) of raters for every item")
    counts = np.asarray(table, dtype=float)
    if np.count_nonzero(counts.sum(axis=0)) < 2:
        return math.nan  # chance agreement is 1: statsmodels would divide by zero
    return float(_statsmodels_fleiss_kappa(counts, method="fleiss"))


def sign_test(wins: int, losses: int) -> float:
    """Two-sided exact binomial (sign) test of wins vs losses under p = 0.5; ties are left out."""
    from scipy.stats import binomtest  # scipy comes with scikit-learn

    return math.nan if wins + losses == 0 else float(binomtest(wins, wins + losses, 0.5).pvalue)


# ----------------------------------------------------------------------------- files


def _write_atomically(texts: dict[Path, str]) -> None:
    """Write every file to a temporary sibling first, then os.replace each: never half-written."""
    tmps = {}
    try:
        for path, text in texts.items():
            fd, tmps[path] = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
                f.write(text)
    except BaseException:
        for tmp in tmps.values():
            os.unlink(tmp)
        raise
    for path, tmp in tmps.items():
        os.replace(tmp, path)


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


def _read_sheet(path: str, columns: tuple[str, ...]):
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


def _load_key(path: str) -> dict:
    try:
        key = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserError(f"{path}: cannot read key file ({err})") from None
    if not isinstance(key, dict) or not all(k in key for k in ("systems", "main", "ratings", "ab")):
        raise UserError(f"{path}: not a key.json written by `emprl.human_eval export`")
    return key


def _read_copy(path: str, columns, items: dict, parse) -> dict:
    """{item_id: parsed answer} of one annotator's copy; every item of the key exactly once."""
    seen: dict[str, object] = {}
    for line, row in _read_sheet(path, columns):
        item = row["item_id"].strip()
        if item not in items:
            raise UserError(f"{path}:{line}: unknown item_id {item!r} (is this the right key?)")
        if item in seen:
            raise UserError(f"{path}:{line}: item_id {item} appears twice")
        seen[item] = parse(row, f"{path}:{line}")
    missing = sorted(set(items) - set(seen))
    if missing:
        raise UserError(f"{path}: {len(missing)} item(s) missing, first {missing[0]}")
    return seen


def _parse_scores(row: dict, where: str) -> dict:
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


def _parse_choice(row: dict, where: str) -> str:
    choice = row["choice"].strip().lower()
    if choice not in CHOICES:
        raise UserError(
            f"{where}: choice of item {row['item_id'].strip()} is {row['choice']!r}; "
            "expected win, lose or tie"
        )
    return choice


def _kappa(copies: list[dict], items, categories) -> float | None:
    if len(copies) < 2:
        return None
    table = [[sum(copy[i] == c for copy in copies) for c in categories] for i in items]
    return _clean(fleiss_kappa(table))


def _majority(votes: Counter) -> str:
    """An item's outcome for the first system: the side more annotators preferred, else a tie."""
    if votes["win"] != votes["lose"]:
        return "win" if votes["win"] > votes["lose"] else "lose"
    return "tie"


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def score(key_path: str, ratings: list[str], ab: list[str], out: str) -> dict:
    """Compute the report from all filled copies; write `out` (Markdown) and the same stem .json."""
    if not ratings and not ab:
        raise UserError("give filled sheets with --ratings and/or --ab")
    if Path(out).suffix == ".json":
        raise UserError(f"--out {out}: give the Markdown path; the JSON report is written next to it")
    key = _load_key(key_path)
    main, systems = key["main"], key["systems"]
    report: dict = {"main": main, "systems": systems, "ratings_files": ratings, "ab_files": ab}

    if ratings:
        copies = [_read_copy(p, RATING_COLUMNS, key["ratings"], _parse_scores) for p in ratings]
        table = {}
        for name in systems:
            items = [i for i, v in key["ratings"].items() if v["system"] == name]
            table[name] = {}
            for aspect in ASPECTS:
                # Average the annotators per item first: the items, not the judgments, are independent.
                per_item = [sum(c[i][aspect] for c in copies) / len(copies) for i in items]
                mean, half = mean_ci95(per_item)
                table[name][aspect] = {"mean": mean, "ci95": _clean(half), "n_items": len(items)}
        report["ratings"] = table
        report["ratings_kappa"] = {
            a: _kappa([{i: s[a] for i, s in c.items()} for c in copies], list(key["ratings"]), range(1, 6))
            for a in ASPECTS
        }

    if ab:
        copies = [_read_copy(p, AB_COLUMNS, key["ab"], _parse_choice) for p in ab]
        report["ab"] = {}
        for other in systems[1:]:
            items = [i for i, v in key["ab"].items() if v["other"] == other]
            judgments, item_outcomes = Counter(), Counter()
            for i in items:
                main_is_a = key["ab"][i]["a"] == main
                votes = Counter()
                for c in copies:
                    # Turn the A/B answer into the first system's outcome.
                    outcome = "tie" if c[i] == "tie" else ("win" if (c[i] == "win") == main_is_a else "lose")
                    votes[outcome] += 1
                judgments.update(votes)
                item_outcomes[_majority(votes)] += 1
            total = sum(judgments.values())
            report["ab"][other] = {
                **{k: 100.0 * judgments[k] / total for k in CHOICES},
                "judgments": total,
                "items": {k: item_outcomes[k] for k in CHOICES},
                "sign_test_p": _clean(sign_test(item_outcomes["win"], item_outcomes["lose"])),
                # Raw A/B answers: the A/B order is random per item, so these marginals are balanced.
                "kappa": _kappa(copies, items, CHOICES),
            }
        report["ab_kappa"] = _kappa(copies, list(key["ab"]), CHOICES)

    out_md = Path(out)
    out_json = out_md.with_suffix(".json")
    out_md.parent.mkdir(parents=True, exist_ok=True)
    _write_atomically({out_md: _markdown(report), out_json: json.dumps(report, indent=1) + "\n"})
    return report


def _fmt(x: float | None, digits: int = 2) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def _markdown(r: dict) -> str:
    lines = ["# Human evaluation", ""]
    if "ratings" in r:
        lines += [
            f"## Ratings (1-5; mean ± 95% CI over items; {len(r['ratings_files'])} annotator(s))",
            "",
            "| System | " + " | ".join(a.capitalize() for a in ASPECTS) + " |",
            "|---" * (len(ASPECTS) + 1) + "|",
        ]
        for name, row in r["ratings"].items():
            cells = [f"{row[a]['mean']:.2f} ± {_fmt(row[a]['ci95'])}" for a in ASPECTS]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        kappas = ", ".join(f"{a} {_fmt(k, 3)}" for a, k in r["ratings_kappa"].items())
        lines += ["", f"Fleiss' kappa: {kappas}.", ""]
    if "ab" in r:
        lines += [
            f"## A/B: {r['main']} against each system (% of judgments; {len(r['ab_files'])} annotator(s))",
            "",
            "| Comparison | Win | Lose | Tie | Fleiss' kappa | Sign test p |",
            "|---|---|---|---|---|---|",
        ]
        for other, row in r["ab"].items():
            lines.append(
                f"| {r['main']} vs {other} | {row['win']:.1f} | {row['lose']:.1f} | {row['tie']:.1f} "
                f"| {_fmt(row['kappa'], 3)} | {_fmt(row['sign_test_p'], 4)} |"
            )
        lines += [
            "",
            f"Win: {r['main']}'s response judged better. "
            f"Fleiss' kappa over all A/B items: {_fmt(r['ab_kappa'], 3)}.",
            "Sign test: two-sided exact binomial on items whose annotators' majority preferred one side "
            "(items with equal votes left out).",
            "",
        ]
    return "\n".join(lines)


# ----------------------------------------------------------------------------- CLI


def _system_spec(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise UserError(f"--generations {text!r}: expected NAME=path.jsonl")
    return name, path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emprl.human_eval", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    exp = sub.add_parser("export", help="write blind rating and A/B sheets plus the key")
    exp.add_argument(
        "--generations",
        nargs="+",
        required=True,
        metavar="NAME=PATH",
        help="generation JSONL per system; the first is compared against the others in A/B",
    )
    exp.add_argument("--n", type=int, default=50, help="number of contexts to sample")
    exp.add_argument("--seed", type=int, default=0)
    exp.add_argument("--out", required=True, help="new folder for the sheets and key.json")
    sc = sub.add_parser("score", help="report ratings, A/B shares, Fleiss' kappa and sign tests")
    sc.add_argument("--key", required=True, help="key.json written by export")
    sc.add_argument("--ratings", nargs="*", default=[], help="filled ratings.csv copies, one per annotator")
    sc.add_argument("--ab", nargs="*", default=[], help="filled ab.csv copies, one per annotator")
    sc.add_argument("--out", required=True, help="report .md path; the .json goes next to it")
    args = parser.parse_args(argv)

    if args.command == "export":
        specs = [_system_spec(s) for s in args.generations]
        names = [name for name, _ in specs]
        if len(set(names)) != len(names):
            raise UserError(f"--generations: system names must be unique, got {', '.join(names)}")
        out = export(dict(specs), args.n, args.seed, args.out)
        print(
            f"wrote {out}/ratings.csv, ab.csv, instructions.md and key.json (keep key.json from annotators)"
        )
    else:
        score(args.key, args.ratings, args.ab, args.out)
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")


if __name__ == "__main__":
    run_cli(main)

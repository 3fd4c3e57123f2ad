"""Human evaluation kit: blind sheets from generation files, and the report from filled copies.

    python -m emprl.human_eval export --generations EmpRL=a.jsonl T5=b.jsonl --n 50 --seed 0 --out DIR
    python -m emprl.human_eval score --key DIR/key.json --ratings r1.csv r2.csv --ab a1.csv a2.csv \
        --out report.md

`export` writes ratings.csv (every system's response to each sampled context, 1-5 scores for
empathy, relevance and fluency), ab.csv (the first system against each other one; `choice` is win =
A better, lose = B better, tie), instructions.md, and key.json, which maps item ids to systems and
must not reach the annotators. Each annotator fills a copy, or rates on the web page (`emprl serve`,
docs/app.md), which saves answers/<rater>.jsonl beside the sheet; `score` reads all copies and logs alike.

An A/B item's outcome is the answer most evaluators gave. When three evaluators split 1-1-1 (win,
lose, tie) a fourth evaluator decides, as in the paper: `score` lists those items, the fourth
evaluator answers them in a copy of ab.csv (other rows may stay blank) and `--ab-fourth` passes it.
Without it the items are reported as unresolved and left out of the sign test.

The sheets (writing them, reading the filled copies) live in ``emprl.human_eval.sheets``; this module
holds the statistics, the report and the command line.
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter
from pathlib import Path

from emprl.common.errors import UserError, run_cli
from emprl.common.io import atomic_write_text
from emprl.human_eval.sheets import (
    AB_COLUMNS,
    ASPECTS,
    CHOICES,
    RATING_COLUMNS,
    export,
    load_key,
    parse_choice,
    parse_scores,
    read_copy,
    read_fourth_copy,
)
from emprl.metrics import mean_ci95

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


def _kappa(copies: list[dict], items, categories) -> float | None:
    if len(copies) < 2:
        return None
    table = [[sum(copy[i] == c for copy in copies) for c in categories] for i in items]
    return _clean(fleiss_kappa(table))


UNRESOLVED = "unresolved"


def majority(votes: Counter, fourth: str | None = None) -> str:
    """An item's outcome for the first system: the answer most evaluators gave. Three evaluators
    split 1-1-1 are resolved by the fourth evaluator's answer (``fourth``), else ``unresolved``; any
    other equal split (two evaluators who disagree, 2-2 among four) counts as a tie."""
    counts = sorted(votes.values(), reverse=True)
    if len(counts) == 1 or counts[0] > counts[1]:
        return votes.most_common(1)[0][0]
    if sum(counts) == 3 and len(counts) == 3:
        return fourth if fourth is not None else UNRESOLVED
    return "tie"


def _clean(x: float | None) -> float | None:
    return None if x is None or math.isnan(x) else x


def score(key_path: str, ratings: list[str], ab: list[str], out: str, ab_fourth: str | None = None) -> dict:
    """Compute the report from all filled copies; write `out` (Markdown) and the same stem .json.
    ``ab_fourth``: the fourth evaluator's A/B copy, read only for items three evaluators split 1-1-1."""
    if not ratings and not ab:
        raise UserError("give filled sheets with --ratings and/or --ab")
    if ab_fourth and len(ab) != 3:
        raise UserError(f"--ab-fourth: the fourth evaluator resolves splits among three A/B copies, got {len(ab)}")
    if Path(out).suffix == ".json":
        raise UserError(f"--out {out}: give the Markdown path; the JSON report is written next to it")
    key = load_key(key_path)
    main, systems = key["main"], key["systems"]
    report: dict = {"main": main, "systems": systems, "ratings_files": ratings, "ab_files": ab}

    if ratings:
        copies = [read_copy(p, RATING_COLUMNS, key["ratings"], parse_scores) for p in ratings]
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
        copies = [read_copy(p, AB_COLUMNS, key["ab"], parse_choice) for p in ab]
        fourth = read_fourth_copy(ab_fourth, key["ab"]) if ab_fourth else {}
        report["ab"], report["ab_fourth_file"] = {}, ab_fourth
        split_items: list[str] = []
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
                # The fourth answer is about A vs B too: turn it into the first system's outcome.
                answer = fourth.get(i)
                if answer is not None and answer != "tie":
                    answer = "win" if (answer == "win") == main_is_a else "lose"
                outcome = majority(votes, answer)
                if len(copies) == 3 and len(votes) == 3:
                    split_items.append(i)
                if outcome == UNRESOLVED and ab_fourth:
                    raise UserError(f"{ab_fourth}: item {i} was split 1-1-1 by the three evaluators; "
                                    "the fourth evaluator's copy needs a choice for it")
                item_outcomes[outcome] += 1
            total = sum(judgments.values())
            report["ab"][other] = {
                **{k: 100.0 * judgments[k] / total for k in CHOICES},
                "judgments": total,
                "items": {k: item_outcomes[k] for k in CHOICES},
                "items_unresolved": item_outcomes[UNRESOLVED],
                "sign_test_p": _clean(sign_test(item_outcomes["win"], item_outcomes["lose"])),
                # Raw A/B answers: the A/B order is random per item, so these marginals are balanced.
                "kappa": _kappa(copies, items, CHOICES),
            }
        report["ab_kappa"] = _kappa(copies, list(key["ab"]), CHOICES)
        report["ab_split_items"] = split_items  # 1-1-1 among three: the fourth evaluator's items
        report["ab_unresolved"] = [] if ab_fourth else split_items

    atomic_write_text(out, _markdown(report))
    atomic_write_text(str(Path(out).with_suffix(".json")), json.dumps(report, indent=1) + "\n")
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
            "(ties and unresolved items left out).",
            "",
        ]
        if r["ab_unresolved"]:
            lines += [f"Unresolved: {len(r['ab_unresolved'])} item(s) split 1-1-1 among the three evaluators "
                      f"({', '.join(r['ab_unresolved'])}); a fourth evaluator answers them in a copy of ab.csv, "
                      "passed with --ab-fourth.", ""]
        elif r["ab_split_items"]:
            lines += [f"{len(r['ab_split_items'])} item(s) split 1-1-1 were decided by the fourth evaluator "
                      f"({r['ab_fourth_file']}).", ""]
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
    sc.add_argument("--ratings", nargs="*", default=[],
                    help="filled ratings.csv copies, or the rating page's answers/<rater>.jsonl, one per annotator")
    sc.add_argument("--ab", nargs="*", default=[],
                    help="filled ab.csv copies, or the rating page's answers/<rater>.jsonl, one per annotator")
    sc.add_argument("--ab-fourth", default=None, metavar="PATH",
                    help="the fourth evaluator's ab.csv copy: decides items the three --ab copies split 1-1-1")
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
        report = score(args.key, args.ratings, args.ab, args.out, ab_fourth=args.ab_fourth)
        print(f"wrote {args.out} and {Path(args.out).with_suffix('.json')}")
        if report.get("ab_unresolved"):
            print(f"{len(report['ab_unresolved'])} A/B item(s) split 1-1-1 are unresolved "
                  f"({', '.join(report['ab_unresolved'])}): give a fourth evaluator's copy with --ab-fourth")


if __name__ == "__main__":
    run_cli(main)

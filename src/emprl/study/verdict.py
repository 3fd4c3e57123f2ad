"""The RL study's statistics and verdict recomputed from committed results, without models or torch:

    python -m emprl.study.verdict RESULTS_DIR [RESULTS_DIR ...] [--resamples N]

RESULTS_DIR is a folder ``python -m emprl.study.export`` wrote. The report is rebuilt from its runs.json
and eval/ files with the study's own code (emprl.study.assemble), printed as markdown, and its verdict is
compared with the one in the folder's report.json (exit 1 when they differ).

Several folders pool their runs (more seeds trained later) when they were evaluated on the same contexts
(identical contexts.jsonl), with the same design and study settings, and compared with the same SFT
policy: the SFT row is taken once, from the first folder; a run named in two folders is an error. Pooled
runs are ordered by seed, then arm, whatever the folders' order (the bootstrap numbers runs in that
order), so a pool equals one folder holding the same runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import dataclass
from itertools import zip_longest

from emprl.common.errors import UserError, run_cli
from emprl.common.io import read_json, read_jsonl
from emprl.evaluate.formats import json_safe
from emprl.study.assemble import STUDY_KEYS, assemble_report, read_results
from emprl.study.report import ARM_TITLES, SFT_ROW, Samples, load_samples
from emprl.study.summary import report_markdown

# What pooled folders must share: how the runs were trained and judged, and how the evaluation sampled.
SAME_SETTINGS = (*(k for k in STUDY_KEYS if k not in ("seeds", "resamples")), "dpo_overrides")
SAME_DESIGN = ("num_examples", "seeds", "samples_per_context", "decoding")


@dataclass
class Folder:
    path: str
    record: dict  # runs.json
    results: dict  # eval/results.json
    samples: Samples
    contexts: list[dict]
    report: dict | None  # the committed report.json


def load_folder(path: str) -> Folder:
    eval_dir = os.path.join(path, "eval")
    record = _load_json(os.path.join(path, "runs.json"))
    results, samples = read_results(eval_dir), load_samples(eval_dir)
    if samples is None:
        raise UserError(f"{path}: no eval/samples.jsonl.gz and eval/contexts.jsonl; expected a folder written by "
                        "python -m emprl.study.export")
    lacking = [name for name in [SFT_ROW, *(r["system"] for r in record["runs"])] if name not in samples.systems]
    if lacking:
        raise UserError(f"{path}: the samples lack systems that runs.json names: {', '.join(lacking)}")
    report_path = os.path.join(path, "report.json")
    return Folder(path, record, results, samples, read_jsonl(os.path.join(eval_dir, "contexts.jsonl"), strict=True),
                  _load_json(report_path) if os.path.isfile(report_path) else None)


def pool(folders: list[Folder]) -> tuple[dict, dict, Samples]:
    """(runs.json record, results.json, samples) of the folders together."""
    first = folders[0]
    if len(folders) == 1:  # the runs in the study's own order, as its report numbered them
        return first.record, first.results, first.samples
    owner: dict[str, str] = {}
    for folder in folders:
        if folder is not first:
            _check_poolable(first, folder)
        for name in dict.fromkeys([*folder.samples.systems, *folder.results.get("systems", {})]):
            if name != SFT_ROW and name in owner:
                raise UserError(f"system {name!r} is in both {owner[name]} and {folder.path}; a run is pooled once")
            owner.setdefault(name, folder.path)
    runs = sorted((run for f in folders for run in f.record["runs"]),
                  key=lambda run: (run["seed"], list(ARM_TITLES).index(run["arm"])))
    study = {**first.record["study"], "seeds": sorted({s for f in folders for s in f.record["study"]["seeds"]}),
             "minutes_total": sum(f.record["study"].get("minutes_total") or 0 for f in folders)}
    systems, result_systems, paired = dict(first.samples.systems), dict(first.results.get("systems", {})), []
    for folder in folders:
        systems.update({n: s for n, s in folder.samples.systems.items() if n != SFT_ROW})
        result_systems.update({n: s for n, s in folder.results.get("systems", {}).items() if n != SFT_ROW})
        paired += folder.results.get("paired") or []
    samples = Samples(first.samples.conv_ids, first.samples.gold, first.samples.true, systems)
    return ({**first.record, "study": study, "runs": runs},
            {**first.results, "systems": result_systems, "paired": paired}, samples)


def _check_poolable(first: Folder, other: Folder) -> None:
    if other.contexts != first.contexts:
        raise UserError(f"{other.path}: its eval/contexts.jsonl differs from {first.path}'s; only runs evaluated on "
                        "the same contexts can be pooled")
    sft_a, sft_b = (f.record.get("sft") or {} for f in (first, other))
    if (sft_a.get("weights_sha256") or sft_a.get("path")) != (sft_b.get("weights_sha256") or sft_b.get("path")):
        raise UserError(f"{other.path}: its SFT row comes from another SFT policy ({sft_b}) than {first.path}'s "
                        f"({sft_a}); only runs compared with the same SFT policy can be pooled")
    checks = [(f"study setting {k}", first.record["study"].get(k), other.record["study"].get(k)) for k in SAME_SETTINGS]
    checks += [(f"evaluation setting {k}", first.results.get(k), other.results.get(k)) for k in SAME_DESIGN]
    for what, ours, theirs in checks:
        if ours != theirs:
            raise UserError(f"{other.path}: {what} is {theirs!r}, but {ours!r} in {first.path}; only studies run "
                            "alike can be pooled")


def comparison(folders: list[Folder], report: dict) -> tuple[str, bool]:
    """A line on how the recomputed report compares with the committed one, and whether the verdict differs."""
    if len(folders) > 1:
        return (f"pooled {len(folders)} folders ({len(report['rows'])} runs, seeds {report['all_seeds']}); no "
                "committed report holds this pool, so there is nothing to compare with", False)
    path, committed = os.path.join(folders[0].path, "report.json"), folders[0].report
    if committed is None:
        return f"{path} is missing: nothing to compare with", False
    if committed.get("resamples") != report["resamples"]:
        return (f"not compared with {path}: recomputed with {report['resamples']} resamples, the report used "
                f"{committed.get('resamples')}", False)
    if committed.get("verdict") != report["verdict"]:
        differ = [(new or old)["criterion"] for new, old in zip_longest(report["verdict"], committed.get("verdict") or [])
                  if new != old]
        return f"the recomputed verdict DIFFERS from {path} in: {'; '.join(differ)}", True
    others = sorted(k for k in report.keys() | committed.keys() if not same(report.get(k), committed.get(k)))
    return (f"the recomputed verdict equals the committed one in {path}; "
            + (f"other figures differ: {', '.join(others)}" if others else "so does every other figure"), False)


def same(a, b) -> bool:
    """Equal, floats up to rounding: numpy's sums differ in the last digits with the thread count."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12) or (math.isnan(a) and math.isnan(b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return a == b


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m emprl.study.verdict", description=__doc__.split("\n\n")[0])
    parser.add_argument("results_dirs", nargs="+", metavar="RESULTS_DIR", help="a folder emprl.study.export wrote")
    parser.add_argument("--resamples", type=int, help="bootstrap and permutation resamples (default: the study's)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.resamples is not None and args.resamples < 1:
        raise UserError(f"--resamples: expected a positive number, got {args.resamples}")
    folders = [load_folder(path) for path in args.results_dirs]
    record, results, samples = pool(folders)
    if args.resamples is not None:
        record = {**record, "study": {**record["study"], "resamples": args.resamples}}
    # through JSON, as report.json was written: the comparison is of the same values
    report = json.loads(json.dumps(json_safe(assemble_report(record, results, samples)), ensure_ascii=False))
    print(report_markdown(report))
    line, differs = comparison(folders, report)
    print(f"emprl.study.verdict: {line}")
    if differs:
        raise SystemExit(1)
    return report


def _load_json(path: str) -> dict:
    return read_json(path, "a folder written by python -m emprl.study.export")


if __name__ == "__main__":
    run_cli(main)

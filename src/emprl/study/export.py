"""A finished RL study's evidence without its models, small enough to commit:

    python -m emprl.study.export STUDY_OUTPUT_DIR RESULTS_DIR

(the study runs it itself when its recipe sets ``results_dir``). RESULTS_DIR holds report.md, report.json,
runs.json (the study's settings, its SFT policy and one row per trained run: what the report read from
the recipe and the run folders), eval/results.json, eval/contexts.jsonl and eval/samples.jsonl.gz, and
``export.json``, the mark that this command wrote the folder. ``python -m emprl.study.verdict`` recomputes
the statistics and the verdict from these files alone (docs/statistics.md).

The folder is written whole into a temporary sibling and then renamed; an existing RESULTS_DIR is replaced
only when this command made it (its mark lists every file in it).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import shutil
import sys

from emprl.common.errors import UserError, run_cli
from emprl.common.io import atomic_dir, atomic_write_json, read_json
from emprl.evaluate.formats import json_safe
from emprl.study.assemble import RUN_KEYS, STUDY_KEYS, read_results
from emprl.study.report import SFT_ROW

MARKER = "export.json"
COPIED = ("report.md", "report.json", "eval/results.json", "eval/contexts.jsonl")
FILES = (*COPIED, "runs.json", "eval/samples.jsonl.gz")
WEIGHT_SUFFIXES = (".safetensors", ".bin")


def export(study_dir: str, results_dir: str) -> None:
    sources = [os.path.join(study_dir, name) for name in (*COPIED, "eval/samples.jsonl")]
    missing = [path for path in sources if not os.path.isfile(path)]
    if missing:
        raise UserError(f"{study_dir}: not a finished RL study with per-sample files (missing {', '.join(missing)})")
    record = read_record(study_dir)
    _check_target(results_dir)
    with atomic_dir(results_dir) as tmp:
        os.makedirs(os.path.join(tmp, "eval"))
        for name in COPIED:
            shutil.copyfile(os.path.join(study_dir, name), os.path.join(tmp, name))
        atomic_write_json(os.path.join(tmp, "runs.json"), json_safe(record))
        # mtime 0 and no file name in the header: the same samples give the same bytes on every export
        with open(os.path.join(study_dir, "eval", "samples.jsonl"), "rb") as src, \
                open(os.path.join(tmp, "eval", "samples.jsonl.gz"), "wb") as raw, \
                gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            shutil.copyfileobj(src, gz, 1 << 20)
        atomic_write_json(os.path.join(tmp, MARKER), {"written_by": "python -m emprl.study.export",
                                                      "files": list(FILES)})


def read_record(study_dir: str) -> dict:
    """The study's runs.json; for a study that finished before runs.json existed, the same record from
    its report.json (which keeps the settings and rows the report read, not the recipe values; the SFT
    policy is then fingerprinted as it is now)."""
    report = read_json(os.path.join(study_dir, "report.json"), "a finished study's report")
    path = os.path.join(study_dir, "runs.json")
    if os.path.isfile(path):
        record = read_json(path, "the study's record of its runs")
    else:
        sizing = ((report.get("pooled") or {}).get("variance") or {}).get("sizing") or [{}]
        study = {**{key: report.get(key) for key in STUDY_KEYS}, "minutes_total": report.get("minutes_total")}
        study["detectable_effect"] = study["detectable_effect"] or sizing[0].get("effect")  # not kept in report.json
        record = {"study": study, "runs": [{key: row.get(key) for key in RUN_KEYS} for row in report["rows"]]}
    if sorted(r["system"] for r in record["runs"]) != sorted(r["system"] for r in report["rows"]):
        raise UserError(f"{path}: names other runs than {study_dir}/report.json; rerun the study to rewrite both")
    if "sft" not in record:  # which SFT policy the SFT row scored: pooled folders must share it
        sft = (read_results(os.path.join(study_dir, "eval")).get("systems", {}).get(SFT_ROW) or {}).get("source")
        record["sft"] = policy_fingerprint(sft)
    return record


def policy_fingerprint(path: str | None) -> dict:
    """The policy folder and the SHA-256 of its weight files (None when the folder or its weights are gone)."""
    names = sorted(n for n in os.listdir(path) if n.endswith(WEIGHT_SUFFIXES)) if path and os.path.isdir(path) else []
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode() + b"\0")
        with open(os.path.join(path, name), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return {"path": path, "weights_sha256": digest.hexdigest() if names else None}


def _check_target(results_dir: str) -> None:
    """Replace only a folder this command wrote, and only when it holds nothing else."""
    if not os.path.lexists(results_dir):
        return
    marker = os.path.join(results_dir, MARKER)
    if not (os.path.isdir(results_dir) and os.path.isfile(marker)):
        raise UserError(f"{results_dir}: exists and was not written by emprl.study.export (no {MARKER}); "
                        "choose another results_dir or move it away")
    with open(marker, encoding="utf-8") as fh:
        ours = set(json.load(fh).get("files") or []) | {MARKER}
    found = {os.path.relpath(os.path.join(root, name), results_dir)
             for root, _, names in os.walk(results_dir) for name in names}
    foreign = sorted(found - ours)
    if foreign:
        raise UserError(f"{results_dir}: holds files the export did not write ({', '.join(foreign)}); "
                        "move them away first")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m emprl.study.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("study_output_dir", help="the study's output_dir (report.json, runs.json, eval/)")
    parser.add_argument("results_dir", help="the folder to write, e.g. results/demo_rl_study")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    export(args.study_output_dir, args.results_dir)
    print(f"emprl.study.export: {args.results_dir} ({_size(args.results_dir)}); "
          f"recompute its verdict with python -m emprl.study.verdict {args.results_dir}")


def _size(folder: str) -> str:
    total = sum(os.path.getsize(os.path.join(folder, name)) for name in FILES)
    return f"{total / 1e6:.1f} MB"


if __name__ == "__main__":
    run_cli(main)

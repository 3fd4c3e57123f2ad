"""Stage 6 — evaluation of every system on the test split, as the paper's Tables II and VI.

    accelerate launch --config_file recipes/accelerate/cpu.yaml -m emprl.evaluate recipes/demo/evaluate.yaml

For each system of the recipe (a generator folder, or ``jsonl:PATH`` generations of an external system):

1. PPL — corpus-level perplexity of the reference responses under teacher forcing: the token NLLs of
   the whole test set summed, divided by the number of tokens (never a mean of batch means); once per
   system. The targets are the SFT targets: T5 reads the response tokens + eos, a decoder-only model
   the reply and its end-of-turn tokens after the prompt.
2. For each seed: sample K responses per context (``samples_per_context``; the same contexts and seeds
   for every system) with the paper's decoding (top-k 20, top-p 1.0, temperature 0.9, at most 30 new
   tokens) and score Dist-1/2, Emp-F1, the mean empathy reward R_emp, the relevance F_BERT (greedy
   token-embedding match with the reference), the mean length in words, the share of empty responses
   and, on DailyDialog, BLEU-1/2 and ROUGE-L.
3. Mean and 95% confidence interval over the seeds.
4. For each pair of ``paired`` (an RL system and its SFT baseline): the paired difference over contexts
   of R_emp, F_BERT and Emp-F1, with a bootstrap CI and a p-value (docs/paired_evaluation.md).
5. Judges independent of the reward (``judges``, docs/judges.md): each grades every generated reply, and
   its Emp-F1 and level accuracy are computed against the true levels of the reference (the data's
   ``true_*`` columns), per seed and as paired differences.

Several processes split the examples between them (generation and PPL); the main process gathers
them in order and computes the metrics. Outputs: results.json, results.md, examples.md,
generations/<system>/seed<k>.jsonl, the per-sample files samples.jsonl (one line per generated reply)
and contexts.jsonl (one line per context) and, written last, stage.json.

This module is the stage (order of work, data kind); the recipe keys are in ``config.py`` and the
work lives beside it: ``systems.py`` (PPL, generations, external systems), ``scoring.py`` (metrics,
paired differences, mean ± CI) and ``report.py`` (results.json/.md, examples.md).
"""

from __future__ import annotations

import json
import logging
import os
import time

from emprl.common.errors import UserError, run_cli
from emprl.common.mechanisms import MECHANISMS
from emprl.common.policy import pick_device
from emprl.evaluate.config import EvaluateConfig
from emprl.evaluate.formats import EM_DASH, number
from emprl.evaluate.judges import check_judge_spec, judge_path
from emprl.evaluate.report import results_table, write_outputs
from emprl.evaluate.scoring import Scorer, score_runs, summarise
from emprl.evaluate.systems import evaluate_model, external_ppl, read_external_generations
from emprl.pipeline.config import parse_recipe
from emprl.pipeline.lifecycle import begin_stage

logger = logging.getLogger("emprl.evaluate")


STAGE_FILE = "stage.json"
JSONL_PREFIX = "jsonl:"
ED_FORMATS = ("empathetic_dialogues", "emprl_json")  # emprl_json: the authors' preprocessed ED release


# -- the stage -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    (cfg,) = parse_recipe((EvaluateConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.time()
    systems = check_systems(cfg)
    for name, spec in cfg.judges.items():
        check_judge_spec(name, spec)
    run = begin_stage("evaluate", cfg.output_dir, (cfg,), inputs=evaluation_inputs(cfg, systems),
                      overwrite=cfg.overwrite_output_dir)
    if run is None:
        return None

    from accelerate import PartialState
    from tqdm.auto import tqdm

    device = pick_device(cfg.device)
    state = PartialState(cpu=device == "cpu")  # joins the ranks of `accelerate launch` (docs/cpu-ranks.md)
    if state.num_processes > 1 or cfg.device == "auto":
        device = state.device

    # 1. The test examples, and what kind of data they are.
    rows = split_rows(cfg)
    contexts, references = list(rows["context"]), list(rows["response"])
    conv_ids = list(rows["conv_id"])
    kind = cfg.data_kind if cfg.data_kind != "auto" else detect_data_kind(cfg.data)
    with_refs = cfg.reference_metrics if cfg.reference_metrics is not None else kind == "dailydialog"
    with_paper = cfg.paper_reference if cfg.paper_reference is not None else \
        kind == "empathetic_dialogues" or cfg.paper_table is not None
    if state.is_main_process:
        logger.info("%d %s examples of %s (%s), %d systems x %d seeds, %d process(es) on %s", len(rows), cfg.split,
                    cfg.data, kind, len(systems), len(cfg.seeds), state.num_processes, device)

    # 2. Identifiers (main process): the gold levels on (c, y), from the labelled columns or computed once.
    scorer = gold = None
    judges, judge_refs, true = {}, {}, None
    if state.is_main_process:
        scorer = Scorer(cfg, device, contexts)
        gold = gold_levels(rows, cfg, scorer, references)
        true = true_levels(rows, cfg)
        judges, judge_refs = load_judges(cfg, device, contexts, references, true)

    # 3. Each system: PPL once, then one generation run per seed.
    results = {}
    for name, (kind_of_system, source) in tqdm(list(systems.items()), desc="systems", unit="system",
                                              disable=not state.is_main_process):
        if kind_of_system == "model":
            ppl, tokens, runs = evaluate_model(cfg, state, device, source, contexts, references)
        else:
            ppl, tokens = external_ppl(cfg, name, source), None
            runs = read_external_generations(source, cfg.seeds, contexts, references) \
                if state.is_main_process else {}
        if state.is_main_process:
            k = cfg.samples_per_context if kind_of_system == "model" else 1
            per_seed, per_context = score_runs(scorer, runs, k, references, gold, with_refs, judges, judge_refs,
                                               contexts)
            results[name] = {"source": source, "kind": kind_of_system, "ppl": ppl, "ppl_tokens": tokens,
                             "per_seed": per_seed, "summary": summarise(per_seed), "responses": runs,
                             "samples_per_context": k, "per_context": per_context}
            logger.info("%s: PPL %s; %s", name, number(ppl, 2, EM_DASH), ", ".join(
                f"{k} {number(v['mean'], 3, EM_DASH)}" for k, v in results[name]["summary"].items()))

    # 4. Reports, written whole (main process); the stamp last.
    report = None
    if state.is_main_process:
        report = write_outputs(cfg, results, run, contexts, references, conv_ids,
                               kind=kind, with_refs=with_refs, with_paper=with_paper,
                               runtime_s=time.time() - started, gold=gold, true=true,
                               judge_reference=judge_reference(cfg, true))
        print(results_table(report))
        print(f"wrote {cfg.output_dir}/results.md ({time.time() - started:.0f} s)")
    run.release()
    state.wait_for_everyone()
    return report


def split_rows(cfg: EvaluateConfig):
    """The recipe's split of the data, cut to ``max_examples``; a missing or empty split is a UserError."""
    from emprl.data import load_dialogues

    dataset = load_dialogues(cfg.data, cfg.on_bad_rows, splits=(cfg.split,))
    if cfg.split not in dataset:
        raise UserError(f"data {cfg.data!r}: no split {cfg.split!r} (has {', '.join(dataset)})")
    rows = dataset[cfg.split]
    if cfg.max_examples:
        rows = rows.select(range(min(cfg.max_examples, len(rows))))
    if len(rows) == 0:
        raise UserError(f"data {cfg.data!r}: the {cfg.split} split is empty")
    return rows


def check_systems(cfg: EvaluateConfig) -> dict[str, tuple[str, str]]:
    """name -> ("model", folder) or ("jsonl", path); a missing path is a UserError naming the system."""
    out = {}
    for name, spec in cfg.systems.items():
        if spec.startswith(JSONL_PREFIX):
            path = spec[len(JSONL_PREFIX):]
            paths = [path.replace("{seed}", str(s)) for s in cfg.seeds] if "{seed}" in path else [path]
            missing = next((p for p in paths if not os.path.isfile(p)), None)
            if missing:
                raise UserError(f"systems: '{name}': generations file '{missing}' does not exist")
            out[name] = ("jsonl", path)
        elif not os.path.isdir(spec):
            raise UserError(f"systems: '{name}': model folder '{spec}' does not exist")
        else:
            out[name] = ("model", spec)
    return out


# -- judges and true levels -----------------------------------------------------------------------------


def gold_levels(rows, cfg: EvaluateConfig, scorer: Scorer, references) -> list[list[int]]:
    """The gold level triple of each reference: the labelled columns, else the identifiers' levels."""
    if all(m in rows.column_names for m in MECHANISMS):
        return [[int(v) for v in levels] for levels in zip(*(rows[m] for m in MECHANISMS))]
    logger.info("no gold level columns in %s: labelling the %d references once", cfg.data, len(rows))
    return scorer.levels(references)


def true_levels(rows, cfg: EvaluateConfig) -> list[list[int]] | None:
    """The true level triple of each reference (the label stage's ``true_*`` columns), or None."""
    from emprl.label import TRUE_COLUMNS

    if cfg.true_levels == "judge" or not all(c in rows.column_names for c in TRUE_COLUMNS):
        if cfg.true_levels == "columns":
            raise UserError(f"true_levels: columns, but {cfg.data} has no {', '.join(TRUE_COLUMNS)} columns "
                            "(the label stage adds them where the data folder has <split>_levels.csv)")
        return None
    return [[int(v) for v in levels] for levels in zip(*(rows[c] for c in TRUE_COLUMNS))]


def judge_reference(cfg: EvaluateConfig, true) -> str | None:
    if not cfg.judges:
        return None
    return "true levels (the data's true_* columns)" if true is not None else "each judge's own levels on the reference"


def load_judges(cfg: EvaluateConfig, device, contexts, references, true) -> tuple[dict, dict]:
    """(name -> judge, name -> the level triple per context each judge is scored against)."""
    from emprl.evaluate.judges import load_judge

    judges, refs = {}, {}
    for name, spec in cfg.judges.items():
        judges[name] = load_judge(name, spec, device=device, max_context_len=cfg.identifier_max_context_len,
                                  max_response_len=cfg.identifier_max_response_len,
                                  batch_size=cfg.identifier_batch_size, speaker_tag=cfg.speaker_tag or "Speaker:",
                                  listener_tag=cfg.listener_tag or "Listener:")
        # Without true levels a judge is compared with itself on the reference (a judge-vs-judge Emp-F1).
        refs[name] = true if true is not None else judges[name].levels(contexts, references)
    return judges, refs


# -- data kind --------------------------------------------------------------------------------------------


def detect_data_kind(spec: str, _depth: int = 0) -> str:
    """empathetic_dialogues, dailydialog or other; saved (disk:) data follows its labelling record."""
    fmt, _, path = spec.partition(":")
    if fmt == "disk" and _depth < 3:
        source = source_spec(path)
        return detect_data_kind(source, _depth + 1) if source else "other"
    if fmt in ED_FORMATS:
        return "empathetic_dialogues"
    return "dailydialog" if fmt == "dailydialog" else "other"


def source_spec(folder: str) -> str | None:
    """The data spec a labelled folder was made from: label_stats.json's "data", else its model card."""
    try:
        with open(os.path.join(folder, "label_stats.json"), encoding="utf-8") as fh:
            data = json.load(fh).get("data")
        if isinstance(data, str):
            return data
    except (OSError, ValueError, AttributeError):
        pass
    try:
        with open(os.path.join(folder, "README.md"), encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("data: "):
                    value = json.loads(line[len("data: "):])
                    return value if isinstance(value, str) else None
    except (OSError, ValueError):
        pass
    return None


# -- skipping a finished stage ------------------------------------------------------------------------------


def evaluation_inputs(cfg: EvaluateConfig, systems) -> list[str]:
    """The folders and files the results depend on beyond the recipe."""
    return [source for _, source in systems.values()] + [cfg.identifiers_dir, cfg.data.partition(":")[2]] \
        + [judge_path(spec) for spec in cfg.judges.values()]


if __name__ == "__main__":
    run_cli(main)

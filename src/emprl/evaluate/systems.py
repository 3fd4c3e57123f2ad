"""Evaluation, the systems' side: perplexity of the references and sampled generations of a model
folder (split across ranks), and the generations of an external system read from JSON lines."""

from __future__ import annotations

import json
import logging
import math
import os
from typing import TYPE_CHECKING

from emprl.common.errors import UserError

if TYPE_CHECKING:
    from emprl.evaluate.config import EvaluateConfig

logger = logging.getLogger("emprl.evaluate")


# -- models: PPL and generations -------------------------------------------------------------------------


def evaluate_model(cfg: EvaluateConfig, state, device, folder: str, contexts, references):
    """(PPL, reference tokens, {seed: responses}) for one generator folder; examples split across ranks."""
    from accelerate.utils import gather_object

    from emprl.common.policy import (
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
    from emprl.common.policy import prompt_ids
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

    from emprl.common.policy import pad_batch, response_suffix

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

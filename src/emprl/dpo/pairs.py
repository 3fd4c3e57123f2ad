"""Preference pairs for EmpRL-DPO: K sampled responses per training context, each scored with R_emp
against the context's cached gold levels; the best and the worst become a (chosen, rejected) pair
when their rewards differ by more than a margin (docs/dpo.md).

Sampling is the expensive part, so it is written as it goes and never redone: the contexts of a
round are cut into shards, each shard is written whole (``atomic_write_jsonl``) once its K samples
are scored, and a rerun skips every shard file that is already there. A shard's sampling seed is
derived from (seed, round, shard), so a resumed round samples the remaining shards exactly as an
uninterrupted one would. When every shard is there, the pairs become a ``datasets`` folder
(``save_to_disk``) with a card, written whole.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from emprl.common.io import atomic_dir, atomic_write_jsonl, write_model_card

logger = logging.getLogger("emprl.dpo")
SHARDS = "shards"
PAIRS = "pairs"
PAIR_COLUMNS = ("prompt", "chosen", "rejected", "chosen_reward", "rejected_reward", "row", "context")


def select_pair(rewards: Sequence[float], margin: float) -> tuple[int, int] | None:
    """(index of the highest reward, index of the lowest) when highest > lowest + margin, else None.
    Ties go to the earliest sample, so the choice does not depend on anything but the rewards."""
    values = np.asarray(rewards, dtype=float)
    if len(values) < 2 or not np.all(np.isfinite(values)):
        return None  # a NaN reward cannot rank a sample; the context gets no pair
    best, worst = int(np.argmax(values)), int(np.argmin(values))
    if values[best] > values[worst] + margin:
        return best, worst
    return None


def round_rows(n_train: int, contexts_per_round: int | None, round_index: int, seed: int) -> list[int]:
    """The training rows of round ``round_index`` (1-based): consecutive slices of one seeded order of
    the training set, so later rounds see fresh contexts while any are left (then it wraps)."""
    order = np.random.default_rng([seed, 7]).permutation(n_train)
    size = n_train if not contexts_per_round else min(contexts_per_round, n_train)
    start = (round_index - 1) * size
    return [int(order[(start + i) % n_train]) for i in range(size)]


def shard_seed(seed: int, round_index: int, shard: int) -> int:
    return int(np.random.SeedSequence([seed, round_index, shard]).generate_state(1)[0])


def shard_path(round_dir: str, shard: int) -> str:
    return os.path.join(round_dir, SHARDS, f"shard-{shard:05d}.jsonl")


def read_shard(path: str) -> list[dict] | None:
    """A shard's rows, or None when the file is missing or unreadable (it is then sampled again)."""
    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except (OSError, ValueError):
        return None


def sample_round(round_dir: str, rows: list[int], data, sample_fn: Callable, score_fn: Callable,
                 k: int, shard_size: int, seed: int, round_index: int) -> tuple[list[dict], dict]:
    """Every context of ``rows`` with its K scored samples, sampling only the shards not yet on disk.

    ``sample_fn(contexts, seed) -> list[str]`` samples one response per given context (contexts are
    repeated K times in a row); ``score_fn(contexts, responses, batch) -> (total, parts)`` is the
    recipe's reward. Returns the rows and counts (shards reused / sampled, reward calls made)."""
    from tqdm.auto import tqdm

    shards = [rows[i:i + shard_size] for i in range(0, len(rows), shard_size)]
    out: list[dict] = []
    stats = {"shards": len(shards), "shards_reused": 0, "shards_sampled": 0, "reward_calls": 0}
    for index, shard_rows in enumerate(tqdm(shards, desc=f"sampling round {round_index}", unit="shard")):
        path = shard_path(round_dir, index)
        saved = read_shard(path)
        if saved is not None and [r["row"] for r in saved] == shard_rows:
            out.extend(saved)
            stats["shards_reused"] += 1
            continue
        batch = data[[r for r in shard_rows for _ in range(k)]]
        responses = sample_fn(batch["context"], shard_seed(seed, round_index, index))
        total, parts = score_fn(batch["context"], responses, batch)
        stats["reward_calls"] += len(responses)
        total = [float(x) for x in total]
        parts = {name: [float(x) for x in values] for name, values in parts.items()}
        shard = []
        for j, row in enumerate(shard_rows):
            span = slice(j * k, (j + 1) * k)
            shard.append({"row": row, "context": list(batch["context"][j * k]), "responses": responses[span],
                          "rewards": total[span], "parts": {n: v[span] for n, v in parts.items()}})
        atomic_write_jsonl(path, shard)  # whole or not at all: a killed run resamples only this shard
        out.extend(shard)
        stats["shards_sampled"] += 1
    return out, stats


def build_pairs(samples: list[dict], margin: float, prompt_fn: Callable) -> list[dict]:
    """One pair per context whose best and worst samples differ by more than ``margin``."""
    pairs = []
    for sample in samples:
        picked = select_pair(sample["rewards"], margin)
        if picked is None:
            continue
        best, worst = picked
        pairs.append({"prompt": prompt_fn(sample["context"]), "chosen": sample["responses"][best],
                      "rejected": sample["responses"][worst], "chosen_reward": sample["rewards"][best],
                      "rejected_reward": sample["rewards"][worst], "row": sample["row"],
                      "context": sample["context"]})
    return pairs


def save_pairs(folder: str, pairs: list[dict], summary: dict, recipe: dict) -> None:
    """The pairs as a ``datasets`` folder (``load_from_disk``) with a README card, written whole."""
    from datasets import Dataset, Features, Sequence, Value

    features = Features({"prompt": Value("string"), "chosen": Value("string"), "rejected": Value("string"),
                         "chosen_reward": Value("float64"), "rejected_reward": Value("float64"),
                         "row": Value("int64"), "context": Sequence(Value("string"))})
    columns = {c: [p[c] for p in pairs] for c in PAIR_COLUMNS}
    with atomic_dir(folder) as tmp:
        Dataset.from_dict(columns, features=features).save_to_disk(tmp)
        write_model_card(tmp, "EmpRL-DPO preference pairs", _CARD, recipe,
                         {k: v for k, v in summary.items() if isinstance(v, (int, float))})


def load_pairs(folder: str):
    """The pairs of a finished round, or None when the folder is missing or damaged (rebuilt then)."""
    from datasets import load_from_disk

    if not os.path.isfile(os.path.join(folder, "dataset_info.json")):
        return None
    try:
        return load_from_disk(folder)
    except Exception as err:  # a damaged folder: rebuilt from the shards, which are the real record
        logger.warning("pairs in %s do not load (%s); rebuilding them from the shards", folder, err)
        return None


def pair_summary(samples: list[dict], pairs: list[dict], k: int, margin: float) -> dict:
    gaps = [p["chosen_reward"] - p["rejected_reward"] for p in pairs]
    return {"contexts": len(samples), "samples_per_context": k, "reward_evaluations": len(samples) * k,
            "pairs": len(pairs), "contexts_without_pair": len(samples) - len(pairs), "min_reward_margin": margin,
            "mean_reward": float(np.mean([r for s in samples for r in s["rewards"]])) if samples else float("nan"),
            "mean_chosen_reward": float(np.mean([p["chosen_reward"] for p in pairs])) if pairs else float("nan"),
            "mean_rejected_reward": float(np.mean([p["rejected_reward"] for p in pairs])) if pairs else float("nan"),
            "mean_reward_gap": float(np.mean(gaps)) if gaps else float("nan")}


_CARD = """Preference pairs for DPO built with the EmpRL empathy reward as the judge. For each training
context the policy sampled K responses with the paper's decoding (top-k 20, top-p 1.0, temperature 0.9,
at most 30 new tokens); each was scored with R_emp = exp(-sum_i CE(identifier_i(c, y), l_i)) against the
gold levels cached by the labelling stage. The highest-scoring response is `chosen`, the lowest
`rejected`; contexts whose two differ by no more than the margin have no pair. Columns: `prompt`
(the policy's prompt text), `chosen`, `rejected`, their rewards, `row` (index in the labelled train
split) and `context` (the turns)."""

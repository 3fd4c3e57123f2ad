"""Paired comparison of two systems on the same held-out contexts (an RL policy against its SFT policy).

Both systems answer the same contexts, so the per-context difference removes how hard each context is
(the reward level of a context varies far more than the effect of a few PPO steps). The unit of resampling
is the context: K samples of one context are averaged into one value first, so they are not counted as K
independent observations. See docs/paired_evaluation.md.

- ``paired_difference``: for per-context values (mean R_emp, mean F_BERT ...): the mean difference, a
  percentile bootstrap CI over contexts and a two-sided Wilcoxon signed-rank p-value.
- ``paired_bootstrap_statistic``: for corpus statistics that are not a mean over contexts (Emp-F1, a
  weighted F1 over all examples): the same bootstrap indices drive both systems, and the p-value comes
  from a paired permutation test that swaps A and B within random contexts.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np


def per_context_means(values: Sequence[float], context_ids: Sequence[Hashable]) -> tuple[list, np.ndarray]:
    """(sorted context ids, mean of the values of each context): K flat samples -> one value per context."""
    keys, groups = group_by_context(values, context_ids)
    return keys, np.array([float(np.mean(g)) for g in groups])


def group_by_context(items: Sequence[Any], context_ids: Sequence[Hashable]) -> tuple[list, list[list]]:
    """(sorted context ids, the items of each context in their original order).

    Sorting the ids makes two systems' groups line up whatever order their samples came in; the ids
    must therefore be comparable (ints or strings)."""
    if len(items) != len(context_ids):
        raise ValueError(f"got {len(items)} values but {len(context_ids)} context ids; expected one id per value")
    groups: dict[Hashable, list] = {}
    for item, key in zip(items, context_ids):
        groups.setdefault(key, []).append(item)
    keys = sorted(groups)
    return keys, [groups[k] for k in keys]


def paired_difference(a: Sequence[float], b: Sequence[float], *, n_boot: int = 2000, confidence: float = 0.95,
                      seed: int = 0) -> dict:
    """Mean of a - b over contexts, its percentile bootstrap CI and a Wilcoxon signed-rank p-value.

    ``a`` and ``b`` hold one value per context, in the same context order, for system A and its
    baseline B. All-zero differences (e.g. a system against itself) give delta 0, CI [0, 0], p = 1.
    """
    import scipy.stats

    x, y = _paired_arrays(a, b, n_boot, confidence)
    diff = x - y
    delta = float(np.mean(diff))
    low, high = _bootstrap_ci((diff,), np.mean, n_boot, confidence, seed, vectorized=True)
    if not np.any(diff):
        p_value = 1.0  # nothing to rank: Wilcoxon is undefined, and there is no evidence of a difference
    else:
        # zero_method="wilcox" drops contexts with no difference; "auto" is exact for small n without ties.
        p_value = float(scipy.stats.wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
    return {"n": len(diff), "mean_a": float(np.mean(x)), "mean_b": float(np.mean(y)), "delta": delta,
            "ci_low": low, "ci_high": high, "p_value": p_value, "test": "wilcoxon signed-rank (two-sided)",
            "confidence": confidence, "n_boot": n_boot}


def paired_bootstrap_statistic(stat: Callable[[list], float], data_a: Sequence[Any], data_b: Sequence[Any], *,
                               n_boot: int = 2000, confidence: float = 0.95, seed: int = 0) -> dict:
    """delta = stat(A) - stat(B) for a statistic over a whole set of contexts, with paired resampling.

    ``data_a[i]`` and ``data_b[i]`` are what systems A and B produced for context i (any object, e.g. the
    list of (predicted levels, gold levels) of its K samples); ``stat`` maps a list of such items to a
    number. NumPy arrays (context on the first axis) are handed to ``stat`` as arrays, which is much
    faster for thousands of resamples (e.g. per-context confusion counts). CI: percentile bootstrap where each replicate draws context indices with replacement once and
    applies them to both systems. p-value: two-sided paired permutation test (scipy's
    permutation_type="samples"): each replicate swaps A's and B's items within a random subset of
    contexts, and p is the share of replicates whose |delta| reaches the observed one (exact
    enumeration when 2**n is at most n_boot).
    """
    import scipy.stats

    if len(data_a) != len(data_b):
        raise ValueError(f"paired data differ in length: A has {len(data_a)} contexts, B has {len(data_b)}; "
                         "expected the same contexts in the same order")
    _check_settings(len(data_a), n_boot, confidence)
    n = len(data_a)
    arrays = isinstance(data_a, np.ndarray) and isinstance(data_b, np.ndarray)
    # code i < n: A's item of context i; n + i: B's item of context i
    items = np.concatenate([data_a, data_b]) if arrays else list(data_a) + list(data_b)

    def take(data, idx):
        idx = np.asarray(idx, dtype=int)
        return data[idx] if arrays else [data[i] for i in idx]

    def on_indices(idx):  # one bootstrap replicate: the same contexts for both systems
        return stat(take(data_a, idx)) - stat(take(data_b, idx))

    def on_codes(codes_a, codes_b):  # one permutation: some contexts' items swapped between A and B
        return stat(take(items, codes_a)) - stat(take(items, codes_b))

    stat_a, stat_b = float(stat(data_a if arrays else list(data_a))), float(stat(data_b if arrays else list(data_b)))
    low, high = _bootstrap_ci((np.arange(n),), on_indices, n_boot, confidence, seed, vectorized=False)
    perm = scipy.stats.permutation_test((np.arange(n), np.arange(n) + n), on_codes, permutation_type="samples",
                                        vectorized=False, n_resamples=n_boot, alternative="two-sided",
                                        rng=np.random.default_rng(seed + 1))
    return {"n": n, "mean_a": stat_a, "mean_b": stat_b, "delta": stat_a - stat_b, "ci_low": low, "ci_high": high,
            "p_value": float(perm.pvalue), "test": "paired permutation (swap A/B within contexts, two-sided)",
            "confidence": confidence, "n_boot": n_boot}


def _bootstrap_ci(data, statistic, n_boot, confidence, seed, *, vectorized) -> tuple[float, float]:
    """Percentile bootstrap interval over the first axis; (value, value) for a single context."""
    import scipy.stats

    if len(data[0]) < 2:  # nothing to resample: the interval collapses to the estimate
        value = float(statistic(*data))
        return value, value
    res = scipy.stats.bootstrap(data, statistic, n_resamples=n_boot, confidence_level=confidence,
                                method="percentile", vectorized=vectorized, rng=np.random.default_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def _paired_arrays(a, b, n_boot, confidence) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.ndim != 1 or y.ndim != 1:
        raise ValueError(f"expected one value per context (1-D), got shapes {x.shape} and {y.shape}")
    if len(x) != len(y):
        raise ValueError(f"paired values differ in length: A has {len(x)} contexts, B has {len(y)}; "
                         "expected the same contexts in the same order")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("paired values must be finite numbers (got NaN or inf)")
    _check_settings(len(x), n_boot, confidence)
    return x, y


def _check_settings(n: int, n_boot: int, confidence: float) -> None:
    if n == 0:
        raise ValueError("paired comparison needs at least one context, got none")
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive number of resamples, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence}")

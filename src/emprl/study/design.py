"""The RL study's design: how the variance of a per-sample metric splits into trained runs, contexts and
samples (``variance_components``, ``difference_components``), and the runs x contexts x samples that
detect a given effect (``power``, ``contexts_needed``). See docs/statistics.md."""

from __future__ import annotations

import math

import numpy as np

from emprl.study.rl_stats import pair_runs


def variance_components(values, contexts) -> dict:
    """One-way random-effects split of a per-sample metric: between-context variance (of the contexts'
    true means) and within-context variance (between samples of one context), ANOVA estimators that
    allow unequal samples per context; icc = between / (between + within)."""
    x = np.asarray(values, dtype=float)
    ids = np.asarray(contexts)
    if x.ndim != 1 or len(x) != len(ids) or len(x) == 0:
        raise ValueError(f"expected one context id per value, got {x.shape} values and {ids.shape} ids")
    _, inverse, n = np.unique(ids, return_inverse=True, return_counts=True)
    k, total = len(n), len(x)
    means = np.bincount(inverse, weights=x) / n
    grand = x.mean()
    ss_within = float(((x - means[inverse]) ** 2).sum())
    ms_within = ss_within / (total - k) if total > k else math.nan
    ms_between = float((n * (means - grand) ** 2).sum() / (k - 1)) if k > 1 else math.nan
    n0 = (total - (n ** 2).sum() / total) / (k - 1) if k > 1 else math.nan
    between = max(0.0, (ms_between - ms_within) / n0) if k > 1 and not math.isnan(ms_within) else math.nan
    icc = between / (between + ms_within) if between + ms_within > 0 else math.nan
    return {"mean": float(grand), "between_context": between, "within_context": ms_within, "contexts": k,
            "samples_per_context": float(total / k), "icc": icc}


def difference_components(arm, baseline, *, within_arm: float, within_baseline: float, samples_arm: float,
                          samples_baseline: float) -> dict:
    """Variance of a pooled paired difference split into its sources, from per-run per-context means
    ``arm`` [S, C] against a shared ``baseline`` [C] and the per-sample within-context variances:

        Var(pooled) = run / S + (context + within_baseline / n) / K + (run_x_context + within_arm / n) / (S K)

    run: between trained runs; context: how the true difference varies between contexts (the baseline's
    sampling noise removed); run_x_context: how runs differ context by context (the arm's sampling noise
    removed). Two-way ANOVA mean squares on the differences; components clipped at 0."""
    a, b, paired = pair_runs(arm, baseline)
    if paired:
        raise ValueError("difference_components: expected a shared baseline (one run)")
    d = a - b
    s, k = d.shape
    grand, run_m, ctx_m = d.mean(), d.mean(axis=1), d.mean(axis=0)
    ms_ctx = s * float(((ctx_m - grand) ** 2).sum()) / (k - 1) if k > 1 else math.nan
    if s > 1:
        resid = d - run_m[:, None] - ctx_m[None, :] + grand
        ms_res = float((resid ** 2).sum()) / ((s - 1) * (k - 1))
        ms_run = k * float(((run_m - grand) ** 2).sum()) / (s - 1)
        run = max(0.0, (ms_run - ms_res) / k)
        ctx_total = max(0.0, (ms_ctx - ms_res) / s)
    else:  # one run: run and run x context cannot be told apart from the context term
        ms_res, run, ctx_total = within_arm / samples_arm, 0.0, max(0.0, ms_ctx - within_arm / samples_arm)
    return {"run": run, "context": max(0.0, ctx_total - within_baseline / samples_baseline),
            "run_x_context": max(0.0, ms_res - within_arm / samples_arm),
            "within_arm": within_arm, "within_baseline": within_baseline,
            "runs": s, "contexts": k, "samples_arm": samples_arm, "samples_baseline": samples_baseline,
            "sd_context_difference": float(np.std(ctx_m, ddof=1)) if k > 1 else math.nan}


def pooled_variance(components: dict, runs: int, contexts: int, samples: float) -> float:
    """Var of the pooled mean difference for a design of ``runs`` x ``contexts`` x ``samples`` per
    context and system (the formula of difference_components)."""
    c = components
    return (c["run"] / runs + (c["context"] + c["within_baseline"] / samples) / contexts
            + (c["run_x_context"] + c["within_arm"] / samples) / (runs * contexts))


def _z(p: float) -> float:
    from scipy.stats import norm

    return float(norm.ppf(p))


def power(components: dict, effect: float, runs: int, contexts: int, samples: float, alpha: float = 0.05) -> float:
    """Power of a two-sided level-alpha test of the pooled mean to see ``effect`` (normal approximation)."""
    from scipy.stats import norm

    se = math.sqrt(pooled_variance(components, runs, contexts, samples))
    if se == 0:
        return 1.0
    z = _z(1 - alpha / 2)
    return float(norm.cdf(abs(effect) / se - z) + norm.cdf(-abs(effect) / se - z))


def contexts_needed(components: dict, effect: float, runs: int, samples: float, *, target_power: float = 0.8,
                    alpha: float = 0.05) -> int | None:
    """Smallest number of contexts for ``target_power`` (two-sided ``alpha``) to see ``effect`` with
    ``runs`` trained runs and ``samples`` per context; None when the between-run variance alone is too
    large for that many runs (more contexts cannot help, only more runs)."""
    c = components
    budget = (abs(effect) / (_z(1 - alpha / 2) + _z(target_power))) ** 2  # the variance the test can afford
    spare = budget - c["run"] / runs
    if effect == 0 or spare <= 0:
        return None
    per_context = c["context"] + c["within_baseline"] / samples + (c["run_x_context"] + c["within_arm"] / samples) / runs
    return max(1, math.ceil(per_context / spare))

"""Statistics of an RL comparison as the RL field reports them (Agarwal et al. 2021, "Deep RL at the edge
of the statistical precipice", the rliable library): trained runs pooled, not one CI per run.

The input is one value per trained run and test context, an array ``[runs, contexts]`` with the same
context order for every arm (e.g. the mean R_emp of a policy's K samples of each context). An arm's runs
are its trained seeds; the SFT baseline is one policy shared by all seeds (``[contexts]`` or
``[1, contexts]``); a baseline with as many runs as the arm (the placebo of the same seed) is paired by
seed. See docs/statistics.md.

- ``pooled_difference``: mean over runs and contexts of arm - baseline, a two-level percentile bootstrap
  (draw runs with replacement, then contexts; the same context draw for both systems), a sign-flip
  permutation p at the unit the bootstrap draws first (the trained runs: ``run_sign_flip_p``), per-run
  one-level CIs and the number of runs with a positive delta.
- ``probability_of_improvement`` and ``interquartile_mean``: rliable's aggregates, with the same
  two-level bootstrap.
- ``pooled_corpus_difference``: the same for Emp-F1 from per-context confusion counts
  ``[runs, contexts, mechanisms, 3, 3]`` (a corpus statistic, not a mean over contexts).
- How the variance splits into runs, contexts and samples, and the design that detects an effect:
  ``emprl.study.design``.

Everything is vectorised: a replicate is a vector of draw counts (how often each run, each context was
drawn), so a mean over a resample is a weighted sum and 10,000 replicates x 5 runs x 1,200 contexts are
a few matrix products. rliable itself is not used: its bootstrap resamples runs within each task
(no two-level draw with context indices shared between arms) and its probability of improvement runs
one Mann-Whitney test per task in Python, far too slow for 1,200 contexts x 10,000 replicates.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 10_000
CONFIDENCE = 0.95
_CHUNK_VALUES = 4_000_000  # floats per replicate block (~32 MB): bounds memory whatever the design


# -- inputs and draws ------------------------------------------------------------------------------------


def as_runs(values, name: str = "values") -> np.ndarray:
    """[runs, contexts] float array; a 1-D array is one run."""
    x = np.asarray(values, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected values of shape [runs, contexts], got shape {np.shape(values)}")
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name}: values must be finite numbers (got NaN or inf)")
    return x


def pair_runs(arm, baseline, any_runs: bool = False) -> tuple[np.ndarray, np.ndarray, bool]:
    """(arm [S, C], baseline [1 or S, C], paired by run); ``any_runs``: the baseline may have any number."""
    a, b = as_runs(arm, "arm"), as_runs(baseline, "baseline")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"arm has {a.shape[1]} contexts but baseline {b.shape[1]}; expected the same contexts")
    if b.shape[0] not in (1, a.shape[0]) and not any_runs:
        raise ValueError(f"baseline has {b.shape[0]} runs; expected 1 (one policy for every run) or "
                         f"{a.shape[0]} (one per run of the arm, paired by seed)")
    return a, b, b.shape[0] == a.shape[0] and b.shape[0] > 1


def _check(n_boot: int, confidence: float) -> None:
    if n_boot < 1:
        raise ValueError(f"n_boot: expected a positive number of resamples, got {n_boot}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence: expected a level in (0, 1), got {confidence}")


def draw_counts(rng: np.random.Generator, n_boot: int, n: int) -> np.ndarray:
    """[n_boot, n] counts: how often each of n items is drawn in a resample of size n with replacement."""
    idx = rng.integers(0, n, size=(n_boot, n))
    flat = (idx + n * np.arange(n_boot)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n).reshape(n_boot, n).astype(float)


class TwoLevelDraws:
    """The replicates of a two-level bootstrap, in blocks: run counts then context counts per replicate.

    Context draws come from their own stream seeded by ``seed`` alone, so every comparison of a study
    (EmpRL - SFT, placebo - SFT, ...) sees the same context indices in replicate b, whatever its number
    of runs; run draws come from a second stream."""

    def __init__(self, n_boot: int, n_contexts: int, seed: int = 0, chunk: int | None = None):
        self.n_boot, self.n_contexts = n_boot, n_contexts
        self.chunk = chunk or max(1, _CHUNK_VALUES // max(1, n_contexts))
        self.seed = seed

    def blocks(self, *runs: int):
        """Yields (context counts [b, C], run counts [b, S_i] for each S_i in ``runs``); a shared
        baseline (S = 1) always counts 1."""
        ctx = np.random.default_rng([self.seed, 0])
        run_streams = [np.random.default_rng([self.seed, 1, i]) for i in range(len(runs))]
        done = 0
        while done < self.n_boot:
            b = min(self.chunk, self.n_boot - done)
            v = draw_counts(ctx, b, self.n_contexts)
            ws = [np.ones((b, 1)) if s == 1 else draw_counts(r, b, s) for s, r in zip(runs, run_streams)]
            yield v, ws
            done += b


def _interval(reps: np.ndarray, confidence: float) -> tuple[float, float]:
    alpha = (1 - confidence) / 2
    low, high = np.quantile(reps, [alpha, 1 - alpha])
    return float(low), float(high)


# -- the pooled mean difference ---------------------------------------------------------------------------


def pooled_difference(arm, baseline, *, n_boot: int = RESAMPLES, confidence: float = CONFIDENCE,
                      seed: int = 0, alternative: str = "two-sided") -> dict:
    """Pooled mean of arm - baseline over runs and contexts, with its two-level bootstrap CI, a sign-flip
    permutation p, per-run CIs (one-level bootstrap over contexts) and the runs with a positive delta.

    Paired by run (baseline [S, C]), a replicate draws runs once for both; against a shared baseline
    only the arm's runs are drawn. The permutation test flips the sign of each trained run's mean
    difference (``run_sign_flip_p``): under "no effect" a run is as likely to land below its baseline as
    above, whatever the contexts. Flipping contexts instead would treat the runs' shared deviation as
    signal (docs/statistics.md, "Which unit the test flips"). With one run, contexts are the only unit.
    ``alternative``: "two-sided" or "greater" (arm above baseline, declared before the run)."""
    _check(n_boot, confidence)
    _check_alternative(alternative)
    a, b, _ = pair_runs(arm, baseline)
    d = a - b  # [S, C]: the shared baseline broadcasts over runs
    n_runs, n_ctx = d.shape
    reps, per_run = np.empty(n_boot), np.empty((n_boot, n_runs))
    at = 0
    for v, (w,) in TwoLevelDraws(n_boot, n_ctx, seed).blocks(n_runs):
        by_run = v @ d.T / n_ctx  # [b, S]: each run's mean over the drawn contexts
        reps[at:at + len(v)] = (w * by_run).sum(axis=1) / n_runs
        per_run[at:at + len(v)] = by_run
        at += len(v)
    low, high = _interval(reps, confidence)
    run_means = d.mean(axis=1)
    runs = []
    for s in range(n_runs):
        lo, hi = _interval(per_run[:, s], confidence)
        runs.append({"delta": float(run_means[s]), "ci_low": lo, "ci_high": hi})
    if n_runs > 1:
        p, test = run_sign_flip_p(run_means, alternative), f"sign flip of the {n_runs} runs' mean differences"
    else:
        p, test = sign_flip_p(d[0], n_boot=n_boot, seed=seed, alternative=alternative), \
            "sign flip of the per-context differences (one run)"
    return {"delta": float(d.mean()), "ci_low": low, "ci_high": high,
            "p_value": p, "test": f"{test} ({alternative})", "alternative": alternative,
            "mean_arm": float(a.mean()), "mean_baseline": float(b.mean()), "runs": n_runs, "contexts": n_ctx,
            "runs_positive": int((run_means > 0).sum()), "per_run": runs, "confidence": confidence,
            "n_boot": n_boot, "paired_by_run": b.shape[0] > 1}


ALTERNATIVES = ("two-sided", "greater")


def _check_alternative(alternative: str) -> None:
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative: expected one of {', '.join(ALTERNATIVES)}, got {alternative!r}")


def _exceed(flipped_means: np.ndarray, observed: float, alternative: str) -> np.ndarray:
    """Which flipped means are at least as extreme as the observed one (rounding aside)."""
    tol = 1e-12 * max(1.0, abs(observed))
    if alternative == "greater":
        return flipped_means >= observed - tol
    return np.abs(flipped_means) >= abs(observed) - tol


def run_sign_flip_p(run_deltas, alternative: str = "two-sided") -> float:
    """Exact sign-flip p of the mean over trained runs of their mean differences: every one of the 2**S
    sign patterns. Valid whatever the between-run variance, because the unit flipped is the unit that
    varies; its smallest value is 1/2**S one-sided and 2/2**S two-sided (5 runs: 0.031 / 0.063), so a
    two-sided test at 0.05 needs at least 6 runs."""
    _check_alternative(alternative)
    d = np.asarray(run_deltas, dtype=float).ravel()
    if len(d) > 20:
        raise ValueError(f"run_sign_flip_p: {len(d)} runs; the exact test enumerates 2**runs patterns (at most 20)")
    if not np.any(d):
        return 1.0
    signs = 1 - 2 * ((np.arange(2 ** len(d))[:, None] >> np.arange(len(d))) & 1)
    return float(np.mean(_exceed(signs @ d / len(d), d.mean(), alternative)))


def sign_flip_p(differences, *, n_boot: int = RESAMPLES, seed: int = 0, alternative: str = "two-sided") -> float:
    """p of the mean of independent differences (one run's per-context differences): each replicate flips
    the sign of a random subset; p = (1 + #extreme) / (1 + n_boot), exact enumeration when 2**n <= n_boot."""
    _check_alternative(alternative)
    d = np.asarray(differences, dtype=float).ravel()
    if not np.any(d):
        return 1.0
    if 2 ** len(d) <= n_boot:
        return run_sign_flip_p(d, alternative)
    rng = np.random.default_rng([seed, 2])
    hits, done = 0, 0
    chunk = max(1, _CHUNK_VALUES // len(d))
    while done < n_boot:
        b = min(chunk, n_boot - done)
        signs = rng.integers(0, 2, size=(b, len(d)), dtype=np.int8) * 2 - 1
        hits += int(np.sum(_exceed(signs @ d / len(d), d.mean(), alternative)))
        done += b
    return (1 + hits) / (1 + n_boot)


# -- rliable's aggregates -----------------------------------------------------------------------------------


def probability_of_improvement(arm, baseline, *, n_boot: int = RESAMPLES, confidence: float = CONFIDENCE,
                               seed: int = 0) -> dict:
    """P(X > Y) as rliable defines it: for each context (rliable's task) the share of (arm run, baseline
    run) pairs where the arm scores higher, ties counting one half (the Mann-Whitney U / (m n)), averaged
    over contexts; CI by the two-level bootstrap with runs of each side drawn independently."""
    _check(n_boot, confidence)
    x, y, _ = pair_runs(arm, baseline, any_runs=True)
    sx, sy, n_ctx = x.shape[0], y.shape[0], x.shape[1]
    u = (x[:, None, :] > y[None, :, :]) + 0.5 * (x[:, None, :] == y[None, :, :])  # [Sx, Sy, C]
    u = u.reshape(sx * sy, n_ctx)
    reps, at = np.empty(n_boot), 0
    for v, (wx, wy) in TwoLevelDraws(n_boot, n_ctx, seed).blocks(sx, sy):
        per_pair = (v @ u.T / n_ctx).reshape(len(v), sx, sy)
        reps[at:at + len(v)] = np.einsum("bi,bij,bj->b", wx, per_pair, wy) / (sx * sy)
        at += len(v)
    low, high = _interval(reps, confidence)
    return {"poi": float(u.mean()), "ci_low": low, "ci_high": high, "confidence": confidence, "n_boot": n_boot}


def weighted_iqm(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Interquartile mean of ``values`` (1-D) repeated ``weights`` times ([b, N] draw counts): the mean of
    the middle half, cutting a quarter of the total weight at each end (a fraction of a value where a
    quarter is not whole). With unit weights and N divisible by 4 this is scipy's trim_mean(x, 0.25),
    which rliable's IQM is."""
    order = np.argsort(values, kind="stable")
    return _iqm_sorted(values[order], np.atleast_2d(weights)[:, order])


def _iqm_sorted(v: np.ndarray, w: np.ndarray, dtype=np.float64) -> np.ndarray:
    w = w.astype(dtype, copy=False)
    upper = np.cumsum(w, axis=1)
    total = upper[:, -1:]
    lo, hi = 0.25 * total, 0.75 * total
    kept = np.clip(upper, lo, hi)
    kept -= np.clip(upper - w, lo, hi)  # the weight of each value inside the middle half
    return (kept @ v.astype(dtype)).astype(float) / (0.5 * total[:, 0].astype(float))


def interquartile_mean(arm, baseline=None, *, n_boot: int = RESAMPLES, confidence: float = CONFIDENCE,
                       seed: int = 0) -> dict:
    """rliable's IQM: the mean of the middle 50% of all run x context scores, for the arm, the baseline
    and their difference (arm IQM - baseline IQM), with two-level bootstrap CIs from shared draws."""
    _check(n_boot, confidence)
    a = as_runs(arm, "arm")
    b = None if baseline is None else pair_runs(a, baseline)[1]
    n_ctx = a.shape[1]
    paired = b is not None and b.shape[0] > 1
    systems = {"arm": a} if b is None else {"arm": a, "baseline": b}
    reps = {k: np.empty(n_boot) for k in systems}
    at = 0
    runs = (a.shape[0],) if b is None or paired else (a.shape[0], b.shape[0])
    # each system's scores sorted once; a replicate's weight of (run s, context c) is w_s * v_c
    order = {k: np.argsort(x.ravel(), kind="stable") for k, x in systems.items()}
    for v, ws in TwoLevelDraws(n_boot, n_ctx, seed, chunk=max(1, 1_000_000 // a.size)).blocks(*runs):
        for key, x in systems.items():
            w = ws[0] if key == "arm" or paired else ws[1]
            run_of, ctx_of = np.divmod(order[key], n_ctx)
            cell = w[:, run_of].astype(np.float32) * v[:, ctx_of].astype(np.float32)
            # float32 halves the memory traffic of the bootstrap; the estimate itself is float64
            reps[key][at:at + len(v)] = _iqm_sorted(x.ravel()[order[key]], cell, np.float32)
        at += len(v)
    out = {}
    for key, x in systems.items():
        low, high = _interval(reps[key], confidence)
        out[key] = {"iqm": float(weighted_iqm(x.ravel(), np.ones((1, x.size)))[0]), "ci_low": low, "ci_high": high}
    if b is not None:
        low, high = _interval(reps["arm"] - reps["baseline"], confidence)
        out["delta"] = {"iqm": out["arm"]["iqm"] - out["baseline"]["iqm"], "ci_low": low, "ci_high": high}
    out.update(confidence=confidence, n_boot=n_boot)
    return out


# -- a corpus statistic: Emp-F1 from confusion counts -------------------------------------------------------


def emp_f1_batched(counts) -> np.ndarray:
    """Emp-F1 (x100) of confusion counts [..., mechanisms, gold level, predicted level]: per mechanism
    the support-weighted F1 over levels (F1 = 0 for a level neither gold nor predicted), mean over
    mechanisms; emprl.metrics.emp_f1_from_confusion for any leading axes."""
    c = np.asarray(counts, dtype=float)
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    support, predicted = c.sum(axis=-1), c.sum(axis=-2)
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum(axis=-1)
    per_mech = np.divide((f1 * support).sum(axis=-1), total, out=np.zeros_like(total), where=total > 0)
    return 100.0 * per_mech.mean(axis=-1)


def _as_counts(counts, name: str) -> np.ndarray:
    c = np.asarray(counts, dtype=float)
    if c.ndim == 4:
        c = c[None]
    if c.ndim != 5 or c.shape[-1] != c.shape[-2] or 0 in c.shape[:2]:
        raise ValueError(f"{name}: expected confusion counts [runs, contexts, mechanisms, levels, levels], "
                         f"got shape {np.shape(counts)}")
    return c


def pooled_corpus_difference(arm_counts, baseline_counts, *, statistic=emp_f1_batched, n_boot: int = RESAMPLES,
                             confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    """Pooled difference of a corpus statistic (default Emp-F1) computed per run from summed per-context
    counts: delta = mean over arm runs of stat(run) - mean over baseline runs of stat(run). The two-level
    bootstrap redraws runs and contexts (each replicate's per-run counts are the context-count-weighted
    sums). The permutation p, with several runs, flips the sign of each run's difference of the statistic
    (swapping a run's counts with its baseline's), as ``pooled_difference`` does; with one run it swaps,
    within random contexts, the arm's counts with the baseline's, the corpus analogue of the sign flip."""
    _check(n_boot, confidence)
    a, b = _as_counts(arm_counts, "arm"), _as_counts(baseline_counts, "baseline")
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"arm counts {a.shape[1:]} and baseline counts {b.shape[1:]} differ in contexts or levels")
    if b.shape[0] not in (1, a.shape[0]):
        raise ValueError(f"baseline has {b.shape[0]} runs; expected 1 or {a.shape[0]}")
    sa, sb, n_ctx = a.shape[0], b.shape[0], a.shape[1]
    inner = a.shape[2:]
    fa, fb = a.reshape(sa, n_ctx, -1), b.reshape(sb, n_ctx, -1)
    paired = sb == sa and sb > 1

    def per_run(flat, v):  # [S, C, F] counts, [n, C] context weights -> [n, S] statistic per run
        summed = _weighted_sum(v, flat)
        return statistic(summed.reshape(*summed.shape[:2], *inner))

    stat_a, stat_b = per_run(fa, np.ones((1, n_ctx)))[0], per_run(fb, np.ones((1, n_ctx)))[0]
    reps, at = np.empty(n_boot), 0
    runs = (sa,) if paired else (sa, sb)
    for v, ws in TwoLevelDraws(n_boot, n_ctx, seed, chunk=max(1, 2_000_000 // max(1, n_ctx))).blocks(*runs):
        wa, wb = ws[0], ws[0] if paired else ws[1]
        reps[at:at + len(v)] = ((wa * per_run(fa, v)).sum(1) / sa) - ((wb * per_run(fb, v)).sum(1) / sb)
        at += len(v)
    low, high = _interval(reps, confidence)
    delta = float(stat_a.mean() - stat_b.mean())
    run_deltas = stat_a - (stat_b if paired else stat_b.mean())
    if sa > 1:
        p, test = run_sign_flip_p(run_deltas), f"sign flip of the {sa} runs' differences (two-sided)"
    else:
        p, test = _swap_p(fa, fb, inner, statistic, delta, n_boot, seed), \
            "paired permutation: arm and baseline counts swapped within random contexts (one run, two-sided)"
    return {"delta": delta, "ci_low": low, "ci_high": high, "mean_arm": float(stat_a.mean()),
            "mean_baseline": float(stat_b.mean()), "per_run_arm": stat_a.tolist(),
            "runs_positive": int((run_deltas > 0).sum()), "p_value": p, "test": test,
            "runs": sa, "contexts": n_ctx, "confidence": confidence, "n_boot": n_boot}


def _weighted_sum(v: np.ndarray, flat: np.ndarray) -> np.ndarray:
    """[n, C] weights x [S, C, F] per-context counts -> [n, S, F] sums (one matrix product)."""
    s, c, f = flat.shape
    return (v @ flat.transpose(1, 0, 2).reshape(c, s * f)).reshape(len(v), s, f)


def _swap_p(fa, fb, inner, statistic, observed, n_boot, seed) -> float:
    sa, sb = fa.shape[0], fb.shape[0]
    paired = sa == sb and sb > 1
    if observed == 0:
        return 1.0
    # What each side receives in a swapped context: the other side's counts of the same run when paired,
    # else the other side's run-averaged counts.
    into_a = fb if paired else np.broadcast_to(fb.mean(axis=0, keepdims=True), fa.shape)
    into_b = fa if paired else fa.mean(axis=0, keepdims=True)
    gain_a, gain_b = into_a - fa, into_b - fb  # [S, C, F]: change of a run's counts if context c is swapped
    tot_a, tot_b = fa.sum(axis=1), fb.sum(axis=1)  # [S, F]
    rng = np.random.default_rng([seed, 3])
    hits, done, n_ctx = 0, 0, fa.shape[1]
    chunk = max(1, 2_000_000 // max(1, n_ctx))
    tol = 1e-9 * max(1.0, abs(observed))
    while done < n_boot:
        n = min(chunk, n_boot - done)
        m = rng.integers(0, 2, size=(n, n_ctx)).astype(float)
        ca = tot_a[None] + _weighted_sum(m, gain_a)
        cb = tot_b[None] + _weighted_sum(m, gain_b)
        d = statistic(ca.reshape(n, sa, *inner)).mean(1) - statistic(cb.reshape(n, sb, *inner)).mean(1)
        hits += int(np.sum(np.abs(d) >= abs(observed) - tol))
        done += n
    return (1 + hits) / (1 + n_boot)

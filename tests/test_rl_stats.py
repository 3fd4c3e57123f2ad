"""emprl.study.rl_stats and emprl.study.design on synthetic data with a known effect: pooled two-level
bootstrap, sign-flip p, rliable's aggregates, the Emp-F1 corpus variant, variance components and the
design sizing."""

import time

import numpy as np
import pytest
import scipy.stats

from emprl.metrics import emp_f1_from_confusion, level_confusion
from emprl.study import design, rl_stats


def synthetic(effect=0.0, runs=5, contexts=400, run_sd=0.0, noise=0.1, seed=0):
    """Per-run per-context means: a context level shared by both systems, plus the effect, a run offset
    and independent noise per cell; the baseline is one shared run."""
    rng = np.random.default_rng(seed)
    level = rng.gamma(0.5, 0.2, size=contexts)
    baseline = level + rng.normal(0, noise, contexts)
    arm = level[None] + effect + rng.normal(0, run_sd, (runs, 1)) + rng.normal(0, noise, (runs, contexts))
    return arm, baseline


def test_known_effect_is_covered_and_significant():
    arm, base = synthetic(effect=0.05)
    out = rl_stats.pooled_difference(arm, base, n_boot=2000)
    assert out["ci_low"] < 0.05 < out["ci_high"] and out["ci_low"] > 0
    # the test flips the 5 runs: every run positive is the most extreme of 32 patterns
    assert out["p_value"] == pytest.approx(2 / 32) and out["runs_positive"] == 5 and out["runs"] == 5
    greater = rl_stats.pooled_difference(arm, base, n_boot=200, alternative="greater")
    assert greater["p_value"] == pytest.approx(1 / 32) and "greater" in greater["test"]
    assert out["delta"] == pytest.approx((arm - base).mean())
    for run, row in zip(arm, out["per_run"]):  # one-level CIs: each run's own mean over contexts
        assert row["delta"] == pytest.approx((run - base).mean()) and row["ci_low"] < row["delta"] < row["ci_high"]


def test_null_gives_a_large_p_and_a_ci_around_zero():
    arm, base = synthetic(effect=0.0, seed=3)
    out = rl_stats.pooled_difference(arm, base, n_boot=2000)
    assert out["p_value"] > 0.05 and out["ci_low"] < 0 < out["ci_high"]


def test_a_run_level_outlier_widens_the_pooled_interval():
    arm, base = synthetic(effect=0.02, seed=5)
    calm = rl_stats.pooled_difference(arm, base, n_boot=2000)
    arm[2] += 0.3  # one trained run far off: the run draw must carry it into the interval
    wild = rl_stats.pooled_difference(arm, base, n_boot=2000)
    assert (wild["ci_high"] - wild["ci_low"]) > 3 * (calm["ci_high"] - calm["ci_low"])


def test_paired_by_run_baseline_and_shape_errors():
    arm, _ = synthetic(effect=0.03, seed=1)
    placebo, _ = synthetic(effect=0.0, seed=1)
    out = rl_stats.pooled_difference(arm, placebo, n_boot=500)
    assert out["paired_by_run"] and out["delta"] == pytest.approx((arm - placebo).mean())
    with pytest.raises(ValueError, match="contexts"):
        rl_stats.pooled_difference(arm, placebo[:, :10])
    with pytest.raises(ValueError, match="runs"):
        rl_stats.pooled_difference(arm, placebo[:3])
    with pytest.raises(ValueError, match="finite"):
        rl_stats.pooled_difference(arm, np.full(arm.shape[1], np.nan))


def test_context_draws_are_shared_between_comparisons():
    a = [v for v, _ in rl_stats.TwoLevelDraws(50, 30, seed=4, chunk=20).blocks(5)]
    b = [v for v, _ in rl_stats.TwoLevelDraws(50, 30, seed=4, chunk=20).blocks(3, 1)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    counts = np.concatenate(a)
    assert counts.shape == (50, 30) and np.all(counts.sum(axis=1) == 30)


def test_sign_flip_p_enumerates_small_samples():
    assert rl_stats.sign_flip_p([1.0, 1.0, 1.0, 1.0]) == pytest.approx(2 / 16)
    assert rl_stats.sign_flip_p([1.0, 1.0, 1.0, 1.0], alternative="greater") == pytest.approx(1 / 16)
    assert rl_stats.sign_flip_p([-1.0, -1.0, -1.0, -1.0], alternative="greater") == 1.0
    assert rl_stats.sign_flip_p([0.0, 0.0]) == 1.0
    assert rl_stats.run_sign_flip_p([0.3, -0.1, 0.2]) == pytest.approx(4 / 8)  # +-0.4 and +-0.6 of 8 sums
    with pytest.raises(ValueError, match="alternative"):
        rl_stats.run_sign_flip_p([1.0], alternative="less-ish")


def test_run_level_flip_holds_its_level_where_the_context_flip_does_not():
    """Under no effect but a between-run SD, flipping contexts (the old test) rejects far too often; the
    run-level flip, the unit the two-level bootstrap draws, stays at its nominal level (exactly 1/32 at 5 runs
    one-sided: the only pattern at or below 0.05 is all five runs on the observed side)."""
    rng = np.random.default_rng(31)
    run_level = context_level = 0
    sims = 400
    for _ in range(sims):
        arm, base = synthetic(effect=0.0, runs=5, contexts=200, run_sd=0.03, noise=0.1,
                              seed=int(rng.integers(1 << 30)))
        d = arm - base
        run_level += rl_stats.run_sign_flip_p(d.mean(axis=1), alternative="greater") <= 0.05
        context_level += rl_stats.sign_flip_p(d.mean(axis=0), n_boot=500, alternative="greater") <= 0.05
    assert 0.01 <= run_level / sims <= 0.07
    assert context_level / sims > 0.1  # at least twice the nominal 5%


def test_probability_of_improvement_matches_mann_whitney_per_context():
    rng = np.random.default_rng(2)
    x, y = rng.normal(0.2, 1, (4, 25)), rng.normal(0, 1, (3, 25))
    expected = np.mean([scipy.stats.mannwhitneyu(x[:, c], y[:, c]).statistic / 12 for c in range(25)])
    out = rl_stats.probability_of_improvement(x, y, n_boot=500)
    assert out["poi"] == pytest.approx(expected) and out["ci_low"] <= out["poi"] <= out["ci_high"]
    assert rl_stats.probability_of_improvement(y + 10, y, n_boot=100)["poi"] == pytest.approx(1.0)
    assert rl_stats.probability_of_improvement(y, y, n_boot=100)["poi"] == pytest.approx(0.5)


def test_iqm_is_rliables_trimmed_mean_and_its_weighted_form_resamples():
    rng = np.random.default_rng(7)
    x = rng.exponential(size=(4, 32))  # sizes divisible by 4: trim_mean cuts whole values
    out = rl_stats.interquartile_mean(x, x[0], n_boot=300)
    assert out["arm"]["iqm"] == pytest.approx(scipy.stats.trim_mean(x, 0.25, axis=None))
    assert out["baseline"]["iqm"] == pytest.approx(scipy.stats.trim_mean(x[0], 0.25))
    assert out["delta"]["iqm"] == pytest.approx(out["arm"]["iqm"] - out["baseline"]["iqm"])
    values, weights = rng.normal(size=12), rng.integers(0, 4, size=12).astype(float)
    weights[0] += 4 - weights.sum() % 4  # a total divisible by 4: no fractional cut
    repeated = np.repeat(values, weights.astype(int))
    assert rl_stats.weighted_iqm(values, weights[None])[0] == pytest.approx(scipy.stats.trim_mean(repeated, 0.25))


def _confusions(runs, gold, hit_rate, rng, samples=4):
    """Counts [runs, contexts, 3, 3, 3]: each sample's level equals the gold level with ``hit_rate``."""
    contexts = len(gold)
    out = np.zeros((runs, contexts, 3, 3, 3))
    for s in range(runs):
        for c in range(contexts):
            pred = np.where(rng.random((samples, 3)) < hit_rate, gold[c], rng.integers(0, 3, size=(samples, 3)))
            out[s, c] = level_confusion(pred, [gold[c]] * samples)
    return out


def test_emp_f1_batched_matches_the_metric_and_the_corpus_variant_sees_an_effect():
    rng = np.random.default_rng(11)
    counts = rng.integers(0, 5, size=(6, 3, 3, 3))
    assert np.allclose(rl_stats.emp_f1_batched(counts), [emp_f1_from_confusion(c) for c in counts])
    rng = np.random.default_rng(12)
    gold = rng.integers(0, 3, size=(150, 3))
    better, base = _confusions(5, gold, 0.7, rng), _confusions(1, gold, 0.4, rng)
    out = rl_stats.pooled_corpus_difference(better, base, n_boot=1000)
    assert out["ci_low"] > 0 and out["p_value"] == pytest.approx(2 / 32) and out["runs_positive"] == 5
    single = rl_stats.pooled_corpus_difference(better[:1], base, n_boot=1000)  # one run: contexts swapped
    assert single["p_value"] < 0.01 and "one run" in single["test"]
    assert out["mean_baseline"] == pytest.approx(emp_f1_from_confusion(base[0].sum(axis=0)))
    null = rl_stats.pooled_corpus_difference(_confusions(5, gold, 0.5, rng), _confusions(5, gold, 0.5, rng),
                                             n_boot=1000)
    assert null["p_value"] > 0.05 and null["ci_low"] < 0 < null["ci_high"]


def test_variance_components_recover_known_values():
    rng = np.random.default_rng(21)
    contexts, n = 2000, rng.integers(2, 7, size=2000)  # unequal samples per context
    means = rng.normal(0.1, 0.2, contexts)  # between-context variance 0.04
    ids = np.repeat(np.arange(contexts), n)
    values = means[ids] + rng.normal(0, 0.3, len(ids))  # within-context variance 0.09
    out = design.variance_components(values, ids)
    assert out["between_context"] == pytest.approx(0.04, rel=0.1)
    assert out["within_context"] == pytest.approx(0.09, rel=0.05)
    assert out["contexts"] == contexts and 0 < out["icc"] < 1


def test_difference_components_and_the_sized_design():
    rng = np.random.default_rng(31)
    runs, contexts, samples = 6, 3000, 4
    within = 0.04
    ctx_effect = rng.normal(0, 0.1, contexts)  # context variance of the difference: 0.01
    run_effect = rng.normal(0, 0.002, runs)  # a seed SD of 0.01 would already cap the power (test below)
    base = rng.normal(0, np.sqrt(within / samples), contexts)
    arm = (0.02 + run_effect[:, None] + ctx_effect[None] + rng.normal(0, np.sqrt(within / samples), (runs, contexts)))
    comp = design.difference_components(arm, base, within_arm=within, within_baseline=within,
                                          samples_arm=samples, samples_baseline=samples)
    assert comp["context"] == pytest.approx(0.01, rel=0.15)
    assert comp["run_x_context"] == pytest.approx(0.0, abs=0.002)
    # sizing: power 0.8 at the answer, not one context earlier
    k = design.contexts_needed(comp, 0.012, runs=5, samples=4)
    assert design.power(comp, 0.012, 5, k, 4) >= 0.8 > design.power(comp, 0.012, 5, k - 1, 4)
    # a run variance larger than the test can afford: no number of contexts helps
    assert design.contexts_needed({**comp, "run": 1.0}, 0.012, runs=5, samples=4) is None
    simple = {"run": 0.0, "context": 0.0182, "run_x_context": 0.0, "within_arm": 0.0, "within_baseline": 0.0}
    # one run, one sample, no seed effect: the textbook n = ((z_.975 + z_.8) sd / effect)^2
    assert design.contexts_needed(simple, 0.012, runs=1, samples=1) == int(np.ceil((2.8016 ** 2) * 0.0182
                                                                                      / 0.012 ** 2 - 1e-3))


def test_ten_thousand_resamples_of_five_runs_and_1200_contexts_take_seconds():
    arm, base = synthetic(effect=0.012, contexts=1200)
    started = time.time()
    rl_stats.pooled_difference(arm, base)
    rl_stats.probability_of_improvement(arm, base)
    assert time.time() - started < 30  # a few seconds on a shared 2-core machine

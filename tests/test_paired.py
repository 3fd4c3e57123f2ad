"""Paired statistics on constructed inputs whose answers are known."""

import numpy as np
import pytest
from sklearn.metrics import f1_score

from emprl.evaluate.paired import (
    group_by_context,
    paired_bootstrap_statistic,
    paired_difference,
    per_context_means,
)
from emprl.metrics import emp_f1_from_confusion, level_confusion


def test_identical_systems_give_zero_delta_and_p_one():
    a = np.random.default_rng(0).uniform(size=50)
    out = paired_difference(a, a.copy())
    assert out["delta"] == 0.0 and out["ci_low"] == 0.0 and out["ci_high"] == 0.0
    assert out["p_value"] == 1.0 and out["n"] == 50 and "wilcoxon" in out["test"]


def test_constant_shift_gives_that_shift_and_a_point_interval():
    b = np.arange(40) / 64.0  # multiples of 1/64, so b + 0.125 - b is exactly 0.125 in floating point
    out = paired_difference(b + 0.125, b)
    assert out["delta"] == 0.125 and out["ci_low"] == 0.125 and out["ci_high"] == 0.125
    assert out["mean_a"] - out["mean_b"] == pytest.approx(0.125)
    assert out["p_value"] < 1e-6
    b = np.random.default_rng(1).uniform(size=40)  # +0.1 on arbitrary floats: exact up to rounding
    out = paired_difference(b + 0.1, b)
    assert out["delta"] == pytest.approx(0.1, abs=1e-12)
    assert out["ci_low"] == pytest.approx(0.1, abs=1e-12) and out["ci_high"] == pytest.approx(0.1, abs=1e-12)


def test_noisy_positive_shift_is_detected():
    rng = np.random.default_rng(2)
    level = rng.uniform(size=300)  # per-context difficulty, shared by both systems
    a = level + 0.05 + rng.normal(0, 0.1, size=300)
    b = level + rng.normal(0, 0.1, size=300)
    out = paired_difference(a, b)
    assert 0 < out["ci_low"] < out["delta"] < out["ci_high"]
    assert out["p_value"] < 0.01


def test_noisy_null_interval_contains_zero():
    rng = np.random.default_rng(3)
    level = rng.uniform(size=300)
    out = paired_difference(level + rng.normal(0, 0.1, size=300), level + rng.normal(0, 0.1, size=300))
    assert out["ci_low"] < 0 < out["ci_high"]
    assert out["p_value"] > 0.05


def test_bootstrap_is_reproducible_under_the_seed():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=30), rng.normal(size=30)
    assert paired_difference(a, b, seed=7) == paired_difference(a, b, seed=7)
    assert paired_difference(a, b, seed=7)["ci_low"] != paired_difference(a, b, seed=8)["ci_low"]
    assert paired_difference(a, b, confidence=0.5)["ci_high"] < paired_difference(a, b, confidence=0.99)["ci_high"]


def test_bad_input_is_a_clear_value_error():
    with pytest.raises(ValueError, match="differ in length: A has 3 contexts, B has 2"):
        paired_difference([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="differ in length"):
        paired_bootstrap_statistic(len, [1, 2], [1])
    with pytest.raises(ValueError, match="at least one context"):
        paired_difference([], [])
    with pytest.raises(ValueError, match="finite"):
        paired_difference([1.0, float("nan")], [1.0, 2.0])
    with pytest.raises(ValueError, match="one id per value"):
        per_context_means([1.0, 2.0], [0])


def test_per_context_means_collapse_k_samples_in_context_order():
    keys, means = per_context_means([1.0, 10.0, 3.0, 20.0], [1, 0, 1, 0])
    assert keys == [0, 1] and means.tolist() == [15.0, 2.0]
    keys, groups = group_by_context(["a", "b", "c"], [2, 0, 2])
    assert keys == [0, 2] and groups == [["b"], ["a", "c"]]


# -- Emp-F1: a weighted F1 over all examples, not a mean over contexts -----------------------------------------


def emp_f1(items):
    """items: per context, the level_confusion counts of its samples."""
    return emp_f1_from_confusion(np.sum(items, axis=0))


def system(rng, gold, accuracy, k=1):
    """Per context, the confusion counts of k sampled level triples, each right with prob. ``accuracy``."""
    out = []
    for g in gold:
        golds = np.tile(g, (k, 1))
        pred = np.where(rng.uniform(size=golds.shape) < accuracy, golds, rng.integers(0, 3, size=golds.shape))
        out.append(level_confusion(pred, golds))
    return out


def test_emp_f1_from_confusion_equals_scikit_learn():
    rng = np.random.default_rng(9)
    gold, pred = rng.integers(0, 3, size=(40, 3)), rng.integers(0, 3, size=(40, 3))
    pred[:, 2] = 0  # a mechanism where levels 1 and 2 are never predicted (zero_division)
    expected = np.mean([100 * f1_score(gold[:, m], pred[:, m], labels=[0, 1, 2], average="weighted",
                                       zero_division=0) for m in range(3)])
    assert emp_f1_from_confusion(level_confusion(pred, gold)) == pytest.approx(expected, abs=1e-9)
    halves = level_confusion(pred[:25], gold[:25]) + level_confusion(pred[25:], gold[25:])
    assert emp_f1_from_confusion(halves) == pytest.approx(expected, abs=1e-9)
    with pytest.raises(ValueError, match="levels must lie in 0..2"):
        level_confusion([[0, 3, 1]], [[0, 1, 1]])


def test_statistic_permutation_p_is_not_small_under_the_null():
    rng = np.random.default_rng(5)
    gold = rng.integers(0, 3, size=(120, 3))
    a, b = system(rng, gold, 0.5, k=2), system(rng, gold, 0.5, k=2)
    out = paired_bootstrap_statistic(emp_f1, a, b, n_boot=1000, seed=0)
    assert out["p_value"] > 0.05 and out["ci_low"] < 0 < out["ci_high"]
    assert out["delta"] == pytest.approx(emp_f1(a) - emp_f1(b))
    assert "permutation" in out["test"]


def test_statistic_detects_a_constructed_improvement_and_is_reproducible():
    rng = np.random.default_rng(6)
    gold = rng.integers(0, 3, size=(150, 3))
    a, b = system(rng, gold, 0.8), system(rng, gold, 0.3)
    out = paired_bootstrap_statistic(emp_f1, a, b, n_boot=1000, seed=0)
    assert out["delta"] > 0 and out["ci_low"] > 0 and out["p_value"] < 0.01
    assert out == paired_bootstrap_statistic(emp_f1, a, b, n_boot=1000, seed=0)
    # arrays (contexts on the first axis) take the fast path and give the same answer
    assert out == paired_bootstrap_statistic(emp_f1, np.stack(a), np.stack(b), n_boot=1000, seed=0)


def test_statistic_of_identical_systems_is_exactly_null():
    rng = np.random.default_rng(7)
    a = system(rng, rng.integers(0, 3, size=(60, 3)), 0.5)
    out = paired_bootstrap_statistic(emp_f1, a, list(a), n_boot=500, seed=0)
    assert out["delta"] == 0.0 and out["ci_low"] == 0.0 and out["ci_high"] == 0.0 and out["p_value"] == 1.0


def test_statistic_p_is_roughly_uniform_over_null_draws():
    """Over 30 null datasets the permutation p falls below 0.05 about 1.5 times and below 0.5 about 15 times."""
    rng = np.random.default_rng(8)
    ps = []
    for _ in range(30):
        gold = rng.integers(0, 3, size=(60, 3))
        ps.append(paired_bootstrap_statistic(emp_f1, system(rng, gold, 0.5), system(rng, gold, 0.5),
                                             n_boot=200, seed=0)["p_value"])
    ps = np.array(ps)
    assert (ps < 0.05).sum() <= 5 and 7 <= (ps < 0.5).sum() <= 23

"""emprl.study.reward_shape: how R_emp grades replies by the number of mechanisms at the gold level."""

import math

import numpy as np
import pytest
import torch

from emprl.common.errors import UserError
from emprl.common.permutations import derangement
from emprl.study.reward_shape import reward_shape


def test_derangement_moves_every_index():
    for n in (2, 3, 10, 301):
        perm = derangement(n, seed=n)
        assert sorted(perm.tolist()) == list(range(n)) and not np.any(perm == np.arange(n))


def test_partial_credit_grows_with_the_temperature():
    # margin 8 nats between the predicted level and each other level; pair i gets i mechanisms right
    gold = torch.zeros(4, 3, dtype=torch.long)
    logits = torch.zeros(4, 3, 3)
    for i in range(4):
        for m in range(3):
            logits[i, m, 0 if m < i else 1] = 8.0
    table, counts = reward_shape(logits, gold, [1, 4])
    assert counts == [1, 1, 1, 1]
    p_hit = lambda t: 1 / (1 + 2 * math.exp(-8 / t))  # noqa: E731
    p_miss = lambda t: 1 / (math.exp(8 / t) + 2)  # noqa: E731
    for row, t in zip(table, (1, 4)):
        assert row["p_gold_matched"] == pytest.approx(p_hit(t), rel=1e-5)
        assert row["p_gold_mismatched"] == pytest.approx(p_miss(t), rel=1e-5)
        assert row["r_emp_by_matches"] == pytest.approx([p_hit(t) ** k * p_miss(t) ** (3 - k) for k in range(4)],
                                                        rel=1e-4)
    sharp, soft = (row["r_emp_by_matches"] for row in table)
    assert sharp[2] / sharp[3] < 0.01 < 0.05 < soft[2] / soft[3]  # 2 of 3 earns almost nothing at T 1, some at T 4
    table, counts = reward_shape(logits[3:], gold[3:], [1])
    assert counts == [0, 0, 0, 1] and table[0]["r_emp_by_matches"][:3] == [None, None, None]
    assert table[0]["p_gold_mismatched"] is None
    with pytest.raises(UserError, match="temperature"):
        reward_shape(logits, gold, [0])

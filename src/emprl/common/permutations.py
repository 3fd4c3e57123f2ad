"""Seeded derangements: pairings of each row with another row, for placebos and shuffled-context controls."""

from __future__ import annotations

import numpy as np


def derangement(n: int, seed) -> np.ndarray:
    """``source`` with ``source[i] != i`` for every i (n >= 2): row ``order[k]`` takes row ``order[k + 1]``
    of a seeded random order, one cycle through all rows. ``seed``: anything numpy's default_rng accepts."""
    order = np.random.default_rng(seed).permutation(n)
    source = np.empty(n, dtype=np.int64)
    source[order] = np.roll(order, -1)
    return source

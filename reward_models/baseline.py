"""Per-context reward baselines applied before TRL sees the scores (an opt-in beyond the paper).

R_emp depends mostly on the context: a context whose reference shows no empathy on any mechanism
rewards almost any plain reply, one with strong levels rewards almost nothing. PPO's value head has to
learn that level per context before the policy gradient carries information about the response; with
a few thousand samples it cannot. Sampling K responses per context and subtracting the mean reward
of the other K - 1 (the leave-one-out baseline of RLOO, Ahmadian et al. 2024) removes the context's
level exactly and leaves only how this response compares with its siblings. See docs/rl-effect.md.
"""

from __future__ import annotations

import torch

BASELINES = ("none", "leave_one_out")


def leave_one_out(rewards: torch.Tensor, k: int) -> torch.Tensor:
    """``rewards`` holds groups of ``k`` consecutive samples of one context each; returns
    r_i - mean_{j != i} r_j within each group (so every group's adjusted rewards sum to zero)."""
    rewards = torch.as_tensor(rewards)
    if k < 2:
        raise ValueError(f"leave_one_out needs at least 2 samples per context, got {k}")
    if rewards.dim() != 1 or rewards.numel() % k:
        raise ValueError(f"expected a flat tensor whose length is a multiple of {k}, got shape {tuple(rewards.shape)}")
    groups = rewards.reshape(-1, k)
    others = (groups.sum(dim=1, keepdim=True) - groups) / (k - 1)
    return (groups - others).reshape(-1)


def apply_baseline(rewards: torch.Tensor, how: str, k: int) -> torch.Tensor:
    if how == "none":
        return rewards
    if how == "leave_one_out":
        return leave_one_out(rewards, k)
    raise ValueError(f"unknown reward baseline {how!r} (expected one of {', '.join(BASELINES)})")

"""The PPO stage's ``training_curves.png``: the training reward against step (the paper's Fig. 7) with a
rolling mean, held-out R_emp, and what keeps the policy honest while it learns: the KL to the reference
and the reply length per step."""

from __future__ import annotations

import os

import numpy as np

ROLLING_STEPS = 10  # at 32 samples a batch mean is mostly noise; ten steps average 320 samples


def rolling_mean(values: list[float], window: int = ROLLING_STEPS) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start)."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return x
    sums = np.cumsum(np.insert(x, 0, 0.0))
    idx = np.arange(1, len(x) + 1)
    start = np.maximum(0, idx - window)
    return (sums[idx] - sums[start]) / (idx - start)


def plot_training_curves(log_rows: list[dict], eval_rows: list[dict], path: str) -> None:
    """Three panels: training reward (batch means and their rolling mean) with held-out R_emp as markers
    and the paired CI band; KL to the reference; mean reply length in words."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in log_rows if not r.get("skipped")]
    steps = [r["step"] for r in rows]
    reward = [r.get("r_emp", r["reward"]) for r in rows]
    fig, (ax_r, ax_k, ax_w) = plt.subplots(1, 3, figsize=(14, 3.8))
    ax_r.plot(steps, reward, color="tab:blue", alpha=0.3, lw=0.8, label="train R_emp (batch mean)")
    ax_r.plot(steps, rolling_mean(reward), color="tab:blue", lw=2, label=f"rolling mean, {ROLLING_STEPS} steps")
    if eval_rows:
        eval_steps = [r["step"] for r in eval_rows]
        ax_r.plot(eval_steps, [r["r_emp"] for r in eval_rows], "o--", color="tab:orange", label="held-out R_emp")
        base = next((r["r_emp"] for r in eval_rows if r["step"] == 0), None)
        paired = [r for r in eval_rows if "delta_r_emp_ci" in r]
        if base is not None and paired:  # SFT's level + the paired 95% CI of the change
            lo = [base] + [base + r["delta_r_emp_ci"][0] for r in paired]
            hi = [base] + [base + r["delta_r_emp_ci"][1] for r in paired]
            ax_r.fill_between([0] + [r["step"] for r in paired], lo, hi, alpha=0.25, color="tab:orange",
                              label="SFT + paired 95% CI of Delta")
    else:
        ax_r.text(0.02, 0.95, "no held-out evaluation in this run", transform=ax_r.transAxes, va="top", fontsize=8)
    ax_r.set(xlabel="PPO step", ylabel="R_emp", title="Reward")
    ax_r.legend(fontsize=7)
    kl = [r.get("kl", float("nan")) for r in rows]
    ax_k.plot(steps, kl, color="tab:red", alpha=0.3, lw=0.8)
    ax_k.plot(steps, rolling_mean(kl), color="tab:red", lw=2)
    ax_k.set(xlabel="PPO step", ylabel="nats", title="KL to the reference (batch)")
    words = [r.get("response_words", float("nan")) for r in rows]
    ax_w.plot(steps, words, color="tab:green", alpha=0.3, lw=0.8)
    ax_w.plot(steps, rolling_mean(words), color="tab:green", lw=2)
    ax_w.set(xlabel="PPO step", ylabel="words", title="Reply length (batch mean)")
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-" + os.path.basename(path))
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)

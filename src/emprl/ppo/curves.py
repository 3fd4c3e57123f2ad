"""The PPO stage's ``training_curves.png``: reward and total loss against step (the paper's Fig. 7)."""

from __future__ import annotations

import os


def plot_training_curves(log_rows: list[dict], eval_rows: list[dict], path: str) -> None:
    """Reward and total loss against step (the paper's Fig. 7), with held-out R_emp as markers."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in log_rows if not r.get("skipped")]
    steps = [r["step"] for r in rows]
    fig, (ax_r, ax_l) = plt.subplots(1, 2, figsize=(10, 3.8))
    ax_r.plot(steps, [r.get("r_emp", r["reward"]) for r in rows], label="train R_emp (batch mean)")
    if eval_rows:
        eval_steps = [r["step"] for r in eval_rows]
        ax_r.plot(eval_steps, [r["r_emp"] for r in eval_rows], "o--", label="held-out R_emp")
        base = next((r["r_emp"] for r in eval_rows if r["step"] == 0), None)
        paired = [r for r in eval_rows if "delta_r_emp_ci" in r]
        if base is not None and paired:  # SFT's level + the paired 95% CI of the change
            lo = [base] + [base + r["delta_r_emp_ci"][0] for r in paired]
            hi = [base] + [base + r["delta_r_emp_ci"][1] for r in paired]
            ax_r.fill_between([0] + [r["step"] for r in paired], lo, hi, alpha=0.25, color="tab:orange",
                              label="SFT + paired 95% CI of Delta")
    ax_r.set(xlabel="PPO step", ylabel="reward", title="Reward")
    ax_r.legend()
    ax_l.plot(steps, [r.get("total_loss", float("nan")) for r in rows], color="tab:red")
    ax_l.set(xlabel="PPO step", ylabel="loss", title="Total PPO loss")
    fig.tight_layout()
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), ".tmp-" + os.path.basename(path))
    fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    os.replace(tmp, path)

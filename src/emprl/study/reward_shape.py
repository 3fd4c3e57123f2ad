"""How graded is R_emp? For each reward temperature T, the identifiers' probability of the gold level and the
mean R_emp by the number of mechanisms a reply gets right, on one split's contexts each paired with another
context's reference (a fixed permutation), so that some mechanisms match the gold and some do not.

    python -m emprl.study.reward_shape [--identifiers outputs/demo/identifiers]
        [--data disk:outputs/demo/labelled] [--split validation] [-n 300] [--temperatures 1 2 4 8]

With sharp identifiers R_emp at T = 1 is near 1 when all three levels match and near 0 otherwise; a larger T
(the reward key ``temperature``) gives partial credit per matched mechanism without changing the levels
(docs/rl-effect.md, "A denser reward"). No policy is loaded: the replies are the data's own references.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

from emprl.common.errors import UserError, run_cli
from emprl.common.permutations import derangement


def reward_shape(logits: torch.Tensor, gold: torch.Tensor, temperatures) -> tuple[list[dict], list[int]]:
    """Per temperature: median p(gold) of matched and of mismatched mechanisms, and mean R_emp for 0..M
    matched mechanisms (None where no pair has that count). ``logits`` [B, M, 3], ``gold`` [B, M]."""
    from reward_models.reward import checked_temperature, empathy_reward_from_logits

    match = logits.argmax(-1) == gold
    n_match = match.sum(1)
    rows = []
    for t in temperatures:
        t = checked_temperature(t)
        p_gold = (logits / t).softmax(-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1)
        reward = empathy_reward_from_logits(logits / t, gold)
        by_count = [float(reward[n_match == k].mean()) if bool((n_match == k).any()) else None
                    for k in range(gold.shape[1] + 1)]
        rows.append({"temperature": t,
                     "p_gold_matched": float(p_gold[match].median()) if bool(match.any()) else None,
                     "p_gold_mismatched": float(p_gold[~match].median()) if bool((~match).any()) else None,
                     "r_emp_by_matches": by_count})
    return rows, np.bincount(n_match.numpy(), minlength=gold.shape[1] + 1).tolist()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m emprl.study.reward_shape", description=__doc__.split("\n\n")[0])
    parser.add_argument("--identifiers", default="outputs/demo/identifiers")
    parser.add_argument("--data", default="disk:outputs/demo/labelled", help="labelled data (gold level columns)")
    parser.add_argument("--split", default="validation")
    parser.add_argument("-n", type=int, default=300, help="first N rows of the split")
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 2.0, 4.0, 8.0])
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)

    from emprl.data import load_dialogues
    from reward_models.registry import EmpathyRewardComponent

    dataset = load_dialogues(args.data)
    if args.split not in dataset:
        raise UserError(f"--split: {args.data} has no split {args.split!r} (has {', '.join(dataset)})")
    component = EmpathyRewardComponent(identifiers_dir=args.identifiers)
    mechanisms = component.reward.mechanisms
    rows = dataset[args.split].select(range(min(args.n, len(dataset[args.split]))))
    missing = [m for m in mechanisms if m not in rows.column_names]
    if missing or len(rows) < 2:
        raise UserError(f"{args.data} {args.split}: needs at least 2 rows and the gold level columns "
                        f"{', '.join(mechanisms)} (run the label stage)")
    contexts = [component.serialize(c) for c in rows["context"]]
    replies = [rows["response"][int(i)] for i in derangement(len(rows), seed=0)]
    gold = torch.tensor([rows[m] for m in mechanisms], dtype=torch.long).T  # [B, M], one column read each
    with torch.no_grad():
        logits = component.reward.logits(contexts, replies).float().cpu()
    table, counts = reward_shape(logits, gold, args.temperatures)
    print(f"{len(rows)} {args.split} contexts, each with another context's reference; pairs with 0..{len(mechanisms)} "
          f"mechanisms at the gold level: {counts}")
    print("| T | p(gold), matched median | p(gold), mismatched median | R_emp by mechanisms matched (0 / 1 / ...) |")
    print("| --- | --- | --- | --- |")
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    for row in table:
        print(f"| {row['temperature']:g} | {fmt(row['p_gold_matched'])} | {fmt(row['p_gold_mismatched'])} | "
              + " / ".join(fmt(v) for v in row["r_emp_by_matches"]) + " |")
    return {"rows": len(rows), "match_counts": counts, "table": table}


if __name__ == "__main__":
    run_cli(main)

"""How well a policy's replies carry the levels their contexts call for: the level agreement of a judge's
reading of each reply with the composer's true level of the reference, per mechanism and for all three at
once, beside chance, from an evaluation folder (``samples.jsonl`` and ``contexts.jsonl``; no model loaded).

    python -m emprl.study.agreement EVAL_DIR [--judge oracle] [--system NAME ...]

Chance is what the same replies would score if they answered another context: each replicate pairs every
sample with the true levels of a randomly permuted context, which keeps the policy's level mix and the
truth's, and removes only the link between them. The interval is a bootstrap over contexts. A policy that
ignores its context sits at chance; the best possible policy under the composer's rules answers every cue
(the data card gives its agreement). docs/rl-effect.md, "The testbed".
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from emprl.common.errors import UserError, run_cli
from emprl.data import MECHANISMS
from emprl.study.report import REWARD_JUDGE, Samples, load_samples

SHUFFLES = 200
RESAMPLES = 2000


def agreement(samples: Samples, system: str, judge: str, seed: int = 0) -> dict:
    """Per mechanism and 'all': the system's agreement with a 95% bootstrap CI over contexts, and chance."""
    if samples.true is None:
        raise UserError("the evaluation has no true levels (contexts.jsonl without `true`): only composed data has them")
    judges = samples.systems[system].judges
    if judge not in judges and judge != REWARD_JUDGE:
        raise UserError(f"system {system!r} has no levels from judge {judge!r} (has {', '.join(judges) or 'none'})")
    rng = np.random.default_rng(seed)
    per_context = samples.agreement(system, judge)
    means = per_context.mean(axis=0)
    idx = rng.integers(0, len(per_context), size=(RESAMPLES, len(per_context)))
    boot = per_context[idx].mean(axis=1)  # [R, 4]
    chance = np.mean([samples.agreement(system, judge, samples.true[rng.permutation(len(samples.true))]).mean(axis=0)
                      for _ in range(SHUFFLES)], axis=0)
    out = {}
    for k, name in enumerate((*MECHANISMS, "all")):
        low, high = np.quantile(boot[:, k], [0.025, 0.975])
        out[name] = {"agreement": float(means[k]), "ci_low": float(low), "ci_high": float(high),
                     "chance": float(chance[k])}
    out["contexts"] = len(per_context)
    return out


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m emprl.study.agreement", description=__doc__.split("\n\n")[0])
    parser.add_argument("eval_dir")
    parser.add_argument("--judge", default="oracle")
    parser.add_argument("--system", action="append", help="a system of the evaluation (default: all)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    samples = load_samples(args.eval_dir)
    if samples is None:
        raise UserError(f"{args.eval_dir}: no samples.jsonl and contexts.jsonl; expected an evaluation's output_dir")
    unknown = sorted(set(args.system or []) - set(samples.systems))
    if unknown:
        raise UserError(f"--system: {', '.join(unknown)} not in {args.eval_dir} (has {', '.join(samples.systems)})")
    report = {}
    for system in args.system or sorted(samples.systems):
        report[system] = result = agreement(samples, system, args.judge)
        print(f"{system} ({result['contexts']} contexts), judge {args.judge}: " + "; ".join(
            f"{name} {r['agreement']:.3f} [{r['ci_low']:.3f}, {r['ci_high']:.3f}] (chance {r['chance']:.3f})"
            for name, r in result.items() if name != "contexts"))
    return report


if __name__ == "__main__":
    run_cli(main)

"""Does a policy read its context? The mean per-token loss of the reference replies under teacher forcing,
once with each reply's own context and once with another context's (a fixed permutation), on one split.

    python -m emprl.study.context_use POLICY_DIR [--data disk:outputs/demo/labelled] [--split validation] [-n 300]

A policy whose decoder ignores the encoder (or the prompt) scores both alike: the gap, in nats per token,
is how much of its prediction comes from the context. On the demo corpus the T5 SFT policy had a gap of
0.065 after 852 steps, when its replies were at chance on the levels, and 0.242 after 2,556
(docs/rl-effect.md, "Why the SFT policy ignored the speaker"). The prompt settings are the policy's own
(``emprl_prompt.json``).
"""

from __future__ import annotations

import argparse
import sys

import torch

from emprl.common.errors import UserError, run_cli
from emprl.common.permutations import derangement

MAX_TARGET_TOKENS = 40


def reference_loss(model, rows, builder, batch_size: int = 50) -> float:
    """Token-weighted mean cross-entropy of the references (``rows``: context and response columns)."""
    from transformers import DataCollatorForSeq2Seq

    from emprl.sft import tokenise

    data = tokenise(rows, builder, MAX_TARGET_TOKENS, "context use")
    collate = DataCollatorForSeq2Seq(builder.tokenizer, model=model if builder.is_encoder_decoder else None,
                                     label_pad_token_id=-100)
    total = tokens = 0.0
    for start in range(0, len(data), batch_size):
        batch = collate([data[i] for i in range(start, min(len(data), start + batch_size))])
        with torch.no_grad():
            loss = model(**batch).loss
        # causal models shift labels by one inside the loss: count the tokens the loss averaged over
        n = int((batch["labels"][:, 0 if builder.is_encoder_decoder else 1:] != -100).sum())
        total, tokens = total + float(loss) * n, tokens + n
    return total / tokens


def context_use(policy: str, data: str, split: str, n: int, seed: int = 0) -> dict:
    from emprl.common.policy import load_policy, prompt_builder_for
    from emprl.data import load_dialogues

    dataset = load_dialogues(data)
    if split not in dataset:
        raise UserError(f"--split: {data} has no split {split!r} (has {', '.join(dataset)})")
    rows = dataset[split].select(range(min(n, len(dataset[split]))))
    if len(rows) < 2:
        raise UserError(f"{data} {split}: at least 2 rows are needed to pair replies with other contexts")
    model, tokenizer, enc_dec = load_policy(policy)
    model.eval()
    builder = prompt_builder_for(policy, tokenizer, enc_dec)
    perm = derangement(len(rows), seed)  # every reply meets another context, each context once
    shuffled = rows.remove_columns("context").add_column("context", [rows["context"][int(i)] for i in perm])
    own, other = reference_loss(model, rows, builder), reference_loss(model, shuffled, builder)
    return {"policy": policy, "split": split, "rows": len(rows), "own_context": own, "other_context": other,
            "gap": other - own}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m emprl.study.context_use", description=__doc__.split("\n\n")[0])
    parser.add_argument("policy")
    parser.add_argument("--data", default="disk:outputs/demo/labelled")
    parser.add_argument("--split", default="validation")
    parser.add_argument("-n", type=int, default=300, help="first N rows of the split")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    out = context_use(args.policy, args.data, args.split, args.n)
    print(f"{args.policy}: reference loss {out['own_context']:.4f} with its own context, {out['other_context']:.4f} "
          f"with another's ({out['rows']} {args.split} rows): the context is worth {out['gap']:.4f} nats/token")
    return out


if __name__ == "__main__":
    run_cli(main)

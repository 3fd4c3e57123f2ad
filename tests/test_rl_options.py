"""Issue 11 options of the PPO stage: the leave-one-out baseline, K samples per context, and the
choice of bf16 autocast with its fallback to fp32."""

from __future__ import annotations

import pytest
import torch

from emprl.common.precision import choose_mixed_precision, cpu_flags, cpu_supports_bf16
from reward_models.baseline import apply_baseline, leave_one_out


def test_leave_one_out_subtracts_the_mean_of_the_other_samples_of_the_same_context():
    rewards = torch.tensor([0.2, 0.4, 0.6, 0.9, 0.9, 0.9])  # two contexts, K = 3
    adjusted = leave_one_out(rewards, 3)
    # context 1: 0.2 - (0.4+0.6)/2 = -0.3, 0.4 - 0.4 = 0.0, 0.6 - 0.3 = 0.3; context 2: all equal -> 0
    assert torch.allclose(adjusted, torch.tensor([-0.3, 0.0, 0.3, 0.0, 0.0, 0.0]), atol=1e-6)
    assert torch.allclose(adjusted.reshape(2, 3).sum(dim=1), torch.zeros(2), atol=1e-6)


def test_leave_one_out_removes_any_per_context_offset():
    torch.manual_seed(0)
    rewards = torch.rand(8)
    offsets = torch.tensor([5.0, -3.0]).repeat_interleave(4)
    assert torch.allclose(leave_one_out(rewards + offsets, 4), leave_one_out(rewards, 4), atol=1e-5)


@pytest.mark.parametrize("k, n", [(1, 4), (3, 4)])
def test_leave_one_out_rejects_bad_group_sizes(k, n):
    with pytest.raises(ValueError):
        leave_one_out(torch.zeros(n), k)


def test_no_baseline_leaves_rewards_alone_and_unknown_names_fail():
    r = torch.tensor([0.1, 0.2])
    assert apply_baseline(r, "none", 1) is r
    with pytest.raises(ValueError, match="unknown reward baseline"):
        apply_baseline(r, "mean", 2)


@pytest.mark.parametrize("flags, expected", [
    (frozenset({"avx512f", "avx512_bf16"}), "bf16"),
    (frozenset({"amx_bf16", "amx_tile"}), "bf16"),
    (frozenset({"avx2", "avx512f"}), "no"),   # AVX512 without BF16: emulated bf16 is slower, stay fp32
    (frozenset(), "no"),                      # no /proc/cpuinfo (macOS, Windows)
])
def test_auto_picks_bf16_only_on_cpus_that_compute_it(flags, expected, monkeypatch):
    monkeypatch.delenv("EMPRL_MIXED_PRECISION", raising=False)
    chosen, why = choose_mixed_precision("auto", "cpu", flags=flags)
    assert chosen == expected
    assert ("bf16" in why) if expected == "bf16" else why.startswith("fp32")


def test_explicit_choices_win_and_cuda_follows_the_gpu(monkeypatch):
    monkeypatch.delenv("EMPRL_MIXED_PRECISION", raising=False)
    assert choose_mixed_precision("no", "cpu", flags=frozenset({"avx512_bf16"}))[0] == "no"
    assert choose_mixed_precision("bf16", "cpu", flags=frozenset())[0] == "bf16"
    assert choose_mixed_precision("auto", "cuda", cuda_bf16=True)[0] == "bf16"
    assert choose_mixed_precision("auto", "cuda", cuda_bf16=False)[0] == "no"
    with pytest.raises(ValueError, match="mixed_precision"):
        choose_mixed_precision("fp16", "cpu")


def test_cpu_flags_are_read_from_a_cpuinfo_file(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nflags\t\t: fpu sse avx512_bf16 amx_tile\n\n")
    flags = cpu_flags.__wrapped__(str(info))
    assert cpu_supports_bf16(flags) and "fpu" in flags
    assert cpu_flags.__wrapped__(str(tmp_path / "missing")) == frozenset()


def test_the_environment_variable_overrides_auto_only(monkeypatch):
    monkeypatch.setenv("EMPRL_MIXED_PRECISION", "no")
    assert choose_mixed_precision("auto", "cpu", flags=frozenset({"avx512_bf16"}))[0] == "no"
    assert choose_mixed_precision("bf16", "cpu", flags=frozenset())[0] == "bf16"
    monkeypatch.setenv("EMPRL_MIXED_PRECISION", "fp8")
    with pytest.raises(ValueError, match="EMPRL_MIXED_PRECISION"):
        choose_mixed_precision("auto", "cpu")


def test_reward_pairs_keep_their_order_across_length_sorted_chunks():
    """EmpathyReward sorts long inputs by length before chunking; the logits must come back in the
    caller's order, equal to scoring each pair alone."""
    import os
    import tempfile

    import tiny

    from reward_models import EmpathyIdentifier, EmpathyReward

    with tempfile.TemporaryDirectory() as root:
        tiny.make_tiny_bert(os.path.join(root, "bert"))
        torch.manual_seed(0)
        ident = {m: EmpathyIdentifier.from_encoders(os.path.join(root, "bert"))
                 for m in ("emotional_reactions", "interpretations", "explorations")}
        reward = EmpathyReward(ident, batch_size=2)
        contexts = ["i lost my job today and i feel bad", "hi", "my dog is sick", "i won the exam !"]
        responses = ["oh no", "that sounds really hard for you", "how nice", "i understand"]
        together = reward.logits(contexts, responses)
        alone = torch.cat([reward.logits([c], [r]) for c, r in zip(contexts, responses)])
        assert torch.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("env, expected", [("no", False), ("bf16", True)])
def test_sft_mixed_precision_auto_sets_bf16_from_the_choice(env, expected, monkeypatch, tmp_path):
    from emprl.sft import SFTTrainingArguments

    monkeypatch.setenv("EMPRL_MIXED_PRECISION", env)
    args = SFTTrainingArguments(output_dir=str(tmp_path), mixed_precision="auto", report_to=[])
    assert args.bf16 is expected
    if expected and not torch.cuda.is_available():
        assert args.use_cpu  # transformers refuses bf16 without a GPU otherwise
    with pytest.raises(ValueError, match="mixed_precision"):
        SFTTrainingArguments(output_dir=str(tmp_path), mixed_precision="fp8", report_to=[])


def test_placebo_gold_levels_are_a_derangement_that_keeps_the_level_mix():
    from datasets import Dataset

    from emprl.data import MECHANISMS
    from emprl.ppo.setup import shuffle_gold_levels

    n = 50
    rows = {"context": [[f"turn {i}"] for i in range(n)], "response": [f"reply {i}" for i in range(n)]}
    # each row's levels encode its index, so we can see where they went
    rows.update({m: [(i + j) % 3 for i in range(n)] for j, m in enumerate(MECHANISMS)})
    rows["row"] = list(range(n))
    split = Dataset.from_dict(rows)
    out = shuffle_gold_levels(split, seed=3)
    triples_in = sorted(zip(*(split[m] for m in MECHANISMS)))
    triples_out = sorted(zip(*(out[m] for m in MECHANISMS)))
    assert triples_out == triples_in                  # the same level mix, the three columns moved together
    assert out["context"] == split["context"] and out["row"] == split["row"]  # contexts stay put
    # recover the source row of each row's levels: no context keeps its own
    moved = [t != (i % 3, (i + 1) % 3, (i + 2) % 3) for i, t in enumerate(zip(*(out[m] for m in MECHANISMS)))]
    assert sum(moved) > 0.5 * n                      # levels with a period of 3 can coincide by chance, not mostly
    assert shuffle_gold_levels(split, seed=3)[MECHANISMS[0]] == out[MECHANISMS[0]]   # seeded
    assert shuffle_gold_levels(split, seed=4)[MECHANISMS[0]] != out[MECHANISMS[0]]


def test_placebo_permutation_is_a_single_cycle_without_fixed_points():
    from datasets import Dataset

    from emprl.data import MECHANISMS
    from emprl.ppo.setup import shuffle_gold_levels

    n = 40
    # distinct levels per row through a fourth column we can track: encode the row in the levels' columns
    split = Dataset.from_dict({"context": [["c"]] * n, "response": ["r"] * n,
                               **{m: list(range(n)) for m in MECHANISMS}})
    out = shuffle_gold_levels(split, seed=11)
    source = out[MECHANISMS[0]]
    assert sorted(source) == list(range(n)) and all(source[i] != i for i in range(n))
    seen, i = set(), 0
    while i not in seen:
        seen.add(i)
        i = source[i]
    assert len(seen) == n


def test_reward_gold_key_is_checked():
    import pytest

    from emprl.ppo.config import PPOScriptConfig

    with pytest.raises(ValueError, match="reward_gold"):
        PPOScriptConfig(sft_model_path="x", labelled_data="y", reward_gold="mixed")

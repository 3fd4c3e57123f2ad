"""EmpathyReward (R_emp = prod_i p_i(gold_i)) and the reward registry."""

from __future__ import annotations

import sys

import pytest
import tiny
import torch
from transformers import BertConfig

from emprl.common.errors import UserError
from emprl.common.mechanisms import MECHANISMS
from reward_models import (
    CompositeReward,
    EmpathyIdentifier,
    EmpathyIdentifierConfig,
    EmpathyReward,
    EmpathyRewardComponent,
    LengthReward,
    build_reward,
    register_reward,
)
from reward_models.registry import REWARD_REGISTRY

CONTEXTS = ["my dog lost today", "i am happy great news", "my dog lost today", "the job ? it must be hard"]
RESPONSES = ["i am so sorry to hear that", "great", "", "how are you doing ? " * 30]
GOLD = torch.tensor([[2, 0, 1], [0, 0, 0], [1, 2, 0], [0, 1, 2]])


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    return tiny.make_bert_tokenizer(tmp_path_factory.mktemp("tok"))


def make_identifiers(tokenizer, seed=0):
    cfg = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=256).to_dict()
    out = {}
    for i, mech in enumerate(MECHANISMS):
        torch.manual_seed(seed + i)
        head = "mlp" if i == 1 else "linear"
        out[mech] = EmpathyIdentifier(EmpathyIdentifierConfig(encoder_config=cfg, head=head), tokenizer=tokenizer)
    return out


@pytest.fixture(scope="module")
def reward(tokenizer):
    return EmpathyReward(make_identifiers(tokenizer), max_context_len=16, max_response_len=12)


def manual_probs(reward, contexts, responses):
    """Each pair scored alone, straight through the identifiers (no batching, no context reuse)."""
    rows = []
    for c, r in zip(contexts, responses):
        row = []
        for mech in MECHANISMS:
            ident, tok = reward.identifiers[mech], reward.tokenizers[mech]
            ce = tok([c], truncation=True, max_length=reward.max_context_len, return_tensors="pt")
            re = tok([r], truncation=True, max_length=reward.max_response_len, return_tensors="pt")
            with torch.no_grad():
                logits = ident(context_input_ids=ce["input_ids"], context_attention_mask=ce["attention_mask"],
                               response_input_ids=re["input_ids"], response_attention_mask=re["attention_mask"])
            row.append(logits.softmax(-1)[0])
        rows.append(torch.stack(row))
    return torch.stack(rows)


def test_reward_is_product_of_gold_class_probabilities(reward):
    value = reward(CONTEXTS, RESPONSES, GOLD)
    probs = manual_probs(reward, CONTEXTS, RESPONSES)
    expected = probs.gather(-1, GOLD.unsqueeze(-1)).squeeze(-1).prod(dim=1)
    assert value.shape == (4,) and value.dtype == torch.float32
    assert torch.allclose(value, expected, rtol=1e-4, atol=1e-7)
    assert bool(((value > 0) & (value <= 1)).all())
    assert torch.allclose(reward.probs(CONTEXTS, RESPONSES), probs, atol=1e-5)
    # The three gold classes differ per row, so a wrong gather would break this equality.
    assert not torch.allclose(value, probs[:, :, 0].prod(dim=1))


def test_gold_as_dict_equals_tensor(reward):
    as_dict = {m: GOLD[:, i].tolist() for i, m in enumerate(MECHANISMS)}
    assert torch.equal(reward(CONTEXTS, RESPONSES, as_dict), reward(CONTEXTS, RESPONSES, GOLD))
    with pytest.raises(ValueError, match="rows"):
        reward(CONTEXTS, RESPONSES, GOLD[:2])
    with pytest.raises(ValueError, match="0, 1 or 2"):
        reward(CONTEXTS, RESPONSES, GOLD + 1)


def test_levels_are_argmax_and_best_gold_gives_highest_reward(reward):
    levels = reward.levels(CONTEXTS, RESPONSES)
    assert levels.shape == (4, 3) and levels.dtype == torch.long
    assert torch.equal(levels, reward.probs(CONTEXTS, RESPONSES).argmax(-1))
    best = reward(CONTEXTS, RESPONSES, levels)
    for other in (GOLD, (levels + 1) % 3):
        assert bool((best >= reward(CONTEXTS, RESPONSES, other) - 1e-7).all())


def test_empty_responses_and_empty_batch(reward):
    value = reward(["", "my dog lost today"], ["", ""], torch.zeros(2, 3, dtype=torch.long))
    assert value.shape == (2,) and bool(torch.isfinite(value).all()) and bool((value > 0).all())
    assert reward([], [], torch.zeros(0, 3, dtype=torch.long)).shape == (0,)


def test_context_encoded_once_per_identifier_per_batch(reward):
    seen = {m: [] for m in MECHANISMS}
    handles = [
        reward.identifiers[m].context_encoder.register_forward_hook(
            lambda mod, args, kwargs, out, m=m: seen[m].append(kwargs["input_ids"].shape[0]), with_kwargs=True)
        for m in MECHANISMS
    ]
    try:
        reward(CONTEXTS, RESPONSES, GOLD)
    finally:
        for h in handles:
            h.remove()
    # One encoder call per identifier, on the 3 distinct contexts of the 4 pairs.
    assert seen == {m: [3] for m in MECHANISMS}


def test_chunking_does_not_change_scores(tokenizer, reward):
    small = EmpathyReward(reward.identifiers, max_context_len=16, max_response_len=12, batch_size=3)
    assert torch.allclose(small(CONTEXTS, RESPONSES, GOLD), reward(CONTEXTS, RESPONSES, GOLD), atol=1e-6)


def test_from_pretrained_folder(tmp_path, tokenizer, reward):
    for mech, ident in reward.identifiers.items():
        ident.save_pretrained(tmp_path / mech)
    loaded = EmpathyReward.from_pretrained(tmp_path, max_context_len=16, max_response_len=12)
    assert loaded.mechanisms == MECHANISMS
    assert torch.allclose(loaded(CONTEXTS, RESPONSES, GOLD), reward(CONTEXTS, RESPONSES, GOLD), atol=1e-6)
    with pytest.raises(UserError, match="missing identifier folder"):
        EmpathyReward.from_pretrained(tmp_path, mechanisms=("emotional_reactions", "nope"))


# ----------------------------------------------------------------------------- registry
def test_length_reward_shape_of_bonus():
    values = LengthReward(target=4)(None, ["", "a b", "a b c d", "a b c d e f", "x " * 20], None, None)
    assert torch.allclose(values, torch.tensor([0.0, 0.5, 1.0, 0.5, 0.0]))


def test_composite_weighting_and_parts(reward):
    batch = {m: GOLD[:, i].tolist() for i, m in enumerate(MECHANISMS)}
    composite = build_reward({"empathy": {"weight": 2.0}, "length": {"weight": 0.5, "target": 5}},
                             reward=reward)
    assert isinstance(composite, CompositeReward)
    assert composite.weights == {"empathy": 2.0, "length": 0.5}
    total, parts = composite(CONTEXTS, RESPONSES, ["ref"] * 4, batch)
    emp = reward(CONTEXTS, RESPONSES, GOLD)
    length = LengthReward(5)(CONTEXTS, RESPONSES, None, None)
    assert torch.allclose(parts["empathy"], emp) and torch.allclose(parts["length"], length)
    assert torch.allclose(total, 2.0 * emp + 0.5 * length)


def test_empathy_component_needs_gold_columns(reward):
    comp = EmpathyRewardComponent(reward=reward)
    with pytest.raises(UserError, match="gold level columns"):
        comp(CONTEXTS, RESPONSES, None, {"emotional_reactions": [0, 0, 0, 0]})


def test_unknown_names_and_bad_options():
    with pytest.raises(UserError, match="registered: .*empathy.*length"):
        build_reward({"politeness": 1.0})
    with pytest.raises(UserError, match=r"unknown option\(s\) \['tgt'\]"):
        build_reward({"length": {"tgt": 3}})
    with pytest.raises(UserError, match="weight"):
        build_reward({"length": {"weight": "heavy"}})
    with pytest.raises(UserError, match="cannot import module"):
        build_reward({"no_such_pkg_xyz.mod:Reward": 1.0})
    with pytest.raises(UserError, match="identifiers_dir"):
        build_reward({"empathy": 1.0})


def test_user_class_by_import_path_and_decorator(tmp_path, monkeypatch):
    (tmp_path / "my_rewards_pkg.py").write_text(
        "import torch\n"
        "class Exclaim:\n"
        "    def __init__(self, bonus=1.0):\n"
        "        self.bonus = bonus\n"
        "    def __call__(self, contexts, responses, references, batch):\n"
        "        return torch.tensor([self.bonus * r.count('!') for r in responses])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        composite = build_reward({"my_rewards_pkg:Exclaim": {"weight": 3.0, "bonus": 0.5},
                                  "short": {"type": "length", "target": 2, "weight": 1.0}})
        total, parts = composite(["c", "c"], ["wow !", "! ! !"], None, None)
        assert torch.allclose(parts["my_rewards_pkg:Exclaim"], torch.tensor([0.5, 1.5]))
        assert torch.allclose(total, 3.0 * torch.tensor([0.5, 1.5]) + torch.tensor([1.0, 0.5]))
    finally:
        sys.modules.pop("my_rewards_pkg", None)

    @register_reward("constant_test_reward")
    class Constant:
        def __call__(self, contexts, responses, references, batch):
            return torch.ones(len(responses))

    try:
        total, _ = build_reward({"constant_test_reward": 0.25})(["c"], ["r"], None, None)
        assert torch.allclose(total, torch.tensor([0.25]))
    finally:
        REWARD_REGISTRY.pop("constant_test_reward")


def test_tokenize_pairs_keeps_latest_context_and_never_empty(tokenizer):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from reward_models import tokenize_pairs

    ctx = tokenize_pairs(tokenizer, ["i am sad " * 10 + "my dog lost today"], 6, "left")
    words = tokenizer.convert_ids_to_tokens(ctx["input_ids"][0].tolist())
    assert words == ["[CLS]", "my", "dog", "lost", "today", "[SEP]"]  # oldest words dropped
    assert tokenizer.truncation_side == "right"  # restored afterwards
    # A bare word-level tokenizer adds no special tokens: "" would be an empty row.
    bare = Tokenizer(models.WordLevel({"[PAD]": 0, "[UNK]": 1, "hi": 2}, unk_token="[UNK]"))
    bare.pre_tokenizer = pre_tokenizers.Whitespace()
    bare = PreTrainedTokenizerFast(tokenizer_object=bare, pad_token="[PAD]", unk_token="[UNK]")
    out = tokenize_pairs(bare, ["", ""], 5, "right")
    assert out["input_ids"].shape == (2, 1) and out["attention_mask"].tolist() == [[1], [1]]
    out = tokenize_pairs(bare, ["hi hi", ""], 5, "right")
    assert out["attention_mask"].tolist() == [[1, 1], [1, 0]]


def test_int8_reward_stays_close_to_fp32_and_checks_its_option(tokenizer, reward):
    import copy

    fp32 = reward.probs(CONTEXTS, RESPONSES)
    int8 = EmpathyReward(copy.deepcopy(reward.identifiers), max_context_len=16, max_response_len=12, quantize="int8")
    assert int8.quantize == "int8" and isinstance(
        int8.identifiers[MECHANISMS[0]].context_encoder.encoder.layer[0].attention.self.query,
        torch.ao.nn.quantized.dynamic.Linear)
    assert torch.allclose(int8.probs(CONTEXTS, RESPONSES), fp32, atol=0.05)  # dynamic int8: small rounding only
    assert torch.equal(reward.probs(CONTEXTS, RESPONSES), fp32)  # the fp32 identifiers were not touched
    with pytest.raises(UserError, match="expected null or int8"):
        EmpathyReward(reward.identifiers, quantize="int4")


def test_reward_temperature_gives_partial_credit_and_keeps_levels(reward):
    gold = torch.tensor([[0, 1, 2], [2, 1, 0]])
    sharp_r, sharp_levels = reward.reward_and_levels(CONTEXTS[:2], RESPONSES[:2], gold)
    soft = EmpathyReward(reward.identifiers, max_context_len=16, max_response_len=12, temperature=4.0)
    soft_r, soft_levels = soft.reward_and_levels(CONTEXTS[:2], RESPONSES[:2], gold)
    assert torch.equal(soft_levels, sharp_levels)  # the levels (argmax) do not depend on the temperature
    logits = reward.logits(CONTEXTS[:2], RESPONSES[:2])
    expected = (logits / 4.0).log_softmax(-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1).sum(1).exp()
    assert torch.allclose(soft_r, expected, atol=1e-5)
    assert not torch.allclose(soft_r, sharp_r)
    for bad in (0, -1.0, True, "2", float("inf")):
        with pytest.raises(UserError, match="temperature: expected a positive number"):
            EmpathyReward(reward.identifiers, temperature=bad)

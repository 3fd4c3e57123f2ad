"""PPO stage (issue 5) on tiny models: T5 (full fine-tuning) and Llama (LoRA), the real empathy reward
on tiny identifiers, the first-token fix, resume, the NaN guard and empty responses."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import pytest
import tiny
import torch
import yaml

MECHANISMS = ("emotional_reactions", "interpretations", "explorations")
CONTEXTS = [
    ["i lost my job today"],
    ["hi", "hello how are you", "my dog is sick and i am so worried"],
    ["i won the exam !"],
    ["i feel so lonely this week"],
    ["how was school ?", "it was a hard day", "my friend is coming home today"],
    ["i am scared of the new job"],
]
REPLIES = ["oh no i am so sorry", "that sounds hard", "wow that is great", "i understand how you feel",
           "how nice", "you can do it"]


def build_assets(root: str) -> SimpleNamespace:
    """Tiny T5 and Llama 'SFT' folders, three tiny identifiers and a labelled DatasetDict."""
    from datasets import Dataset, DatasetDict

    from reward_models.identifier import EmpathyIdentifier

    tiny.make_tiny_t5(os.path.join(root, "t5"))
    tiny.make_tiny_llama(os.path.join(root, "llama"))
    tiny.make_tiny_bert(os.path.join(root, "bert"))
    for i, mech in enumerate(MECHANISMS):
        torch.manual_seed(i)
        EmpathyIdentifier.from_encoders(os.path.join(root, "bert")).save_pretrained(
            os.path.join(root, "identifiers", mech))

    def split(n: int, offset: int) -> Dataset:
        rows = [(k + offset) % len(CONTEXTS) for k in range(n)]
        data = {"context": [CONTEXTS[j] for j in rows], "response": [REPLIES[j] for j in rows],
                "conv_id": [f"c{k + offset}" for k in range(n)], "emotion": ["sad"] * n, "situation": [""] * n}
        for m, mech in enumerate(MECHANISMS):
            data[mech] = [(k + m) % 3 for k in range(n)]
        return Dataset.from_dict(data)

    DatasetDict(train=split(16, 0), validation=split(8, 2), test=split(4, 1)).save_to_disk(
        os.path.join(root, "labelled"))
    return SimpleNamespace(root=root, t5=os.path.join(root, "t5"), llama=os.path.join(root, "llama"),
                           identifiers=os.path.join(root, "identifiers"), labelled=os.path.join(root, "labelled"))


def write_stage_recipe(folder, assets, model: str, name: str, sizes: dict, overrides: dict) -> str:
    """``folder/name``: a recipe on the tiny assets (the tiny Llama with a LoRA adapter), ``sizes`` then
    ``overrides`` on top; shared by the PPO and DPO tests."""
    recipe = {"sft_model_path": getattr(assets, model), "labelled_data": assets.labelled,
              "identifiers_dir": assets.identifiers, "output_dir": os.path.join(str(folder), "out"), **sizes}
    if model == "llama":
        recipe.update(use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj"])
    recipe.update(overrides)
    os.makedirs(str(folder), exist_ok=True)
    path = os.path.join(str(folder), name)
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(recipe, fh)
    return path


def write_recipe(folder, assets, model: str = "t5", **overrides) -> str:
    sizes = {"steps": 2, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 2, "learning_rate": 1e-3,
             "max_new_tokens": 6, "eval_steps": 2, "eval_samples": 4, "save_steps": 2, "seed": 0}
    return write_stage_recipe(folder, assets, model, "ppo.yaml", sizes, overrides)


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def trainable(run) -> dict[str, torch.Tensor]:
    from emprl.ppo.checkpoint import trainable_state

    return {k: v.clone() for k, v in trainable_state(run.trainer).items()}


def rollout_capturing_generate(run, rows):
    """run.rollout(rows), and the keyword arguments the policy's generate() was called with."""
    captured, model = {}, run.trainer.unwrapped_model

    def spy_generate(**kwargs):
        captured.update(kwargs)
        return type(model).generate(model, **kwargs)

    model.generate = spy_generate
    try:
        return run.rollout(rows), captured
    finally:
        del model.generate


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(str(tmp_path_factory.mktemp("ppo_assets")))


@pytest.fixture(scope="module")
def t5_run(assets, tmp_path_factory):
    """A PPORun on the tiny T5, built without running the loop (for the unit-level checks)."""
    from trl import PPOConfig

    from emprl.ppo.config import PPOScriptConfig
    from emprl.ppo.train import PPORun

    out = tmp_path_factory.mktemp("t5_run")
    cfg = PPOScriptConfig(sft_model_path=assets.t5, labelled_data=assets.labelled, identifiers_dir=assets.identifiers,
                          output_dir=str(out), max_new_tokens=6, eval_samples=0)
    ppo_cfg = PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=1, seed=0)
    return PPORun(cfg, ppo_cfg)


# -- the whole stage ---------------------------------------------------------------------------------


def test_t5_ppo_updates_the_policy_and_trl_receives_r_emp(assets, tmp_path, monkeypatch):
    from safetensors.torch import load_file
    from transformers import AutoModelForSeq2SeqLM
    from trl import AutoModelForSeq2SeqLMWithValueHead

    from emprl.ppo import train as ppo
    from emprl.ppo.trainer import EmpRLPPOTrainer
    from reward_models import EmpathyReward

    rollouts, steps = [], []
    real_rollout, real_step = ppo.PPORun.rollout, EmpRLPPOTrainer.step

    def spy_rollout(self, batch, batch_size=None):
        out = real_rollout(self, batch, batch_size)
        rollouts.append((out, [[batch[m][i] for m in MECHANISMS] for i in range(len(batch["context"]))]))
        return out

    def spy_step(self, queries, responses, scores):
        steps.append((responses, torch.stack(scores).clone()))
        return real_step(self, queries, responses, scores)

    monkeypatch.setattr(ppo.PPORun, "rollout", spy_rollout)
    monkeypatch.setattr(EmpRLPPOTrainer, "step", spy_step)
    recipe = write_recipe(tmp_path, assets, steps=3, eval_steps=3, save_steps=3, eval_repeats=2, eval_batch_size=8)
    run = ppo.main([recipe])
    out = os.path.join(tmp_path, "out")

    # 1. The score TRL gets for each response is R_emp of the real reward model on (c, y_hat, gold).
    assert len(steps) == 3
    reference = EmpathyReward.from_pretrained(assets.identifiers)
    for responses, scores in steps:
        (queries, sampled, texts, contexts), gold = next(r for r in rollouts if r[0][1] is responses)
        expected = reference(contexts, texts, torch.tensor(gold))
        assert torch.allclose(scores, expected, atol=1e-6)
        assert ((scores > 0) & (scores <= 1)).all()

    # 2. The policy moved away from the SFT weights; the reference did not.
    sft = load_file(os.path.join(assets.t5, "model.safetensors"))
    final = load_file(os.path.join(out, "model.safetensors"))
    changed = [k for k in sft if not torch.equal(sft[k], final[k])]
    assert changed, "PPO did not change any policy weight"
    ref = run.trainer.accelerator.unwrap_model(run.trainer.ref_model).pretrained_model.state_dict()
    assert all(torch.equal(ref[k], sft[k]) for k in sft)

    # 3. What the user keeps.
    rows = read_jsonl(os.path.join(out, "log.jsonl"))
    assert [r["step"] for r in rows] == [1, 2, 3]
    for key in ("r_emp", "reward/empathy", "kl", "kl_coef", "entropy", "policy_loss", "value_loss", "total_loss",
                "response_tokens", "response_words", "time/generation", "time/reward", "time/optimization"):
        assert all(isinstance(r[key], float) for r in rows), key
    evals = read_jsonl(os.path.join(out, "eval.jsonl"))
    assert [e["step"] for e in evals] == [0, 3]
    assert all(e["samples"] == 8 for e in evals)  # 4 held-out contexts, 2 responses each
    assert evals[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # step 0 is the SFT policy itself
    assert all(0 <= e["emp_f1"] <= 100 and 0 < e["r_emp"] <= 1 for e in evals)
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["sft"]["r_emp"] == evals[0]["r_emp"] and metrics["final"]["step"] == 3
    assert metrics["best"]["r_emp"] == max(e["r_emp"] for e in evals)
    with open(os.path.join(out, "training_curves.png"), "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"
    assert os.path.isfile(os.path.join(out, "README.md")) and os.path.isdir(os.path.join(out, "runs"))
    assert os.path.isfile(os.path.join(out, "checkpoint-3", "trainable.safetensors"))
    assert os.path.isfile(os.path.join(out, "best", "model.safetensors"))
    stamp = json.load(open(os.path.join(out, "stage.json")))
    assert stamp["stage"] == "ppo" and stamp["complete"] is True
    assert os.path.getmtime(os.path.join(out, "stage.json")) >= os.path.getmtime(os.path.join(out, "metrics.json"))

    # 4. The final model reloads with its value head (TRL) and as a plain seq2seq model.
    live = run.trainer.unwrapped_model
    with_head = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(out)
    assert torch.equal(with_head.v_head.summary.weight, live.v_head.summary.weight)
    plain = AutoModelForSeq2SeqLM.from_pretrained(out)
    live_state = live.pretrained_model.state_dict()
    assert all(torch.equal(v, live_state[k]) for k, v in plain.state_dict().items())

    # 5. A finished stage with the same recipe is not run again.
    monkeypatch.setattr(ppo, "PPORun", None)  # would fail if used
    monkeypatch.setattr(ppo, "load_value_head_policy", None)  # nor is the policy loaded just to say so
    assert ppo.main([recipe]) is None


def test_llama_lora_ppo_trains_adapters_only_and_exports_merged(assets, tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    from trl import AutoModelForCausalLMWithValueHead

    from emprl.ppo import train as ppo

    run = ppo.main([write_recipe(tmp_path, assets, model="llama", steps=2)])
    out = os.path.join(tmp_path, "out")
    trainer = run.trainer
    assert trainer.is_peft_model and trainer.ref_model is None  # the reference = adapters disabled
    params = dict(trainer.unwrapped_model.named_parameters())
    lora_b = [p for n, p in params.items() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b), "LoRA B weights never moved from zero"
    sft = load_file(os.path.join(assets.llama, "model.safetensors"))
    base = {n.replace("pretrained_model.base_model.model.", "").replace(".base_layer", ""): p
            for n, p in params.items() if "lora_" not in n and not n.startswith("v_head")}
    assert all(torch.equal(base[k], sft[k]) for k in sft), "LoRA training touched base weights"

    # The merged export: plain loading gives the live policy's logits; TRL loading gives the value head.
    ids = torch.tensor([[3, 10, 20, 30, 40]])
    trainer.unwrapped_model.eval()
    with torch.no_grad():
        live_logits = trainer.unwrapped_model.pretrained_model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(out).eval()
        assert torch.allclose(plain(input_ids=ids).logits, live_logits, atol=1e-5)
        with_head = AutoModelForCausalLMWithValueHead.from_pretrained(out)
        assert torch.equal(with_head.v_head.summary.weight, trainer.unwrapped_model.v_head.summary.weight)
    exported = load_file(os.path.join(out, "model.safetensors"))
    assert not any("lora_" in k for k in exported) and "v_head.summary.weight" in exported
    assert os.path.isfile(os.path.join(out, "adapter", "adapter_model.safetensors"))
    best = load_file(os.path.join(out, "best", "model.safetensors"))
    assert not any("lora_" in k for k in best)
    # The exported folders prompt like the policy was trained: chat and evaluation read this back.
    from emprl.common.policy import PROMPT_FILE, prompt_builder_for

    for folder in (out, os.path.join(out, "best")):
        assert os.path.isfile(os.path.join(folder, PROMPT_FILE))
    rebuilt = prompt_builder_for(out, trainer.tokenizer, False)
    assert rebuilt.system_prompt == run.builder.system_prompt
    assert rebuilt.max_source_tokens == run.builder.max_source_tokens

    # Decoder-only prompts are padded on the left, so generation starts right after each prompt.
    _, captured = rollout_capturing_generate(run, run.train[[0, 1, 2, 4]])
    mask = captured["attention_mask"]
    assert (mask[:, -1] == 1).all() and (mask == 0).any()
    assert "min_new_tokens" not in captured and captured["min_length"] == 0


# -- unit-level checks on the trainer ----------------------------------------------------------------


def test_t5_batches_are_padded_on_the_right(t5_run):
    trainer = t5_run.trainer
    # contexts of different lengths
    (queries, responses, _, _), captured = rollout_capturing_generate(t5_run, t5_run.train[[0, 1, 2, 4]])
    mask = captured["attention_mask"]
    assert (mask[:, 0] == 1).all() and (mask == 0).any()
    assert all((row.cumsum(0) == torch.arange(1, len(row) + 1)).sum() == row.sum() for row in mask)  # 1..1 0..0
    inputs = trainer.prepare_model_inputs(queries, responses)
    for key in ("attention_mask", "decoder_attention_mask"):
        m = inputs[key]
        assert (m[:, 0] == 1).all()
        assert all(torch.equal(row, torch.sort(row, descending=True).values) for row in m), key


@pytest.mark.parametrize("fix", [True, False])
def test_first_token_gets_a_policy_gradient_only_with_the_fix(t5_run, fix):
    trainer = t5_run.trainer
    torch.manual_seed(0)
    queries, responses, _, _ = t5_run.rollout(t5_run.train[[0, 1, 2, 3]])
    assert all(len(r) >= 3 for r in responses)  # [<start>, y1, y2, ...]
    inputs = trainer.prepare_model_inputs(queries, responses)
    old = trainer.fix_first_token
    trainer.fix_first_token = fix
    try:
        logprobs, logits, values, masks = trainer.batched_forward_pass(
            trainer.model, queries, responses, inputs, return_logits=True)
    finally:
        trainer.fix_first_token = old
    # Log-prob index 0 is log p(y1 | x, <start>).
    assert (masks[:, 0] == (1 if fix else 0)).all()
    assert (masks[:, 1] == 1).all()
    # The PPO policy loss, differentiated with respect to each token's log-prob.
    leaf = logprobs.detach().clone().requires_grad_(True)
    advantages = torch.ones_like(leaf)
    pg_loss, _, _ = trainer.loss(leaf.detach(), values.detach(), logits.detach(), values.detach(), leaf, masks,
                                 advantages, values.detach())
    pg_loss.backward()
    if fix:
        assert (leaf.grad[:, 0] != 0).all()
    else:
        assert (leaf.grad[:, 0] == 0).all()
    assert (leaf.grad[:, 1] != 0).all()


# -- resume, NaN guard, empty responses ----------------------------------------------------------


def test_resume_after_a_kill_ends_with_the_same_weights(assets, tmp_path, monkeypatch):
    from emprl.common.errors import UserError
    from emprl.ppo import train as ppo
    from emprl.ppo.trainer import EmpRLPPOTrainer

    # Score scaling/normalisation make the running score moments part of the state to restore.
    common = dict(steps=4, save_steps=2, eval_steps=2, save_total_limit=1, use_score_scaling=True,
                  use_score_norm=True)
    straight = ppo.main([write_recipe(tmp_path / "a", assets, **common)])
    expected = trainable(straight)
    assert sorted(os.listdir(tmp_path / "a" / "out")).count("checkpoint-4") == 1
    assert not os.path.isdir(tmp_path / "a" / "out" / "checkpoint-2")  # rotated away

    recipe = write_recipe(tmp_path / "b", assets, **common)
    real_step, calls = EmpRLPPOTrainer.step, []

    def dies_in_step_3(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(EmpRLPPOTrainer, "step", dies_in_step_3)
    with pytest.raises(KeyboardInterrupt):
        ppo.main([recipe])
    monkeypatch.setattr(EmpRLPPOTrainer, "step", real_step)
    out = tmp_path / "b" / "out"
    assert os.path.isdir(out / "checkpoint-2") and not os.path.exists(out / "stage.json")
    with pytest.raises(UserError, match="--resume true"):
        ppo.main([recipe])  # an interrupted run is never silently discarded

    resumed = ppo.main([recipe, "--resume", "true"])
    got = trainable(resumed)
    assert got.keys() == expected.keys()
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    assert torch.equal(torch.tensor(resumed.trainer.kl_ctl.value), torch.tensor(straight.trainer.kl_ctl.value))
    assert [r["step"] for r in read_jsonl(out / "log.jsonl")] == [1, 2, 3, 4]
    assert [r["step"] for r in read_jsonl(out / "eval.jsonl")] == [0, 2, 4]
    a = read_jsonl(tmp_path / "a" / "out" / "log.jsonl")
    b = read_jsonl(out / "log.jsonl")
    assert [r["kl"] for r in a] == [r["kl"] for r in b]


class FlakyReward:
    """A reward component that returns NaN on chosen calls (1-based)."""

    nan_calls: set[int] = set()
    calls = 0

    def __call__(self, contexts, responses, references=None, batch=None):
        type(self).calls += 1
        value = float("nan") if type(self).calls in self.nan_calls else 0.5
        return torch.full((len(responses),), value)


def test_three_nan_rewards_in_a_row_stop_the_run_and_keep_the_last_good_checkpoint(assets, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from emprl.common.errors import UserError
    from emprl.ppo import train as ppo
    from reward_models.registry import REWARD_REGISTRY

    monkeypatch.setitem(REWARD_REGISTRY, "flaky", FlakyReward)
    monkeypatch.setattr(FlakyReward, "calls", 0)
    monkeypatch.setattr(FlakyReward, "nan_calls", {2, 4, 5, 6})
    recipe = write_recipe(tmp_path, assets, steps=10, save_steps=1, save_total_limit=2, eval_steps=0,
                          eval_samples=2, reward={"flaky": 1.0})
    with pytest.warns(UserWarning, match="NaN or infinite reward"):
        with pytest.raises(UserError, match="checkpoint-3"):
            ppo.main([recipe])
    out = tmp_path / "out"
    assert sorted(p for p in os.listdir(out) if p.startswith("checkpoint-")) == ["checkpoint-1", "checkpoint-3"]
    state = json.load(open(out / "checkpoint-3" / "trainer_state.json"))
    assert state["step"] == 3 and state["nan_streak"] == 0
    assert load_file(out / "checkpoint-3" / "trainable.safetensors")
    assert not os.path.exists(out / "stage.json")
    rows = read_jsonl(out / "log.jsonl")
    assert [r["step"] for r in rows if r.get("skipped")] == [2, 4, 5, 6]
    assert [r["step"] for r in rows if not r.get("skipped")] == [1, 3]


@pytest.mark.parametrize("model,fix", [("t5", True), ("t5", False), ("llama", True)])
def test_empty_responses_do_not_crash(assets, tmp_path, model, fix):
    from trl import PPOConfig

    from emprl.ppo.config import PPOScriptConfig
    from emprl.ppo.train import PPORun

    cfg = PPOScriptConfig(sft_model_path=getattr(assets, model), labelled_data=assets.labelled,
                          identifiers_dir=assets.identifiers, output_dir=str(tmp_path), eval_samples=0,
                          fix_first_token=fix, use_lora=model == "llama", lora_r=4)
    run = PPORun(cfg, PPOConfig(batch_size=4, mini_batch_size=2, ppo_epochs=1, seed=0))
    wrapper = run.trainer.unwrapped_model
    eos = run.stop_ids[0]

    def says_nothing(input_ids, attention_mask, **kwargs):
        if run.is_encoder_decoder:
            return torch.zeros((len(input_ids), 1), dtype=torch.long)  # the decoder start token only
        return input_ids.clone()  # no new token after the prompt

    wrapper.generate = says_nothing
    row = run.train_step(1)
    assert row["empty_responses"] == 1.0 and row["response_words"] == 0.0
    assert all(isinstance(row[k], float) for k in ("kl", "total_loss", "policy_loss"))
    queries = [torch.tensor([5, 6, 1])] * 4
    responses = run.trainer.sample(queries, run.generation_kwargs, 4, run.builder.generation_padding_side,
                                   eos_token_ids=run.stop_ids)
    minimum = (2 if fix else 3) if run.is_encoder_decoder else 1
    assert all(len(r) == minimum and r[-1] == eos for r in responses)


def test_labelled_data_without_gold_levels_is_a_user_error(assets, tmp_path):
    from datasets import load_from_disk

    from emprl.common.errors import UserError
    from emprl.ppo import train as ppo

    data = load_from_disk(assets.labelled)
    for name in data:
        data[name] = data[name].remove_columns(list(MECHANISMS))
    data.save_to_disk(str(tmp_path / "unlabelled"))
    with pytest.raises(UserError, match="emprl.label"):
        ppo.main([write_recipe(tmp_path, assets, labelled_data=str(tmp_path / "unlabelled"))])


@pytest.mark.parametrize("recipe", sorted(
    os.path.join(d, f) for d in ("recipes/demo", "recipes/t5-base_empathetic-dialogues",
                                 "recipes/llama-3-8b-lora_empathetic-dialogues")
    for f in ("ppo.yaml", "ppo_no_kl.yaml", "ppo_no_empathy.yaml")
    if os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), d, f))))
def test_ppo_recipes_parse(recipe, tmp_path):
    """Every key of the shipped PPO recipes is known and well typed (input paths swapped for stand-ins)."""
    from trl import PPOConfig

    from emprl.pipeline.config import load_recipe_values, parse_recipe
    from emprl.ppo.config import PPOScriptConfig

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    values = load_recipe_values(os.path.join(root, recipe))  # ablations extend ppo.yaml (base:)
    overrides = []
    for key in ("sft_model_path", "labelled_data", "identifiers_dir"):
        overrides += [f"--{key}", str(tmp_path)]
    cfg, ppo_cfg = parse_recipe((PPOScriptConfig, PPOConfig), [os.path.join(root, recipe), *overrides])
    assert ppo_cfg.steps == values["steps"] and ppo_cfg.batch_size % ppo_cfg.mini_batch_size == 0
    assert (cfg.top_k, cfg.top_p, cfg.temperature, cfg.max_new_tokens) == (20, 1.0, 0.9, 30)
    if recipe.endswith("ppo_no_kl.yaml"):
        assert ppo_cfg.init_kl_coef == 0.0 and not ppo_cfg.adap_kl_ctrl
    elif recipe.endswith("ppo_no_empathy.yaml"):
        assert cfg.reward == {"empathy": 0.0}
    else:
        assert ppo_cfg.init_kl_coef == 0.2 and cfg.reward == {"empathy": 1.0}


def test_bench_ppo_tiny_reports_the_time_split(capsys):
    from emprl.benchmarks import bench_ppo

    results = bench_ppo.main(["--tiny", "--steps", "1"])
    tiny_t5 = results["tiny_t5"]
    parts = sum(tiny_t5[f"time/{p}"] for p in bench_ppo.PHASES)
    assert 0 < parts <= tiny_t5["time/step"] * 1.001
    assert tiny_t5["samples_per_s"] == pytest.approx(8 / tiny_t5["time/step"])
    assert "reward share of the step" in capsys.readouterr().out


def test_k_samples_per_context_and_the_leave_one_out_baseline_reach_trl(assets, tmp_path, monkeypatch):
    """Issue 11: each context is sampled K times in a row, TRL gets R_emp minus the mean of the other
    K-1 samples of the same context, and the held-out evaluation is paired with step 0."""
    from emprl.ppo import train as ppo
    from emprl.ppo.trainer import EmpRLPPOTrainer
    from reward_models import EmpathyReward

    rollouts, steps = [], []
    real_rollout, real_step = ppo.PPORun.rollout, EmpRLPPOTrainer.step

    def spy_rollout(self, batch, batch_size=None):
        out = real_rollout(self, batch, batch_size)
        rollouts.append((out, batch))
        return out

    def spy_step(self, queries, responses, scores):
        steps.append((responses, torch.stack(scores).clone()))
        return real_step(self, queries, responses, scores)

    monkeypatch.setattr(ppo.PPORun, "rollout", spy_rollout)
    monkeypatch.setattr(EmpRLPPOTrainer, "step", spy_step)
    recipe = write_recipe(tmp_path, assets, steps=2, eval_steps=2, save_steps=0, samples_per_context=2,
                          reward_baseline="leave_one_out", eval_repeats=2, eval_batch_size=8)
    ppo.main([recipe])

    reference = EmpathyReward.from_pretrained(assets.identifiers)
    for responses, scores in steps:
        (queries, _, texts, contexts), batch = next(r for r in rollouts if r[0][1] is responses)
        assert contexts[0::2] == contexts[1::2] and batch["conv_id"][0::2] == batch["conv_id"][1::2]
        assert len(set(batch["conv_id"])) == 2  # batch 4 = 2 contexts x K 2
        gold = torch.tensor([[batch[m][i] for m in MECHANISMS] for i in range(4)])
        r = reference(contexts, texts, gold)
        expected = torch.stack([r[0] - r[1], r[1] - r[0], r[2] - r[3], r[3] - r[2]])
        assert torch.allclose(scores, expected, atol=1e-6)
    evals = read_jsonl(os.path.join(tmp_path, "out", "eval.jsonl"))
    assert "delta_r_emp" not in evals[0] and len(evals[0]["per_context_r_emp"]) == 4
    last = evals[-1]
    diffs = [a - b for a, b in zip(last["per_context_r_emp"], evals[0]["per_context_r_emp"])]
    assert last["delta_r_emp"] == pytest.approx(sum(diffs) / len(diffs), abs=1e-9)
    assert last["delta_r_emp_ci"][0] <= last["delta_r_emp"] <= last["delta_r_emp_ci"][1]


@pytest.mark.parametrize("overrides, message", [
    ({"samples_per_context": 3}, "multiple of samples_per_context"),
    ({"reward_baseline": "leave_one_out"}, "needs samples_per_context >= 2"),
    ({"mixed_precision": "fp16"}, "mixed_precision"),
])
def test_bad_reward_settings_are_one_line_errors(assets, tmp_path, overrides, message):
    import subprocess
    import sys

    recipe = write_recipe(tmp_path, assets, **overrides)
    proc = subprocess.run([sys.executable, "-m", "emprl.ppo", recipe], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith("emprl: error:") and message in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not os.path.exists(os.path.join(tmp_path, "out"))


def test_grouped_permutation_keeps_each_contexts_samples_together():
    import numpy as np

    from emprl.ppo.trainer import GroupedNumpy

    np.random.seed(0)
    grouped = GroupedNumpy(4)
    perm = grouped.random.permutation(32)
    assert sorted(perm.tolist()) == list(range(32))
    for g in range(8):
        block = perm[4 * g: 4 * g + 4]
        assert block.tolist() == list(range(block[0], block[0] + 4)) and block[0] % 4 == 0
    assert grouped.random.permutation(6).shape == (6,)   # not a multiple of K: numpy's own shuffle
    assert grouped.zeros(3).tolist() == [0, 0, 0]        # everything else is numpy


def test_ppo_minibatches_take_a_contexts_samples_together(assets, tmp_path, monkeypatch):
    """group_minibatches: TRL's training mini-batches hold whole groups of K samples of one context, so the
    distinct-rows encoder computes each context once; TRL's numpy is restored after the step."""
    import trl.trainer.ppo_trainer as trl_ppo

    from emprl.ppo import train as ppo
    from emprl.ppo.trainer import EmpRLPPOTrainer

    seen = []
    real = EmpRLPPOTrainer.batched_forward_pass

    def spy(self, model, queries, responses, model_inputs, return_logits=False, response_masks=None):
        if torch.is_grad_enabled():  # the training passes (the old/ref log-probs run without grad)
            seen.append([q.tolist() for q in queries])
        return real(self, model, queries, responses, model_inputs, return_logits, response_masks)

    monkeypatch.setattr(EmpRLPPOTrainer, "batched_forward_pass", spy)
    recipe = write_recipe(tmp_path, assets, steps=2, eval_steps=0, save_steps=0, samples_per_context=2,
                          reward_baseline="leave_one_out", mini_batch_size=2, ppo_epochs=2)
    ppo.main([recipe])
    assert seen and all(len(q) == 2 and q[0] == q[1] for q in seen)
    assert trl_ppo.np is __import__("numpy")

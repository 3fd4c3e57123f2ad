"""EmpRL-DPO (issue 16) on tiny models: pair selection, a DPO step on T5 (full fine-tuning) and Llama
(LoRA) that moves the policy and not the reference, resume of interrupted pair sampling, recipes."""

from __future__ import annotations

import json
import os

import pytest
import torch
from test_ppo import build_assets, write_stage_recipe

from emprl.common.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(str(tmp_path_factory.mktemp("dpo_assets")))


def write_recipe(folder, assets, model: str = "t5", **overrides) -> str:
    sizes = {
        "samples_per_context": 4, "min_reward_margin": 0.0, "contexts_per_round": 8, "shard_size": 3,
        "generation_batch_size": 8, "max_new_tokens": 6, "learning_rate": 1e-2, "per_device_train_batch_size": 4,
        "num_train_epochs": 1, "logging_steps": 1, "seed": 0, "max_completion_length": 10,
        "max_prompt_length": 64, "max_length": 80,
    }
    return write_stage_recipe(folder, assets, model, "dpo.yaml", sizes, overrides)


def read_shards(round_dir: str) -> list[dict]:
    rows = []
    shard_dir = os.path.join(round_dir, "shards")
    for name in sorted(os.listdir(shard_dir)):
        with open(os.path.join(shard_dir, name), encoding="utf-8") as fh:
            rows += [json.loads(line) for line in fh]
    return rows


def weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# -- pair selection --------------------------------------------------------------------------------------


def test_select_pair_takes_best_and_worst_only_beyond_the_margin():
    from emprl.dpo.pairs import select_pair

    assert select_pair([0.2, 0.5, 0.1, 0.4], 0.0) == (1, 2)
    assert select_pair([0.2, 0.5, 0.1, 0.4], 0.39) == (1, 2)
    assert select_pair([0.2, 0.5, 0.1, 0.4], 0.4) is None          # 0.5 > 0.1 + 0.4 is false
    assert select_pair([0.3, 0.3, 0.3], 0.0) is None                # equal rewards are no preference
    assert select_pair([0.3, float("nan"), 0.1], 0.0) is None       # a NaN cannot be ranked
    assert select_pair([0.3], 0.0) is None


@pytest.mark.parametrize("model", ["t5", "llama"])
def test_pairs_are_built_from_the_scored_samples(assets, tmp_path, model):
    """Every pair: chosen reward > rejected reward + margin, both among its context's K samples, the
    best and the worst of them; every context whose spread exceeds the margin has its pair, one only."""
    from datasets import load_from_disk

    from emprl.dpo.train import main

    run = main([write_recipe(tmp_path, assets, model, min_reward_margin=0.004)])
    round_dir = os.path.join(str(tmp_path), "out", "rounds", "round-1")
    samples = read_shards(round_dir)
    pairs = load_from_disk(os.path.join(round_dir, "pairs"))
    assert len(samples) == 8 and all(len(s["responses"]) == len(s["rewards"]) == 4 for s in samples)
    by_row = {s["row"]: s for s in samples}
    assert len(set(pairs["row"])) == len(pairs)                     # at most one pair per context
    for p in pairs:
        s = by_row[p["row"]]                                        # no pair without its context
        assert p["chosen_reward"] > p["rejected_reward"] + 0.004
        assert p["chosen_reward"] == pytest.approx(max(s["rewards"]))
        assert p["rejected_reward"] == pytest.approx(min(s["rewards"]))
        assert p["chosen"] == s["responses"][s["rewards"].index(max(s["rewards"]))]
        assert p["prompt"] == run.builder.text(s["context"])
    expected = {s["row"] for s in samples if max(s["rewards"]) > min(s["rewards"]) + 0.004}
    assert set(pairs["row"]) == expected and len(expected) > 0      # every context with a spread has a pair
    assert os.path.isfile(os.path.join(round_dir, "pairs", "README.md"))
    # The rewards in the shards are R_emp as the recipe's reward computes it (not re-implemented here).
    s = samples[0]
    batch = run.train[[s["row"]] * 4]
    total, _ = run.score(batch["context"], s["responses"], batch)
    assert [float(x) for x in total] == pytest.approx(s["rewards"], abs=1e-5)


# -- a DPO step --------------------------------------------------------------------------------------------


def test_t5_dpo_step_changes_the_policy_and_not_the_reference(assets, tmp_path):
    from safetensors.torch import load_file

    from emprl.common.io import read_stage_stamp
    from emprl.dpo.train import main

    sft = load_file(os.path.join(assets.t5, "model.safetensors"))
    run = main([write_recipe(tmp_path, assets, "t5")])
    out = os.path.join(str(tmp_path), "out")
    assert run.rounds[0]["train"]["steps"] >= 1
    ref = weights(run.ref_model)
    assert all(torch.equal(ref[k], sft[k]) for k in sft)            # the reference is the SFT policy, untouched
    final = load_file(os.path.join(out, "model.safetensors"))
    changed = [k for k in sft if not torch.equal(final[k], sft[k])]
    assert changed                                                  # the policy moved
    assert read_stage_stamp(out)["complete"] and read_stage_stamp(out)["stage"] == "dpo"
    metrics = json.load(open(os.path.join(out, "metrics.json")))
    assert metrics["reward_evaluations"] == 8 * 4
    assert os.path.isfile(os.path.join(out, "emprl_prompt.json")) and os.path.isfile(os.path.join(out, "README.md"))
    # The same recipe again: nothing to do.
    assert main([write_recipe(tmp_path, assets, "t5")]) is None


def test_llama_lora_dpo_step_trains_adapters_only_and_exports_merged(assets, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    from emprl.common.policy import load_policy
    from emprl.dpo import train as dpo

    sft = load_file(os.path.join(assets.llama, "model.safetensors"))
    after_round, original = [], dpo.DPORun.train_round

    def snapshot(self, r, pairs):
        result = original(self, r, pairs)
        after_round.append(weights(self.model))
        return result

    monkeypatch.setattr(dpo.DPORun, "train_round", snapshot)
    run = dpo.main([write_recipe(tmp_path, assets, "llama", rounds=2, contexts_per_round=6)])
    assert run.ref_model is None                                    # reference = adapters off
    state = after_round[-1]
    lora = {k: v for k, v in state.items() if "lora_B" in k}
    assert lora and any(v.abs().sum() > 0 for v in lora.values())  # adapters moved from their zero start
    base = {k.replace("base_model.model.", "").replace(".base_layer", ""): v
            for k, v in state.items() if "lora_" not in k}
    assert all(torch.equal(base[k], sft[k]) for k in sft)          # base weights = the reference, untouched
    out = os.path.join(str(tmp_path), "out")
    merged, _, _ = load_policy(out)
    assert any(not torch.equal(merged.state_dict()[k], sft[k]) for k in sft)
    assert len(run.rounds) == 2 and all("steps" in r["train"] for r in run.rounds)
    second = read_shards(os.path.join(out, "rounds", "round-2"))
    first = read_shards(os.path.join(out, "rounds", "round-1"))
    assert {s["row"] for s in second} != {s["row"] for s in first}  # round 2 samples fresh contexts


# -- resume ------------------------------------------------------------------------------------------------


def test_resume_of_interrupted_pair_sampling_does_not_resample_saved_shards(assets, tmp_path, monkeypatch):
    from emprl.dpo import train as dpo

    recipe = write_recipe(tmp_path / "a", assets, "t5")            # 8 contexts in shards of 3: 3 shards
    sampled: list[list] = []
    original = dpo.DPORun.sample

    def counting(self, contexts, seed):
        sampled.append([tuple(c) for c in contexts])
        if len(sampled) == 3:
            raise KeyboardInterrupt  # killed while sampling the last shard
        return original(self, contexts, seed)

    monkeypatch.setattr(dpo.DPORun, "sample", counting)
    with pytest.raises(KeyboardInterrupt):
        dpo.main([recipe])
    round_dir = os.path.join(str(tmp_path / "a"), "out", "rounds", "round-1")
    saved = sorted(os.listdir(os.path.join(round_dir, "shards")))
    assert saved == ["shard-00000.jsonl", "shard-00001.jsonl"]
    before = {n: open(os.path.join(round_dir, "shards", n)).read() for n in saved}
    mtimes = {n: os.stat(os.path.join(round_dir, "shards", n)).st_mtime_ns for n in saved}

    sampled.clear()
    monkeypatch.setattr(dpo.DPORun, "sample", lambda self, contexts, seed: (sampled.append(1),
                                                                            original(self, contexts, seed))[1])
    run = dpo.main([recipe])
    assert len(sampled) == 1                                        # only the missing shard was sampled
    assert run.rounds[0]["shards_reused"] == 2 and run.rounds[0]["shards_sampled"] == 1
    for n in saved:                                                 # the saved shards were read, not rewritten
        assert open(os.path.join(round_dir, "shards", n)).read() == before[n]
        assert os.stat(os.path.join(round_dir, "shards", n)).st_mtime_ns == mtimes[n]

    # The same pairs as a run that was never interrupted (shard seeds do not depend on the resume).
    monkeypatch.setattr(dpo.DPORun, "sample", original)
    dpo.main([write_recipe(tmp_path / "b", assets, "t5")])
    from datasets import load_from_disk

    a = load_from_disk(os.path.join(round_dir, "pairs"))
    b = load_from_disk(os.path.join(str(tmp_path / "b"), "out", "rounds", "round-1", "pairs"))
    assert a["row"] == b["row"] and a["chosen"] == b["chosen"] and a["rejected"] == b["rejected"]


def test_a_finished_round_is_not_sampled_or_trained_again(assets, tmp_path, monkeypatch):
    from emprl.dpo import train as dpo

    recipe = write_recipe(tmp_path, assets, "t5", rounds=2, contexts_per_round=4)
    original = dpo.DPORun.train_round
    calls = []

    def dies_in_round_2(self, r, pairs):
        calls.append(r)
        if r == 2:
            raise KeyboardInterrupt
        return original(self, r, pairs)

    monkeypatch.setattr(dpo.DPORun, "train_round", dies_in_round_2)
    with pytest.raises(KeyboardInterrupt):
        dpo.main([recipe])
    monkeypatch.setattr(dpo.DPORun, "train_round", lambda self, r, pairs: (calls.append(r), original(self, r, pairs))[1])
    monkeypatch.setattr(dpo.DPORun, "sample", lambda *a: pytest.fail("a finished round was sampled again"))
    run = dpo.main([recipe])
    assert calls == [1, 2, 2] and len(run.rounds) == 2             # round 1 loaded, round 2 retrained from its pairs


# -- recipes and errors -------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides, message", [
    ({"samples_per_context": 1}, "samples_per_context"),
    ({"min_reward_margin": -0.1}, "min_reward_margin"),
    ({"rounds": 0}, "rounds"),
    ({"loss_type": "nonsense"}, "loss_type"),
])
def test_bad_settings_are_one_line_errors(assets, tmp_path, overrides, message):
    from emprl.dpo.train import main

    with pytest.raises(UserError, match=message):
        main([write_recipe(tmp_path, assets, "t5", **overrides)])
    assert not os.path.exists(os.path.join(str(tmp_path), "out"))  # nothing written


def test_no_pair_at_all_is_a_user_error(assets, tmp_path):
    from emprl.dpo.train import main

    with pytest.raises(UserError, match="no round produced a preference pair"):
        main([write_recipe(tmp_path, assets, "t5", min_reward_margin=10.0, contexts_per_round=3)])


@pytest.mark.parametrize("recipe", ["recipes/demo/t5_dpo.yaml", "recipes/demo/dpo.yaml",
                                    "recipes/t5-base_empathetic-dialogues/dpo.yaml",
                                    "recipes/llama-3-8b-lora_empathetic-dialogues/dpo.yaml"])
def test_dpo_recipes_parse(recipe, tmp_path):
    from emprl.dpo.config import DPOScriptConfig, DPOTrainingArguments
    from emprl.pipeline.config import parse_recipe

    overrides = []
    for key in ("sft_model_path", "labelled_data", "identifiers_dir"):
        overrides += [f"--{key}", str(tmp_path)]
    if "t5-base" in recipe:
        overrides += ["--bf16", "false"]  # a GPU recipe; this test runs on CPUs
    cfg, args = parse_recipe((DPOScriptConfig, DPOTrainingArguments), [os.path.join(ROOT, recipe), *overrides])
    assert (cfg.top_k, cfg.top_p, cfg.temperature, cfg.max_new_tokens) == (20, 1.0, 0.9, 30)
    assert cfg.reward == {"empathy": 1.0} and args.beta > 0 and args.loss_type == "sigmoid"
    assert cfg.use_lora == ("lora" in recipe or recipe.endswith("demo/dpo.yaml"))


def test_dpo_stages_are_on_demand_and_pulled_in_by_targets():
    from emprl.pipeline.run import plan

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        default = [s.stage.recipe for s in plan("recipes/demo")]
        targeted = [s.stage.recipe for s in plan("recipes/demo", targets=["t5_dpo_evaluate.yaml"])]
    finally:
        os.chdir(cwd)
    assert "t5_dpo.yaml" not in default and "dpo.yaml" not in default
    assert {"t5_dpo.yaml", "t5_dpo_evaluate.yaml"} <= set(targeted) and "dpo.yaml" not in targeted


def test_study_runs_dpo_as_a_third_arm_and_states_the_reward_budget(tmp_path):
    from emprl.pipeline.config import parse_recipe
    from emprl.study.run import RLStudyConfig, plan_runs, reward_evaluations, step_args
    from emprl.study.summary import report_markdown

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        (cfg,) = parse_recipe((RLStudyConfig,), ["recipes/demo/rl_study.yaml", "--output_dir", str(tmp_path),
                                                 "--dpo_recipe", "recipes/demo/t5_dpo.yaml"])  # on demand in the demo
        runs = plan_runs(cfg)
        dpo_runs = [r for r in runs if r.arm == "dpo"]
        assert [r.seed for r in dpo_runs] == cfg.arm_seeds.get("dpo", cfg.seeds) and all(r.step.stage.module == "emprl.dpo" for r in dpo_runs)
        assert step_args(dpo_runs[0].step, cfg)[-2:] == ["--seed", str(cfg.seeds[0])]
        ppo = next(r for r in runs if r.arm == "empathy")
        # The demo's DPO recipe is sized to PPO's training budget: steps x batch = contexts x K x rounds.
        from emprl.pipeline.config import load_recipe_values

        ppo_values, dpo_values = load_recipe_values(cfg.ppo_recipe), load_recipe_values(cfg.dpo_recipe)
        budget = ppo_values["steps"] * ppo_values["batch_size"]
        assert budget == (dpo_values["contexts_per_round"] * dpo_values["samples_per_context"]
                          * dpo_values.get("rounds", 1))
        assert reward_evaluations(cfg, ppo, {}) == budget
        assert reward_evaluations(cfg, dpo_runs[0], {"reward_evaluations": budget}) == budget
    finally:
        os.chdir(cwd)
    row = {"arm": "dpo", "seed": 1, "system": "EmpRL-DPO, seed 1", "kl": None, "length": 9.0, "empty_rate": 0.0,
           "minutes": 3.0, "reward_evaluations": 1920,
           "paired": {"r_emp": {"delta": 0.01, "ci_low": 0.005, "ci_high": 0.02, "p_value": 0.01}}}
    report = {"ppo_recipe": "p", "control_recipe": "c", "dpo_recipe": "d", "evaluate_recipe": "e", "seeds": [1],
              "ppo_overrides": [], "design": {}, "rows": [row], "minutes_total": 3.0,
              "verdict": {"empathy_r_emp_ci_above_0_every_seed": False, "empathy_mean_delta_emp_f1": None,
                          "control_r_emp_ci_not_above_0": False, "dpo_r_emp_ci_above_0_every_seed": True,
                          "dpo_f_bert_ci_not_below_0_every_seed": False}}
    text = report_markdown(report)
    assert "| EmpRL-DPO, seed 1 |" in text and "| 1920 |" in text and "reward evals" in text

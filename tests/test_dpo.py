"""EmpRL-DPO (issue 16) on tiny models: pairs, a DPO step on T5 (full) and Llama (LoRA), resume."""

from __future__ import annotations

import json
import os

import pytest
import torch
import yaml
from test_ppo import build_assets


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    return build_assets(str(tmp_path_factory.mktemp("dpo_assets")))


def write_recipe(folder, assets, model: str = "t5", **overrides) -> str:
    recipe = {
        "sft_model_path": getattr(assets, model), "labelled_data": assets.labelled,
        "identifiers_dir": assets.identifiers, "output_dir": os.path.join(str(folder), "out"),
        "samples_per_context": 4, "min_reward_margin": 0.0, "contexts_per_round": 8, "shard_size": 3,
        "generation_batch_size": 8, "max_new_tokens": 6, "learning_rate": 1e-2, "per_device_train_batch_size": 4,
        "num_train_epochs": 1, "logging_steps": 1, "seed": 0, "max_completion_length": 10,
        "max_prompt_length": 64, "max_length": 80,
    }
    if model == "llama":
        recipe.update(use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj"])
    recipe.update(overrides)
    os.makedirs(str(folder), exist_ok=True)
    path = os.path.join(str(folder), "dpo.yaml")
    with open(path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(recipe, fh)
    return path


def test_t5_smoke(assets, tmp_path):
    from emprl.dpo import main

    run = main([write_recipe(tmp_path, assets)])
    assert run is not None
    print(json.dumps(run.rounds, indent=1, default=str))

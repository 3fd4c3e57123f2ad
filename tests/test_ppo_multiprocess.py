"""The PPO stage under `accelerate launch` with two CPU processes (gloo): both ranks train together
and end with identical weights."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import yaml
from test_ppo import build_assets, read_jsonl, write_recipe

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_cpu_processes_train_one_policy(tmp_path):
    from safetensors.torch import load_file

    assets = build_assets(str(tmp_path / "assets"))
    recipe = write_recipe(tmp_path, assets, steps=2, eval_steps=2, eval_samples=4, save_steps=2, batch_size=2,
                          mini_batch_size=1)
    launch_cfg = tmp_path / "multi_cpu.yaml"
    launch_cfg.write_text(yaml.safe_dump({
        "compute_environment": "LOCAL_MACHINE", "distributed_type": "MULTI_GPU", "use_cpu": True,
        "num_processes": 2, "num_machines": 1, "machine_rank": 0, "main_process_port": free_port(),
        "mixed_precision": "no"}))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.path.join(REPO, "tests") + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(launch_cfg),
                           "-m", "emprl.ppo", recipe], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]

    out = tmp_path / "out"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    checksums = metrics["rank_weight_checksums"]
    assert len(checksums) == 2 and checksums[0] == checksums[1], "the ranks drifted apart"
    sft = load_file(os.path.join(assets.t5, "model.safetensors"))
    final = load_file(os.path.join(out, "model.safetensors"))
    assert any(not torch.equal(sft[k], final[k]) for k in sft)
    assert [r["step"] for r in read_jsonl(out / "log.jsonl")] == [1, 2]  # one writer, no duplicate rows
    evals = read_jsonl(out / "eval.jsonl")
    assert [e["step"] for e in evals] == [0, 2] and all(e["samples"] == 4 for e in evals)
    state = json.loads((out / "checkpoint-2" / "trainer_state.json").read_text())
    assert state["world_size"] == 2 and state["samples_consumed"] == 2 * 2 * 2
    assert (out / "checkpoint-2" / "rng_state_1.pt").is_file()

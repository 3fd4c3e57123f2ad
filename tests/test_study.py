"""The RL study (emprl.study, emprl.study.report) on a fixture evaluation: per-sample files written by a
small generator, a known effect for EmpRL and none for the placebo; no model is trained or loaded."""

import json
import os

import numpy as np
import pytest

from emprl.common.errors import UserError
from emprl.pipeline.config import parse_recipe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONTEXTS, K = 80, 2


def write_fixture_eval(eval_dir, systems: dict[str, tuple[float, float]], *, with_samples=True, seed=0):
    """An evaluation folder for ``systems`` (name -> (R_emp effect, oracle hit rate)): results.json with
    per-system summaries, per-context means and paired entries, and samples.jsonl / contexts.jsonl in the
    evaluation's per-sample format."""
    rng = np.random.default_rng(seed)
    level = rng.gamma(0.5, 0.2, CONTEXTS)
    gold = rng.integers(0, 3, size=(CONTEXTS, 3))
    true = np.where(rng.random((CONTEXTS, 3)) < 0.8, gold, rng.integers(0, 3, size=(CONTEXTS, 3)))
    samples, results = [], {"num_examples": CONTEXTS, "seeds": [0], "samples_per_context": K, "systems": {},
                            "paired": []}
    for name, (effect, hit) in systems.items():
        run_shift = rng.normal(0, 0.003)
        r_emp = np.clip(level[:, None] + effect + run_shift + rng.normal(0, 0.05, (CONTEXTS, K)), 0, 1)
        f_bert = 30 + rng.normal(0, 2, (CONTEXTS, K))
        for c in range(CONTEXTS):
            for j in range(K):
                judged = np.where(rng.random(3) < hit, true[c], rng.integers(0, 3, size=3))
                samples.append({"system": name, "seed": 0, "context": c, "sample": j, "r_emp": float(r_emp[c, j]),
                                "f_bert": float(f_bert[c, j]), "words": 20 + int(rng.integers(0, 3)), "empty": False,
                                "levels": gold[c].tolist() if rng.random() < 0.5 + effect else [0, 0, 0],
                                "judges": {"oracle": judged.tolist()}})
        summary = {"dist-1": 4.0 + rng.normal(0, 0.1), "dist-2": 25 + rng.normal(0, 0.5), "emp_f1": 60 + 100 * effect,
                   "r_emp": float(r_emp.mean()), "length": 21.0, "empty_rate": 0.0}
        results["systems"][name] = {
            "ppl": 12 + rng.normal(0, 0.2), "summary": {k: {"mean": v, "ci95": 0.1, "n": 1} for k, v in summary.items()},
            "per_context": {"r_emp": r_emp.mean(axis=1).tolist(), "f_bert": f_bert.mean(axis=1).tolist()}}
        if name != "SFT":
            results["paired"].append({"system": name, "baseline": "SFT",
                                      "r_emp": {"delta": effect, "ci_low": effect - 0.01, "ci_high": effect + 0.01,
                                                "p_value": 0.01}})
    os.makedirs(eval_dir, exist_ok=True)
    with open(os.path.join(eval_dir, "results.json"), "w") as fh:
        json.dump(results, fh)
    if with_samples:
        with open(os.path.join(eval_dir, "samples.jsonl"), "w") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in samples)
        with open(os.path.join(eval_dir, "contexts.jsonl"), "w") as fh:
            fh.writelines(json.dumps({"context": c, "conv_id": f"conv{c}", "gold": gold[c].tolist(),
                                      "true": true[c].tolist()}) + "\n" for c in range(CONTEXTS))


def study_cfg(tmp_path, *extra):
    from emprl.study.run import RLStudyConfig

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        (cfg,) = parse_recipe((RLStudyConfig,), ["recipes/demo/rl_study.yaml", "--output_dir", str(tmp_path),
                                                 "--dpo_recipe", "null", "--control_recipe", "null",
                                                 "--resamples", "300", *extra])
    finally:
        os.chdir(cwd)
    return cfg


def fixture_systems(cfg, placebo_effect=0.0):
    from emprl.study.run import plan_runs

    systems = {"SFT": (0.0, 0.5)}
    for run in plan_runs(cfg):
        systems[run.title] = (0.05, 0.8) if run.arm == "empathy" else (placebo_effect, 0.5)
    return systems


def test_report_pools_runs_and_states_each_criterion(tmp_path):
    from emprl.study.run import build_report, plan_runs
    from emprl.study.summary import report_markdown

    cfg = study_cfg(tmp_path)
    runs = plan_runs(cfg)
    assert {r.arm for r in runs} == {"empathy", "placebo"} and len(runs) == 10
    write_fixture_eval(tmp_path / "eval", fixture_systems(cfg))
    report = build_report(cfg, runs, str(tmp_path / "eval"), {}, 1.0)
    verdict = {v["criterion"]: v["met"] for v in report["verdict"]}
    assert all(verdict.values()), report["verdict"]
    comps = {(c["arm"], c["baseline"]): c for c in report["pooled"]["comparisons"]}
    assert set(comps) == {("empathy", "SFT"), ("placebo", "SFT"), ("empathy", "placebo")}
    emp = comps[("empathy", "SFT")]
    assert emp["r_emp"]["runs"] == 5 and emp["r_emp"]["ci_low"] < 0.05 < emp["r_emp"]["ci_high"]
    assert emp["judges"]["oracle"]["accuracy"]["ci_low"] > 0 and "reward identifiers" in emp["judges"]
    assert comps[("empathy", "placebo")]["r_emp"]["paired_by_run"]
    assert comps[("placebo", "SFT")]["r_emp"]["p_value"] > 0.01
    sizing = report["pooled"]["variance"]["sizing"][0]
    assert sizing["effect"] == pytest.approx(0.012) and {r["runs"] for r in sizing["rows"]} == {5, 10}
    trained = report["trained_runs"]
    assert trained["empathy"]["ppl"]["runs"] == 5 and trained["empathy"]["ppl"]["ci95"] is not None
    assert trained["SFT"]["ppl"]["ci95"] is None and trained["empathy"]["dist-2"]["decoding_ci95"] == 0.1
    text = report_markdown(report)
    for heading in ("## Verdict", "## Pooled effect on R_emp", "### Per-run intervals", "## Judges against the true",
                    "## Guardrails", "## Variance of R_emp", "## Mean ± 95% CI over trained runs",
                    "### Decoding-seed interval", "## Per run"):
        assert heading in text
    assert "| EmpRL (PPO) - placebo (shuffled gold) (same seed) | 5 |" in text and "NOT met" not in text


def test_a_placebo_as_good_as_empraL_fails_that_criterion(tmp_path):
    from emprl.study.run import build_report, plan_runs

    cfg = study_cfg(tmp_path)
    write_fixture_eval(tmp_path / "eval", fixture_systems(cfg, placebo_effect=0.05))
    report = build_report(cfg, plan_runs(cfg), str(tmp_path / "eval"), {}, 1.0)
    verdict = {v["criterion"]: v["met"] for v in report["verdict"]}
    assert verdict["EmpRL - SFT, pooled Delta R_emp: lower bound > 0"] is True
    assert verdict["EmpRL - placebo (same seed), pooled Delta R_emp: lower bound > 0"] is False
    primary = [v for v in report["verdict"] if v["kind"] == "primary"]
    assert len(primary) == 1 and "oracle" in primary[0]["criterion"] and "placebo" in primary[0]["criterion"]


def test_without_per_sample_files_r_emp_is_pooled_from_results_json(tmp_path):
    from emprl.study.run import build_report, plan_runs
    from emprl.study.summary import report_markdown

    cfg = study_cfg(tmp_path, "--seeds", "[1, 2]", "--choice_seeds", "[1]")
    write_fixture_eval(tmp_path / "eval", fixture_systems(cfg), with_samples=False)
    report = build_report(cfg, plan_runs(cfg), str(tmp_path / "eval"), {}, 1.0)
    emp = report["pooled"]["comparisons"][0]
    assert report["pooled"]["source"] == "results.json per_context" and "r_emp" in emp and "judges" not in emp
    verdict = {v["criterion"]: v["met"] for v in report["verdict"]}
    assert verdict["fresh seeds, every arm's (none used for choosing settings)"] is False
    assert "No true levels" in report_markdown(report)


def test_a_system_missing_contexts_is_a_one_line_error(tmp_path):
    from emprl.study.report import load_samples

    write_fixture_eval(tmp_path, {"SFT": (0.0, 0.5)})
    lines = (tmp_path / "samples.jsonl").read_text().splitlines()
    (tmp_path / "samples.jsonl").write_text("\n".join(line for line in lines if '"context": 3,' not in line) + "\n")
    with pytest.raises(UserError, match="no sample for 1 of 80 contexts"):
        load_samples(str(tmp_path))


def test_main_trains_evaluates_once_and_writes_the_report(tmp_path, monkeypatch, capsys):
    from emprl.study import run as study

    cfg = study_cfg(tmp_path)
    calls = []

    def fake_run_steps(steps, command_for, jobs=1, log_dir=None):
        calls.append([command_for(s) for s in steps])
        command = calls[-1][0]
        if "emprl.evaluate" in command:  # the one evaluation: every run and SFT
            systems = json.loads(command[command.index("--systems") + 1])
            write_fixture_eval(command[command.index("--output_dir") + 1],
                               {n: ((0.05, 0.8) if n.startswith("EmpRL") else (0.0, 0.5)) for n in systems})
        return {}

    monkeypatch.setattr(study, "run_steps", fake_run_steps)
    monkeypatch.chdir(ROOT)
    study.main(["recipes/demo/rl_study.yaml", "--output_dir", str(tmp_path), "--dpo_recipe", "null",
                "--control_recipe", "null", "--resamples", "200", "--seeds", "[11, 12, 13]",
                "--results_dir", str(tmp_path / "results")])
    assert len(calls) == 2 and len(calls[0]) == 6 and len(calls[1]) == 1
    assert all("--seed" in c for c in calls[0])
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["seeds"] == [11, 12, 13] and (tmp_path / "report.md").read_text().startswith("# RL study")
    assert (tmp_path / "results" / "eval" / "samples.jsonl.gz").is_file()  # the export (tests/test_study_verdict.py)
    assert cfg.prerequisites == ["t5_sft.yaml", "label.yaml"]
    capsys.readouterr()
    study.main(["--prerequisites", "recipes/demo/rl_study.yaml"])
    assert capsys.readouterr().out.strip() == "t5_sft.yaml label.yaml"


@pytest.mark.parametrize("experiment", ["t5-base_empathetic-dialogues", "t5-base_pec"])
def test_paper_study_recipes_train_empRL_with_five_seeds(experiment, monkeypatch):
    from emprl.study.run import RLStudyConfig, plan_runs

    monkeypatch.chdir(ROOT)
    (cfg,) = parse_recipe((RLStudyConfig,), [f"recipes/{experiment}/study.yaml"])
    runs = plan_runs(cfg)
    assert [r.arm for r in runs] == ["empathy"] * 5 and cfg.evaluate_recipe == f"recipes/{experiment}/evaluate.yaml"
    assert set(cfg.prerequisites) <= set(os.listdir(f"recipes/{experiment}"))


def test_arm_seeds_give_one_equal_budget_dpo_row_and_the_report_still_pools(tmp_path):
    """arm_seeds: DPO on one seed beside 3 EmpRL and placebo seeds; the pooled report handles the short arm."""
    from emprl.study.run import RLStudyConfig, build_report, plan_runs
    from emprl.study.summary import report_markdown

    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        (cfg,) = parse_recipe((RLStudyConfig,), [
            "recipes/demo/rl_study.yaml", "--output_dir", str(tmp_path), "--control_recipe", "null", "--dpo_recipe", "recipes/demo/t5_dpo.yaml",
            "--resamples", "200", "--seeds", "[11, 12, 13]", "--arm_seeds", '{"dpo": [11]}'])
    finally:
        os.chdir(cwd)
    runs = plan_runs(cfg)
    assert [(r.arm, r.seed) for r in runs if r.arm == "dpo"] == [("dpo", 11)]
    assert sorted(r.seed for r in runs if r.arm == "empathy") == [11, 12, 13]
    systems = {"SFT": (0.0, 0.5), **{r.title: ((0.05, 0.8) if r.arm == "empathy" else (0.0, 0.5)) for r in runs}}
    eval_dir = tmp_path / "eval"
    write_fixture_eval(str(eval_dir), systems)
    report = build_report(cfg, runs, str(eval_dir), {}, 1.0)
    assert "EmpRL-DPO, seed 11" in report_markdown(report)
    with pytest.raises(ValueError, match="arm_seeds"):
        RLStudyConfig(ppo_recipe="a", evaluate_recipe="b", arm_seeds={"ppo2": [1]})


def test_fresh_seed_check_covers_every_arms_seeds_and_the_primary_needs_the_judge(tmp_path):
    from emprl.study.run import RLStudyConfig, build_report, plan_runs
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:  # the control runs once, on a seed that chose the settings: the study's own seeds are fresh
        (cfg,) = parse_recipe((RLStudyConfig,), ["recipes/demo/rl_study.yaml", "--output_dir", str(tmp_path),
                                                 "--dpo_recipe", "null", "--resamples", "300", "--seeds", "[11, 12]",
                                                 "--arm_seeds", "{control: [3]}", "--choice_seeds", "[3]"])
    finally:
        os.chdir(cwd)
    systems = fixture_systems(cfg)
    systems.update({n: (0.05, 0.5) for n in systems if n.startswith("EmpRL")})  # oracle no better than placebo
    write_fixture_eval(tmp_path / "eval", systems)
    report = build_report(cfg, plan_runs(cfg), str(tmp_path / "eval"), {}, 1.0)
    verdict = {v["criterion"]: v for v in report["verdict"]}
    assert verdict["fresh seeds, every arm's (none used for choosing settings)"]["met"] is False
    assert "3" in verdict["fresh seeds, every arm's (none used for choosing settings)"]["value"]
    (primary,) = [v for v in report["verdict"] if v["kind"] == "primary"]
    assert primary["met"] is False and "one-sided" in primary["value"]


def test_agreement_with_the_true_levels_against_chance(tmp_path, capsys):
    from emprl.study.agreement import main as agreement_main

    write_fixture_eval(tmp_path, {"SFT": (0.0, 0.0), "reader": (0.0, 0.8)})  # oracle hit rates 0 and 0.8
    report = agreement_main([str(tmp_path), "--judge", "oracle"])
    reader, blind = report["reader"], report["SFT"]
    for name in ("emotional_reactions", "interpretations", "explorations"):
        r = reader[name]
        assert r["ci_low"] <= r["agreement"] <= r["ci_high"] and r["ci_low"] > 0.75  # 0.8 + 0.2/3 expected
        assert abs(r["chance"] - 1 / 3) < 0.08 and abs(blind[name]["agreement"] - blind[name]["chance"]) < 0.1
    assert reader["all"]["agreement"] > 0.5 > 0.1 > reader["all"]["chance"]
    assert "reader (80 contexts), judge oracle" in capsys.readouterr().out
    with pytest.raises(UserError, match="no levels from judge 'ids'"):
        agreement_main([str(tmp_path), "--judge", "ids"])
    with pytest.raises(UserError, match="--system: nobody not in"):
        agreement_main([str(tmp_path), "--system", "nobody"])

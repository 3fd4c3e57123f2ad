"""The evaluation stage on tiny models: outputs, corpus-level PPL, seeding, DailyDialog columns, errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import tiny
import torch

from emprl.common.errors import UserError, run_cli
from emprl.evaluate.run import detect_data_kind, main

ED_HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags"
# (emotion, situation, turns): speaker and listener alternate, listener turns become examples.
DIALOGUES = [
    ("sad", "my dog was lost", ["i lost my dog today", "oh no i am so sorry to hear that",
                                "i miss him so much", "that must be really hard for you , i hope he comes home"]),
    ("proud", "i won at school", ["i won the test at school today", "wow that is great news ! you must be proud"]),
    ("afraid", "an exam", ["i have a new exam this week and i am scared",
                           "do you feel you can do it ?", "i think so but i am worried",
                           "i understand , it is hard . how can i help ?"]),
    ("lonely", "no friends", ["i feel so lonely at home", "why do you feel that way ?"]),
    ("happy", "new job", ["i got a new job", "that is wonderful ! how do you feel ?", "so happy and excited",
                          "i am really glad for you"]),
]


def write_ed(folder) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    lines = [ED_HEADER]
    for k, (emotion, situation, turns) in enumerate(DIALOGUES):
        for i, turn in enumerate(turns, start=1):
            text = turn.replace(",", "_comma_")
            lines.append(f"hit:{k}_conv:{k},{i},{emotion},{situation},{i % 2},{text},,")
    for name in ("train.csv", "valid.csv", "test.csv"):
        (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return f"empathetic_dialogues:{folder}"


def write_dailydialog(folder) -> str:
    for split in ("train", "validation", "test"):
        (folder / split).mkdir(parents=True, exist_ok=True)
        text = "".join(" __eou__ ".join(turns) + " __eou__\n" for _, _, turns in DIALOGUES[:3])
        (folder / split / f"dialogues_{split}.txt").write_text(text, encoding="utf-8")
    return f"dailydialog:{folder}"


def make_identifiers(folder) -> str:
    from emprl.common.mechanisms import MECHANISMS
    from reward_models import EmpathyIdentifier

    bert = folder / "bert"
    tiny.make_tiny_bert(str(bert))
    for i, mech in enumerate(MECHANISMS):
        torch.manual_seed(i)
        EmpathyIdentifier.from_encoders(str(bert), head="linear", dropout=0.0).save_pretrained(folder / "ids" / mech)
    return str(folder / "ids")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    tiny.make_tiny_t5(str(root / "t5"))
    tiny.make_tiny_llama(str(root / "llama"))
    return {"root": root, "t5": str(root / "t5"), "llama": str(root / "llama"),
            "data": write_ed(root / "ed"), "identifiers": make_identifiers(root)}


def recipe(tmp_path, setup, systems, out, **extra) -> list[str]:
    import yaml

    values = {"systems": systems, "data": setup["data"], "identifiers_dir": setup["identifiers"],
              "output_dir": str(out), "seeds": [0, 1], "batch_size": 3, "max_new_tokens": 8,
              "identifier_max_context_len": 64, "num_examples_shown": 2,
              "relevance_encoder": str(setup["root"] / "bert")}
    values.update(extra)
    path = tmp_path / f"evaluate-{out.name}.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return [str(path)]


def test_two_systems_two_seeds_write_every_output(tmp_path, setup):
    out = tmp_path / "eval"
    systems = {"T5 (SFT)": setup["t5"], "Llama": setup["llama"]}
    report = main(recipe(tmp_path, setup, systems, out))

    results = json.loads((out / "results.json").read_text())
    assert list(results["systems"]) == ["T5 (SFT)", "Llama"]
    assert results["num_examples"] == 8 and results["data_kind"] == "empathetic_dialogues"
    for name in systems:
        res = results["systems"][name]
        assert set(res["per_seed"]) == {"0", "1"}
        assert res["ppl"] > 1 and res["ppl_tokens"] > 0
        for key in ("dist-1", "dist-2", "emp_f1", "r_emp", "length"):
            values = [res["per_seed"][s][key] for s in ("0", "1")]
            assert res["summary"][key]["mean"] == pytest.approx(sum(values) / 2)
            assert res["summary"][key]["n"] == 2
        assert 0 <= res["summary"]["emp_f1"]["mean"] <= 100
        assert all(0 < res["per_seed"][s]["r_emp"] <= 1 for s in ("0", "1"))
        assert "bleu-1" not in res["per_seed"]["0"]
    # Generations: one file per system and seed, in test order, with the references.
    rows = [json.loads(line) for line in (out / "generations" / "t5-sft" / "seed0.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and rows[0]["reference"] == "oh no i am so sorry to hear that"
    assert rows[0]["context"] == ["i lost my dog today"]
    assert (out / "generations" / "llama" / "seed1.jsonl").is_file()
    # The table: one row per system, paper reference block since the data is EmpatheticDialogues.
    md = (out / "results.md").read_text()
    assert "| System | PPL | Dist-1 | Dist-2 | Emp-F1 (reward) | R_emp | F_BERT | Length |" in md
    assert "| System | ER | IP | EX | Empty (%) | Length |" in md and "Paired differences" not in md
    assert "| T5 (SFT) | " in md and "| Llama | " in md and " ± " in md
    assert "65.70" in md and "69.43" in md and "not comparable" in md
    assert "BLEU-1" not in md
    examples = (out / "examples.md").read_text()
    assert examples.count("## Example") == 2 and "| T5 (SFT) |" in examples and "| Reference |" in examples
    stage = json.loads((out / "stage.json").read_text())
    assert stage["stage"] == "evaluate" and stage["complete"] is True and len(stage["recipe_hash"]) == 16
    assert report["systems"]["Llama"]["summary"]["length"]["mean"] >= 0

    # Same seed -> same generations (a second run with seed 0 only); another seed samples differently.
    again = tmp_path / "again"
    main(recipe(tmp_path, setup, {"T5 (SFT)": setup["t5"]}, again, seeds=[0]))
    first = (out / "generations" / "t5-sft" / "seed0.jsonl").read_text()
    assert (again / "generations" / "t5-sft" / "seed0.jsonl").read_text() == first
    assert (out / "generations" / "t5-sft" / "seed1.jsonl").read_text() != first
    # A finished evaluation with the same recipe and inputs is skipped.
    assert main(recipe(tmp_path, setup, {"T5 (SFT)": setup["t5"]}, again, seeds=[0])) is None


def test_ppl_is_corpus_level_token_perplexity(tmp_path, setup):
    from transformers import AutoTokenizer, T5ForConditionalGeneration

    from emprl.common.prompts import PromptBuilder
    from emprl.data import load_dialogues

    out = tmp_path / "ppl"
    main(recipe(tmp_path, setup, {"t5": setup["t5"]}, out, seeds=[0], batch_size=3, max_new_tokens=2))
    ppl = json.loads((out / "results.json").read_text())["systems"]["t5"]["ppl"]

    # Independently: one example at a time, unpadded, through the model's own loss.
    model = T5ForConditionalGeneration.from_pretrained(setup["t5"]).eval()
    tok = AutoTokenizer.from_pretrained(setup["t5"])
    builder = PromptBuilder(tok, True)
    rows = load_dialogues(setup["data"])["test"]
    nlls, counts = [], []
    with torch.no_grad():
        for row in rows:
            ids = torch.tensor([builder.encode(row["context"])])
            labels = torch.tensor([tok(text_target=row["response"], max_length=50, truncation=True)["input_ids"]])
            nlls.append(float(model(input_ids=ids, labels=labels).loss) * labels.shape[1])
            counts.append(labels.shape[1])
    assert len(set(counts)) > 1  # unequal lengths, so the two averages below differ
    assert ppl == pytest.approx(math.exp(sum(nlls) / sum(counts)), rel=1e-4)
    batch_means = [sum(nlls[i:i + 3]) / sum(counts[i:i + 3]) for i in range(0, len(nlls), 3)]
    assert abs(ppl - math.exp(sum(batch_means) / len(batch_means))) > 1e-3 * ppl


def test_dailydialog_adds_reference_metrics(tmp_path, setup):
    data = write_dailydialog(tmp_path / "dd")
    assert detect_data_kind(data) == "dailydialog"
    out = tmp_path / "dd-eval"
    main(recipe(tmp_path, setup, {"t5": setup["t5"]}, out, data=data, seeds=[3], max_examples=4,
                notes=["This run is too small to resolve the RL effect."]))
    results = json.loads((out / "results.json").read_text())
    assert results["notes"] == ["This run is too small to resolve the RL effect."]
    assert "**Note.** This run is too small to resolve the RL effect." in (out / "results.md").read_text()
    run = results["systems"]["t5"]["per_seed"]["3"]
    assert {"bleu-1", "bleu-2", "rouge-l"} <= set(run) and results["num_examples"] == 4
    assert results["paper_reference"] is None
    md = (out / "results.md").read_text()
    assert "| BLEU-1 | BLEU-2 | ROUGE-L |" in md and "paper's figures" not in md
    assert results["systems"]["t5"]["summary"]["bleu-1"]["ci95"] is None  # one seed: no interval


def test_external_generations_join_with_their_own_ppl(tmp_path, setup):
    out = tmp_path / "ext-base"
    main(recipe(tmp_path, setup, {"t5": setup["t5"]}, out, seeds=[0], max_examples=3))
    # An external system: its JSONL in another order, with a PPL taken from the recipe.
    rows = [json.loads(line) for line in (out / "generations" / "t5" / "seed0.jsonl").read_text().splitlines()]
    ext = tmp_path / "ext.jsonl"
    ext.write_text("".join(json.dumps({**r, "response": "i am sorry to hear that"}) + "\n" for r in rows[::-1]))
    out2 = tmp_path / "ext"
    main(recipe(tmp_path, setup, {"ETHREED": f"jsonl:{ext}"}, out2, seeds=[0, 1], max_examples=3,
                external_ppl={"ETHREED": 37.5}))
    res = json.loads((out2 / "results.json").read_text())["systems"]["ETHREED"]
    assert res["ppl"] == 37.5 and list(res["per_seed"]) == ["0"]  # one file: one run
    assert res["summary"]["length"]["mean"] == 6
    assert "| ETHREED | 37.50 |" in (out2 / "results.md").read_text()


def test_missing_system_exits_2_with_one_line(tmp_path, setup, capsys):
    argv = recipe(tmp_path, setup, {"T5 (SFT)": setup["t5"], "EmpRL (PPO)": str(tmp_path / "nope")}, tmp_path / "x")
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "EmpRL (PPO)" in err and "nope" in err
    assert not (tmp_path / "x").exists()


def test_one_identifier_pass_gives_the_rewards_levels_and_r_emp(setup):
    from emprl.evaluate.config import EvaluateConfig
    from emprl.evaluate.scoring import Scorer

    cfg = EvaluateConfig(systems={"x": setup["t5"]}, identifiers_dir=setup["identifiers"],
                         identifier_max_context_len=64, relevance_encoder=None)
    contexts = [turns for _, _, turns in DIALOGUES][:3]
    scorer = Scorer(cfg, "cpu", [c[:1] for c in contexts])
    responses = ["i am so sorry to hear that", "", "why do you feel that way ?"]
    gold = [[2, 0, 1], [0, 0, 0], [1, 2, 2]]
    levels, r_emp = scorer.levels_and_reward(responses, gold)
    assert levels == scorer.reward.levels(scorer.contexts, responses).tolist()
    assert r_emp == pytest.approx(scorer.reward(scorer.contexts, responses, gold).tolist(), rel=1e-5)


def test_k_samples_per_context_and_paired_differences(tmp_path, setup):
    out = tmp_path / "paired"
    systems = {"T5 (SFT)": setup["t5"], "Llama (RL)": setup["llama"]}
    paired = {"Llama (RL)": "T5 (SFT)", "T5 (SFT)": "T5 (SFT)"}  # the second: a system against itself
    main(recipe(tmp_path, setup, systems, out, samples_per_context=2, paired=paired, max_examples=5,
                paired_resamples=200))
    results = json.loads((out / "results.json").read_text())
    assert results["samples_per_context"] == 2

    # K samples of each context, in the same context order for every system and seed.
    orders = set()
    for slug in ("t5-sft", "llama-rl"):
        for seed in (0, 1):
            rows = [json.loads(line) for line in (out / "generations" / slug / f"seed{seed}.jsonl").read_text()
                    .splitlines()]
            assert len(rows) == 5 * 2 and [r["sample"] for r in rows] == [0, 1] * 5
            orders.add(tuple(r["conv_id"] + "|" + r["reference"] for r in rows))
    assert len(orders) == 1 and len(set(next(iter(orders)))) == 5

    pairs = {(p["system"], p["baseline"]): p for p in results["paired"]}
    same = pairs[("T5 (SFT)", "T5 (SFT)")]
    assert same["r_emp"]["delta"] == 0.0 and same["r_emp"]["p_value"] == 1.0
    assert same["r_emp"]["ci_low"] == same["r_emp"]["ci_high"] == 0.0
    assert same["emp_f1"]["delta"] == 0.0 and same["f_bert"]["delta"] == 0.0
    rl = pairs[("Llama (RL)", "T5 (SFT)")]
    assert rl["n_contexts"] == 5 and rl["samples_per_context"] == [2, 2] and rl["seeds"] == [2, 2]
    for key in ("r_emp", "emp_f1", "f_bert"):
        d = rl[key]
        assert d["ci_low"] <= d["delta"] <= d["ci_high"] and 0 <= d["p_value"] <= 1
        assert d["delta"] == pytest.approx(d["mean_a"] - d["mean_b"])
    # Every seed has the same number of responses, so the per-context means pool to the seed mean.
    for name, (a, b) in {"Llama (RL)": ("mean_a", "r_emp"), "T5 (SFT)": ("mean_b", "r_emp")}.items():
        assert rl[b][a] == pytest.approx(results["systems"][name]["summary"]["r_emp"]["mean"])
        assert len(results["systems"][name]["per_context"]["r_emp"]) == 5
    assert rl["f_bert"]["mean_a"] == pytest.approx(results["systems"]["Llama (RL)"]["summary"]["f_bert"]["mean"])

    md = (out / "results.md").read_text()
    assert "## Paired differences against the SFT policy" in md
    assert "| Llama (RL) | T5 (SFT) | 5 | 2 × 2 | " in md and "Wilcoxon" in md
    assert "| T5 (SFT) | T5 (SFT) | 5 | 2 × 2 | +0.000 [+0.000, +0.000] | 1.000 |" in md


def test_paired_names_must_be_systems(tmp_path, setup, capsys):
    argv = recipe(tmp_path, setup, {"T5": setup["t5"]}, tmp_path / "y", paired={"T5": "SFT"})
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "paired" in err and "'SFT'" in err




def test_paper_table_prints_the_rows_of_the_chosen_table():
    from emprl.evaluate.report import paper_reference, results_markdown

    report = {"data": "dailydialog:x", "split": "test", "num_examples": 1, "seeds": [0], "runtime_s": 1.0,
              "decoding": {"top_k": 20, "top_p": 1.0, "temperature": 0.9, "max_new_tokens": 30, "do_sample": True},
              "reference_metrics": False, "systems": {}, "paper_reference": paper_reference("dailydialog")}
    md = results_markdown(report)
    assert "| System (paper) | BLEU-1 | BLEU-2 | ROUGE-L |" in md and "| Llama3 | 31.49 | 19.78 | 12.28 |" in md
    assert "Table VII" in md and "case-sensitive NLTK" in md
    report["paper_reference"] = paper_reference("pec")
    md = results_markdown(report)
    assert "| EmpRL | 20.25 | 4.96 | 28.43 | 72.73 |" in md and "31.49" not in md


# -- independent judges, true levels and the per-sample files ------------------------------------------------


def write_true_levels(folder) -> None:
    """Sidecars as the demo composer writes them: one row per listener reply, (conv_id, utterance_idx)."""
    lines = ["conv_id,utterance_idx,emotional_reactions,interpretations,explorations"]
    for k, (_, _, turns) in enumerate(DIALOGUES):
        lines += [f"hit:{k}_conv:{k},{i},{k % 3},{(k + i) % 3},{i % 3}" for i in range(2, len(turns) + 1, 2)]
    for name in ("train", "valid", "test"):
        (folder / f"{name}_levels.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_judges_grade_against_the_true_levels_and_samples_are_written(tmp_path, setup):
    import yaml

    from emprl.evaluate.judges import PhraseBankJudge
    from emprl.label import main as label_main

    ed = tmp_path / "ed"
    data = write_ed(ed)
    write_true_levels(ed)
    recipe_path = tmp_path / "label.yaml"
    recipe_path.write_text(yaml.safe_dump({"data": data, "identifiers_dir": setup["identifiers"],
                                           "output_dir": str(tmp_path / "labelled"), "max_context_len": 64}))
    label_main([str(recipe_path)])
    # gold vs true levels: written by the stage, and recomputed from the folder with no model loaded
    from emprl.data import load_dialogues

    stats = json.loads((tmp_path / "labelled" / "label_stats.json").read_text())["gold_vs_true"]
    test_split = load_dialogues(f"disk:{tmp_path / 'labelled'}")["test"]
    er = stats["test"]["emotional_reactions"]
    assert er["accuracy"] == pytest.approx(np.mean(np.array(test_split["emotional_reactions"]) ==
                                                   np.array(test_split["true_emotional_reactions"])))
    assert sum(map(sum, er["confusion"])) == len(test_split) and 0 <= stats["test"]["joint_accuracy"] <= 1
    assert label_main(["--agreement", str(tmp_path / "labelled")]) == stats
    with pytest.raises(UserError, match="not a labelled folder"):
        label_main(["--agreement", str(tmp_path)])
    phrases = tmp_path / "phrases.json"
    phrases.write_text(json.dumps({"format": "emprl-phrasebank-1", "patterns": {
        "emotional_reactions": {"1": [r"(?<!\w)sorry(?!\w)"], "2": [r"so sorry"]},
        "interpretations": {"1": [r"i understand"], "2": [r"must be"]},
        "explorations": {"1": [r"\?"], "2": [r"how do you feel"]}}}))
    assert PhraseBankJudge(str(phrases)).level("Oh no, I am SO sorry .  How do you feel?") == [2, 0, 2]

    out = tmp_path / "judged"
    systems = {"T5 (SFT)": setup["t5"], "Llama (RL)": setup["llama"]}
    main(recipe(tmp_path, setup, systems, out, data=f"disk:{tmp_path / 'labelled'}", samples_per_context=2,
                seeds=[0, 1], max_examples=6, paired={"Llama (RL)": "T5 (SFT)"}, paired_resamples=100,
                judges={"oracle": f"phrasebank:{phrases}", "ids": setup["identifiers"]}))
    results = json.loads((out / "results.json").read_text())
    assert results["judges"]["reference"].startswith("true levels")
    assert results["reward_identifiers"] == setup["identifiers"]
    contexts = [json.loads(line) for line in (out / "contexts.jsonl").read_text().splitlines()]
    assert [c["context"] for c in contexts] == list(range(6))
    assert contexts[0]["conv_id"] == "hit:0_conv:0" and contexts[0]["true"] == [0, 2, 2]
    assert contexts[1]["true"] == [0, 1, 1] and all(len(c["gold"]) == 3 for c in contexts)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 2 * 2 * 6 * 2  # systems x seeds x contexts x K
    first = samples[0]
    assert set(first) == {"system", "seed", "context", "sample", "r_emp", "f_bert", "words", "empty", "levels",
                          "judges"}
    assert first["system"] == "T5 (SFT)" and (first["seed"], first["context"], first["sample"]) == (0, 0, 0)
    assert isinstance(first["f_bert"], float) and set(first["judges"]) == {"oracle", "ids"}
    judge = PhraseBankJudge(str(phrases))
    gens = [json.loads(line) for line in (out / "generations" / "t5-sft" / "seed0.jsonl").read_text().splitlines()]
    for sample, gen in zip(samples, gens):  # the oracle's levels are those of the generated reply
        assert sample["judges"]["oracle"] == judge.level(gen["response"])
        assert sample["words"] == len(gen["response"].split()) and sample["empty"] == (not gen["response"].strip())
    # Per-seed judge metrics against the true levels, recomputed from the samples.
    from emprl.evaluate.scoring import judge_metrics
    from emprl.metrics import level_confusion

    true = {c["context"]: c["true"] for c in contexts}
    rows = [s for s in samples if s["system"] == "Llama (RL)" and s["seed"] == 1]
    expect = judge_metrics(level_confusion([s["judges"]["ids"] for s in rows], [true[s["context"]] for s in rows]))
    got = results["systems"]["Llama (RL)"]["judges"]["ids"]["per_seed"]["1"]
    assert got["emp_f1"] == pytest.approx(expect["emp_f1"]) and got["accuracy"] == pytest.approx(expect["accuracy"])
    paired = results["paired"][0]["judges"]
    assert set(paired) == {"oracle", "ids"}
    for d in paired["oracle"].values():
        assert d["ci_low"] <= d["delta"] <= d["ci_high"] and d["delta"] == pytest.approx(d["mean_a"] - d["mean_b"])
    md = (out / "results.md").read_text()
    assert "| Emp-F1 [oracle] | Acc [oracle] | Emp-F1 [ids] | Acc [ids] |" in md
    assert "Paired differences under the independent judges" in md and "| Llama (RL) | T5 (SFT) | oracle |" in md
    assert f"(`{setup['identifiers']}`), the ones that trained the RL policies" in md


def test_true_levels_columns_required_and_bad_judges_exit_2(tmp_path, setup, capsys):
    argv = recipe(tmp_path, setup, {"T5": setup["t5"]}, tmp_path / "z", judges={"oracle": "phrasebank:/nope.json"})
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2 and "oracle" in capsys.readouterr().err and not (tmp_path / "z").exists()
    argv = recipe(tmp_path, setup, {"T5": setup["t5"]}, tmp_path / "w", true_levels="columns", max_examples=2,
                  judges={"ids": setup["identifiers"]})
    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    assert exc.value.code == 2 and "true_levels" in capsys.readouterr().err

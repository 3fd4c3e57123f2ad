"""The oracle judge of the composed demo corpus and the true levels the label stage carries."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

import emprl
from emprl.common.errors import UserError
from emprl.data import load_dialogues
from emprl.evaluate.judges import PhraseBankJudge, load_judge
from emprl.label import TRUE_COLUMNS, attach_true_levels

DEMO = Path(emprl.__file__).parent / "demo_data"
LARGE = str(DEMO / "empathetic_dialogues_large")
PHRASES = f"{LARGE}/judge_phrases.json"


def _true_table(name: str) -> dict:
    with open(f"{LARGE}/{name}_levels.csv", encoding="utf-8") as fh:
        return {(r["conv_id"], int(r["utterance_idx"])): [int(r[m[len("true_"):]]) for m in TRUE_COLUMNS]
                for r in csv.DictReader(fh)}


def test_oracle_recovers_the_composed_levels_of_the_test_references():
    test = attach_true_levels(load_dialogues(f"empathetic_dialogues:{LARGE}", splits=("test",))["test"],
                              f"empathetic_dialogues:{LARGE}", "test")
    judge = load_judge("oracle", f"phrasebank:{PHRASES}")
    judged = judge.levels(test["context"], test["response"])
    true = list(zip(*(test[c] for c in TRUE_COLUMNS)))
    assert len(true) > 1100
    for m in range(3):  # measured: 1.000 for every mechanism on the test, validation and training references
        agreement = sum(j[m] == t[m] for j, t in zip(judged, true)) / len(true)
        assert agreement >= 0.99, (TRUE_COLUMNS[m], agreement)


def test_oracle_reads_a_hand_written_reply():
    judge = PhraseBankJudge(PHRASES)
    # ER 2 (a strong fragment with its event slot), IP 1 ("I get it."), no question: EX 0; lower case and a
    # missing final full stop are how the composer writes some replies.
    reply = "oh friend, i'm really sad to hear about losing your job. i get it. update your resume tonight"
    assert judge.level(reply) == [2, 1, 0]
    assert judge.level("Do you want to talk about it ?") == [0, 0, 1]  # spaced punctuation from a tokenizer
    assert judge.level("Update your resume and file for unemployment.") == [0, 0, 0]
    assert judge.level("") == [0, 0, 0]


def test_bad_phrase_bank_is_a_user_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(UserError, match="emprl-phrasebank-1"):
        PhraseBankJudge(str(bad))
    with pytest.raises(UserError, match="does not exist"):
        load_judge("oracle", f"phrasebank:{tmp_path / 'none.json'}")


def test_label_attaches_true_levels_only_where_a_sidecar_exists(tmp_path):
    spec = f"empathetic_dialogues:{LARGE}"
    valid = load_dialogues(spec, splits=("validation",))["validation"]
    out = attach_true_levels(valid, spec, "validation")
    table = _true_table("valid")
    for row in out.select(range(50)):
        assert [row[c] for c in TRUE_COLUMNS] == table[(row["conv_id"], len(row["context"]) + 1)]
    # Real data has no sidecar: nothing is added.
    demo = str(DEMO / "empathetic_dialogues")
    small = load_dialogues(f"empathetic_dialogues:{demo}", splits=("test",))["test"]
    assert attach_true_levels(small, f"empathetic_dialogues:{demo}", "test").column_names == small.column_names


def test_a_sidecar_that_does_not_match_is_one_line(tmp_path):
    folder = tmp_path / "ed"
    folder.mkdir()
    lines = open(f"{LARGE}/test.csv", encoding="utf-8").read().splitlines()[:9]
    (folder / "test.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = f"empathetic_dialogues:{folder}"
    split = load_dialogues(spec, splits=("test",))["test"]
    rows = open(f"{LARGE}/test_levels.csv", encoding="utf-8").read().splitlines()
    (folder / "test_levels.csv").write_text("\n".join(rows[:2]) + "\n", encoding="utf-8")
    with pytest.raises(UserError, match="no row for the reply conv_id") as err:
        attach_true_levels(split, spec, "test")
    assert "\n" not in str(err.value)
    (folder / "test_levels.csv").write_text("\n".join(rows[:len(split) + 1] + ["hit:x_conv:1,2,0,0,0"]) + "\n")
    with pytest.raises(UserError, match="matches no reply"):
        attach_true_levels(split, spec, "test")
    assert attach_true_levels(split, spec, "test", strict=False).column_names[-3:] == list(TRUE_COLUMNS)
    (folder / "test_levels.csv").write_text(rows[0] + "\nhit:1_conv:2,2,0,3,1\n")
    with pytest.raises(UserError, match="test_levels.csv:2"):
        attach_true_levels(split, spec, "test")


def test_pair_halves_are_disjoint_and_shared_by_the_mechanisms():
    from emprl.data import load_epitome
    from emprl.identifiers import IdentifiersConfig, pair_half
    from emprl.pipeline.config import parse_recipe

    (cfg,) = parse_recipe((IdentifiersConfig,), ["recipes/demo/identifiers_judge.yaml"])
    assert cfg.pair_half == "second" and cfg.seed != 42  # the reward's identifiers: seed 42, all pairs
    epitome = str(DEMO / "epitome")

    def pairs(splits):
        return {m: {(r["seeker_post"], r["response_post"]) for part in d.values() for r in part}
                for m, d in splits.items()}

    first = pairs(pair_half(load_epitome(epitome, seed=42), "first", 0))
    second = pairs(pair_half(load_epitome(epitome, seed=cfg.seed), "second", cfg.pair_half_seed))
    every = pairs(load_epitome(epitome))
    for m in every:
        assert not first[m] & second[m] and first[m] | second[m] == every[m]
        assert abs(len(first[m]) - len(second[m])) <= 1 and first[m] == first["emotional_reactions"]

"""Human evaluation kit: statistics by hand, and the export -> fill -> score round trip."""

import csv
import json
import math

import pytest

from emprl.common.errors import UserError, run_cli
from emprl.human_eval import run as human_eval
from emprl.human_eval import sheets
from emprl.human_eval.run import fleiss_kappa, sign_test

SYSTEMS = ("EmpRL", "T5", "MoEL")


def test_fleiss_kappa_hand_computed():
    # 3 items, 3 raters, 2 categories. Per-item agreement P_i = (sum n_ij^2 - 3) / 6: 1, 1, (4+1-3)/6 = 1/3,
    # so P_bar = 7/9. Category shares p = (5/9, 4/9), P_e = 25/81 + 16/81 = 41/81.
    # kappa = (63/81 - 41/81) / (40/81) = 22/40 = 0.55.
    assert fleiss_kappa([[3, 0], [0, 3], [2, 1]]) == pytest.approx(0.55)
    # Two raters who always split on two items: P_bar = 0, P_e = 1/2 -> kappa = -1.
    assert fleiss_kappa([[1, 1], [1, 1]]) == pytest.approx(-1.0)
    assert fleiss_kappa([[0, 2, 0], [2, 0, 0], [0, 0, 2]]) == pytest.approx(1.0)
    assert math.isnan(fleiss_kappa([[3, 0], [3, 0]]))  # chance agreement already perfect
    with pytest.raises(ValueError):
        fleiss_kappa([[2, 0], [1, 0]])  # unequal rater counts


def test_sign_test_exact_binomial():
    # 9 wins, 1 loss: P(X <= 1) = (1 + 10) / 1024, doubled -> 22/1024.
    assert sign_test(9, 1) == pytest.approx(22 / 1024)
    assert sign_test(10, 0) == pytest.approx(2 / 1024)
    assert sign_test(5, 5) == pytest.approx(1.0)
    assert math.isnan(sign_test(0, 0))


def _write_generations(tmp_path, n_rows=12):
    paths = {}
    for s, name in enumerate(SYSTEMS):
        path = tmp_path / f"{name.lower()}.jsonl"
        with path.open("w") as f:
            for i in range(n_rows):
                # Two-turn contexts: every context cell spans two CSV lines.
                row = {
                    "context": [f"I lost my keys again {i}.", f"Oh no, where? {i}"],
                    "reference": f"ref {i}",
                    "response": f"reply number {i} of kind {s}",
                }
                f.write(json.dumps(row) + "\n")
        paths[name] = str(path)
    return paths


def _read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _write_rows(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_export_fill_score_round_trip(tmp_path):
    gens = _write_generations(tmp_path)
    out = tmp_path / "kit"
    run_cli(
        human_eval.main,
        [
            "export",
            "--generations",
            *[f"{k}={v}" for k, v in gens.items()],
            "--n",
            "10",
            "--seed",
            "3",
            "--out",
            str(out),
        ],
    )
    key = json.loads((out / "key.json").read_text())
    ratings, ab = _read_rows(out / "ratings.csv"), _read_rows(out / "ab.csv")
    assert len(ratings) == 30 and len(ab) == 20 and len(set(key["rows"])) == 10
    text = (out / "ratings.csv").read_text() + (out / "ab.csv").read_text()
    assert not any(name in text for name in SYSTEMS)  # blind
    assert all(r[a] == "" for r in ratings for a in sheets.ASPECTS) and all(r["choice"] == "" for r in ab)
    # Each response sits next to its own context, and the A/B order really varies.
    for r in ratings:
        row = key["ratings"][r["item_id"]]["row"]
        assert r["context"] == f"Listener: I lost my keys again {row}.\nSpeaker: Oh no, where? {row}"
        assert r["response"].startswith(f"reply number {row} ")
    assert {v["a"] == "EmpRL" for v in key["ab"].values()} == {True, False}

    # Same seed, same kit.
    again = tmp_path / "kit2"
    sheets.export(gens, 10, 3, str(again))
    assert (again / "ratings.csv").read_text() == (out / "ratings.csv").read_text()

    # Three annotators. EmpRL always rated 5/4/5 and preferred; the others 2/3/4 (annotator 3 says 3 for
    # T5's empathy). Annotator 3 calls every A/B against MoEL a tie.
    rating_files, ab_files = [], []
    for k in range(3):
        filled = []
        for r in ratings:
            system = key["ratings"][r["item_id"]]["system"]
            scores = (5, 4, 5) if system == "EmpRL" else (3 if (k == 2 and system == "T5") else 2, 3, 4)
            filled.append({**r, **dict(zip(sheets.ASPECTS, map(str, scores)))})
        path = tmp_path / f"ratings_{k}.csv"
        _write_rows(path, filled[::-1])  # annotators may reorder rows
        rating_files.append(str(path))
        filled = []
        for r in ab:
            entry = key["ab"][r["item_id"]]
            choice = (
                "tie"
                if (k == 2 and entry["other"] == "MoEL")
                else ("win" if entry["a"] == "EmpRL" else "lose")
            )
            filled.append({**r, "choice": choice})
        path = tmp_path / f"ab_{k}.csv"
        _write_rows(path, filled)
        ab_files.append(str(path))

    report_path = tmp_path / "report" / "report.md"
    run_cli(
        human_eval.main,
        [
            "score",
            "--key",
            str(out / "key.json"),
            "--ratings",
            *rating_files,
            "--ab",
            *ab_files,
            "--out",
            str(report_path),
        ],
    )
    report = json.loads(report_path.with_suffix(".json").read_text())

    emp = report["ratings"]["EmpRL"]
    assert emp["empathy"] == {"mean": 5.0, "ci95": 0.0, "n_items": 10}
    # T5 empathy per item: (2 + 2 + 3) / 3 on every item.
    assert report["ratings"]["T5"]["empathy"]["mean"] == pytest.approx(7 / 3)
    assert report["ratings"]["MoEL"]["fluency"]["mean"] == 4.0
    # Empathy kappa over 30 items x 3 raters: EmpRL items [0,0,0,0,3] (P_i 1), MoEL [0,3,0,0,0] (1),
    # T5 [0,2,1,0,0] (1/3) -> P_bar = 7/9; shares p2 = 50/90, p3 = 10/90, p5 = 30/90
    # -> P_e = (2500 + 100 + 900) / 8100 = 35/81; kappa = (63 - 35) / (81 - 35) = 28/46.
    assert report["ratings_kappa"]["empathy"] == pytest.approx(28 / 46)
    assert report["ratings_kappa"]["fluency"] == pytest.approx(1.0)  # all annotators agree, 5 vs 4

    t5, moel = report["ab"]["T5"], report["ab"]["MoEL"]
    assert (t5["win"], t5["lose"], t5["tie"]) == (100.0, 0.0, 0.0)
    assert t5["items"] == {"win": 10, "lose": 0, "tie": 0}
    assert t5["sign_test_p"] == pytest.approx(2 / 1024)
    assert (
        moel["win"] == pytest.approx(200 / 3) and moel["tie"] == pytest.approx(100 / 3) and moel["lose"] == 0
    )
    assert moel["items"]["win"] == 10 and moel["sign_test_p"] == pytest.approx(2 / 1024)
    # MoEL A/B kappa on the raw answers: each item has 2 x (win or lose) + 1 tie, P_i = 1/3.
    # With a items where EmpRL is A: shares win 2a/30, lose (20 - 2a)/30, tie 10/30.
    a = sum(v["a"] == "EmpRL" for v in key["ab"].values() if v["other"] == "MoEL")
    p_e = ((2 * a) ** 2 + (20 - 2 * a) ** 2 + 10**2) / 900
    assert moel["kappa"] == pytest.approx((1 / 3 - p_e) / (1 - p_e))

    md = report_path.read_text()
    assert "| EmpRL | 5.00 ± 0.00 | 4.00 ± 0.00 | 5.00 ± 0.00 |" in md
    assert "| EmpRL vs T5 | 100.0 | 0.0 | 0.0 |" in md

    # A bad cell is reported with file and the line where its record starts: every context cell holds
    # one newline, so record k (0-based) starts on line 2 + 2k.
    bad = _read_rows(rating_files[0])
    bad[4]["empathy"] = "7"
    _write_rows(rating_files[0], bad)
    with pytest.raises(UserError, match=rf"ratings_0\.csv:10: empathy of item {bad[4]['item_id']} is '7'"):
        human_eval.score(str(out / "key.json"), rating_files, [], str(tmp_path / "r2.md"))
    assert not (tmp_path / "r2.md").exists() and not (tmp_path / "r2.json").exists()

    bad[4]["empathy"] = "4.0"  # a spreadsheet's float spelling of an integer is accepted
    _write_rows(rating_files[0], bad[:-1])
    with pytest.raises(UserError, match="1 item\\(s\\) missing"):
        human_eval.score(str(out / "key.json"), rating_files, [], str(tmp_path / "r2.md"))

    wrong = _read_rows(ab_files[1])
    wrong[0]["choice"] = "A"
    _write_rows(ab_files[1], wrong)
    with pytest.raises(UserError, match=r"ab_1\.csv:2: choice .* expected win, lose or tie"):
        human_eval.score(str(out / "key.json"), [], ab_files, str(tmp_path / "r2.md"))


def test_export_rejects_bad_inputs(tmp_path, capsys):
    gens = _write_generations(tmp_path, n_rows=4)
    lines = open(gens["T5"]).read().splitlines()
    lines[2] = lines[2].replace("keys again 2", "wallet")
    open(gens["T5"], "w").write("\n".join(lines) + "\n")
    with pytest.raises(UserError, match=r"t5\.jsonl:3: context differs"):
        sheets.export(gens, 2, 0, str(tmp_path / "kit"))

    open(gens["T5"], "w").write(lines[0] + "\n{not json\n")
    with pytest.raises(UserError, match=r"t5\.jsonl:2: not valid JSON"):
        sheets.export(gens, 2, 0, str(tmp_path / "kit"))

    del gens["T5"]
    with pytest.raises(UserError, match="only 4 contexts"):
        sheets.export(gens, 5, 0, str(tmp_path / "kit"))
    assert not (tmp_path / "kit").exists()

    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "key.json").write_text("{}")
    with pytest.raises(UserError, match="already exists"):
        sheets.export(gens, 2, 0, str(tmp_path / "kit"))

    # Through the CLI wrapper: one stderr line and exit code 2.
    with pytest.raises(SystemExit) as exc:
        run_cli(human_eval.main, ["export", "--generations", "EmpRL", "--out", str(tmp_path / "k3")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert (
        err.startswith("emprl: error: --generations 'EmpRL': expected NAME=path.jsonl")
        and err.count("\n") == 1
    )

"""The web page's models without a browser: answer logs read by `human_eval score` as filled sheets,
two tabs on one rater, bad sheets and folders, the compare rounds, and `emprl serve`'s one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import socket

import app_world
import pytest

from emprl.app.compare import Comparer, Dialogue, Example, Graders, check_policy_folder, find_policies
from emprl.app.rating import Owners, RatingSession, load_sheet
from emprl.common.errors import UserError, run_cli
from emprl.common.policy import GenerationSettings
from emprl.human_eval.answers import StaleLog, read_log
from emprl.human_eval.run import score


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    return app_world.make_world(tmp_path_factory.mktemp("app"))


@pytest.fixture
def sheet(world, tmp_path):
    """A fresh copy of the exported sheet (each test writes its own answers)."""
    folder = tmp_path / "kit"
    shutil.copytree(world["sheet"], folder)
    return str(folder)


def answers_for(session: RatingSession) -> list[dict]:
    """Answers that differ from item to item (so kappa and the sign test have something to count)."""
    out = []
    for i, item in enumerate(session.sheet.items):
        if item.kind == "ratings":
            out.append({"empathy": 1 + i % 5, "relevance": 1 + (i * 2) % 5, "fluency": 1 + (i * 3) % 5})
        else:
            out.append({"choice": ("win", "lose", "win", "tie")[i % 4]})
    return out


def fill_copy(folder: str, name: str, answers: dict[str, dict], out: str) -> None:
    """A filled copy of ``name`` (ratings.csv / ab.csv) with ``answers`` by item id, as a rater would."""
    with open(os.path.join(folder, name), newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for row in rows:
        row.update({k: str(v) for k, v in answers[row["item_id"]].items()})
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def test_score_gives_the_same_report_for_answer_logs_and_filled_sheets(sheet, tmp_path):
    owners, logs, copies = Owners(), [], {"ratings": [], "ab": []}
    for r, rater in enumerate(("ann", "bob", "cy")):
        session = RatingSession(load_sheet(sheet), rater, owners)
        by_id = {}
        for i, values in enumerate(answers_for(session)):
            if r == 1:  # the second rater disagrees on some items
                values = {k: (v % 5) + 1 if isinstance(v, int) else ("lose" if v == "win" else v)
                          for k, v in values.items()} if i % 3 == 0 else values
            session.save(i, values)
            by_id[session.sheet.items[i].item_id] = values
        logs.append(session.log.path)
        for kind, name in (("ratings", "ratings.csv"), ("ab", "ab.csv")):
            out = str(tmp_path / f"{rater}-{name}")
            fill_copy(sheet, name, {k: v for k, v in by_id.items() if k.startswith("R" if kind == "ratings" else "AB")},
                      out)
            copies[kind].append(out)
    key = os.path.join(sheet, "key.json")
    from_logs = score(key, logs, logs, str(tmp_path / "logs.md"))
    from_sheets = score(key, copies["ratings"], copies["ab"], str(tmp_path / "sheets.md"))
    for report in (from_logs, from_sheets):
        del report["ratings_files"], report["ab_files"]
    assert from_logs == from_sheets
    assert from_logs["ratings_kappa"]["empathy"] is not None  # the statistics were computed, not skipped
    assert any(row["sign_test_p"] is not None for row in from_logs["ab"].values())
    assert (tmp_path / "logs.md").read_text().replace("logs", "x") == (tmp_path / "sheets.md").read_text().replace(
        "sheets", "x")


def test_answers_are_appended_and_the_last_one_counts(sheet):
    session = RatingSession(load_sheet(sheet), "ann", Owners())
    session.save(0, {"empathy": "4", "relevance": "3", "fluency": "5"})
    session.save(0, {"empathy": "4", "relevance": "3", "fluency": "5"})  # unchanged: not written again
    session.save(1, {"empathy": "1", "relevance": "1", "fluency": "1"})
    session.save(0, {"empathy": "2", "relevance": "3", "fluency": "5"})  # back, changed
    header, entries = read_log(session.log.path)
    assert header["rater"] == "ann" and [e["item_id"] for _, e in entries] == ["R0001", "R0002", "R0001"]
    again = RatingSession(load_sheet(sheet), "ann", Owners())  # e.g. after a restart
    assert again.answer(0)["empathy"] == "2" and again.first_unrated() == 2
    with pytest.raises(UserError, match="choose fluency"):
        again.save(2, {"empathy": "3", "relevance": "3", "fluency": None})
    with pytest.raises(UserError, match="choose choice"):
        again.save(len(again.sheet.items) - 1, {"choice": "maybe"})
    assert len(read_log(session.log.path)[1]) == 3


def test_a_second_tab_takes_over_and_the_first_saves_nothing(sheet):
    owners = Owners()
    first = RatingSession(load_sheet(sheet), "ann", owners)
    first.save(0, {"empathy": "4", "relevance": "4", "fluency": "4"})
    second = RatingSession(load_sheet(sheet), "ann", owners)
    assert second.replaced is not None and second.first_unrated() == 1
    with pytest.raises(UserError, match="opened in another tab"):
        first.save(1, {"empathy": "1", "relevance": "1", "fluency": "1"})
    second.save(1, {"empathy": "5", "relevance": "5", "fluency": "5"})
    assert [e["empathy"] for _, e in read_log(first.log.path)[1]] == ["4", "5"]


def test_a_writer_that_missed_answers_is_refused(sheet):
    """Two servers (or processes) on one log: the one that has not seen the other's answer must reload."""
    a = RatingSession(load_sheet(sheet), "ann", Owners())
    b = RatingSession(load_sheet(sheet), "ann", Owners())
    a.save(0, {"empathy": "4", "relevance": "4", "fluency": "4"})
    with pytest.raises(StaleLog):
        b.save(0, {"empathy": "1", "relevance": "1", "fluency": "1"})
    assert len(read_log(a.log.path)[1]) == 1
    b.reload()
    b.save(1, {"empathy": "1", "relevance": "1", "fluency": "1"})
    assert len(read_log(a.log.path)[1]) == 2


def test_bad_sheets_are_one_line_naming_the_place(sheet, tmp_path):
    ratings = os.path.join(sheet, "ratings.csv")
    text = open(ratings, encoding="utf-8").read()
    with open(ratings, "w", encoding="utf-8") as fh:
        fh.write(text.replace("item_id", "id", 1))
    with pytest.raises(UserError, match=r"ratings.csv:1: header .* neither|lacks column"):
        load_sheet(ratings)
    with open(ratings, "w", encoding="utf-8") as fh:
        fh.write(text.replace("R0002", "R9999"))
    with pytest.raises(UserError, match=r"ratings.csv:\d+: unknown item_id 'R9999'"):
        load_sheet(sheet)
    with pytest.raises(UserError, match="no ratings.csv or ab.csv"):
        load_sheet(str(tmp_path))
    with pytest.raises(UserError, match="rater name"):
        RatingSession(load_sheet(os.path.join(sheet, "ab.csv")), "../x", Owners())


def test_a_log_of_another_sheet_is_refused_and_kept(sheet):
    session = RatingSession(load_sheet(os.path.join(sheet, "ab.csv")), "ann", Owners())
    session.save(0, {"choice": "win"})
    before = open(session.log.path, encoding="utf-8").read()
    with pytest.raises(UserError, match="another sheet"):
        RatingSession(load_sheet(sheet), "ann", Owners())  # same folder, other items: same log name
    assert open(session.log.path, encoding="utf-8").read() == before


def test_policy_folders_are_checked(world, tmp_path):
    assert check_policy_folder(world["t5_ppo"]) == "ppo"
    assert find_policies(world["root"]) == [world["ethreed"], world["llama_sft"], world["t5_ppo"], world["t5_sft"]]
    assert check_policy_folder(world["ethreed"]) == "ethreed"
    with pytest.raises(UserError, match="not a stage output"):
        check_policy_folder(str(tmp_path))
    with pytest.raises(UserError, match="stage 'identifiers', not a dialogue policy"):
        check_policy_folder(world["identifiers"])


def test_two_policies_answer_a_test_context_then_a_free_turn(world):
    from emprl.evaluate.judges import IdentifiersJudge

    graders = Graders(IdentifiersJudge(world["identifiers"]), None)
    comparer = Comparer(graders)
    start = Example("1. test", ["i lost my job today", "oh no", "i feel sad"], "i am so sorry")
    dialogue = Dialogue([world["t5_sft"], world["llama_sft"]], start=start)
    settings = GenerationSettings(max_new_tokens=6, seed=3)
    dialogue.rounds.append(comparer.play(dialogue, None, settings))
    first = dialogue.rounds[0]
    assert start.gold is not None and len(start.gold) == 3  # the identifiers' levels on the reference
    for folder in dialogue.policies:
        grade = first.grades[folder]
        assert len(grade["levels"]) == 3 and 0 < grade["r_emp"] <= 1
    assert first.settings["seed"] == 3 and first.settings["max_new_tokens"] == 6
    dialogue.rounds.append(comparer.play(dialogue, "it was my dream job", settings))
    second = dialogue.rounds[1]
    assert all(second.grades[f]["r_emp"] is None for f in dialogue.policies)  # no reference for a free turn
    history, reply = dialogue.history(world["t5_sft"]), first.replies[world["t5_sft"]]
    assert history[:2] == start.turns[:2]
    if reply:  # the policy's own reply, then the speaker's new turn
        assert history[2:5] == ["i feel sad", reply, "it was my dream job"]
    else:  # no reply: the new turn joins the unanswered one, so roles keep alternating
        assert history[2] == "i feel sad it was my dream job"
    again = comparer.play(Dialogue(dialogue.policies, start=start), None, settings)
    assert again.replies == first.replies  # the same seed, the same replies


def test_ethreed_answers_beside_a_generator(world):
    comparer = Comparer(Graders())
    dialogue = Dialogue([world["ethreed"], world["t5_sft"]])
    settings = GenerationSettings(max_new_tokens=5, seed=0)
    first = comparer.play(dialogue, "i lost my dog today", settings)
    assert set(first.replies) == {world["ethreed"], world["t5_sft"]}
    assert all(isinstance(r, str) for r in first.replies.values())
    assert len(first.replies[world["ethreed"]].split()) <= 5
    assert first.grades[world["ethreed"]] == {"levels": None, "r_emp": None, "oracle": None}  # no graders
    assert comparer.play(Dialogue(dialogue.policies), "i lost my dog today", settings).replies == first.replies


def _serve(argv, capsys) -> tuple[int, str]:
    from emprl.app.server import main

    with pytest.raises(SystemExit) as exc:
        run_cli(main, argv)
    return exc.value.code, capsys.readouterr().err


def test_serve_errors_are_one_line_exit_2(world, tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        code, err = _serve(["--outputs", world["root"], "--port", str(port)], capsys)
        assert code == 2 and err.count("\n") == 1 and f"127.0.0.1:{port} is in use" in err
    code, err = _serve(["--outputs", world["root"], "--port", "0", "--policies", str(tmp_path)], capsys)
    assert code == 2 and err.startswith("emprl: error: ") and "not a stage output" in err
    bad = tmp_path / "ratings.csv"
    bad.write_text("id,text\nR1,hello\n", encoding="utf-8")
    code, err = _serve(["--outputs", world["root"], "--port", "0", "--sheet", str(bad)], capsys)
    assert code == 2 and "ratings.csv:1: header" in err


def test_emprl_serve_is_a_command_of_emprl(capsys):
    from emprl.pipeline.cli import main

    with pytest.raises(UserError, match="--port"):
        main(["serve", "--port", "x"])
    main(["--help"])
    assert "emprl serve" in capsys.readouterr().out


def test_answer_log_lines_are_json_objects_with_the_sheet_kind(sheet):
    session = RatingSession(load_sheet(sheet), "ann", Owners())
    last = len(session.sheet.items) - 1
    session.save(last, {"choice": "tie"})
    lines = open(session.log.path, encoding="utf-8").read().splitlines()
    assert json.loads(lines[0])["format"] == "emprl-answers-1"
    assert {k: json.loads(lines[1])[k] for k in ("item_id", "sheet", "choice")} == \
        {"item_id": session.sheet.items[last].item_id, "sheet": "ab", "choice": "tie"}


def test_the_oracle_is_found_beside_the_data_a_labelled_folder_was_made_from(tmp_path):
    from emprl.app.server import source_folder

    labelled = tmp_path / "labelled"
    labelled.mkdir()
    (labelled / "README.md").write_text('# labels\ndata: "empathetic_dialogues:data/ed"\n', encoding="utf-8")
    assert source_folder(f"disk:{labelled}") == "data/ed"
    assert source_folder("empathetic_dialogues:data/x") == "data/x"
    assert source_folder("dailydialog:data/dd") is None and source_folder(f"disk:{tmp_path}") is None

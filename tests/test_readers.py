"""Dataset readers on small files written in the official formats, including malformed rows."""

import csv
import json
import subprocess
import sys

import pytest

from emprl.common.errors import UserError
from emprl.data import MECHANISMS, load_dialogues, load_epitome
from emprl.data.__main__ import stats

ED_HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"


def write_ed(folder, rows_by_split):
    folder.mkdir(exist_ok=True)
    for name, rows in rows_by_split.items():
        (folder / name).write_text(ED_HEADER + "".join(r + "\n" for r in rows))
    return folder


def ed_conv(cid, emotion, situation, utterances):
    return [f"{cid},{i + 1},{emotion},{situation},{1 if i % 2 == 0 else 2},{u},5|5|5_2|2|5,"
            for i, u in enumerate(utterances)]


@pytest.fixture
def ed_folder(tmp_path):
    train = ed_conv("hit:1_conv:2", "proud", "I passed my exam_comma_ finally", [
        "I passed the exam_comma_ I am so happy!", "Congratulations! How long did you study?",
        "Three months of evenings.", "That effort really paid off."])
    train += ed_conv("hit:3_conv:6", "sad", "My dog died", ["My dog died last week.", "I am so sorry."])
    # The release appends a ninth field (reply candidates, `|`-separated) to some rows: ignored.
    train += ["hit:4_conv:8,1,afraid,A storm,1,The wind was loud_comma_ really loud,5|5|5_2|2|5,",
              "hit:4_conv:8,2,afraid,A storm,2,That sounds scary,5|5|5_2|2|5,,Oh no|Stay safe"]
    valid = ed_conv("hit:5_conv:10", "lonely", "Moved to a new city", ["I know nobody here.", "That must feel isolating."])
    test = ed_conv("hit:6_conv:12", "excited", "Trip soon", ["We leave for Japan tomorrow!", "How exciting!"])
    return write_ed(tmp_path / "ed", {"train.csv": train, "valid.csv": valid, "test.csv": test})


def test_empathetic_dialogues_listener_turns(ed_folder):
    dd = load_dialogues(f"empathetic_dialogues:{ed_folder}")
    assert set(dd) == {"train", "validation", "test"}
    train = dd["train"]
    assert len(train) == 4  # two listener turns, one, and one in the storm conversation
    first = train[0]
    assert first["context"] == ["I passed the exam, I am so happy!"]
    assert first["response"] == "Congratulations! How long did you study?"
    assert first["emotion"] == "proud" and first["situation"] == "I passed my exam, finally"
    assert train[1]["context"][-1] == "Three months of evenings." and len(train[1]["context"]) == 3
    storm = train[3]
    assert storm["context"] == ["The wind was loud, really loud"] and storm["response"] == "That sounds scary"
    assert len(dd["validation"]) == 1 and len(dd["test"]) == 1


def test_empathetic_dialogues_bad_row(ed_folder):
    with open(ed_folder / "train.csv", "a") as fh:
        fh.write("hit:9_conv:1,one,sad,x,1,hello,,\n")
    with pytest.raises(UserError, match=r"train.csv:10: utterance_idx must be an integer"):
        load_dialogues(f"empathetic_dialogues:{ed_folder}")
    dd = load_dialogues(f"empathetic_dialogues:{ed_folder}", on_bad_rows="skip")
    assert len(dd["train"]) == 4


def test_empathetic_dialogues_wrong_header(tmp_path):
    folder = write_ed(tmp_path / "ed", {"train.csv": [], "valid.csv": [], "test.csv": []})
    (folder / "train.csv").write_text("a,b,c\n")
    with pytest.raises(UserError, match=r"train.csv:1: expected the header"):
        load_dialogues(f"empathetic_dialogues:{folder}")


def test_bad_spec_and_missing_files(tmp_path):
    with pytest.raises(UserError, match="expected FORMAT:PATH"):
        load_dialogues(f"csv:{tmp_path}")
    with pytest.raises(UserError, match="does not exist"):
        load_dialogues(f"pec:{tmp_path}/nope")
    with pytest.raises(UserError, match="train.csv: file not found"):
        load_dialogues(f"empathetic_dialogues:{tmp_path}")


def write_epitome(folder, n=20, bad_line=False):
    folder.mkdir()
    files = {"emotional_reactions": "emotional-reactions-reddit.csv",
             "interpretations": "interpretations-reddit.csv", "explorations": "explorations-reddit.csv"}
    for k, (mechanism, name) in enumerate(files.items()):
        with open(folder / name, "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["sp_id", "rp_id", "seeker_post", "response_post", "level", "rationales"])
            for i in range(n):
                w.writerow([f"s{i}", f"r{i}", f"My post, number {i}", f"A reply {i}", (i + k) % 3, ""])
            if bad_line and mechanism == "interpretations":
                w.writerow(["s99", "r99", "post", "reply", "high", ""])
    return folder


def test_epitome_split_is_seeded_and_stratified(tmp_path):
    folder = write_epitome(tmp_path / "epitome", n=30)
    a, b = load_epitome(str(folder), seed=3), load_epitome(str(folder), seed=3)
    assert set(a) == set(MECHANISMS)
    for mechanism in MECHANISMS:
        train, valid = a[mechanism]["train"], a[mechanism]["validation"]
        assert (len(train), len(valid)) == (24, 6)
        assert sorted(set(valid["level"])) == [0, 1, 2] and valid["level"].count(0) == 2
        assert valid["response_post"] == b[mechanism]["validation"]["response_post"]
        assert train.column_names == ["seeker_post", "response_post", "level"]
    other = load_epitome(str(folder), seed=4)
    assert other["explorations"]["validation"]["response_post"] != a["explorations"]["validation"]["response_post"]


def test_epitome_bad_level_names_file_and_line(tmp_path):
    folder = write_epitome(tmp_path / "epitome", bad_line=True)
    with pytest.raises(UserError, match=r"interpretations-reddit.csv:22: level must be 0, 1 or 2, got 'high'"):
        load_epitome(str(folder))
    assert len(load_epitome(str(folder), on_bad_rows="skip")["interpretations"]["train"]) == 16


def test_dailydialog_every_later_turn_is_a_response(tmp_path):
    for split in ("train", "validation", "test"):
        (tmp_path / "dd" / split).mkdir(parents=True)
        (tmp_path / "dd" / split / f"dialogues_{split}.txt").write_text(
            "Hi , how are you ? __eou__ Fine , thanks . __eou__ Good to hear . __eou__\n")
    dd = load_dialogues(f"dailydialog:{tmp_path}/dd")
    assert dd["test"]["response"] == ["Fine , thanks .", "Good to hear ."]
    assert dd["test"]["context"][1] == ["Hi , how are you ?", "Fine , thanks ."]


def test_emprl_json_with_levels(tmp_path):
    items = [{"input": "I lost my keys again.", "output": "Oh no, that is annoying!",
              "emotional_reactions": 1, "explorations": 0, "interpretations": 2}]
    for name in ("train.json", "valid.json", "test.json"):
        (tmp_path / name).write_text(json.dumps(items))
    dd = load_dialogues(f"emprl_json:{tmp_path}")
    row = dd["train"][0]
    assert row["context"] == ["I lost my keys again."] and row["interpretations"] == 2
    (tmp_path / "test.json").write_text("[{\"input\": 3}]")
    with pytest.raises(UserError, match=r"test.json:1: item 0: expected an object"):
        load_dialogues(f"emprl_json:{tmp_path}")


def test_stats_cli(ed_folder, tmp_path):
    out = stats("empathetic_dialogues", str(ed_folder))
    assert out["splits"]["train"] == {"rows": 4, "conversations": 3, "emotions": 3}
    folder = write_epitome(tmp_path / "epitome", n=30)
    proc = subprocess.run([sys.executable, "-m", "emprl.data", "stats", "--format", "epitome", "--path", str(folder)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["mechanisms"]["explorations"]["validation"]["levels"] == {"no": 2, "weak": 2, "strong": 2}
    proc = subprocess.run([sys.executable, "-m", "emprl.data", "stats", "--format", "pec", "--path", str(tmp_path / "x")],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr

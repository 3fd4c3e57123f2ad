"""Stage 1 (SFT) on tiny T5 and tiny Llama models built from configs, with a small ED-format dataset."""

import json
import os

import pytest
import tiny
import torch

from emprl.common.errors import run_cli
from emprl.common.policy import load_policy, response_suffix
from emprl.common.prompts import PromptBuilder
from emprl.sft import causal_example, main

ED_HEADER = "conv_id,utterance_idx,context,prompt,speaker_idx,utterance,selfeval,tags\n"
CONVERSATIONS = [
    ("sad", ["i lost my job today", "oh no i am so sorry to hear that", "i feel so sad and tired",
             "that sounds really hard , i hope you feel better"]),
    ("proud", ["my friend won a new job", "that is great , you must be proud",
               "yes i am so happy for her", "that is wonderful , i am glad for you"]),
    ("afraid", ["i have a hard exam this week", "oh that sounds tough , are you worried ?",
                "yes i am scared", "i understand , i hope it goes well"]),
    ("lonely", ["i miss my family so much", "oh i am sorry , that must be hard",
                "i feel lonely at home", "i understand , i hope you can see them soon"]),
    ("excited", ["we got a new dog today", "oh that is great , what is the dog like ?",
                 "he is very nice", "that sounds wonderful , i am happy for you"]),
    ("angry", ["my friend lied to me", "oh no , that is awful", "i am so angry",
               "i understand , that must feel bad"]),
]


def write_ed_dataset(folder, n_copies=2):
    """EmpatheticDialogues CSVs (train/valid/test) in the official format, commas as _comma_."""
    os.makedirs(folder, exist_ok=True)
    for split, copies in (("train", n_copies), ("valid", 1), ("test", 1)):
        lines = [ED_HEADER]
        for copy in range(copies):
            for k, (emotion, turns) in enumerate(CONVERSATIONS):
                for idx, text in enumerate(turns, start=1):
                    text = text.replace(",", "_comma_")
                    lines.append(f"hit:{k}_conv:{split}{copy}{k},{idx},{emotion},{turns[0]},{idx % 2},{text},,\n")
        with open(os.path.join(folder, f"{split}.csv"), "w", encoding="utf-8") as fh:
            fh.writelines(lines)
    return f"empathetic_dialogues:{folder}"


def write_recipe(path, **values):
    with open(path, "w", encoding="utf-8") as fh:
        for key, value in values.items():
            fh.write(f"{key}: {json.dumps(value)}\n")
    return str(path)


def base_recipe(tmp_path, model_dir, data, **extra):
    values = dict(model_name_or_path=str(model_dir), data=data, output_dir=str(tmp_path / "sft"),
                  max_source_tokens=48, max_target_tokens=16, per_device_train_batch_size=4,
                  per_device_eval_batch_size=8, learning_rate=1e-2, num_train_epochs=4, report_to="none",
                  logging_steps=1, save_total_limit=1, seed=0, disable_tqdm=True)
    values.update(extra)
    return write_recipe(tmp_path / "sft.yaml", **values)


@pytest.fixture
def ed_data(tmp_path):
    return write_ed_dataset(str(tmp_path / "ed"))


def test_t5_full_finetuning_lowers_validation_loss_and_writes_stage(tmp_path, ed_data):
    tiny.make_tiny_t5(str(tmp_path / "t5"))
    recipe = base_recipe(tmp_path, tmp_path / "t5", ed_data, report_to="tensorboard")
    metrics = main([recipe])
    out = tmp_path / "sft"
    assert metrics["eval_loss"] < metrics["initial_eval_loss"]
    assert metrics["train_examples"] == 2 * 2 * len(CONVERSATIONS)  # two listener turns per conversation
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["eval_ppl"] == pytest.approx(torch.tensor(saved["eval_loss"]).exp().item(), rel=1e-5)
    stage = json.loads((out / "stage.json").read_text())
    assert stage["stage"] == "sft" and stage["complete"] is True and stage["recipe_hash"]
    assert "Validation loss" in (out / "README.md").read_text()
    assert json.loads((out / "emprl_prompt.json").read_text())["max_source_tokens"] == 48
    assert any(name.startswith("events.out.tfevents") for _, _, files in os.walk(out / "runs") for name in files)
    model, tokenizer, enc_dec = load_policy(str(out))
    assert enc_dec and tokenizer.padding_side == "right"

    # Same recipe again: the finished stage is skipped; another recipe into the same folder is refused.
    assert main([recipe]) is None
    with pytest.raises(Exception, match="different recipe"):
        main([recipe, "--learning_rate", "0.02"])


def test_llama_lora_is_merged_into_a_plain_model(tmp_path, ed_data):
    from transformers import AutoModelForCausalLM

    from emprl.common.policy import GenerationSettings, generate_responses, prompt_builder_for

    base, _ = tiny.make_tiny_llama(str(tmp_path / "llama"))
    recipe = base_recipe(tmp_path, tmp_path / "llama", ed_data, use_lora=True, lora_r=8, lora_alpha=16,
                         lora_dropout=0.0, lora_target_modules=["q_proj", "v_proj"], learning_rate=5e-2)
    metrics = main([recipe])
    out = tmp_path / "sft"
    assert metrics["eval_loss"] < metrics["initial_eval_loss"]
    assert not (out / "adapter_config.json").exists()

    merged, info = AutoModelForCausalLM.from_pretrained(str(out), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    layer, base_layer = merged.model.layers[0].self_attn, base.model.layers[0].self_attn
    assert not torch.allclose(layer.q_proj.weight, base_layer.q_proj.weight)  # adapters folded in
    assert torch.equal(layer.k_proj.weight, base_layer.k_proj.weight)  # untouched modules stay as they were

    model, tokenizer, enc_dec = load_policy(str(out))
    assert not enc_dec and tokenizer.padding_side == "left"
    builder = prompt_builder_for(str(out), tokenizer, enc_dec)
    replies = generate_responses(model, tokenizer, builder, [["i lost my job today"], ["my friend won"]],
                                 GenerationSettings(max_new_tokens=8, seed=1), progress=False)
    assert len(replies) == 2 and all(isinstance(r, str) for r in replies)


@pytest.mark.parametrize("chat_template", [True, False])
def test_causal_labels_cover_only_the_reply_and_its_end(tmp_path, chat_template):
    _, tokenizer = tiny.make_tiny_llama(str(tmp_path / "llama"), chat_template=chat_template)
    builder = PromptBuilder(tokenizer, False, max_source_tokens=64)
    before, after = response_suffix(builder)
    end_ids = tokenizer(after, add_special_tokens=False)["input_ids"] if after.strip() else [tokenizer.eos_token_id]
    context = ["i lost my job", "oh no", "i feel sad"]
    example = causal_example(builder, context, "i am so sorry", 16, before, end_ids)
    n_prompt = len(builder.encode(context))
    assert example["labels"][:n_prompt] == [-100] * n_prompt
    assert example["input_ids"][:n_prompt] == builder.encode(context)
    target = example["labels"][n_prompt:]
    assert -100 not in target and target[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(target[:-1]) == "i am so sorry"
    assert len(example["input_ids"]) == len(example["labels"]) == len(example["attention_mask"])
    # Long replies are cut to max_target_tokens, the end token is kept.
    long = causal_example(builder, context, " ".join(["sorry"] * 40), 5, before, end_ids)
    assert len(long["labels"]) - n_prompt == 5 + len(end_ids)


def test_rerun_resumes_from_the_last_checkpoint_and_overwrite_starts_afresh(tmp_path, ed_data):
    tiny.make_tiny_t5(str(tmp_path / "t5"))
    steps = dict(eval_strategy="steps", save_strategy="steps", eval_steps=2, save_steps=2, max_steps=2)
    first = main([base_recipe(tmp_path, tmp_path / "t5", ed_data, **steps)])
    assert first["global_step"] == 2 and first["resumed_from"] is None
    os.remove(tmp_path / "sft" / "stage.json")  # as if the run had stopped after its checkpoint

    recipe = base_recipe(tmp_path, tmp_path / "t5", ed_data, **{**steps, "max_steps": 4})
    resumed = main([recipe])
    assert resumed["resumed_from"] == "checkpoint-2" and resumed["global_step"] == 4
    assert resumed["initial_eval_loss"] == first["initial_eval_loss"]

    fresh = main([recipe, "--overwrite_output_dir", "true"])
    assert fresh["resumed_from"] is None and fresh["global_step"] == 4


def test_recipe_typo_is_one_line_and_exit_code_2(tmp_path, ed_data, capsys):
    tiny.make_tiny_t5(str(tmp_path / "t5"))
    recipe = base_recipe(tmp_path, tmp_path / "t5", ed_data, learnin_rate=1e-3)
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [recipe])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "learnin_rate" in err and "learning_rate" in err


@pytest.mark.parametrize("recipe", ["recipes/demo/sft.yaml", "recipes/t5-base_empathetic-dialogues/sft.yaml",
                                    "recipes/llama-3-8b-lora_empathetic-dialogues/sft.yaml"])
def test_shipped_recipes_parse(recipe, tmp_path):
    from emprl.pipeline.config import parse_recipe
    from emprl.sft import SFTScriptConfig, SFTTrainingArguments

    root = os.path.join(os.path.dirname(__file__), "..")
    data = write_ed_dataset(str(tmp_path / "ed"), n_copies=1)  # the paper data is not shipped
    cfg, args = parse_recipe((SFTScriptConfig, SFTTrainingArguments),
                             [os.path.join(root, recipe), "--data", data, "--bf16", "false"])
    assert args.load_best_model_at_end and args.metric_for_best_model == "eval_loss"
    assert args.output_dir.startswith("outputs/") and cfg.max_target_tokens == 50
    assert cfg.use_lora == ("lora" in recipe or "demo" in recipe)

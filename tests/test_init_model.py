"""Stage 0 of the T5 lane (emprl.init_model): tokenizer trained on a tiny corpus, a T5 from a config,
the saved folder loading back as a policy, and one SFT step training it."""

import json
import os

import pytest
import torch
from test_sft import write_ed_dataset, write_recipe

from emprl.common.errors import run_cli
from emprl.init_model import main, train_tokenizer

TINY = dict(vocab_size=200, d_model=16, d_ff=32, d_kv=8, num_heads=2, num_layers=1, num_decoder_layers=1,
            dropout=0.0, seed=0)


@pytest.fixture
def init_dir(tmp_path):
    data = write_ed_dataset(str(tmp_path / "ed"))
    recipe = write_recipe(tmp_path / "init.yaml", data=data, output_dir=str(tmp_path / "init"), **TINY)
    info = main([recipe])
    return tmp_path / "init", recipe, info


def test_tokenizer_appends_eos_pads_with_zero_and_round_trips():
    texts = ["i lost my job today .", "oh no , i am so sorry to hear that !", "what happened ?"] * 5
    tok = train_tokenizer(texts, vocab_size=120, kind="bpe")
    assert tok.convert_ids_to_tokens([0, 1, 2]) == ["<pad>", "</s>", "<unk>"]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    ids = tok("i lost my job")["input_ids"]
    assert ids[-1] == 1 and ids.count(1) == 1
    assert tok(text_target="so sorry")["input_ids"][-1] == 1  # targets end with eos too (SFT labels)
    batch = tok(["what happened ?", "i lost my job today ."], padding=True)
    short = batch["input_ids"][0]
    assert short[-1] == 0 and batch["attention_mask"][0][-1] == 0 and 1 in short  # padded on the right with 0
    assert tok.decode(tok("oh no, i am so sorry!")["input_ids"], skip_special_tokens=True) == "oh no, i am so sorry!"
    # the same texts give the same vocabulary
    assert train_tokenizer(texts, vocab_size=120, kind="bpe").get_vocab() == tok.get_vocab()
    unigram = train_tokenizer(texts, vocab_size=60, kind="unigram")
    assert unigram("what happened ?")["input_ids"][-1] == 1 and unigram.pad_token_id == 0


def test_init_stage_writes_a_loadable_t5_folder(init_dir):
    from emprl.common.policy import load_policy

    out, recipe, info = init_dir
    stamp = json.loads((out / "stage.json").read_text())
    assert stamp["stage"] == "init_model" and stamp["complete"] is True
    assert (out / "model.safetensors").is_file() and not list(out.glob("*.bin"))
    model, tokenizer, enc_dec = load_policy(str(out))
    assert enc_dec and model.config.d_model == 16 and model.config.num_layers == 1
    assert model.config.num_decoder_layers == 1 and model.config.decoder_start_token_id == 0
    assert model.config.vocab_size == len(tokenizer) == info["vocab_size"] <= 200
    assert model.get_input_embeddings().weight.data_ptr() == model.get_output_embeddings().weight.data_ptr()
    assert tokenizer("i am so sorry")["input_ids"][-1] == 1 and tokenizer.pad_token_id == 0
    # Finished folder, same recipe: skipped. Rebuilt with the same seed: the same weights.
    assert main([recipe]) is None
    before = {k: v.clone() for k, v in model.state_dict().items()}
    main([recipe, "--overwrite_output_dir", "true"])
    again, _, _ = load_policy(str(out))
    assert all(torch.equal(before[k], v) for k, v in again.state_dict().items())


def test_seed_changes_the_initial_weights(tmp_path, init_dir):
    from transformers import T5ForConditionalGeneration

    out, recipe, _ = init_dir
    main([recipe, "--seed", "1", "--output_dir", str(tmp_path / "other")])
    a = T5ForConditionalGeneration.from_pretrained(str(out)).shared.weight
    b = T5ForConditionalGeneration.from_pretrained(str(tmp_path / "other")).shared.weight
    assert not torch.equal(a, b)


def test_one_sft_step_on_the_init_folder_changes_the_weights(tmp_path, init_dir):
    from transformers import T5ForConditionalGeneration

    from emprl.common.policy import GenerationSettings, generate_responses, load_policy, prompt_builder_for
    from emprl.sft import main as sft_main

    out, _, _ = init_dir
    recipe = write_recipe(tmp_path / "sft.yaml", model_name_or_path=str(out), data=f"empathetic_dialogues:{tmp_path / 'ed'}",
                          output_dir=str(tmp_path / "sft"), max_source_tokens=48, max_target_tokens=16,
                          per_device_train_batch_size=4, per_device_eval_batch_size=8, learning_rate=1e-2,
                          max_steps=1, report_to="none", save_total_limit=1, seed=0, disable_tqdm=True)
    metrics = sft_main([recipe])
    assert metrics["global_step"] == 1
    before = T5ForConditionalGeneration.from_pretrained(str(out)).state_dict()
    model, tokenizer, _ = load_policy(str(tmp_path / "sft"))
    after = model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    builder = prompt_builder_for(str(tmp_path / "sft"), tokenizer, True)
    replies = generate_responses(model, tokenizer, builder, [["i lost my job today"]],
                                 GenerationSettings(max_new_tokens=5, seed=0), progress=False)
    assert len(replies) == 1 and isinstance(replies[0], str)


@pytest.mark.parametrize("key,value", [("vocab_size", 0), ("d_model", -4), ("dropout", 1.5)])
def test_bad_recipe_value_is_one_line_and_exit_code_2(tmp_path, capsys, key, value):
    data = write_ed_dataset(str(tmp_path / "ed"))
    recipe = write_recipe(tmp_path / "init.yaml", data=data, output_dir=str(tmp_path / "init"),
                          **{**TINY, key: value})
    with pytest.raises(SystemExit) as exit_info:
        run_cli(main, [recipe])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and key in err and "init.yaml" in err
    assert not os.path.exists(tmp_path / "init")


@pytest.mark.parametrize("recipe", ["recipes/demo/t5_init.yaml", "recipes/demo/t5_sft.yaml",
                                    "recipes/demo/label.yaml"])
def test_t5_lane_recipes_parse(recipe):
    from emprl.init_model import InitModelConfig
    from emprl.label import LabelConfig
    from emprl.pipeline.config import parse_recipe
    from emprl.sft import SFTScriptConfig, SFTTrainingArguments

    root = os.path.join(os.path.dirname(__file__), "..")
    path = os.path.join(root, recipe)
    if recipe.endswith("t5_init.yaml"):
        (cfg,) = parse_recipe((InitModelConfig,), [path])
        assert cfg.data.endswith("empathetic_dialogues_large") and cfg.output_dir == "outputs/demo/t5_init"
    elif recipe.endswith("t5_sft.yaml"):
        cfg, args = parse_recipe((SFTScriptConfig, SFTTrainingArguments), [path, "--bf16", "false"])
        assert cfg.model_name_or_path == "outputs/demo/t5_init" and not cfg.use_lora
        assert args.output_dir == "outputs/demo/t5_sft" and args.load_best_model_at_end
    else:
        from emprl.pipeline.config import load_recipe_values

        values = load_recipe_values(path)
        assert set(values) <= {f for f in LabelConfig.__dataclass_fields__}
        assert values["identifiers_dir"] == "outputs/demo/identifiers"
        assert values["output_dir"] == "outputs/demo/labelled" and values["data"].endswith("_large")


def test_emprl_launch_knows_the_init_stage_and_checks_its_recipe(tmp_path):
    from emprl.common.errors import UserError
    from emprl.pipeline.cli import validate
    from emprl.pipeline.stages import kinds

    assert kinds()["init_model"].module == "emprl.init_model"
    validate("init_model", ["recipes/demo/t5_init.yaml"])  # the shipped recipe parses
    with pytest.raises((UserError, ValueError, SystemExit)):
        validate("init_model", ["recipes/demo/t5_init.yaml", "--vocab_sizee", "100"])

"""Recipe parsing: YAML + command-line overrides into typed dataclasses, one-line user errors."""

import subprocess
import sys
from dataclasses import dataclass, field

import pytest
from transformers import Seq2SeqTrainingArguments
from trl import PPOConfig

from emprl.common.errors import UserError
from emprl.pipeline.config import config_to_dict, parse_recipe, recipe_hash


@dataclass
class Script:
    data: str = field(default="", metadata={"existing_path": True})
    model: str = "tiny"
    tags: list[str] = field(default_factory=list)
    reward: dict[str, float] = field(default_factory=lambda: {"empathy": 1.0})
    steps: int | None = None
    required: str = field(default=None, metadata={"help": "must be given"})
    labels: str | None = "labels.jsonl"


@dataclass
class Needs:
    model_name_or_path: str
    pooling: str = "max"


def write(tmp_path, text, name="recipe.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_yaml_values_are_typed_and_overridden(tmp_path):
    # PyYAML reads `1e-4` as a string (YAML 1.1); the float field must still get a float.
    recipe = write(tmp_path, "learning_rate: 1e-4\nbatch_size: 8\nmini_batch_size: 4\nmodel: a\ntags: [x]\n")
    script, ppo = parse_recipe((Script, PPOConfig), [recipe, "--learning_rate", "5e-6", "--reward={empathy: 2}",
                                                     "--model", "yes", "--steps", "null",
                                                     "--tags", "[a, b]"])
    assert ppo.learning_rate == 5e-6 and isinstance(ppo.learning_rate, float)
    assert ppo.batch_size == 8 and ppo.mini_batch_size == 4
    assert script.model == "yes"  # string fields keep the text as typed, not YAML's True
    assert script.reward == {"empathy": 2.0} and script.tags == ["a", "b"] and script.steps is None
    (script,) = parse_recipe((Script,), [write(tmp_path, "", "s.yaml"),
                                         "--labels", "null"])
    assert script.labels is None  # an optional string can be unset from the command line


def test_transformers_arguments_and_their_validation(tmp_path):
    recipe = write(tmp_path, f"output_dir: {tmp_path}/out\nlearning_rate: 1e-4\neval_strategy: epoch\n")
    _, args = parse_recipe((Script, Seq2SeqTrainingArguments), [recipe, "--per_device_train_batch_size", "4"])
    assert args.per_device_train_batch_size == 4 and args.learning_rate == 1e-4
    with pytest.raises(UserError, match="command line: key 'eval_strategy': expected one of no, steps, epoch"):
        parse_recipe((Script, Seq2SeqTrainingArguments), [recipe, "--eval_strategy", "sometimes"])


@pytest.mark.parametrize("text, argv, message", [
    ("learning_rat: 1\n", [], r"recipe.yaml: unknown key 'learning_rat' \(did you mean 'learning_rate'\?\)"),
    ("batch_size: abc\n", [], r"recipe.yaml: key 'batch_size': expected an integer, got 'abc'"),
    ("pooling: mean\n", [], r"recipe.yaml: missing required key 'model_name_or_path'"),
    ("model_name_or_path: m\n", ["--poolng", "max"], r"command line: unknown key 'poolng' \(did you mean 'pooling'\?\)"),
    ("model_name_or_path: m\ndata: /no/such/folder\n", [], r"key 'data': path '/no/such/folder' does not exist"),
    ("a: [1\n", [], r"recipe.yaml:\d+: invalid YAML"),
    ("- 1\n- 2\n", [], r"expected a mapping"),
])
def test_user_errors_are_one_line(tmp_path, text, argv, message):
    types = (Needs, Script, PPOConfig) if "model_name_or_path" in text or "pooling" in text else (Script, PPOConfig)
    recipe = write(tmp_path, text)
    with pytest.raises(UserError, match=message) as info:
        parse_recipe(types, [recipe] + argv)
    assert "\n" not in str(info.value)


def test_data_spec_path_checked_without_its_format_prefix(tmp_path):
    (tmp_path / "ed").mkdir()
    recipe = write(tmp_path, f"data: empathetic_dialogues:{tmp_path}/ed\n")
    (script,) = parse_recipe((Script,), [recipe])
    assert script.data.endswith("/ed")
    recipe = write(tmp_path, f"data: empathetic_dialogues:{tmp_path}/missing\n")
    with pytest.raises(UserError, match="does not exist"):
        parse_recipe((Script,), [recipe])


def test_missing_recipe_file():
    with pytest.raises(UserError, match="recipe file does not exist"):
        parse_recipe((Script,), ["/nope/recipe.yaml"])


def test_recipe_hash_follows_values_not_volatile_keys(tmp_path):
    a = write(tmp_path, "model: a\n", "a.yaml")
    h1 = recipe_hash(*parse_recipe((Script,), [a]))
    assert h1 == recipe_hash(*parse_recipe((Script,), [a]))
    assert h1 != recipe_hash(*parse_recipe((Script,), [a, "--model", "b"]))
    assert config_to_dict(*parse_recipe((Script,), [a]))["model"] == "a"


def test_cli_prints_one_line_and_exits_2(tmp_path):
    recipe = write(tmp_path, "learnin_rate: 1\n")
    code = ("import sys; from emprl.pipeline.config import parse_recipe; from emprl.common.errors import run_cli; from trl import PPOConfig;"
            "run_cli(lambda argv: parse_recipe((PPOConfig,), argv))")
    proc = subprocess.run([sys.executable, "-c", code, recipe], capture_output=True, text=True)
    assert proc.returncode == 2
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("emprl: error:")]
    assert lines == [f"emprl: error: {recipe}: unknown key 'learnin_rate' (did you mean 'learning_rate'?)"]
    assert "Traceback" not in proc.stderr


def test_base_recipe_is_extended(tmp_path):
    write(tmp_path, "model: a\ntags: [x]\nsteps: 10\n", "ppo.yaml")
    child = write(tmp_path, "base: ppo.yaml\nsteps: 3\n", "ppo_no_kl.yaml")
    (script,) = parse_recipe((Script,), [child])
    assert (script.model, script.tags, script.steps) == ("a", ["x"], 3)
    write(tmp_path, "base: loop_b.yaml\n", "loop_a.yaml")
    loop = write(tmp_path, "base: loop_a.yaml\n", "loop_b.yaml")
    with pytest.raises(UserError, match="cycle"):
        parse_recipe((Script,), [loop])
    missing = write(tmp_path, "base: nope.yaml\n", "m.yaml")
    with pytest.raises(UserError, match=r"m.yaml: key 'base': recipe '.*nope.yaml' does not exist"):
        parse_recipe((Script,), [missing])


# -- shared pieces: the decoding and LoRA keys, ranges and choices in one place ------------------------------


def test_decoding_and_lora_keys_are_declared_once():
    from emprl.common.policy import DecodingArguments, GenerationArguments, GenerationSettings, LoraArguments
    from emprl.dpo.config import DPOScriptConfig
    from emprl.evaluate.config import EvaluateConfig
    from emprl.ppo.config import PPOScriptConfig
    from emprl.sft import SFTScriptConfig

    assert issubclass(PPOScriptConfig, DecodingArguments) and issubclass(DPOScriptConfig, DecodingArguments)
    assert issubclass(EvaluateConfig, GenerationArguments) and issubclass(GenerationSettings, GenerationArguments)
    assert all(issubclass(c, LoraArguments) for c in (SFTScriptConfig, PPOScriptConfig, DPOScriptConfig))
    paper = GenerationSettings()
    assert (paper.top_k, paper.top_p, paper.temperature, paper.max_new_tokens) == (20, 1.0, 0.9, 30)
    assert SFTScriptConfig(model_name_or_path="m").lora_target_modules == ["q_proj", "v_proj"]  # as before


def test_peft_config_comes_from_trl_and_keeps_a_one_module_list():
    from peft import LoraConfig

    from emprl.common.policy import LoraArguments

    assert LoraArguments().peft_config(enc_dec=True) is None
    config = LoraArguments(use_lora=True, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                           lora_target_modules=["q_proj"]).peft_config(enc_dec=False)
    assert isinstance(config, LoraConfig) and (config.r, config.lora_alpha, config.task_type) == (4, 8, "CAUSAL_LM")
    assert config.target_modules == {"q_proj"}  # a set of names, not a regular expression "q_proj"
    assert LoraArguments(use_lora=True).peft_config(enc_dec=True).task_type == "SEQ_2_SEQ_LM"


@pytest.mark.parametrize("argv, message", [
    (["--reward_gold", "mixed"], "command line: key 'reward_gold': expected one of own, shuffled, got 'mixed'"),
    (["--mixed_precision", "fp16"], "key 'mixed_precision': expected one of auto, bf16, no, got 'fp16'"),
    (["--top_p", "1.5"], r"key 'top_p': expected a number in \(0, 1\], got 1.5"),
    (["--temperature", "0"], "key 'temperature': expected a positive number when sampling, got 0.0"),
    (["--min_new_tokens", "40"], r"key 'min_new_tokens': expected 0 to max_new_tokens \(30\), got 40"),
    (["--samples_per_context", "0"], "key 'samples_per_context': expected a positive integer, got 0"),
    (["--lr_decay_steps", "5", "--lr_decay_over_epochs", "2"], "set one of them, not both"),
])
def test_ppo_key_errors_are_one_line(tmp_path, argv, message):
    from emprl.ppo.config import PPOScriptConfig

    recipe = write(tmp_path, f"sft_model_path: {tmp_path}\nlabelled_data: {tmp_path}\n")
    with pytest.raises(UserError, match=message) as info:
        parse_recipe((PPOScriptConfig, PPOConfig), [recipe, *argv])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("argv, message", [
    (["--samples_per_context", "1"], r"key 'samples_per_context': expected an integer >= 2 \(a pair needs two"),
    (["--min_reward_margin", "-0.1"], "key 'min_reward_margin': expected a number >= 0"),
    (["--contexts_per_round", "0"], "key 'contexts_per_round': expected a positive integer"),
])
def test_dpo_key_errors_are_one_line(tmp_path, argv, message):
    from emprl.dpo.config import DPOScriptConfig

    recipe = write(tmp_path, f"sft_model_path: {tmp_path}\nlabelled_data: {tmp_path}\n")
    with pytest.raises(UserError, match=message):
        parse_recipe((DPOScriptConfig,), [recipe, *argv])


def test_directly_built_configs_check_their_fields():
    from emprl.evaluate.config import EvaluateConfig
    from emprl.init_model import InitModelConfig
    from emprl.label import LabelConfig

    with pytest.raises(ValueError, match=r"key 'seeds': expected a non-empty list of different values, got \[0, 0\]"):
        EvaluateConfig(systems={"a": "x"}, seeds=[0, 0])
    with pytest.raises(ValueError, match="key 'systems': expected a non-empty mapping"):
        EvaluateConfig(systems={})
    with pytest.raises(ValueError, match=r"key 'vocab_size': expected an integer >= 4 \(more than the 3 special"):
        InitModelConfig(data="x", vocab_size=3)
    with pytest.raises(ValueError, match="key 'max_rows': expected a positive integer, got {'train': 0}"):
        LabelConfig(data="x", max_rows={"train": 0})
    with pytest.raises(ValueError, match="key 'paired': 'B' is not one of the systems"):
        EvaluateConfig(systems={"A": "x"}, paired={"A": "B"})

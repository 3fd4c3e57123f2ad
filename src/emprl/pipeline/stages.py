"""The stage table: every stage of an experiment, one row each (docs/lifecycle.md, "Stages").

A row names the stage, its recipe file in the experiment folder, the stages it reads from, and its
kind: the module ``accelerate launch -m`` runs, the ``emprl launch`` / ``make`` command, the dataclasses
its recipe fills, the recipe key of its base model and its smoke sizes. Everything that knows about
stages reads this table: ``emprl launch`` (cli), ``train-all`` (run), the chain check (chain), smoke mode
(smoke), the study (study) and the Makefile (``python -m emprl.pipeline.stages`` prints the commands).
The paths a stage reads are not listed here: they are the config fields marked ``existing_path``.

This module imports no stage: config classes are imported by name only when asked for
(``StageKind.config_classes``), so planning a run stays light.

    python -m emprl.pipeline.stages          # the stage commands, one per line (the Makefile's targets)
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from typing import Any

EVERYTHING = ("*",)  # ``after`` of a stage that reads every other stage of its experiment (evaluation)


@dataclass(frozen=True)
class StageKind:
    command: str  # `emprl launch COMMAND`, `make COMMAND`
    module: str  # run by `accelerate launch -m MODULE RECIPE`
    configs: tuple[str, ...]  # "module:Class" dataclasses the recipe fills, in parse order
    model_key: str | None = None  # the base model's recipe key: smoke mode puts a tiny model there
    smoke_sizes: dict[str, Any] = field(default_factory=dict)  # key -> value, or a function of the recipe's value
    smoke_data: str | None = None  # demo data folder for smoke mode when not the recipe's format (identifiers)

    def config_classes(self) -> tuple[type, ...]:
        classes = []
        for ref in self.configs:
            module, _, name = ref.partition(":")
            classes.append(getattr(importlib.import_module(module), name))
        return tuple(classes)

    def reads(self) -> dict[str, Any]:
        """Recipe keys whose values are paths the stage reads (fields marked ``existing_path``), with
        the default the stage uses when the recipe leaves the key out."""
        keys: dict[str, Any] = {}
        for cls in self.config_classes():
            if not dataclasses.is_dataclass(cls):
                continue
            for f in dataclasses.fields(cls):
                if f.metadata.get("existing_path"):
                    keys[f.name] = None if f.default is dataclasses.MISSING else f.default
        return keys


@dataclass(frozen=True)
class Stage:
    name: str
    kind: StageKind
    recipe: str  # file name inside the experiment folder
    after: tuple[str, ...] = ()  # recipe files of the stages whose outputs this one reads
    required: bool = True
    # Not part of `make train-all` (its 30-minute demo budget has no room, docs/dpo.md): run only when
    # named by --targets (`make dpo`), or by the study command.
    on_demand: bool = False

    @property
    def module(self) -> str:
        return self.kind.module


def _min(limit: int):
    return lambda v: min(v or 0, limit)


SFT = StageKind(
    "sft", "emprl.sft", ("emprl.sft:SFTScriptConfig", "emprl.sft:SFTTrainingArguments"), "model_name_or_path",
    {"num_train_epochs": 1, "max_steps": 2, "max_train_samples": 16, "max_eval_samples": 8,
     "per_device_train_batch_size": 4, "per_device_eval_batch_size": 4, "gradient_accumulation_steps": 1,
     "eval_strategy": "steps", "save_strategy": "steps", "eval_steps": 2, "save_steps": 2, "logging_steps": 1,
     "warmup_ratio": 0.0, "bf16": False, "torch_dtype": None, "gradient_checkpointing": False,
     "report_to": "none", "max_source_tokens": 64, "max_target_tokens": 16, "dataloader_pin_memory": False})
INIT_MODEL = StageKind("init_model", "emprl.init_model", ("emprl.init_model:InitModelConfig",))
IDENTIFIERS = StageKind(
    "identifiers", "emprl.identifiers", ("emprl.identifiers:IdentifiersConfig",), "encoder",
    {"num_epochs": 1, "batch_size": 16, "eval_batch_size": 64, "max_context_len": 48, "max_response_len": 24,
     "early_stopping_patience": 0, "bf16": None},
    smoke_data="epitome")
LABEL = StageKind("label", "emprl.label", ("emprl.label:LabelConfig",), None,
                  {"batch_size": 64, "max_context_len": 48, "max_response_len": 24, "device": "cpu"})
PPO = StageKind(
    "ppo", "emprl.ppo", ("emprl.ppo.config:PPOScriptConfig", "trl:PPOConfig"), None,
    {"steps": 2, "batch_size": 4, "mini_batch_size": 2, "ppo_epochs": 1, "max_new_tokens": 8,
     "min_new_tokens": _min(2), "max_source_tokens": 64,
     "gradient_accumulation_steps": lambda v: 2 if (v or 1) > 1 else 1,
     "generation_batch_size": None, "eval_steps": 0, "eval_samples": 2, "eval_batch_size": 2,
     "eval_repeats": 1, "save_steps": 1, "save_total_limit": 1, "warmup_steps": 0, "bf16": False,
     "gradient_checkpointing": False, "log_with": None})
DPO = StageKind(
    "dpo", "emprl.dpo", ("emprl.dpo.config:DPOScriptConfig", "emprl.dpo.config:DPOTrainingArguments"), None,
    {"contexts_per_round": 4, "samples_per_context": 2, "shard_size": 2, "generation_batch_size": 4,
     "max_new_tokens": 8, "rounds": lambda v: min(v or 1, 2), "min_reward_margin": 0.0, "dtype": None,
     "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1, "num_train_epochs": 1,
     "max_prompt_length": 64, "max_length": 80, "max_completion_length": 16, "bf16": False,
     "gradient_checkpointing": False, "report_to": "none", "logging_steps": 1, "warmup_ratio": 0.0})
EMOTION_CLASSIFIER = StageKind(
    "emotion_classifier", "emprl.emotion_classifier", ("emprl.emotion_classifier:EmotionClassifierConfig",), "model",
    {"num_epochs": 1, "max_length": 24, "batch_size": 16, "eval_batch_size": 64, "num_threads": 1})
ETHREED = StageKind(
    "ethreed", "emprl.baselines.ethreed.train", ("emprl.baselines.ethreed.config:EthreedTrainConfig",), None,
    {"epochs": 1, "embedding_dim": 16, "hidden_size": 16, "max_train_examples": 16, "max_eval_examples": 8,
     "seeds": [0], "max_decode_len": 8, "glove": None, "num_threads": 1})
EVALUATE = StageKind(
    "evaluate", "emprl.evaluate", ("emprl.evaluate.config:EvaluateConfig",), None,
    {"seeds": [0], "max_examples": 2, "batch_size": 2, "max_new_tokens": 8, "dtype": "float32", "device": "cpu",
     "identifier_batch_size": 16, "identifier_max_context_len": 48, "identifier_max_response_len": 24,
     "num_examples_shown": 2})

_BOTH = ("t5_sft.yaml", "label.yaml")
_T5_EVAL = ("t5_sft.yaml", "identifiers.yaml", "label.yaml", "t5_ppo.yaml", "t5_dpo.yaml")
_EVAL = ("sft.yaml", "identifiers.yaml", "label.yaml", "ppo.yaml", "dpo.yaml")

# The paper's order: SFT, identifiers, gold-level labelling, PPO (and its ablations), the ETHREED
# baseline, then evaluation of every system side by side. Listed in an order that respects `after`.
# The demo has a second lane, a from-scratch T5 (t5_*.yaml), that shares the identifiers and labels.
STAGES: tuple[Stage, ...] = (
    Stage("sft", SFT, "sft.yaml"),
    Stage("identifiers", IDENTIFIERS, "identifiers.yaml"),
    Stage("t5 init", INIT_MODEL, "t5_init.yaml", required=False),
    Stage("t5 sft", SFT, "t5_sft.yaml", after=("t5_init.yaml",), required=False),
    Stage("label", LABEL, "label.yaml", after=("identifiers.yaml",)),
    Stage("t5 ppo", PPO, "t5_ppo.yaml", after=_BOTH, required=False),
    Stage("t5 ppo (w/o empathy reward)", PPO, "t5_ppo_no_empathy.yaml", after=_BOTH, required=False),
    Stage("t5 ppo (placebo)", PPO, "t5_ppo_placebo.yaml", after=_BOTH, required=False),
    Stage("ppo", PPO, "ppo.yaml", after=("sft.yaml", "label.yaml")),
    Stage("ppo (w/o KL)", PPO, "ppo_no_kl.yaml", after=("sft.yaml", "label.yaml"), required=False),
    Stage("ppo (w/o empathy reward)", PPO, "ppo_no_empathy.yaml", after=("sft.yaml", "label.yaml"), required=False),
    Stage("ethreed emotion labels", EMOTION_CLASSIFIER, "emotion_classifier.yaml", required=False),
    Stage("ethreed", ETHREED, "ethreed.yaml", after=("emotion_classifier.yaml",), required=False),
    Stage("evaluate", EVALUATE, "evaluate.yaml", after=EVERYTHING),
    # EmpRL-DPO (docs/dpo.md): the same reward through preference pairs and TRL's DPOTrainer, beside PPO,
    # with its own evaluation (an "EmpRL-DPO" row paired against its SFT policy).
    Stage("t5 dpo", DPO, "t5_dpo.yaml", after=_BOTH, required=False, on_demand=True),
    Stage("dpo", DPO, "dpo.yaml", after=("sft.yaml", "label.yaml"), required=False, on_demand=True),
    Stage("t5 dpo evaluate", EVALUATE, "t5_dpo_evaluate.yaml", after=_T5_EVAL, required=False, on_demand=True),
    Stage("dpo evaluate", EVALUATE, "dpo_evaluate.yaml", after=_EVAL, required=False, on_demand=True),
)


def kinds(stages: tuple[Stage, ...] | None = None) -> dict[str, StageKind]:
    """Command -> kind, for every kind the table's rows use, in table order."""
    out: dict[str, StageKind] = {}
    for stage in STAGES if stages is None else stages:
        out.setdefault(stage.kind.command, stage.kind)
    return out


def kind_of(module: str) -> StageKind | None:
    """The kind whose module is ``module`` (the stage run by ``accelerate launch -m``)."""
    return next((k for k in kinds().values() if k.module == module), None)


if __name__ == "__main__":
    print("\n".join(kinds()))

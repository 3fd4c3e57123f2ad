"""The DPO stage's recipe keys: its own (pairs, rounds, the decoding and LoRA keys it shares with PPO)
and TRL's ``DPOConfig`` with this stage's defaults (docs/dpo.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

from trl import DPOConfig

from emprl.common.policy import DecodingArguments, LoraArguments
from emprl.pipeline.config_limits import at_least


@dataclass
class DPOScriptConfig(DecodingArguments, LoraArguments):
    """Samples take the decoding keys (the paper's defaults), the policy the LoRA keys."""

    sft_model_path: str = field(metadata={"help": "the SFT stage's output folder (merged weights): the policy "
                                                  "and the reference", "existing_path": True})
    labelled_data: str = field(metadata={"help": "the labelling stage's output (save_to_disk folder)",
                                         "existing_path": True})
    identifiers_dir: str | None = field(default=None, metadata={
        "help": "the identifiers stage's output folder", "existing_path": True})
    reward: dict = field(default_factory=lambda: {"empathy": 1.0}, metadata={
        "help": "reward components and weights, as in PPO (the judge of the pairs)"})
    output_dir: str = "outputs/dpo"
    # pairs
    samples_per_context: int = field(default=4, metadata={
        "help": "K responses sampled per training context", "limit": at_least(2, " (a pair needs two samples)")})
    min_reward_margin: float = field(default=0.0, metadata={
        "help": "a context gets a pair only when its best reward exceeds its worst by more than this"})
    contexts_per_round: int | None = field(default=None, metadata={
        "help": "training contexts sampled per round (null: the whole train split)"})
    rounds: int = field(default=1, metadata={"help": "sample-pairs-train rounds; round r > 1 samples from "
                                                     "the policy of round r - 1 (the reference stays SFT)"})
    shard_size: int = field(default=32, metadata={"help": "contexts per shard file (the unit of resume)"})
    generation_batch_size: int = 64
    dtype: str | None = field(default=None, metadata={"help": "policy weights: float32 (default), bfloat16, ..."})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start over even if output_dir holds a finished or interrupted run"})


@dataclass
class DPOTrainingArguments(DPOConfig):
    """TRL's DPOConfig (beta, loss_type, learning rate, ...) with defaults for this stage: no trainer
    checkpoints (a round is the unit of resume), no remote logging, the dataset columns kept."""

    beta: float = 0.1
    save_strategy: str = "no"
    report_to: str | list[str] | None = "none"
    logging_steps: float = 10
    remove_unused_columns: bool = False
    max_length: int | None = 256
    max_prompt_length: int | None = 200
    max_completion_length: int | None = 40
    dataloader_pin_memory: bool = False

"""The PPO stage's recipe keys beyond TRL's ``PPOConfig`` (docs/rl-effect.md for the reward options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from emprl.common.policy import DecodingArguments, LoraArguments
from emprl.common.precision import CHOICES as PRECISIONS
from reward_models.baseline import BASELINES


@dataclass
class PPOScriptConfig(DecodingArguments, LoraArguments):
    """Rollouts take the decoding keys (the paper's defaults), the policy the LoRA keys."""

    sft_model_path: str = field(metadata={"help": "the SFT stage's output folder (merged weights)",
                                          "existing_path": True})
    labelled_data: str = field(metadata={"help": "the labelling stage's output (save_to_disk folder)",
                                         "existing_path": True})
    identifiers_dir: str | None = field(default=None, metadata={
        "help": "the identifiers stage's output folder", "existing_path": True})
    reward: dict = field(default_factory=lambda: {"empathy": 1.0}, metadata={
        "help": "reward components and weights, e.g. {empathy: 1.0}"})
    output_dir: str = "outputs/ppo"
    # policy
    bf16: bool = field(default=False, metadata={"help": "LoRA: load the base weights in bf16 (full fine-tuning keeps fp32 "
                                                        "weights; see mixed_precision)"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto | bf16 | no: bf16 autocast where the device computes bf16 natively (CUDA, CPUs with "
                "AVX512-BF16/AMX), fp32 elsewhere; log-probabilities and the PPO ratio stay fp32",
        "choices": PRECISIONS})
    fix_first_token: bool = field(default=True, metadata={
        "help": "give y1 of encoder-decoder responses its PPO terms (false = TRL 0.11 behaviour)"})
    # rollouts
    generation_batch_size: int | None = field(default=None, metadata={"help": "default: batch_size"})
    # Reward handling beyond TRL's own keys (use_score_norm, use_score_scaling, whiten_rewards).
    samples_per_context: int = field(default=1, metadata={
        "help": "K responses sampled per training context in a step (batch_size must be a multiple of K)"})
    reward_baseline: str = field(default="none", metadata={
        "help": "none (the paper) | leave_one_out: subtract the mean reward of the other K-1 samples of the "
                "same context before TRL sees it (an opt-in beyond the paper; needs samples_per_context >= 2)",
        "choices": BASELINES})
    reward_gold: str = field(default="own", metadata={
        "help": "own (EmpRL) | shuffled: the placebo control, R_emp against the gold levels of another, seeded "
                "training context (same reward scale, no information; docs/rl-effect.md)",
        "choices": ("own", "shuffled")})
    reuse_encoder_states: bool = field(default=True, metadata={
        "help": "encoder-decoder policies: encode each distinct context once per forward pass, shared by its K "
                "samples (same outputs and gradients, less compute; emprl.ppo.encoder_reuse)"})
    group_minibatches: bool = field(default=True, metadata={
        "help": "with samples_per_context K > 1, PPO mini-batches take a context's K samples together, so each "
                "is encoded once (false: TRL's row-level shuffle)"})
    eval_batch_size: int | None = field(default=None, metadata={
        "help": "held-out generation batch (default: generation_batch_size); larger is faster on CPU"})
    # prompt settings: default to what the SFT stage saved with the model (emprl_prompt.json)
    max_source_tokens: int | None = None
    speaker_tag: str | None = None
    listener_tag: str | None = None
    system_prompt: str | None = None
    lr_scheduler_type: str = field(default="constant", metadata={"help": "transformers scheduler name"})
    warmup_steps: int = 0
    lr_decay_steps: int | None = field(default=None, metadata={
        "help": "PPO steps the schedule spans (linear: reaches 0 there); null: steps"})
    lr_decay_over_epochs: float | None = field(default=None, metadata={
        "help": "or: the schedule spans this many passes over the training contexts (the authors: 3)"})
    # evaluation, checkpoints, safety
    eval_steps: int = 100
    eval_samples: int = 200
    eval_repeats: int = field(default=1, metadata={
        "help": "responses sampled per held-out context: a steadier mean for the SFT-vs-PPO comparison"})
    eval_split: str = "validation"
    eval_seed: int = 1234
    save_steps: int = 100
    save_total_limit: int | None = 2
    resume: bool = field(default=False, metadata={"help": "continue from the last checkpoint in output_dir"})
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "start over even if output_dir holds a finished or interrupted run"})
    nan_patience: int = field(default=3, metadata={"help": "consecutive NaN/inf reward steps before stopping"})

    def __post_init__(self):
        super().__post_init__()
        if self.reward_baseline == "leave_one_out" and self.samples_per_context < 2:
            raise ValueError("key 'reward_baseline': leave_one_out needs samples_per_context >= 2, "
                             f"got {self.samples_per_context}")
        if self.lr_decay_steps is not None and self.lr_decay_over_epochs is not None:
            raise ValueError("keys 'lr_decay_steps' and 'lr_decay_over_epochs': set one of them, not both")

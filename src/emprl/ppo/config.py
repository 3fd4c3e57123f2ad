"""The PPO stage's recipe keys beyond TRL's ``PPOConfig`` (docs/rl-effect.md for the reward options)."""

from __future__ import annotations

from dataclasses import dataclass, field

from emprl.common.policy import PAPER_DECODING


@dataclass
class PPOScriptConfig:
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
    use_lora: bool = False
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_target_modules: list[str] | None = field(default=None, metadata={"help": "default: PEFT's per architecture"})
    bf16: bool = field(default=False, metadata={"help": "LoRA: load the base weights in bf16 (full fine-tuning keeps fp32 "
                                                        "weights; see mixed_precision)"})
    mixed_precision: str = field(default="auto", metadata={
        "help": "auto | bf16 | no: bf16 autocast where the device computes bf16 natively (CUDA, CPUs with "
                "AVX512-BF16/AMX), fp32 elsewhere; log-probabilities and the PPO ratio stay fp32"})
    fix_first_token: bool = field(default=True, metadata={
        "help": "give y1 of encoder-decoder responses its PPO terms (false = TRL 0.11 behaviour)"})
    # rollouts (the paper's decoding)
    top_k: int = PAPER_DECODING["top_k"]
    top_p: float = PAPER_DECODING["top_p"]
    temperature: float = PAPER_DECODING["temperature"]
    max_new_tokens: int = PAPER_DECODING["max_new_tokens"]
    min_new_tokens: int = field(default=0, metadata={
        "help": "rollouts end no earlier than this (the authors: 5); see docs/minimum-length.md"})
    generation_batch_size: int | None = field(default=None, metadata={"help": "default: batch_size"})
    # Reward handling beyond TRL's own keys (use_score_norm, use_score_scaling, whiten_rewards).
    samples_per_context: int = field(default=1, metadata={
        "help": "K responses sampled per training context in a step (batch_size must be a multiple of K)"})
    reward_baseline: str = field(default="none", metadata={
        "help": "none (the paper) | leave_one_out: subtract the mean reward of the other K-1 samples of the "
                "same context before TRL sees it (an opt-in beyond the paper; needs samples_per_context >= 2)"})
    reward_gold: str = field(default="own", metadata={
        "help": "own (EmpRL) | shuffled: the placebo control, R_emp against the gold levels of another, seeded "
                "training context (same reward scale, no information; docs/rl-effect.md)"})
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
        from emprl.common.precision import CHOICES
        from reward_models.baseline import BASELINES

        if self.eval_repeats < 1:
            raise ValueError(f"key 'eval_repeats': expected a positive integer, got {self.eval_repeats}")
        if self.samples_per_context < 1:
            raise ValueError(f"key 'samples_per_context': expected a positive integer, got {self.samples_per_context}")
        if self.reward_baseline not in BASELINES:
            raise ValueError(f"key 'reward_baseline': expected one of {', '.join(BASELINES)}, "
                             f"got {self.reward_baseline!r}")
        if self.reward_baseline == "leave_one_out" and self.samples_per_context < 2:
            raise ValueError("key 'reward_baseline': leave_one_out needs samples_per_context >= 2, "
                             f"got {self.samples_per_context}")
        if self.reward_gold not in ("own", "shuffled"):
            raise ValueError(f"key 'reward_gold': expected own or shuffled, got {self.reward_gold!r}")
        if self.mixed_precision not in CHOICES:
            raise ValueError(f"key 'mixed_precision': expected one of {', '.join(CHOICES)}, "
                             f"got {self.mixed_precision!r}")
        if self.lr_decay_steps is not None and self.lr_decay_over_epochs is not None:
            raise ValueError("keys 'lr_decay_steps' and 'lr_decay_over_epochs': set one of them, not both")
        if not 0 <= self.min_new_tokens <= self.max_new_tokens:
            raise ValueError(f"key 'min_new_tokens': expected 0 to max_new_tokens ({self.max_new_tokens}), "
                             f"got {self.min_new_tokens}")


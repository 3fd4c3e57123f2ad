"""The ETHREED stage's recipe keys (``train.py`` is the stage; docs/ethreed.md lists the options that
depart from the paper)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from emprl.pipeline.config_limits import DISTINCT, POSITIVE, CheckedConfig


@dataclass
class EthreedTrainConfig(CheckedConfig):
    data: str = field(metadata={"help": "dialogue data spec FORMAT:PATH for emprl.data.load_dialogues",
                                "existing_path": True})
    listener_emotions: str | None = field(default=None, metadata={
        "help": "optional JSONL of listener-emotion labels: {\"conv_id\": ..., \"emotions\": [label per "
                "utterance of the conversation, \"\" where unknown]}", "existing_path": True})
    glove: str | None = field(default=None, metadata={
        "help": "optional local GloVe-format text file (\"word v1 ... v<embedding_dim>\" per line) to "
                "initialise the word embeddings (paper: 300-d GloVe; not downloadable offline)",
        "existing_path": True})
    output_dir: str = "outputs/ethreed"
    overwrite_output_dir: bool = field(default=False, metadata={
        "help": "rerun even if output_dir holds a finished run of this recipe and inputs"})
    seed: int = 42
    # vocabulary and lengths
    vocab_size: int = 18500
    min_freq: int = 1
    max_turns: int = 8
    max_turn_len: int = 50
    max_target_len: int = 40
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    # model (paper: embedding 300, hidden 300)
    embedding_dim: int = 300
    hidden_size: int = 300
    dropout: float = 0.1
    tie_embeddings: bool = True
    coverage_weight: float = 1.0
    use_party_gru: bool = True
    use_emotion_gru: bool = True
    use_emotion_tracking: bool = True
    use_policy: bool = True
    use_gps_loss: bool = True
    # departures from the paper, as options (docs/ethreed.md "Options"); the defaults are the paper's
    gps_divergence: Literal["kl_q_p", "kl_p_q"] = field(default="kl_q_p", metadata={
        "help": "L2 direction: kl_q_p = KL(policy's listener emotion || true listener emotion), paper Eq. 12; "
                "kl_p_q = the reverse (this project's earlier form)"})
    decoder_input_context: bool = field(default=False, metadata={
        "help": "false: the decoder GRU reads the previous word only (paper Eq. 15); true: also the previous "
                "context vector (input feeding, this project's earlier form)"})
    copy_from: Literal["speaker", "all"] = field(default="speaker", metadata={
        "help": "positions the pointer copies from: speaker = the speaker's turns (paper), all = every turn"})
    # optimisation (paper: Adam, batch 8, lr 5e-4, x0.3 every 3 epochs)
    epochs: int = 10
    batch_size: int = 8
    eval_batch_size: int = 32
    lr: float = 5e-4
    lr_decay: float = 0.3
    lr_decay_epochs: int = 3
    grad_clip: float = 5.0
    num_threads: int | None = field(default=None, metadata={
        "help": "torch CPU threads (null: torch's default); the model's many small recurrent steps often "
                "run fastest on one thread, and far faster than on threads competing for shared cores"})
    # decoding for the shared evaluation: one run over the test split per seed
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2], metadata={
        "help": "one generation run of the test split per seed: generations/seed<k>.jsonl", "limit": DISTINCT})
    max_decode_len: int = 40
    do_sample: bool = field(default=True, metadata={
        "help": "false: greedy decoding (every seed gives the same run only with policy_inference: mean)"})
    top_k: int = field(default=20, metadata={"help": "0 = no top-k filter"})
    # positive even for greedy decoding: unlike the other stages' decoding, 0 never means greedy here
    temperature: float = field(default=0.9, metadata={"limit": POSITIVE})
    policy_inference: Literal["sample", "mean"] = field(default="sample", metadata={
        "help": "R^_e at decoding: sample = a seeded draw from the policy's Gaussian (paper: the stochastic "
                "policy keeps exploring), mean = its mean (deterministic; PPL always uses the mean)"})

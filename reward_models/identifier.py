"""The empathy identifier (EmpRL paper, Fig. 3).

Two independent encoders read the dialogue context and the candidate response. A single attention
head lets every response token look at the context (response = query, context = key/value), the
result is added back to the response states, the response tokens are pooled, and a small head gives
three logits: no / weak / strong communication of one empathy mechanism.

The encoders are any transformers encoder: ``T5EncoderModel`` for the paper's t5-base recipe, a BERT
such as MiniLM for the offline demo.
"""

from __future__ import annotations

import copy
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_model, save_model
from torch import nn
from transformers import AutoConfig, AutoModel, AutoTokenizer, PretrainedConfig
from transformers.models.auto.configuration_auto import CONFIG_MAPPING

from emprl.common.errors import UserError
from emprl.common.io import atomic_dir
from emprl.common.model_files import check_model_files

POOLINGS = ("max", "mean")
HEADS = ("linear", "mlp")
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
FORMAT_TAG = "emprl-empathy-identifier"


# ----------------------------------------------------------------------------- encoders
def _t5_family_classes() -> dict:
    from transformers import MT5EncoderModel, T5EncoderModel, UMT5EncoderModel

    return {"t5": T5EncoderModel, "mt5": MT5EncoderModel, "umt5": UMT5EncoderModel}


def _encoder_class(config: PretrainedConfig):
    """The class that loads only the encoder stack for ``config`` (None: use AutoModel)."""
    t5_family = _t5_family_classes()
    if config.model_type in t5_family:
        return t5_family[config.model_type]
    if getattr(config, "is_encoder_decoder", False):
        raise UserError(
            f"encoder-decoder model type {config.model_type!r} is not supported as an identifier encoder; "
            f"use a T5-family model ({', '.join(t5_family)}) or an encoder-only model (e.g. BERT)"
        )
    return None


def _drop_pooler(encoder: nn.Module) -> nn.Module:
    # BERT-like models carry a [CLS] pooler we never use; unused parameters break DDP's gradient
    # reduction, so remove it (their forward skips a pooler set to None).
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


def encoder_from_config(config: PretrainedConfig) -> nn.Module:
    """A randomly initialised encoder for ``config`` (weights are loaded afterwards)."""
    cls = _encoder_class(config)
    encoder = cls(config) if cls is not None else AutoModel.from_config(config)
    return _drop_pooler(encoder)


def encoder_from_pretrained(name_or_path: str, **kwargs) -> nn.Module:
    """Load the pretrained encoder stack in ``name_or_path`` (a T5 folder yields ``T5EncoderModel``)."""
    from emprl.common.model_files import load_pretrained

    if os.path.isdir(name_or_path):
        check_model_files(name_or_path, "encoder")
    config = AutoConfig.from_pretrained(name_or_path)
    cls = _encoder_class(config)
    loader = cls if cls is not None else AutoModel
    # The encoder part of a fuller checkpoint (T5's decoder, BERT's pooler and MLM head) is expected
    # to leave tensors unused; missing ones are not.
    return _drop_pooler(load_pretrained(loader, name_or_path, "encoder", allow_unexpected=("",),
                                        allow_missing=("pooler.",), config=config, **kwargs))


def _config_from_dict(data: dict) -> PretrainedConfig:
    data = dict(data)
    model_type = data.get("model_type")
    if model_type not in CONFIG_MAPPING:
        raise UserError(f"identifier config: unknown encoder model_type {model_type!r}")
    return CONFIG_MAPPING[model_type].from_dict(data)


# ----------------------------------------------------------------------------- the model
@dataclass
class EmpathyIdentifierConfig:
    """Everything needed to rebuild an identifier (the encoder weights come from the safetensors)."""

    encoder_config: dict = field(default_factory=dict)  # transformers config of each encoder
    pooling: str = "max"  # paper: max-pooling; authors' released code: masked mean
    head: str = "linear"  # paper: one Linear; authors' code: Linear(d, d/2) -> tanh -> dropout -> Linear
    dropout: float = 0.1  # on the attention weights and inside the head
    num_labels: int = 3
    encoder_name_or_path: str = ""  # provenance only

    def __post_init__(self):
        # Store the JSON form (e.g. id2label keys become strings) so a saved and reloaded config compares equal.
        self.encoder_config = json.loads(json.dumps(self.encoder_config))
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

    def to_json_string(self) -> str:
        """The config as JSON: transformers' tensorboard callback records it for the model it logs."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @property
    def hidden_size(self) -> int:
        cfg = self.encoder_config
        size = cfg.get("hidden_size") or cfg.get("d_model")
        if not size:
            raise ValueError("encoder_config has neither hidden_size nor d_model")
        return int(size)


class ResponseContextAttention(nn.Module):
    """Single-head scaled dot-product attention: response tokens attend over context tokens."""

    def __init__(self, hidden_size: int, dropout: float):
        super().__init__()
        self.q_proj = nn.Linear(hidden_size, hidden_size)
        self.k_proj = nn.Linear(hidden_size, hidden_size)
        self.v_proj = nn.Linear(hidden_size, hidden_size)
        self.out_proj = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.scale = 1.0 / math.sqrt(hidden_size)

    def forward(self, response_states, context_states, context_mask):
        q = self.q_proj(response_states)
        k = self.k_proj(context_states)
        v = self.v_proj(context_states)
        # Scores in fp32 so the mask value and the softmax behave the same under bf16 autocast.
        scores = torch.matmul(q, k.transpose(-1, -2)).float() * self.scale
        keep = context_mask[:, None, :].bool()
        scores = scores.masked_fill(~keep, torch.finfo(scores.dtype).min)
        weights = self.dropout(scores.softmax(dim=-1).to(v.dtype))
        return self.out_proj(torch.matmul(weights, v))


def masked_pool(states: torch.Tensor, mask: torch.Tensor, how: str) -> torch.Tensor:
    """Pool [B, L, d] states over the positions where ``mask`` is 1."""
    keep = mask.bool().unsqueeze(-1)
    if how == "max":
        filled = states.masked_fill(~keep, torch.finfo(states.dtype).min)
        return filled.max(dim=1).values
    if how == "mean":
        total = states.masked_fill(~keep, 0.0).sum(dim=1)
        count = keep.sum(dim=1).clamp(min=1).to(total.dtype)
        return total / count
    raise ValueError(f"unknown pooling {how!r}")


class EmpathyIdentifier(nn.Module):
    """Predicts the level (0 no, 1 weak, 2 strong) of one empathy mechanism for a (context, response)."""

    def __init__(self, config: EmpathyIdentifierConfig, context_encoder=None, response_encoder=None,
                 tokenizer=None):
        super().__init__()
        self.config = config
        enc_cfg = _config_from_dict(config.encoder_config)
        self.context_encoder = context_encoder if context_encoder is not None else encoder_from_config(enc_cfg)
        self.response_encoder = (
            response_encoder if response_encoder is not None else encoder_from_config(enc_cfg)
        )
        if self.context_encoder is self.response_encoder:
            raise ValueError("context and response encoders must be independent modules")
        d = config.hidden_size
        self.attention = ResponseContextAttention(d, config.dropout)
        if config.head == "linear":
            self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(d, config.num_labels))
        else:
            # Same layout as the authors' classifier (indices 0 and 3 hold the Linear layers).
            self.head = nn.Sequential(
                nn.Linear(d, d // 2), nn.Tanh(), nn.Dropout(config.dropout), nn.Linear(d // 2, config.num_labels)
            )
        self.tokenizer = tokenizer  # plain attribute, not a submodule; saved beside the weights

    # -- forward ------------------------------------------------------------------------------
    def encode_context(self, context_input_ids, context_attention_mask) -> torch.Tensor:
        """Context token states [B, Lc, d]; compute once per batch and pass as ``context_states``."""
        return self.context_encoder(
            input_ids=context_input_ids, attention_mask=context_attention_mask
        ).last_hidden_state

    def encode_response(self, response_input_ids, response_attention_mask) -> torch.Tensor:
        return self.response_encoder(
            input_ids=response_input_ids, attention_mask=response_attention_mask
        ).last_hidden_state

    def forward(self, context_input_ids=None, context_attention_mask=None, response_input_ids=None,
                response_attention_mask=None, context_states=None) -> torch.Tensor:
        """Logits [B, num_labels]. ``context_states`` (from :meth:`encode_context`) skips the context
        encoder; ``context_attention_mask`` is still needed to mask padded context keys."""
        if context_attention_mask is None or response_input_ids is None or response_attention_mask is None:
            raise ValueError("context_attention_mask, response_input_ids and response_attention_mask are required")
        if context_states is None:
            if context_input_ids is None:
                raise ValueError("pass context_input_ids or context_states")
            context_states = self.encode_context(context_input_ids, context_attention_mask)
        response_states = self.encode_response(response_input_ids, response_attention_mask)
        attended = self.attention(response_states, context_states, context_attention_mask)
        hidden = response_states + attended.to(response_states.dtype)
        pooled = masked_pool(hidden, response_attention_mask, self.config.pooling)
        return self.head(pooled)

    # -- construction / persistence -----------------------------------------------------------
    @classmethod
    def from_encoders(cls, encoder_name_or_path: str, pooling: str = "max", head: str = "linear",
                      dropout: float = 0.1, tokenizer=None, load_tokenizer: bool = True) -> EmpathyIdentifier:
        """Both encoders start from the pretrained weights in ``encoder_name_or_path`` (independent copies);
        the attention and the head are freshly initialised."""
        path = str(encoder_name_or_path)
        context_encoder = encoder_from_pretrained(path)
        response_encoder = copy.deepcopy(context_encoder)
        if tokenizer is None and load_tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(path)
        config = EmpathyIdentifierConfig(
            encoder_config=context_encoder.config.to_dict(), pooling=pooling, head=head, dropout=dropout,
            encoder_name_or_path=path,
        )
        return cls(config, context_encoder, response_encoder, tokenizer=tokenizer)

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Write config.json, model.safetensors and the tokenizer (if any), replacing the folder atomically."""
        with atomic_dir(str(save_directory)) as tmp:
            tmp = Path(tmp)
            payload = {"format": FORMAT_TAG, **asdict(self.config)}
            (tmp / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=True), encoding="utf-8")
            # save_model de-duplicates tied tensors (T5's shared / embed_tokens), which save_file refuses.
            save_model(self, str(tmp / WEIGHTS_NAME))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, load_tokenizer: bool = True) -> EmpathyIdentifier:
        directory = Path(directory)
        config_path = directory / CONFIG_NAME
        weights_path = directory / WEIGHTS_NAME
        for p in (config_path, weights_path):
            if not p.is_file():
                raise UserError(f"{directory}: not a saved empathy identifier (missing {p.name})")
        try:
            payload = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise UserError(f"{config_path}: invalid JSON ({err.msg} at line {err.lineno})") from None
        if payload.pop("format", None) != FORMAT_TAG:
            raise UserError(f"{config_path}: not an empathy identifier config (expected format {FORMAT_TAG!r})")
        try:
            config = EmpathyIdentifierConfig(**payload)
        except (TypeError, ValueError) as err:
            raise UserError(f"{config_path}: {err}") from None
        tokenizer = None
        if load_tokenizer and (directory / "tokenizer_config.json").is_file():
            tokenizer = AutoTokenizer.from_pretrained(str(directory))
        model = cls(config, tokenizer=tokenizer)
        check_model_files(str(directory), "identifier")  # a damaged file: one line, not a Rust traceback
        missing, unexpected = load_model(model, str(weights_path), strict=False)
        if missing or unexpected:
            raise UserError(
                f"identifier: {weights_path}: weights do not match the config ({len(missing)} of the model's "
                f"{len(model.state_dict())} tensors missing, {len(unexpected)} unexpected; e.g. missing "
                f"{sorted(missing)[:3]}, unexpected {sorted(unexpected)[:3]}); copy or train it again"
            )
        model.eval()
        return model

"""Encode each context once: an encoder-decoder policy's encoder runs on the distinct rows of a batch.

With K samples per context (``samples_per_context``) a PPO batch holds every prompt K times, and the
encoder (most of a T5 forward pass for 96-token contexts and 30-token replies) would encode the same
rows K times in sampling, in TRL's log-probability passes and in every PPO epoch. ``reuse_encoder_states``
makes the encoder of a policy (and of its frozen reference) compute the distinct (input ids, attention
mask) rows once and hand every copy the same states. Gradients are unchanged: indexing sums the copies'
gradients into the one computation, exactly what the K separate computations would have summed to
(docs/rl-effect.md, "PPO speed"). Only the forward method of the encoder instance is replaced, so
weights, ``state_dict`` and saved folders are untouched.
"""

from __future__ import annotations

import torch


def reuse_encoder_states(model) -> bool:
    """Install the distinct-rows encoder on ``model`` (a transformers encoder-decoder, or a TRL
    value-head wrapper of one); returns False for a model without an encoder (decoder-only)."""
    inner = getattr(model, "pretrained_model", model)
    get_encoder = getattr(inner, "get_encoder", None)
    if not getattr(getattr(inner, "config", None), "is_encoder_decoder", False) or get_encoder is None:
        return False
    encoder = get_encoder()
    if getattr(encoder, "_emprl_distinct_rows", False):
        return True
    original = encoder.forward  # bound to this instance; install after any deepcopy of the model

    def forward(input_ids=None, attention_mask=None, **kwargs):
        if input_ids is None or input_ids.dim() != 2 or len(input_ids) < 2:
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        key = input_ids if attention_mask is None else torch.cat([input_ids, attention_mask.to(input_ids)], dim=1)
        distinct, inverse = torch.unique(key, dim=0, return_inverse=True)
        if len(distinct) == len(key):
            return original(input_ids=input_ids, attention_mask=attention_mask, **kwargs)
        # one representative row per distinct row (any copy: they are identical)
        first = torch.empty(len(distinct), dtype=torch.long, device=key.device)
        first.scatter_(0, inverse, torch.arange(len(key), device=key.device))
        out = original(input_ids=input_ids[first],
                       attention_mask=None if attention_mask is None else attention_mask[first], **kwargs)
        return _expand(out, inverse)

    encoder.forward = forward
    encoder._emprl_distinct_rows = True
    return True


def _expand(out, inverse: torch.Tensor):
    """Every tensor of the encoder's output (states, all layers' states, attentions) back to one row per
    copy; the cache of a decoder stack is not produced by an encoder and is left alone."""
    def expand(value):
        if isinstance(value, torch.Tensor):
            return value.index_select(0, inverse)
        if isinstance(value, tuple):
            return tuple(expand(v) for v in value)
        return value

    if isinstance(out, tuple) and not hasattr(out, "keys"):
        return tuple(expand(v) for v in out)
    for key in list(out.keys()):
        out[key] = expand(out[key])
    return out

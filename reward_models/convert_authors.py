"""Import the EmpRL authors' released identifier checkpoints into our format.

    python -m reward_models.convert_authors --checkpoint model.pt --encoder DIR --out DIR

The released ``model.pt`` is a plain state dict: ``context_encoder.*`` and ``response_encoder.*`` (T5
encoders), ``attn.{q_linear,k_linear,v_linear,out}.*`` (one attention head), and the classifier
``classifier.0.*`` (Linear(d, d/2)) and ``classifier.3.*`` (Linear(d/2, 3)) with tanh and dropout between;
the responses are pooled by masked mean. ``--encoder`` names the matching pretrained encoder folder
(t5-base for the released files): its config rebuilds the encoders, its tokenizer is saved alongside.
Sizes are read from the tensors, so any encoder width works.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path

import torch
from transformers import AutoConfig, AutoTokenizer

from emprl.common.errors import UserError, run_cli

from .identifier import EmpathyIdentifier, EmpathyIdentifierConfig

ATTENTION_MAP = {"attn.q_linear.": "attention.q_proj.", "attn.k_linear.": "attention.k_proj.",
                 "attn.v_linear.": "attention.v_proj.", "attn.out.": "attention.out_proj."}
HEAD_MAP = {"classifier.0.": "head.0.", "classifier.3.": "head.3."}
ENCODERS = ("context_encoder", "response_encoder")


def _unwrap(obj) -> dict[str, torch.Tensor]:
    """Accept a bare state dict or one nested under a usual key; drop DataParallel's 'module.' prefix."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError("checkpoint: expected a state dict of tensors (name -> tensor)")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def _encoder_prefix(keys: list[str], target_keys: set[str]) -> str | None:
    """The extra prefix (e.g. '' or 'encoder.'/'model.') under which ``keys`` hold the encoder's own keys."""
    if not keys:
        return None
    if target_keys & set(keys):
        return ""
    probe = max(target_keys, key=len)  # a long, distinctive key such as a final layer norm
    for k in keys:
        if k.endswith("." + probe):
            return k[: -len(probe)]
    return None


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], encoder_config, pooling: str = "mean",
                       dropout: float = 0.1, tokenizer=None, encoder_name_or_path: str = "") -> EmpathyIdentifier:
    """Build an :class:`EmpathyIdentifier` holding the authors' weights; raise UserError on any key mismatch."""
    sd = _unwrap(state_dict)
    required = ["attn.q_linear.weight", "classifier.0.weight", "classifier.3.weight"]
    absent = [k for k in required if k not in sd]
    if absent:
        raise UserError(f"checkpoint: missing keys {absent}; is this an EmpRL identifier checkpoint?")
    d = sd["attn.q_linear.weight"].shape[0]
    enc_cfg = encoder_config.to_dict() if hasattr(encoder_config, "to_dict") else dict(encoder_config)
    enc_d = enc_cfg.get("hidden_size") or enc_cfg.get("d_model")
    if enc_d != d:
        raise UserError(f"checkpoint: attention width {d} does not match the encoder's hidden size {enc_d}; "
                        "pass the encoder the checkpoint was trained from (--encoder)")
    mid, n_labels = sd["classifier.0.weight"].shape[0], sd["classifier.3.weight"].shape[0]
    if mid != d // 2 or n_labels != 3:
        raise UserError(f"checkpoint: classifier is Linear({d},{mid}) -> Linear({mid},{n_labels}); "
                        f"expected Linear({d},{d // 2}) -> Linear({d // 2},3)")

    config = EmpathyIdentifierConfig(encoder_config=enc_cfg, pooling=pooling, head="mlp", dropout=dropout,
                                     encoder_name_or_path=encoder_name_or_path)
    model = EmpathyIdentifier(config, tokenizer=tokenizer)
    own = model.state_dict()

    mapped: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    for enc in ENCODERS:
        sub = {k[len(enc) + 1:]: v for k, v in sd.items() if k.startswith(enc + ".")}
        targets = {k[len(enc) + 1:] for k in own if k.startswith(enc + ".")}
        prefix = _encoder_prefix(list(sub), targets)
        if prefix is None:
            raise UserError(f"checkpoint: no {enc}.* weights matching a {enc_cfg.get('model_type')} encoder")
        for k, v in sub.items():
            if k.startswith(prefix) and k[len(prefix):] in targets:
                mapped[f"{enc}.{k[len(prefix):]}"] = v
            else:
                unexpected.append(f"{enc}.{k}")
    for k, v in sd.items():
        if k.startswith(tuple(e + "." for e in ENCODERS)):
            continue
        for old, new in {**ATTENTION_MAP, **HEAD_MAP}.items():
            if k.startswith(old):
                mapped[new + k[len(old):]] = v
                break
        else:
            unexpected.append(k)

    # Tied tensors (T5's shared embedding and encoder.embed_tokens) need only one name present.
    alias_of: dict[int, set[str]] = {}
    for k, t in own.items():
        alias_of.setdefault(t.data_ptr(), set()).add(k)
    missing = [k for k in own if k not in mapped and not (alias_of[own[k].data_ptr()] & mapped.keys())]
    if missing or unexpected:
        raise UserError(f"checkpoint: {len(missing)} missing key(s) {sorted(missing)[:5]}, "
                        f"{len(unexpected)} unexpected key(s) {sorted(unexpected)[:5]}")
    bad_shape = [k for k, v in mapped.items() if own[k].shape != v.shape]
    if bad_shape:
        k = bad_shape[0]
        raise UserError(f"checkpoint: {k} has shape {tuple(mapped[k].shape)}, expected {tuple(own[k].shape)}")
    model.load_state_dict(mapped, strict=False)
    return model.eval()


def convert(checkpoint: str, encoder: str, out: str, pooling: str = "mean", dropout: float = 0.1) -> Path:
    if not Path(checkpoint).is_file():
        raise UserError(f"--checkpoint {checkpoint}: no such file")
    encoder_path = _resolve_encoder(encoder)
    try:
        encoder_config = AutoConfig.from_pretrained(encoder_path)
    except OSError as err:
        raise UserError(f"--encoder {encoder}: cannot read a transformers config there ({err})") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(encoder_path)
    except (OSError, ValueError):
        tokenizer = None  # the identifier still converts; the reward then needs a tokenizer passed in
    try:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # a pickle with code objects, a truncated file, not a torch file ...
        raise UserError(f"--checkpoint {checkpoint}: not loadable as plain tensors ({type(err).__name__})") from None
    model = convert_state_dict(state, encoder_config, pooling=pooling, dropout=dropout, tokenizer=tokenizer,
                               encoder_name_or_path=str(encoder))
    model.save_pretrained(out)
    return Path(out)


def _resolve_encoder(name: str) -> str:
    try:
        from emprl.common.models import resolve_model
    except ImportError:
        return name
    return resolve_model(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m reward_models.convert_authors", description=__doc__.split("\n")[1])
    parser.add_argument("--checkpoint", required=True, help="the authors' model.pt (a state dict)")
    parser.add_argument("--encoder", required=True, help="pretrained encoder folder (t5-base for the released files)")
    parser.add_argument("--out", required=True, help="output folder for the converted identifier")
    parser.add_argument("--pooling", default="mean", choices=("mean", "max"), help="authors' code: mean")
    parser.add_argument("--dropout", type=float, default=0.1)
    args = parser.parse_args(argv)
    out = convert(args.checkpoint, args.encoder, args.out, pooling=args.pooling, dropout=args.dropout)
    print(f"wrote {out}")


if __name__ == "__main__":
    run_cli(main)

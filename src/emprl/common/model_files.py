"""One loader for every model folder a stage reads: a policy, its reference, an identifier or its
encoder (docs/lifecycle.md, "Model folders").

:func:`check_model_files` reads a folder's files without building the model: ``config.json`` must be
JSON, safetensors headers must be whole, a pickle weights file (``*.bin``) must load with
``torch.load(weights_only=True)``, and there must be weights at all. :func:`load_pretrained` then
loads the model and refuses weights that do not fill it: transformers would start every tensor it
does not find from random values and only log a notice.

The only gaps allowed are the ones a stage makes on purpose, listed here:

- ``v_head.*`` left over in a PPO output read as a plain generator (TRL's wrappers save the value head
  in the same file; generation does not use it). PPO's own fresh value head is added after loading,
  by TRL's wrapper (ppo/setup.py), so it is never "missing" here.
- the pooler of an identifier's encoder (``reward_models.identifier`` drops it after loading) and the
  rest of a fuller checkpoint the encoder is taken from (a T5 decoder, a BERT MLM head).
- ``emprl.init_model`` builds its model from a config, not from a folder: it does not come here.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os

from emprl.common.errors import UserError

ALLOWED_UNEXPECTED = ("v_head.",)
_WEIGHTS = ("*.safetensors", "*.bin")
_NOT_WEIGHTS = ("training_args.bin",)  # transformers' pickled arguments: never loaded


def check_model_files(folder: str, what: str = "model") -> None:
    """One line for a folder whose files cannot be loaded as they are (before any folder is made)."""
    config = os.path.join(folder, "config.json")
    adapter = os.path.isfile(os.path.join(folder, "adapter_config.json"))
    if not os.path.isfile(config) and not adapter:
        raise UserError(f"{what}: {folder} has no config.json; expected a saved model folder")
    for path in (config, os.path.join(folder, "adapter_config.json")):
        if os.path.isfile(path):
            _check_json(path, what)
    weights = [p for pattern in _WEIGHTS for p in sorted(glob.glob(os.path.join(folder, pattern)))
               if os.path.basename(p) not in _NOT_WEIGHTS]
    if not weights:
        raise UserError(f"{what}: {folder} holds no weights (model.safetensors); copy or export the model again")
    safetensors = [p for p in weights if p.endswith(".safetensors")]
    for path in safetensors:
        _check_safetensors(path, what)
    if not safetensors:  # transformers reads a pickle only where there is no safetensors file
        for path in weights:
            _check_pickle(path, what)


def load_pretrained(cls, path: str, what: str = "model", allow_unexpected: tuple[str, ...] = ALLOWED_UNEXPECTED,
                    allow_missing: tuple[str, ...] = (), **kwargs):
    """``cls.from_pretrained(path, **kwargs)`` that refuses weights which do not fill the model (missing,
    unexpected or mismatched tensors) with one line naming the folder and the count. transformers'
    own notices about them are not printed: this function reports what matters."""
    check_model_files(path, what)
    with quiet_transformers():
        try:
            model, info = cls.from_pretrained(path, output_loading_info=True, **kwargs)
        except (OSError, ValueError, RuntimeError, KeyError) as err:
            if "out of memory" in str(err).lower():  # the machine's limit, not the folder's fault
                raise
            raise UserError(f"{what}: {path} does not load ({_first_line(err)}); copy or export the model "
                            "again") from None
    missing = [k for k in info.get("missing_keys") or [] if not (allow_missing and k.startswith(allow_missing))]
    unexpected = [k for k in info.get("unexpected_keys") or [] if not k.startswith(allow_unexpected)]
    mismatched = list(info.get("mismatched_keys") or [])
    if missing or mismatched:
        total = len(model.state_dict())
        bad = missing + [m[0] if isinstance(m, tuple) else m for m in mismatched]
        raise UserError(f"{what}: {path}: {len(bad)} of the model's {total} tensors are missing from its weights "
                        f"or do not match config.json (e.g. '{bad[0]}'); it would start from random values: "
                        "copy or export the model again")
    if unexpected:
        raise UserError(f"{what}: {path}: {len(unexpected)} tensors in its weights are not part of the model "
                        f"config.json describes (e.g. '{unexpected[0]}'); copy or export the model again")
    return model


@contextlib.contextmanager
def quiet_transformers():
    """transformers' log at error level only, for a load whose outcome the caller checks itself."""
    from transformers.utils import logging as hf_logging

    level = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)


def _check_json(path: str, what: str) -> None:
    try:
        with open(path, encoding="utf-8") as fh:
            json.load(fh)
    except (ValueError, UnicodeDecodeError) as err:
        raise UserError(f"{what}: {path} is not valid JSON ({_first_line(err)}); the file is damaged or cut "
                        "short: copy or export the model again") from None


def _check_safetensors(path: str, what: str) -> None:
    from safetensors import safe_open

    try:
        with safe_open(path, framework="pt") as fh:
            fh.keys()
    except Exception as err:  # the Rust error type has no Python base class to name
        raise UserError(f"{what}: {path} is damaged or cut short ({_first_line(err)[:120]}); "
                        "copy or export it again") from None


def _check_pickle(path: str, what: str) -> None:
    import torch

    try:
        torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for unsafe content, RuntimeError/EOFError for a cut file
        raise UserError(f"{what}: {path} is a pickle file that does not load as plain tensors "
                        f"({type(err).__name__}); only safetensors or weights_only pickles are read: save "
                        "the model with safe_serialization=True") from None


def _first_line(err: BaseException) -> str:
    return " ".join(str(err).split())[:200] or type(err).__name__

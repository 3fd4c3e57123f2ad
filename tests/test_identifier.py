"""EmpathyIdentifier: shapes, masking, pooling, persistence and the authors' checkpoint converter."""

from __future__ import annotations

import json

import pytest
import tiny
import torch
from transformers import BertConfig, BertModel, T5Config, T5EncoderModel

from emprl.common.errors import UserError
from reward_models import EmpathyIdentifier, EmpathyIdentifierConfig, masked_pool
from reward_models.convert_authors import convert_state_dict
from reward_models.convert_authors import main as convert_main


def make_tokenizer(tmp_path):
    return tiny.make_bert_tokenizer(tmp_path)


def bert_config(vocab_size):
    return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                      intermediate_size=64, max_position_embeddings=128)


def t5_config(vocab_size):
    return T5Config(vocab_size=vocab_size, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
                    num_decoder_layers=2, decoder_start_token_id=0, pad_token_id=0)


def tiny_identifier(tokenizer, kind="bert", pooling="max", head="linear", seed=0):
    torch.manual_seed(seed)
    cfg = bert_config(len(tokenizer)) if kind == "bert" else t5_config(len(tokenizer))
    ident = EmpathyIdentifier(EmpathyIdentifierConfig(encoder_config=cfg.to_dict(), pooling=pooling, head=head),
                              tokenizer=tokenizer)
    return ident.eval()


def encode(tokenizer, contexts, responses, pad_to=None):
    kw = {"padding": "max_length", "max_length": pad_to} if pad_to else {"padding": True}
    c = tokenizer(contexts, return_tensors="pt", **kw)
    r = tokenizer(responses, return_tensors="pt", **kw)
    return {"context_input_ids": c["input_ids"], "context_attention_mask": c["attention_mask"],
            "response_input_ids": r["input_ids"], "response_attention_mask": r["attention_mask"]}


CONTEXTS = ["my dog lost today", "i am happy great news", "the job ? it must be hard"]
RESPONSES = ["i am so sorry to hear that", "great", "how are you doing ?"]


@pytest.mark.parametrize("kind", ["bert", "t5"])
@pytest.mark.parametrize("head", ["linear", "mlp"])
def test_shapes_and_padding_invariance(tmp_path, kind, head):
    tok = make_tokenizer(tmp_path)
    ident = tiny_identifier(tok, kind=kind, head=head)
    with torch.no_grad():
        tight = ident(**encode(tok, CONTEXTS, RESPONSES))
        padded = ident(**encode(tok, CONTEXTS, RESPONSES, pad_to=40))
    assert tight.shape == (3, 3)
    # Extra padding on both inputs must be invisible: masked keys and masked pooling.
    assert torch.allclose(tight, padded, atol=1e-5)
    # ... and the batch rows are independent: one row alone gives the same logits.
    with torch.no_grad():
        alone = ident(**encode(tok, CONTEXTS[1:2], RESPONSES[1:2]))
    assert torch.allclose(alone[0], tight[1], atol=1e-5)


def test_encoders_are_independent_copies(tmp_path):
    tok = make_tokenizer(tmp_path)
    enc_dir = tmp_path / "enc"
    torch.manual_seed(0)
    BertModel(bert_config(len(tok))).save_pretrained(enc_dir)
    tok.save_pretrained(enc_dir)
    ident = EmpathyIdentifier.from_encoders(str(enc_dir))
    c, r = ident.context_encoder, ident.response_encoder
    assert c is not r
    w_c = c.embeddings.word_embeddings.weight
    w_r = r.embeddings.word_embeddings.weight
    assert torch.equal(w_c, w_r) and w_c.data_ptr() != w_r.data_ptr()
    with torch.no_grad():
        w_c.add_(1.0)
    assert not torch.equal(w_c, w_r)
    assert ident.tokenizer is not None and c.pooler is None  # unused pooler removed (DDP-safe)


def test_context_states_reuse_matches_full_forward(tmp_path):
    tok = make_tokenizer(tmp_path)
    ident = tiny_identifier(tok, kind="t5")
    batch = encode(tok, CONTEXTS, RESPONSES)
    with torch.no_grad():
        full = ident(**batch)
        states = ident.encode_context(batch["context_input_ids"], batch["context_attention_mask"])
        reused = ident(context_input_ids=None, context_attention_mask=batch["context_attention_mask"],
                       response_input_ids=batch["response_input_ids"],
                       response_attention_mask=batch["response_attention_mask"], context_states=states)
    assert torch.allclose(full, reused, atol=1e-6)


def test_masked_pool_max_and_mean():
    states = torch.tensor([[[1.0, -2.0], [3.0, 5.0], [100.0, 100.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert torch.equal(masked_pool(states, mask, "max"), torch.tensor([[3.0, 5.0]]))
    assert torch.equal(masked_pool(states, mask, "mean"), torch.tensor([[2.0, 1.5]]))


def test_max_and_mean_pooling_differ_in_the_model(tmp_path):
    tok = make_tokenizer(tmp_path)
    a = tiny_identifier(tok, pooling="max", seed=3)
    b = tiny_identifier(tok, pooling="mean", seed=3)
    b.load_state_dict(a.state_dict())
    batch = encode(tok, CONTEXTS, RESPONSES)
    with torch.no_grad():
        assert not torch.allclose(a(**batch), b(**batch))


def test_bad_options_rejected():
    with pytest.raises(ValueError, match="pooling"):
        EmpathyIdentifierConfig(encoder_config={"model_type": "bert"}, pooling="avg")
    with pytest.raises(ValueError, match="head"):
        EmpathyIdentifierConfig(encoder_config={"model_type": "bert"}, head="deep")


@pytest.mark.parametrize("kind", ["bert", "t5"])
def test_save_load_round_trip(tmp_path, kind):
    tok = make_tokenizer(tmp_path)
    ident = tiny_identifier(tok, kind=kind, pooling="mean", head="mlp")
    out = tmp_path / "saved"
    ident.save_pretrained(out)
    assert {"config.json", "model.safetensors", "tokenizer_config.json"} <= {p.name for p in out.iterdir()}
    loaded = EmpathyIdentifier.from_pretrained(out)
    assert loaded.config == ident.config
    batch = encode(tok, CONTEXTS, RESPONSES)
    with torch.no_grad():
        assert torch.equal(ident(**batch), loaded(**batch))
    # The saved tokenizer tokenizes identically.
    assert loaded.tokenizer(RESPONSES)["input_ids"] == tok(RESPONSES)["input_ids"]
    # Saving again over an existing folder replaces it and leaves no temporary folders behind.
    ident.save_pretrained(out)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(UserError, match="missing config.json"):
        EmpathyIdentifier.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"format": "something-else"}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(UserError, match="not an empathy identifier"):
        EmpathyIdentifier.from_pretrained(tmp_path)


# ----------------------------------------------------------------------------- converter
def authors_state_dict(tok, seed=0):
    """A random state dict laid out like the authors' released model.pt, on a tiny T5 encoder."""
    torch.manual_seed(seed)
    cfg = t5_config(len(tok))
    d = cfg.d_model
    sd = {}
    for enc in ("context_encoder", "response_encoder"):
        for k, v in T5EncoderModel(cfg).state_dict().items():
            sd[f"{enc}.{k}"] = v.clone()
    for name in ("q_linear", "k_linear", "v_linear", "out"):
        lin = torch.nn.Linear(d, d)
        sd[f"attn.{name}.weight"], sd[f"attn.{name}.bias"] = lin.weight.detach(), lin.bias.detach()
    for idx, (i, o) in {"0": (d, d // 2), "3": (d // 2, 3)}.items():
        lin = torch.nn.Linear(i, o)
        sd[f"classifier.{idx}.weight"], sd[f"classifier.{idx}.bias"] = lin.weight.detach(), lin.bias.detach()
    return cfg, sd


def reference_forward(sd, cfg, batch):
    """The authors' architecture written out directly: mean pooling and the tanh MLP head."""
    encoders = {}
    for enc in ("context_encoder", "response_encoder"):
        m = T5EncoderModel(cfg).eval()
        m.load_state_dict({k[len(enc) + 1:]: v for k, v in sd.items() if k.startswith(enc + ".")})
        encoders[enc] = m
    lin = lambda name, x: x @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]  # noqa: E731
    c = encoders["context_encoder"](input_ids=batch["context_input_ids"],
                                    attention_mask=batch["context_attention_mask"]).last_hidden_state
    r = encoders["response_encoder"](input_ids=batch["response_input_ids"],
                                     attention_mask=batch["response_attention_mask"]).last_hidden_state
    q, k, v = lin("attn.q_linear", r), lin("attn.k_linear", c), lin("attn.v_linear", c)
    scores = q @ k.transpose(1, 2) / cfg.d_model ** 0.5
    scores = scores.masked_fill(batch["context_attention_mask"][:, None, :] == 0, -1e9)
    h = r + lin("attn.out", scores.softmax(-1) @ v)
    m = batch["response_attention_mask"].unsqueeze(-1).float()
    pooled = (h * m).sum(1) / m.sum(1)
    return lin("classifier.3", torch.tanh(lin("classifier.0", pooled)))


def test_converter_reproduces_authors_architecture(tmp_path):
    tok = make_tokenizer(tmp_path)
    cfg, sd = authors_state_dict(tok)
    ident = convert_state_dict(sd, cfg)
    assert ident.config.pooling == "mean" and ident.config.head == "mlp" and ident.config.hidden_size == 32
    assert torch.equal(ident.attention.k_proj.weight, sd["attn.k_linear.weight"])
    assert torch.equal(ident.head[3].bias, sd["classifier.3.bias"])
    batch = encode(tok, CONTEXTS, RESPONSES)
    with torch.no_grad():
        assert torch.allclose(ident(**batch), reference_forward(sd, cfg, batch), atol=1e-5)


def test_converter_cli_and_key_errors(tmp_path):
    tok = make_tokenizer(tmp_path)
    cfg, sd = authors_state_dict(tok)
    enc_dir = tmp_path / "t5enc"
    T5EncoderModel(cfg).save_pretrained(enc_dir)
    tok.save_pretrained(enc_dir)
    ckpt = tmp_path / "model.pt"
    torch.save(sd, ckpt)
    convert_main(["--checkpoint", str(ckpt), "--encoder", str(enc_dir), "--out", str(tmp_path / "conv")])
    loaded = EmpathyIdentifier.from_pretrained(tmp_path / "conv")
    assert torch.equal(loaded.response_encoder.shared.weight, sd["response_encoder.shared.weight"])
    assert loaded.tokenizer is not None

    extra = dict(sd, **{"attn.extra.weight": torch.zeros(2)})
    with pytest.raises(UserError, match=r"unexpected key\(s\) \['attn.extra.weight'\]"):
        convert_state_dict(extra, cfg)
    missing = {k: v for k, v in sd.items() if "block.1.layer.0.SelfAttention.q" not in k}
    with pytest.raises(UserError, match="missing key"):
        convert_state_dict(missing, cfg)
    with pytest.raises(UserError, match="does not match the encoder's hidden size"):
        convert_state_dict(sd, t5_config(len(tok)).__class__(d_model=48, num_layers=2, num_heads=4, d_kv=12))

"""Encoding each context once (emprl.ppo.encoder_reuse) changes neither outputs nor gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.tiny import make_tiny_t5


@pytest.fixture(scope="module")
def t5(tmp_path_factory):
    from transformers import AutoModelForSeq2SeqLM

    folder = str(tmp_path_factory.mktemp("t5"))
    make_tiny_t5(folder)
    model = AutoModelForSeq2SeqLM.from_pretrained(folder)
    model.eval()
    return model


def _batch():
    g = torch.Generator().manual_seed(0)
    distinct = torch.randint(4, 60, (3, 9), generator=g)
    mask = torch.ones_like(distinct)
    mask[1, 6:] = 0  # one padded row
    order = torch.tensor([0, 0, 1, 2, 1, 0, 2, 2])  # copies, not adjacent
    labels = torch.randint(4, 60, (len(order), 5), generator=g)
    return distinct[order], mask[order], labels


def _loss_and_grads(model, ids, mask, labels):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=mask, labels=labels, output_hidden_states=True)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_outputs_and_gradients_match_the_plain_encoder(t5):
    from emprl.ppo.encoder_reuse import reuse_encoder_states

    plain, reused = copy.deepcopy(t5), copy.deepcopy(t5)
    assert reuse_encoder_states(reused)
    calls = []
    inner = reused.get_encoder().forward
    reused.get_encoder().forward = lambda **kw: (calls.append(kw["input_ids"].shape[0]), inner(**kw))[1]
    ids, mask, labels = _batch()
    a, grads_a = _loss_and_grads(plain, ids, mask, labels)
    b, grads_b = _loss_and_grads(reused, ids, mask, labels)
    assert calls == [8]                                   # the wrapper saw the full batch ...
    torch.testing.assert_close(b.logits, a.logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(b.encoder_last_hidden_state, a.encoder_last_hidden_state, rtol=1e-5, atol=1e-5)
    assert len(b.encoder_hidden_states) == len(a.encoder_hidden_states)
    assert b.encoder_hidden_states[-1].shape[0] == 8
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_the_encoder_runs_on_distinct_rows_only(t5):
    from emprl.ppo.encoder_reuse import reuse_encoder_states

    model = copy.deepcopy(t5)
    seen = []
    block = model.get_encoder().block[0]
    block.register_forward_hook(lambda mod, args, out: seen.append(args[0].shape[0]))
    assert reuse_encoder_states(model)
    assert reuse_encoder_states(model)                    # installing twice is harmless
    ids, mask, labels = _batch()
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, labels=labels)
        model(input_ids=ids[:3], attention_mask=mask[:3], labels=labels[:3])   # rows 0, 0, 1
    assert seen == [3, 2]


def test_generation_and_state_dict_are_unchanged(t5):
    from emprl.ppo.encoder_reuse import reuse_encoder_states

    plain, reused = copy.deepcopy(t5), copy.deepcopy(t5)
    reuse_encoder_states(reused)
    assert list(reused.state_dict()) == list(plain.state_dict())
    ids, mask, _ = _batch()
    kwargs = dict(do_sample=False, max_new_tokens=6)
    torch.testing.assert_close(reused.generate(input_ids=ids, attention_mask=mask, **kwargs),
                               plain.generate(input_ids=ids, attention_mask=mask, **kwargs))


def test_decoder_only_models_are_left_alone(tmp_path):
    from transformers import AutoModelForCausalLM

    from emprl.ppo.encoder_reuse import reuse_encoder_states
    from tests.tiny import make_tiny_llama

    make_tiny_llama(str(tmp_path))
    assert reuse_encoder_states(AutoModelForCausalLM.from_pretrained(str(tmp_path))) is False

"""emprl.study.context_use: reference loss with each reply's own context against another's, both policy kinds."""

import math

import pytest
import tiny
import torch
from test_evaluate import write_ed

from emprl.common.errors import UserError
from emprl.study.context_use import context_use, main


@pytest.mark.parametrize("kind", ["t5", "llama"])
def test_the_gap_is_the_loss_with_another_context_minus_the_own(tmp_path, kind):
    data = write_ed(tmp_path / "ed")
    folder = str(tmp_path / kind)
    (tiny.make_tiny_t5 if kind == "t5" else tiny.make_tiny_llama)(folder)
    out = context_use(folder, data, "validation", n=3)
    assert out["rows"] == 3 and math.isfinite(out["own_context"]) and math.isfinite(out["other_context"])
    assert out["gap"] == pytest.approx(out["other_context"] - out["own_context"])
    assert out["own_context"] != out["other_context"]  # the context reaches the loss


def test_a_policy_that_ignores_the_encoder_has_no_gap(tmp_path, monkeypatch):
    from transformers import T5ForConditionalGeneration

    data = write_ed(tmp_path / "ed")
    tiny.make_tiny_t5(str(tmp_path / "t5"))
    forward = T5ForConditionalGeneration.forward

    def blind(self, input_ids=None, attention_mask=None, **kw):  # every context becomes the same token
        return forward(self, input_ids=torch.ones_like(input_ids), attention_mask=torch.ones_like(attention_mask), **kw)

    monkeypatch.setattr(T5ForConditionalGeneration, "forward", blind)
    assert context_use(str(tmp_path / "t5"), data, "validation", n=3)["gap"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(UserError, match="no split 'dev'"):
        main([str(tmp_path / "t5"), "--data", data, "--split", "dev"])

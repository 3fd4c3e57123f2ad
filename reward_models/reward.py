"""The empathy reward (EmpRL paper, Eq. 2-8).

For a context c, a generated response y_hat and the gold levels l_i (the identifiers' levels on the
reference response, cached by the labelling step):

    L_emp = sum_i CE(logits_i(c, y_hat), l_i)        R_emp = exp(-L_emp) = prod_i p_i(l_i | c, y_hat)

so R_emp lies in (0, 1] and is 1 only when every identifier is certain the generated response shows
each mechanism at the gold level.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from emprl.common.errors import UserError
from emprl.common.mechanisms import MECHANISMS

from .identifier import EmpathyIdentifier


def tokenize_pairs(tokenizer, texts: Sequence[str], max_length: int, truncation_side: str,
                   device=None) -> dict[str, torch.Tensor]:
    """Tokenize ``texts`` to padded tensors; every row keeps at least one attended token.

    Contexts are truncated on the LEFT (keep the latest turns: the authors' right truncation dropped
    them), responses on the right. A tokenizer without special tokens can give an empty row for an
    empty response; that row gets one attended pad token so pooling and attention stay defined.
    """
    old_side = tokenizer.truncation_side
    tokenizer.truncation_side = truncation_side
    try:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                        return_tensors="pt")
    finally:
        tokenizer.truncation_side = old_side
    ids, mask = enc["input_ids"], enc["attention_mask"]
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    if ids.shape[1] == 0:
        ids = torch.full((ids.shape[0], 1), pad_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
    empty = mask.sum(dim=1) == 0
    if empty.any():
        # Padding is on the right, so position 0 of an empty row is a pad token; attend to it.
        mask = mask.clone()
        mask[empty, 0] = 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def quantized(identifiers: Mapping[str, EmpathyIdentifier], how: str, device: torch.device) -> dict:
    """Copies of the identifiers with dynamically quantised int8 linear layers (CPU only)."""
    if how != "int8":
        raise UserError(f"quantize: expected null or int8, got {how!r}")
    if device.type != "cpu":
        raise UserError(f"quantize: int8 runs on the CPU only (the reward's device is {device})")
    return {m: torch.ao.quantization.quantize_dynamic(ident, {torch.nn.Linear}, dtype=torch.qint8)
            for m, ident in identifiers.items()}


def checked_temperature(value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise UserError(f"temperature: expected a positive number, got {value!r}")
    return float(value)


class EmpathyReward:
    """Scores (context, response) pairs with one identifier per mechanism.

    Args:
        identifiers: mechanism name -> :class:`EmpathyIdentifier` (normally the three of ``MECHANISMS``).
        tokenizers: one tokenizer for all, a dict per mechanism, or None to use each identifier's own.
        max_context_len / max_response_len: token limits (paper code: 200 / 50).
        device: where to run (the PPO stage passes ``accelerator.device``); default: the identifiers'.
        dtype: cast the identifiers to this dtype; default keeps fp32 weights and uses bf16 autocast on
            a CUDA device that supports it, plain fp32 elsewhere.
        batch_size: the most pairs sent through the encoders at once (longer inputs are chunked).
        quantize: None, or "int8": the identifiers' linear layers as dynamically quantised int8 (CPU only),
            for a cheaper reward where its levels agree with fp32 (``python -m emprl.benchmarks.bench_reward
            --quantize int8`` measures both; docs/rl-effect.md).
        temperature: R_emp reads softmax(logits / temperature); the levels (argmax) do not change. 1.0 is the
            paper's reward. Sharp identifiers make R_emp near 0 unless all three levels match; a larger value
            gives partial credit per matched mechanism, a denser signal for PPO (docs/rl-effect.md).
    """

    def __init__(self, identifiers: Mapping[str, EmpathyIdentifier], tokenizers=None, max_context_len: int = 200,
                 max_response_len: int = 50, device=None, dtype=None, batch_size: int = 64,
                 quantize: str | None = None, temperature: float = 1.0):
        if not identifiers:
            raise ValueError("EmpathyReward needs at least one identifier")
        self.mechanisms = tuple(identifiers)
        self.identifiers = dict(identifiers)
        if device is None:
            device = next(next(iter(self.identifiers.values())).parameters()).device
        self.device = torch.device(device)
        self.dtype = dtype
        for ident in self.identifiers.values():
            ident.to(self.device)
            if dtype is not None:
                ident.to(dtype)
            ident.eval()
        if quantize:
            self.identifiers = quantized(self.identifiers, quantize, self.device)
        self.quantize = quantize
        self.temperature = checked_temperature(temperature)
        self.tokenizers = {}
        for mech, ident in self.identifiers.items():
            tok = tokenizers.get(mech) if isinstance(tokenizers, Mapping) else tokenizers
            tok = tok if tok is not None else ident.tokenizer
            if tok is None:
                raise ValueError(f"no tokenizer for identifier {mech!r}: pass tokenizers= or save it with one")
            self.tokenizers[mech] = tok
        self.max_context_len = max_context_len
        self.max_response_len = max_response_len
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, directory: str | Path, mechanisms: Sequence[str] = MECHANISMS, **kwargs) -> EmpathyReward:
        """Load ``directory/<mechanism>/`` for each mechanism (as the identifiers stage writes them)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise UserError(f"identifiers folder {directory} does not exist (run the identifiers stage first)")
        identifiers = {}
        for mech in mechanisms:
            if not (directory / mech).is_dir():
                raise UserError(f"{directory}: missing identifier folder {mech!r} (expected {', '.join(mechanisms)})")
            identifiers[mech] = EmpathyIdentifier.from_pretrained(directory / mech)
        return cls(identifiers, **kwargs)

    # -- core ---------------------------------------------------------------------------------
    def _autocast(self):
        # bf16 where the device computes it natively (CUDA, CPUs with AVX512-BF16/AMX): about twice the
        # pairs per second on such a CPU, with 99.9% of levels unchanged (docs/rl-effect.md).
        from emprl.common.precision import choose_mixed_precision

        if self.quantize:  # int8 kernels take fp32 activations
            return contextlib.nullcontext()
        if self.dtype is None and self.device.type in ("cuda", "cpu") and \
                choose_mixed_precision("auto", self.device.type)[0] == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @torch.no_grad()
    def _logits_chunk(self, contexts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Logits [B, M, 3] in fp32. Each distinct context is encoded once per identifier."""
        unique = list(dict.fromkeys(contexts))
        where = {c: i for i, c in enumerate(unique)}
        index = torch.tensor([where[c] for c in contexts], device=self.device)
        out = []
        with self._autocast():
            for mech in self.mechanisms:
                ident, tok = self.identifiers[mech], self.tokenizers[mech]
                ctx = tokenize_pairs(tok, unique, self.max_context_len, "left", self.device)
                resp = tokenize_pairs(tok, responses, self.max_response_len, "right", self.device)
                states = ident.encode_context(ctx["input_ids"], ctx["attention_mask"])
                logits = ident(
                    context_attention_mask=ctx["attention_mask"][index],
                    response_input_ids=resp["input_ids"],
                    response_attention_mask=resp["attention_mask"],
                    context_states=states[index],
                )
                out.append(logits.float())
        return torch.stack(out, dim=1)

    def logits(self, contexts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Raw logits [B, M, 3] (M = number of mechanisms, in ``self.mechanisms`` order)."""
        contexts, responses = _check_pair_lists(contexts, responses)
        if not contexts:
            return torch.zeros((0, len(self.mechanisms), 3), device=self.device)
        if len(contexts) <= self.batch_size:
            return self._logits_chunk(contexts, responses)
        # Chunks of similar lengths pad less (a third of the time on real dialogue contexts); the
        # pairs go back to their order afterwards.
        order = sorted(range(len(contexts)), key=lambda i: (len(contexts[i]), len(responses[i])))
        chunks = [
            self._logits_chunk([contexts[i] for i in order[k:k + self.batch_size]],
                               [responses[i] for i in order[k:k + self.batch_size]])
            for k in range(0, len(order), self.batch_size)
        ]
        logits = torch.cat(chunks, dim=0)
        return logits[torch.tensor(order, device=logits.device).argsort()]

    def probs(self, contexts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Level probabilities [B, M, 3]."""
        return self.logits(contexts, responses).softmax(dim=-1)

    def levels(self, contexts: Sequence[str], responses: Sequence[str]) -> torch.Tensor:
        """Predicted levels [B, M] (argmax), used for labelling the gold levels and for Emp-F1."""
        return self.logits(contexts, responses).argmax(dim=-1)

    def __call__(self, contexts: Sequence[str], responses: Sequence[str], gold_levels) -> torch.Tensor:
        """R_emp per pair: FloatTensor [B] in (0, 1] on ``self.device``."""
        return self.reward_and_levels(contexts, responses, gold_levels)[0]

    def reward_and_levels(self, contexts: Sequence[str], responses: Sequence[str], gold_levels):
        """(R_emp [B], predicted levels [B, M]) from one pass through the identifiers."""
        gold = self._gold_tensor(gold_levels, len(contexts))
        logits = self.logits(contexts, responses)
        return empathy_reward_from_logits(logits / self.temperature, gold), logits.argmax(dim=-1)

    def _gold_tensor(self, gold_levels, batch: int) -> torch.Tensor:
        if isinstance(gold_levels, Mapping):
            missing = [m for m in self.mechanisms if m not in gold_levels]
            if missing:
                raise ValueError(f"gold_levels lacks mechanisms {missing}")
            cols = [torch.as_tensor(gold_levels[m], dtype=torch.long).reshape(-1) for m in self.mechanisms]
            gold = torch.stack(cols, dim=1)
        else:
            gold = torch.as_tensor(gold_levels, dtype=torch.long)
            if gold.dim() != 2 or gold.shape[1] != len(self.mechanisms):
                raise ValueError(f"gold_levels tensor must be [B, {len(self.mechanisms)}], got {tuple(gold.shape)}")
        if gold.shape[0] != batch:
            raise ValueError(f"gold_levels has {gold.shape[0]} rows for {batch} pairs")
        if gold.numel() and (gold.min() < 0 or gold.max() > 2):
            raise ValueError("gold levels must be 0, 1 or 2")
        return gold.to(self.device)


def empathy_reward_from_logits(logits: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """R_emp [B] from identifier logits [B, M, 3] and gold levels [B, M] (long, same device).

    R_emp = exp(-L_emp) = exp(-sum_i CE_i) = prod_i p_i(l_i | c, y_hat), kept in (0, 1]."""
    # -sum_i CE_i = sum_i log p_i(l_i); exp turns it into the product of the gold-class probabilities.
    picked = logits.log_softmax(dim=-1).gather(-1, gold.unsqueeze(-1)).squeeze(-1)
    reward = picked.sum(dim=1).exp()
    # Keep the documented open interval even if the product underflows fp32.
    return reward.clamp(min=torch.finfo(reward.dtype).tiny, max=1.0)


def _check_pair_lists(contexts, responses) -> tuple[list[str], list[str]]:
    contexts, responses = list(contexts), list(responses)
    if len(contexts) != len(responses):
        raise ValueError(f"{len(contexts)} contexts but {len(responses)} responses")
    for name, seq in (("contexts", contexts), ("responses", responses)):
        bad = next((x for x in seq if not isinstance(x, str)), None)
        if bad is not None:
            raise TypeError(f"{name} must be strings, got {type(bad).__name__}")
    return contexts, responses

"""ETHREED as PyTorch modules (Li, Han, Guo, Qiao, Wu, "Generating Empathetic Responses through
Emotion Tracking and Constraint Guidance", section 3).

Data flow for one batch:
  words of each turn --UtteranceEncoder--> u_t
  u_1..u_T --DialogueTracker--> global g_t, party p_t, emotion e_t (per party), content c_t
  last speaker emotion state --EmpatheticPolicy--> predicted listener emotion R^_e (the "emo" vector)
  c_T, word states, emo --PointerGeneratorDecoder--> p(y_i | y_<i, context)
Losses: L1 emotion NLL, L2 guided-policy-search KL(q || p), L3 token NLL, L4 coverage.
The parts live in ``components.py``; this module holds the configuration and their assembly.
docs/ethreed.md maps every equation of the paper to the code below (labels D1..D15) and lists each option
that departs from the paper, with its default.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields

import torch
from torch import nn

from emprl.baselines.ethreed.batching import LISTENER, SPEAKER
from emprl.baselines.ethreed.components import (
    GPS_DIVERGENCES,
    DialogueTracker,
    EmotionClassifier,
    EmpatheticPolicy,
    PointerGeneratorDecoder,
    UtteranceEncoder,
    emotion_loss,
    gps_loss,
)
from emprl.pipeline.config_limits import CheckedConfig

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
COPY_SOURCES = ("speaker", "all")


@dataclass
class ETHREEDConfig(CheckedConfig):
    vocab_size: int
    embedding_dim: int = 300
    hidden_size: int = 300  # paper: 300 for every GRU (the Bi-GRU has 300 per direction)
    num_emotions: int = 32
    dropout: float = 0.1
    pad_id: int = 0
    unk_id: int = 1
    bos_id: int = 2
    eos_id: int = 3
    tie_embeddings: bool = True  # output projection shares the word embedding matrix
    coverage_weight: float = 1.0
    detach_gps_target: bool = True  # the true listener distribution guides the policy, not vice versa
    # departures from the paper, kept as options (docs/ethreed.md, "Options"); the defaults follow the paper
    # D12 (paper Eq. 12): KL(q || p); "kl_p_q" is the reversed direction
    gps_divergence: str = field(default="kl_q_p", metadata={"choices": GPS_DIVERGENCES})
    decoder_input_context: bool = False  # D13 (paper Eq. 15): y_{i-1} only; true also feeds c_{i-1}
    # D16: copy from speaker turns only; "all" copies from every context turn
    copy_from: str = field(default="speaker", metadata={"choices": COPY_SOURCES})
    # ablations (paper Table 3)
    use_party_gru: bool = True
    use_emotion_gru: bool = True
    use_emotion_tracking: bool = True
    use_policy: bool = True
    use_gps_loss: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> ETHREEDConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ETHREED config keys: {unknown}")
        return cls(**d)


class ETHREED(nn.Module):
    def __init__(self, config: ETHREEDConfig):
        super().__init__()
        self.config = cfg = config
        H = cfg.hidden_size
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding_dim, padding_idx=cfg.pad_id)
        self.encoder = UtteranceEncoder(self.embedding, H, cfg.dropout)
        track = cfg.use_emotion_tracking
        self.tracker = DialogueTracker(self.encoder.out_dim, H, use_party_gru=cfg.use_party_gru,
                                       use_emotion_gru=cfg.use_emotion_gru, use_emotion_tracking=track,
                                       dropout=cfg.dropout)
        self.classifier = EmotionClassifier(H, cfg.num_emotions, cfg.dropout) if track else None
        self.policy = EmpatheticPolicy(H) if track and cfg.use_policy else None
        self.decoder = PointerGeneratorDecoder(self.embedding, H, self.encoder.out_dim, H if track else 0,
                                               cfg.dropout, cfg.tie_embeddings, cfg.decoder_input_context)

    def copy_mask(self, batch: dict) -> torch.Tensor | None:
        """D16: source positions the pointer may copy: the speaker's turns (paper), or every turn."""
        if self.config.copy_from == "all":
            return None
        return batch["src_mask"] & (batch["src_roles"] == SPEAKER)

    # ----- encoding -----------------------------------------------------------------------------
    def encode(self, batch: dict, sample_policy: bool = False, generator: torch.Generator | None = None) -> dict:
        turn_ids, turn_lens = batch["turn_ids"], batch["turn_lens"]
        B, T, L = turn_ids.shape
        u, words = self.encoder(turn_ids.reshape(B * T, L), turn_lens.reshape(B * T))
        state, emotions = self.tracker(u.view(B, T, -1), turn_lens > 0, batch["turn_roles"])
        out = {"state": state, "emotions": emotions, "word_states": words.view(B, T * L, -1),
               "content": state.c, "emo": None, "mu": None, "logvar": None}
        if self.config.use_emotion_tracking:
            speaker = state.emo[:, SPEAKER]  # the last context turn is the speaker's
            out["speaker_emotion"] = speaker
            if self.policy is not None:
                out["emo"], out["mu"], out["logvar"] = self.policy(speaker, sample_policy, generator)
            else:  # w/o policy network: decode with the speaker's own emotion state
                out["emo"] = speaker
        return out

    def predict_emotion(self, batch: dict) -> torch.Tensor:
        """Logits of the speaker's emotion from the last speaker emotion state [B, num_emotions]."""
        if self.classifier is None:
            raise ValueError("emotion tracking is disabled; there is no emotion classifier")
        return self.classifier(self.encode(batch)["speaker_emotion"])

    # ----- training -----------------------------------------------------------------------------
    def forward(self, batch: dict) -> dict:
        cfg = self.config
        enc = self.encode(batch, sample_policy=self.training)
        zero = enc["content"].new_zeros(())
        l1 = l2 = zero
        emotion_logits = None
        if cfg.use_emotion_tracking:
            # D11: the reference response as one more listener turn gives the true listener emotion state
            B = batch["resp_ids"].shape[0]
            u_r, _ = self.encoder(batch["resp_ids"], batch["resp_lens"])
            listener = torch.full((B,), LISTENER, dtype=torch.long, device=u_r.device)
            _, e_true = self.tracker.step(enc["state"], u_r, listener, torch.ones_like(listener, dtype=torch.bool),
                                          record=False)
            true_logits = self.classifier(e_true)
            turn_logits = self.classifier(enc["emotions"])  # [B,T,C]
            emotion_logits = self.classifier(enc["speaker_emotion"])
            l1 = emotion_loss(turn_logits, batch["turn_emotions"], batch["turn_roles"])
            if self.policy is not None and cfg.use_gps_loss:
                target = true_logits.detach() if cfg.detach_gps_target else true_logits
                l2 = gps_loss(self.classifier(enc["emo"]), target, cfg.gps_divergence)

        nll, cov, n_tokens = self._teacher_forced(batch, enc)
        l3 = nll.sum() / n_tokens  # D17
        l4 = cfg.coverage_weight * cov.sum() / n_tokens
        return {"loss": l1 + l2 + l3 + l4, "emotion_loss": l1, "gps_loss": l2, "nll_loss": l3,
                "coverage_loss": l4, "nll_sum": nll.sum().detach(), "n_tokens": n_tokens.detach(),
                "emotion_logits": emotion_logits}

    def _teacher_forced(self, batch: dict, enc: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-token NLL [B,Ly] and coverage loss [B,Ly] (zero on padding), and the token count."""
        tgt_in, tgt_out, mask = batch["tgt_in"], batch["tgt_out"], batch["tgt_mask"]
        words, src_ids, src_mask = enc["word_states"], batch["src_ids"], batch["src_mask"]
        state, keys = self.decoder.start(enc["content"], words)
        feats = []
        for i in range(tgt_in.shape[1]):
            state, f = self.decoder.recur(tgt_in[:, i], state, words, keys, src_mask, enc["emo"])
            feats.append(f)
        p = self.decoder.target_probability(feats, src_ids, tgt_out, self.copy_mask(batch))
        nll = -torch.log(p.clamp_min(1e-12))
        cov = torch.stack([f["coverage_loss"] for f in feats], dim=1)
        m = mask.to(words.dtype)
        return nll * m, cov * m, m.sum().clamp_min(1.0)

    # ----- generation ---------------------------------------------------------------------------
    @torch.no_grad()
    def generate(self, batch: dict, max_len: int = 40, do_sample: bool = False, top_k: int = 0,
                 temperature: float = 1.0, seed: int | None = None, sample_policy: bool = True
                 ) -> list[list[int]]:
        """Token ids of one response per example (without <eos>). Greedy by default; sampling draws
        from the (top-k, temperature-scaled) pointer-generator distribution with a seeded generator.
        sample_policy (D10): R^_e is drawn from the policy's Gaussian (paper: the stochastic policy keeps
        exploring at inference), from the same seeded generator; False decodes with its mean.
        <pad>, <bos> and <unk> are never produced."""
        cfg = self.config
        device = batch["turn_ids"].device
        gen = None
        if seed is not None:
            gen = torch.Generator(device=device)
            gen.manual_seed(seed)
        enc = self.encode(batch, sample_policy=sample_policy, generator=gen)
        words, src_ids, src_mask = enc["word_states"], batch["src_ids"], batch["src_mask"]
        copy_mask = self.copy_mask(batch)
        B = words.shape[0]
        state, keys = self.decoder.start(enc["content"], words)
        y = torch.full((B,), cfg.bos_id, dtype=torch.long, device=device)
        done = torch.zeros(B, dtype=torch.bool, device=device)
        steps = []
        for _ in range(max_len):
            probs, state, _ = self.decoder.step(y, state, words, keys, src_ids, src_mask, enc["emo"], copy_mask)
            probs[:, [cfg.pad_id, cfg.bos_id, cfg.unk_id]] = 0.0
            y = _next_token(probs, do_sample, top_k, temperature, gen).masked_fill(done, cfg.pad_id)
            steps.append(y)
            done |= y == cfg.eos_id
            if bool(done.all()):
                break
        return [row[: row.index(cfg.eos_id)] if cfg.eos_id in row else row for row in torch.stack(steps, 1).tolist()]

    # ----- bookkeeping --------------------------------------------------------------------------
    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count; a tied matrix is counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save_pretrained(self, folder: str) -> None:
        """config.json + model.safetensors, each written to a temp file and moved into place."""
        os.makedirs(folder, exist_ok=True)
        _save_weights(self, folder)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=CONFIG_NAME)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(asdict(self.config), f, indent=2)
        os.replace(tmp, os.path.join(folder, CONFIG_NAME))

    @classmethod
    def from_pretrained(cls, folder: str, device: str | torch.device = "cpu") -> ETHREED:
        from safetensors.torch import load_model

        with open(os.path.join(folder, CONFIG_NAME), encoding="utf-8") as f:
            model = cls(ETHREEDConfig.from_dict(json.load(f)))
        load_model(model, os.path.join(folder, WEIGHTS_NAME), strict=True, device=str(device))
        return model.to(device)


def _next_token(probs: torch.Tensor, do_sample: bool, top_k: int, temperature: float,
                gen: torch.Generator | None) -> torch.Tensor:
    """The argmax of each row of ``probs``, or a draw from its (top-k, temperature-scaled) distribution."""
    if not do_sample:
        return probs.argmax(dim=-1)
    logp = torch.log(probs.clamp_min(1e-20)) / max(temperature, 1e-6)
    if top_k and top_k < logp.shape[-1]:
        kth = logp.topk(top_k, dim=-1).values[:, -1:]
        logp = logp.masked_fill(logp < kth, float("-inf"))
    return torch.multinomial(torch.softmax(logp, dim=-1), 1, generator=gen).squeeze(1)


def _save_weights(model: nn.Module, folder: str) -> None:
    """model.safetensors, written to a temp file and moved into place."""
    from safetensors.torch import save_model

    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=WEIGHTS_NAME)
    os.close(fd)
    try:
        save_model(model, tmp)  # handles the tied embedding/output matrix
        os.replace(tmp, os.path.join(folder, WEIGHTS_NAME))
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)

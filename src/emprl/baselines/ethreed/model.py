"""ETHREED as PyTorch modules (Li, Han, Guo, Qiao, Wu, "Generating Empathetic Responses through
Emotion Tracking and Constraint Guidance", section 3).

Data flow for one batch:
  words of each turn --UtteranceEncoder--> u_t
  u_1..u_T --DialogueTracker--> global g_t, party p_t, emotion e_t (per party), content c_t
  last speaker emotion state --EmpatheticPolicy--> predicted listener emotion R^_e (the "emo" vector)
  c_T, word states, emo --PointerGeneratorDecoder--> p(y_i | y_<i, context)
Losses: L1 emotion NLL, L2 guided-policy-search KL(q || p), L3 token NLL, L4 coverage.
docs/ethreed.md maps every equation of the paper to the code below (labels D1..D15) and lists each option
that departs from the paper, with its default.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emprl.baselines.ethreed.batching import IGNORE, LISTENER, SPEAKER

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
GPS_DIVERGENCES = ("kl_q_p", "kl_p_q")
COPY_SOURCES = ("speaker", "all")


@dataclass
class ETHREEDConfig:
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
    gps_divergence: str = "kl_q_p"  # D12 (paper Eq. 12): KL(q || p); "kl_p_q" is the reversed direction
    decoder_input_context: bool = False  # D13 (paper Eq. 15): y_{i-1} only; true also feeds c_{i-1}
    copy_from: str = "speaker"  # D16: copy from speaker turns only; "all" copies from every context turn
    # ablations (paper Table 3)
    use_party_gru: bool = True
    use_emotion_gru: bool = True
    use_emotion_tracking: bool = True
    use_policy: bool = True
    use_gps_loss: bool = True

    def __post_init__(self):
        if self.gps_divergence not in GPS_DIVERGENCES:
            raise ValueError(f"gps_divergence: expected one of {GPS_DIVERGENCES}, got {self.gps_divergence!r}")
        if self.copy_from not in COPY_SOURCES:
            raise ValueError(f"copy_from: expected one of {COPY_SOURCES}, got {self.copy_from!r}")

    @classmethod
    def from_dict(cls, d: dict) -> ETHREEDConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown ETHREED config keys: {unknown}")
        return cls(**d)


def _masked_softmax(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Softmax over the last dim restricted to mask; rows without any valid entry give all zeros."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=-1) * mask.to(scores.dtype)


class UtteranceEncoder(nn.Module):
    """D1: word embeddings + Bi-GRU; u = [last forward state; first backward state]."""

    def __init__(self, embedding: nn.Embedding, hidden_size: int, dropout: float = 0.0):
        super().__init__()
        self.embedding = embedding
        self.gru = nn.GRU(embedding.embedding_dim, hidden_size, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out_dim = 2 * hidden_size

    def forward(self, ids: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """ids [N,L], lengths [N] (0 allowed: an absent turn) -> u [N,2H], word states [N,L,2H].
        Padding never enters the recurrence (packed sequences), so it cannot change u."""
        N, L = ids.shape
        dtype = self.embedding.weight.dtype
        u = ids.new_zeros((N, self.out_dim), dtype=dtype)
        states = ids.new_zeros((N, L, self.out_dim), dtype=dtype)
        rows = (lengths > 0).nonzero(as_tuple=True)[0]
        if rows.numel() == 0:
            return u, states
        x = self.dropout(self.embedding(ids[rows]))
        packed = pack_padded_sequence(x, lengths[rows].cpu(), batch_first=True, enforce_sorted=False)
        out, h_n = self.gru(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=L)
        # h_n[0]: forward direction after the last real token; h_n[1]: backward direction at token 0
        u = u.index_copy(0, rows, torch.cat([h_n[0], h_n[1]], dim=-1))
        states = states.index_copy(0, rows, out)
        return u, states


@dataclass
class TrackerState:
    g: torch.Tensor  # [B,H] latest global state
    c: torch.Tensor  # [B,H] latest content state
    party: torch.Tensor  # [B,2,H] latest party state of speaker (0) and listener (1)
    emo: torch.Tensor  # [B,2,H] latest emotion state of speaker (0) and listener (1)
    history: list  # [(g_t [B,H], valid_t [B])] for the attention over previous global states


class DialogueTracker(nn.Module):
    """The four turn-level GRUs (docs/ethreed.md D2-D6).

    D2 g_t = GRU_g(g_{t-1}, u_t)
    D3 a_t = sum_j softmax_j(u_t^T W g_j) g_j over previous global states j < t
    D4 p_t^X = GRU_p(p_last^{other party}, [u_t; a_t])     X = the party speaking at turn t
    D5 e_t^X = GRU_e(e_last^X, p_t^X)                        one emotion chain per party
    D6 c_t = GRU_c(c_{t-1}, g_t)
    """

    def __init__(self, u_dim: int, hidden_size: int, *, use_party_gru: bool = True,
                 use_emotion_gru: bool = True, use_emotion_tracking: bool = True, dropout: float = 0.0):
        super().__init__()
        self.hidden_size = hidden_size
        self.use_party_gru = use_party_gru
        self.use_emotion_gru = use_emotion_gru
        self.track_emotion = use_emotion_tracking
        self.global_gru = nn.GRUCell(u_dim, hidden_size)
        self.content_gru = nn.GRUCell(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        if use_emotion_tracking:
            if use_party_gru:
                self.attention = nn.Linear(hidden_size, u_dim, bias=False)  # bilinear W: u^T W g
                self.party_gru = nn.GRUCell(u_dim + hidden_size, hidden_size)
            else:  # w/o GRU_p: the party state is a projection of the utterance alone
                self.party_proj = nn.Linear(u_dim, hidden_size)
            if use_emotion_gru:
                self.emotion_gru = nn.GRUCell(hidden_size, hidden_size)

    def init_state(self, batch_size: int, like: torch.Tensor) -> TrackerState:
        z = like.new_zeros(batch_size, self.hidden_size)
        zz = like.new_zeros(batch_size, 2, self.hidden_size)
        return TrackerState(g=z, c=z, party=zz, emo=zz, history=[])

    def attend(self, u: torch.Tensor, history: list) -> torch.Tensor:
        if not history:
            return u.new_zeros(u.shape[0], self.hidden_size)
        G = torch.stack([g for g, _ in history], dim=1)  # [B,t,H]
        M = torch.stack([v for _, v in history], dim=1)  # [B,t]
        alpha = _masked_softmax(torch.einsum("bd,btd->bt", u, self.attention(G)), M)
        return torch.einsum("bt,bth->bh", alpha, G)

    def step(self, state: TrackerState, u: torch.Tensor, role: torch.Tensor, valid: torch.Tensor,
             record: bool = True) -> tuple[TrackerState, torch.Tensor | None]:
        """One turn. Rows with valid=False keep their state. Returns (new state, emotion state e_t)."""
        B = u.shape[0]
        u = self.dropout(u)
        v = valid[:, None]
        g_t = self.global_gru(u, state.g)
        party, emo, e_t = state.party, state.emo, None
        if self.track_emotion:
            rows = torch.arange(B, device=u.device)
            if self.use_party_gru:
                a_t = self.attend(u, state.history)
                p_t = self.party_gru(torch.cat([u, a_t], dim=-1), state.party[rows, 1 - role])
            else:
                p_t = torch.tanh(self.party_proj(u))
            e_t = self.emotion_gru(p_t, state.emo[rows, role]) if self.use_emotion_gru else p_t
            sel = (F.one_hot(role, 2).bool() & v)[..., None]  # [B,2,1]: this party, real turn
            party = torch.where(sel, p_t[:, None, :], state.party)
            emo = torch.where(sel, e_t[:, None, :], state.emo)
        c_t = self.content_gru(g_t, state.c)
        history = state.history + [(g_t, valid)] if record else state.history
        new = TrackerState(g=torch.where(v, g_t, state.g), c=torch.where(v, c_t, state.c),
                           party=party, emo=emo, history=history)
        return new, e_t

    def forward(self, u: torch.Tensor, turn_mask: torch.Tensor, roles: torch.Tensor
                ) -> tuple[TrackerState, torch.Tensor | None]:
        """u [B,T,D], turn_mask [B,T] (real turns first), roles [B,T] -> final state, emotion states
        [B,T,H] (None without emotion tracking)."""
        B, T, _ = u.shape
        state = self.init_state(B, u)
        emotions = []
        for t in range(T):
            state, e_t = self.step(state, u[:, t], roles[:, t], turn_mask[:, t])
            emotions.append(e_t)
        return state, (torch.stack(emotions, dim=1) if self.track_emotion else None)


class EmotionClassifier(nn.Module):
    """D7: feed-forward + softmax over the 32 emotions; shared by speaker, listener and predicted states."""

    def __init__(self, hidden_size: int, num_emotions: int = 32, dropout: float = 0.0):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Dropout(dropout),
                                 nn.Linear(hidden_size, num_emotions))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """Logits; softmax is applied by the losses (log_softmax is the stable form)."""
        return self.net(state)


class EmpatheticPolicy(nn.Module):
    """D9-D10: stochastic policy R^_e ~ N(mu, sigma^2); mu and log sigma^2 from tanh(FFN(speaker emotion))."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.ffn = nn.Linear(hidden_size, hidden_size)
        self.mu = nn.Linear(hidden_size, hidden_size)
        self.logvar = nn.Linear(hidden_size, hidden_size)

    def forward(self, emotion_state: torch.Tensor, sample: bool = True,
                generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h = torch.tanh(self.ffn(emotion_state))
        mu = self.mu(h)
        logvar = self.logvar(h).clamp(-10.0, 10.0)  # keeps exp() finite early in training
        if not sample:
            return mu, mu, logvar
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps, mu, logvar  # reparameterisation


@dataclass
class DecoderState:
    s: torch.Tensor  # [B,H] GRU state s_{i-1} before step i
    ctx: torch.Tensor  # [B,D] previous context vector c_{i-1} (used only with decoder_input_context)
    coverage: torch.Tensor  # [B,S] cover_i: sum of the attention distributions of steps before i


class PointerGeneratorDecoder(nn.Module):
    """Single-layer GRU decoder with coverage attention scored against the previous state, an emotion
    attention gate and a pointer-generator output (docs/ethreed.md D13-D16). Copying uses the source word
    ids (in-vocabulary; OOV words are <unk>) of the positions in copy_mask."""

    def __init__(self, embedding: nn.Embedding, hidden_size: int, enc_dim: int, emo_dim: int,
                 dropout: float = 0.0, tie_embeddings: bool = True, input_context: bool = False):
        super().__init__()
        E, V = embedding.embedding_dim, embedding.num_embeddings
        self.embedding = embedding
        self.emo_dim = emo_dim
        self.input_context = input_context
        self.init_state = nn.Linear(hidden_size, hidden_size)
        # D13 (paper Eq. 15): s_i = GRU(s_{i-1}, emb(y_{i-1})); the option also feeds c_{i-1}
        self.cell = nn.GRUCell(E + (enc_dim if input_context else 0), hidden_size)
        # D14: score_ij = s_{i-1}^T tanh(W_a h_j + W_r cover_ij + b)
        self.attention = nn.Linear(enc_dim, hidden_size)  # W_a h_j + b
        self.coverage_proj = nn.Linear(1, hidden_size, bias=False)  # W_r cover_ij
        if emo_dim:
            # D15: con_i = FFN(c_i), emo = FFN(R^_e) bring both to one magnitude; beta_i = sigma(con_i^T W_g emo + b_g)
            self.con_ffn = nn.Linear(enc_dim, emo_dim)
            self.emo_ffn = nn.Linear(emo_dim, emo_dim)
            self.emotion_gate = nn.Bilinear(emo_dim, emo_dim, 1)
        self.pre_output = nn.Linear(hidden_size + enc_dim + emo_dim, E)
        self.output = nn.Linear(E, V)
        if tie_embeddings:
            self.output.weight = embedding.weight
        self.p_gen = nn.Linear(hidden_size + enc_dim + E + emo_dim, 1)
        self.dropout = nn.Dropout(dropout)

    def start(self, content: torch.Tensor, enc_states: torch.Tensor) -> tuple[DecoderState, torch.Tensor]:
        """Initial state s_0 from the content representation; returns (state, W_a h_j + b per position)."""
        B, S, D = enc_states.shape
        s0 = torch.tanh(self.init_state(content))
        keys = self.attention(enc_states)  # [B,S,H], computed once per source
        return DecoderState(s=s0, ctx=enc_states.new_zeros(B, D), coverage=enc_states.new_zeros(B, S)), keys

    def attend(self, s_prev: torch.Tensor, coverage: torch.Tensor, keys: torch.Tensor,
               src_mask: torch.Tensor) -> torch.Tensor:
        """D14: attention of step i from s_{i-1} and cover_i -> alpha_i [B,S]."""
        feats = torch.tanh(keys + self.coverage_proj(coverage[..., None]))
        return _masked_softmax(torch.einsum("bsh,bh->bs", feats, s_prev), src_mask)

    def recur(self, y_prev: torch.Tensor, state: DecoderState, enc_states: torch.Tensor, keys: torch.Tensor,
              src_mask: torch.Tensor, emo: torch.Tensor | None) -> tuple[DecoderState, dict]:
        """Attention with coverage, the GRU update and the emotion gate for one step. The recurrence does
        not depend on the output distribution, so teacher forcing can defer the vocabulary projection."""
        alpha = self.attend(state.s, state.coverage, keys, src_mask)  # from s_{i-1}, before the update
        ctx = torch.einsum("bs,bsd->bd", alpha, enc_states)
        coverage_loss = torch.minimum(alpha, state.coverage).sum(dim=-1)  # D17: L4 term of step i
        x = self.dropout(self.embedding(y_prev))
        s = self.cell(torch.cat([x, state.ctx], dim=-1) if self.input_context else x, state.s)
        if self.emo_dim:
            con = torch.tanh(self.con_ffn(ctx))
            emo_t = torch.tanh(self.emo_ffn(emo))
            e = torch.sigmoid(self.emotion_gate(con, emo_t)) * emo_t
        else:
            e = s.new_zeros(s.shape[0], 0)
        new = DecoderState(s=s, ctx=ctx, coverage=state.coverage + alpha)
        return new, {"s": s, "ctx": ctx, "x": x, "e": e, "alpha": alpha, "coverage_loss": coverage_loss}

    def vocab_logits(self, f: dict) -> torch.Tensor:
        """Generator logits over the vocabulary from step features (any leading dims)."""
        return self.output(self.dropout(self.pre_output(torch.cat([f["s"], f["ctx"], f["e"]], dim=-1))))

    def gen_probability(self, f: dict) -> torch.Tensor:
        """p_gen: probability of generating from the vocabulary rather than copying a source word."""
        return torch.sigmoid(self.p_gen(torch.cat([f["s"], f["ctx"], f["x"], f["e"]], dim=-1)))

    @staticmethod
    def copy_distribution(alpha: torch.Tensor, copy_mask: torch.Tensor | None) -> torch.Tensor:
        """D16: the attention restricted to the copyable positions and renormalised (any leading dims)."""
        if copy_mask is None:
            return alpha
        kept = alpha * copy_mask.to(alpha.dtype).view(copy_mask.shape[0], *([1] * (alpha.dim() - 2)), -1)
        return kept / kept.sum(dim=-1, keepdim=True).clamp_min(1e-12)

    def step(self, y_prev: torch.Tensor, state: DecoderState, enc_states: torch.Tensor, keys: torch.Tensor,
             src_ids: torch.Tensor, src_mask: torch.Tensor, emo: torch.Tensor | None,
             copy_mask: torch.Tensor | None = None) -> tuple[torch.Tensor, DecoderState, dict]:
        """One decoding step -> (probabilities over the vocabulary [B,V] summing to 1, new state, extras)."""
        state, f = self.recur(y_prev, state, enc_states, keys, src_mask, emo)
        p_gen = self.gen_probability(f)
        copy = self.copy_distribution(f["alpha"], copy_mask)
        probs = (p_gen * torch.softmax(self.vocab_logits(f), dim=-1)).scatter_add(1, src_ids, (1.0 - p_gen) * copy)
        return probs, state, {**f, "p_gen": p_gen, "copy": copy}

    def target_probability(self, feats: list[dict], src_ids: torch.Tensor, targets: torch.Tensor,
                           copy_mask: torch.Tensor | None = None) -> torch.Tensor:
        """p(y_i) [B,Ly] of the given targets from the features of all steps, with one vocabulary
        projection for the whole sequence (same value as step(): p_gen P_vocab(y) + (1 - p_gen) sum of
        the copy distribution on source positions holding y)."""
        f = {k: torch.stack([x[k] for x in feats], dim=1) for k in ("s", "ctx", "x", "e", "alpha")}
        p_vocab = torch.log_softmax(self.vocab_logits(f), dim=-1).gather(2, targets[..., None]).squeeze(-1).exp()
        p_gen = self.gen_probability(f).squeeze(-1)
        copy_dist = self.copy_distribution(f["alpha"], copy_mask)
        copy = (copy_dist * (src_ids[:, None, :] == targets[:, :, None])).sum(dim=-1)
        return p_gen * p_vocab + (1.0 - p_gen) * copy


def gps_loss(pred_logits: torch.Tensor, true_logits: torch.Tensor, divergence: str = "kl_q_p") -> torch.Tensor:
    """D12 (paper Eq. 12), the guided-policy-search constraint: mean over the batch of KL(q || p), q the
    emotion distribution of the policy's predicted listener state R^_e, p that of the true listener state
    (the reference response). divergence="kl_p_q" gives KL(p || q) instead. 0 exactly when q = p."""
    log_q = torch.log_softmax(pred_logits, dim=-1)
    log_p = torch.log_softmax(true_logits, dim=-1)
    if divergence == "kl_p_q":
        log_q, log_p = log_p, log_q
    elif divergence != "kl_q_p":
        raise ValueError(f"divergence: expected one of {GPS_DIVERGENCES}, got {divergence!r}")
    return (log_q.exp() * (log_q - log_p)).sum(dim=-1).mean()


def emotion_loss(turn_logits: torch.Tensor, labels: torch.Tensor, roles: torch.Tensor) -> torch.Tensor:
    """D8, L1: the mean cross-entropy over the labelled speaker turns plus the mean over the labelled
    listener turns of the context (two separate averages, so the many speaker labels do not drown the
    listener ones). A party without labelled turns adds 0."""
    total = turn_logits.new_zeros(())
    for party in (SPEAKER, LISTENER):
        y = labels.masked_fill(roles != party, IGNORE).flatten()
        if (y != IGNORE).any():
            total = total + F.cross_entropy(turn_logits.flatten(0, 1), y, ignore_index=IGNORE)
    return total


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
            if do_sample:
                logp = torch.log(probs.clamp_min(1e-20)) / max(temperature, 1e-6)
                if top_k and top_k < logp.shape[-1]:
                    kth = logp.topk(top_k, dim=-1).values[:, -1:]
                    logp = logp.masked_fill(logp < kth, float("-inf"))
                y = torch.multinomial(torch.softmax(logp, dim=-1), 1, generator=gen).squeeze(1)
            else:
                y = probs.argmax(dim=-1)
            y = y.masked_fill(done, cfg.pad_id)
            steps.append(y)
            done |= y == cfg.eos_id
            if bool(done.all()):
                break
        out = []
        for row in torch.stack(steps, 1).tolist():
            out.append(row[: row.index(cfg.eos_id)] if cfg.eos_id in row else row)
        return out

    # ----- bookkeeping --------------------------------------------------------------------------
    def num_parameters(self, trainable_only: bool = False) -> int:
        """Parameter count; a tied matrix is counted once."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad or not trainable_only)

    def save_pretrained(self, folder: str) -> None:
        """config.json + model.safetensors, each written to a temp file and moved into place."""
        from safetensors.torch import save_model

        os.makedirs(folder, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=WEIGHTS_NAME)
        os.close(fd)
        try:
            save_model(self, tmp)  # handles the tied embedding/output matrix
            os.replace(tmp, os.path.join(folder, WEIGHTS_NAME))
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
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

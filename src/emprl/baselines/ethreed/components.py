"""ETHREED's parts (Li et al., section 3): utterance encoder, dialogue tracker, emotion classifier,
empathetic policy, pointer-generator decoder, and the emotion (L1) and guided-policy-search (L2) losses.
``model.py`` assembles them into :class:`ETHREED`; docs/ethreed.md maps the equations (D1..D15) to them."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from emprl.baselines.ethreed.batching import IGNORE, LISTENER, SPEAKER

GPS_DIVERGENCES = ("kl_q_p", "kl_p_q")


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
        # D14: score_ij = s_{i-1}^T tanh(W_a h_j + W_r cover_ij + b) (not Eq. 18's form: docs/ethreed.md)
        self.attention = nn.Linear(enc_dim, hidden_size)  # W_a h_j + b
        self.coverage_proj = nn.Linear(1, hidden_size, bias=False)  # W_r cover_ij
        if emo_dim:
            # D15: con_i = FFN(c_i), emo = FFN(R^_e) bring both to one magnitude; beta_i = sigma(con_i^T W_g emo + b_g)
            # (separate maps and a bilinear gate: departures from Eq. 13-14 and 20, docs/ethreed.md)
            self.con_ffn = nn.Linear(enc_dim, emo_dim)
            self.emo_ffn = nn.Linear(emo_dim, emo_dim)
            self.emotion_gate = nn.Bilinear(emo_dim, emo_dim, 1)
        # Two output maps and p_gen's inputs depart from Eq. 22-23 (docs/ethreed.md)
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

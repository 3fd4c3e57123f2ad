"""Dialogue examples -> padded tensors for ETHREED.

An example is a mapping with
  context: list[str]   turns, oldest first; the LAST turn is the speaker's, roles alternate backwards
  response: str        the listener's reply (the target)
  emotion: str         the speaker's emotion label ("" if unknown)
  listener_emotions:   optional list[str], one label per listener turn of the context (oldest first)
                       followed by one for the response; "" where unknown
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from emprl.baselines.ethreed.vocab import Vocab
from emprl.common.errors import UserError

# The 32 emotion labels of EmpatheticDialogues (Rashkin et al. 2019), as spelled in the release.
ED_EMOTIONS: tuple[str, ...] = (
    "afraid", "angry", "annoyed", "anticipating", "anxious", "apprehensive", "ashamed", "caring",
    "confident", "content", "devastated", "disappointed", "disgusted", "embarrassed", "excited",
    "faithful", "furious", "grateful", "guilty", "hopeful", "impressed", "jealous", "joyful", "lonely",
    "nostalgic", "prepared", "proud", "sad", "sentimental", "surprised", "terrified", "trusting",
)
EMOTION_TO_ID = {e: i for i, e in enumerate(ED_EMOTIONS)}
IGNORE = -100  # label of turns whose emotion is unknown (CrossEntropyLoss's ignore_index)
SPEAKER, LISTENER = 0, 1


def emotion_id(label: str | None, where: str = "emotion") -> int:
    """Index of an ED emotion label; IGNORE for an empty/missing label."""
    if label is None or str(label).strip() == "":
        return IGNORE
    key = str(label).strip().lower()
    if key not in EMOTION_TO_ID:
        raise UserError(f"{where}: unknown emotion label {label!r}; expected one of the 32 ED labels")
    return EMOTION_TO_ID[key]


def turn_roles(n_turns: int) -> list[int]:
    """Roles assigned from the end: the last context turn is the speaker's."""
    return [SPEAKER if (n_turns - 1 - i) % 2 == 0 else LISTENER for i in range(n_turns)]


def encode_example(example: Mapping, vocab: Vocab, max_turns: int = 8, max_turn_len: int = 50,
                   max_target_len: int = 40, where: str = "example") -> dict:
    """Token ids, roles and emotion labels of one example (plain lists; `collate` pads them)."""
    context = list(example["context"])
    if not context:
        raise UserError(f"{where}: empty context")
    roles = turn_roles(len(context))
    speaker_emotion = emotion_id(example.get("emotion"), where)
    labels = [speaker_emotion if r == SPEAKER else IGNORE for r in roles]
    response_emotion = IGNORE
    listener = example.get("listener_emotions")
    if listener:
        listener_idx = [i for i, r in enumerate(roles) if r == LISTENER]
        if len(listener) != len(listener_idx) + 1:
            raise UserError(f"{where}: listener_emotions has {len(listener)} labels; expected one per "
                            f"listener turn of the context plus one for the response ({len(listener_idx) + 1})")
        for i, lab in zip(listener_idx, listener[:-1]):
            labels[i] = emotion_id(lab, f"{where} listener_emotions")
        response_emotion = emotion_id(listener[-1], f"{where} listener_emotions")

    keep = slice(max(0, len(context) - max_turns), len(context))  # the most recent turns matter most
    turns = [(vocab.encode(t)[:max_turn_len] or [vocab.eos_id]) for t in context[keep]]
    response = vocab.encode(example["response"])
    target = response[: max_target_len - 1]
    return {
        "turns": turns,
        "roles": roles[keep],
        "turn_emotions": labels[keep],
        "response_turn": response[:max_turn_len] or [vocab.eos_id],
        "tgt_in": [vocab.bos_id] + target,
        "tgt_out": target + [vocab.eos_id],
        "emotion": speaker_emotion,
        "response_emotion": response_emotion,
    }


def _pad2d(rows: Sequence[Sequence[int]], value: int) -> torch.Tensor:
    width = max(1, max(len(r) for r in rows))
    out = torch.full((len(rows), width), value, dtype=torch.long)
    for i, r in enumerate(rows):
        out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
    return out


def collate(items: Sequence[dict], pad_id: int = 0) -> dict[str, torch.Tensor]:
    """Pad encoded examples into a batch.

    turn_ids [B,T,L], turn_lens [B,T] (0 = padding turn), turn_roles [B,T], turn_emotions [B,T],
    num_turns [B], src_ids [B,T*L] (all context tokens, turn-major, for attention and copying),
    src_mask [B,T*L], src_roles [B,T*L] (the role of each token's turn: which positions may be copied),
    resp_ids [B,Lr], resp_lens [B], tgt_in/tgt_out/tgt_mask [B,Ly],
    emotion [B], response_emotion [B]."""
    B = len(items)
    T = max(len(it["turns"]) for it in items)
    L = max(len(t) for it in items for t in it["turns"])
    turn_ids = torch.full((B, T, L), pad_id, dtype=torch.long)
    turn_lens = torch.zeros(B, T, dtype=torch.long)
    roles = torch.zeros(B, T, dtype=torch.long)
    emotions = torch.full((B, T), IGNORE, dtype=torch.long)
    for b, it in enumerate(items):
        for t, ids in enumerate(it["turns"]):
            turn_ids[b, t, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            turn_lens[b, t] = len(ids)
        n = len(it["turns"])
        roles[b, :n] = torch.tensor(it["roles"], dtype=torch.long)
        emotions[b, :n] = torch.tensor(it["turn_emotions"], dtype=torch.long)
    token_mask = torch.arange(L)[None, None, :] < turn_lens[:, :, None]
    tgt_out = _pad2d([it["tgt_out"] for it in items], pad_id)
    return {
        "turn_ids": turn_ids,
        "turn_lens": turn_lens,
        "turn_roles": roles,
        "turn_emotions": emotions,
        "num_turns": (turn_lens > 0).sum(1),
        "src_ids": turn_ids.view(B, T * L),
        "src_mask": token_mask.view(B, T * L),
        "src_roles": roles[:, :, None].expand(B, T, L).reshape(B, T * L),
        "resp_ids": _pad2d([it["response_turn"] for it in items], pad_id),
        "resp_lens": torch.tensor([len(it["response_turn"]) for it in items], dtype=torch.long),
        "tgt_in": _pad2d([it["tgt_in"] for it in items], pad_id),
        "tgt_out": tgt_out,
        "tgt_mask": _pad2d([[1] * len(it["tgt_out"]) for it in items], 0).bool(),
        "emotion": torch.tensor([it["emotion"] for it in items], dtype=torch.long),
        "response_emotion": torch.tensor([it["response_emotion"] for it in items], dtype=torch.long),
    }

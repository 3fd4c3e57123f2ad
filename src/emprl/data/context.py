"""Dialogue context serialisation, shared by SFT, labelling, PPO and evaluation.

Long dialogues are cut by dropping the OLDEST turns: the authors' script truncated on the right and
so lost the most recent turns, which are the ones the response answers (docs/truncation.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


def turn_roles(n_turns: int) -> list[str]:
    """Roles of a context's turns, assigned from the end: the last turn is the speaker's."""
    return ["speaker" if (n_turns - 1 - i) % 2 == 0 else "listener" for i in range(n_turns)]


def keep_recent_turns(turns: Sequence[str], render: Callable[[Sequence[str]], str], tokenizer=None,
                      max_tokens: int | None = None) -> list[str]:
    """The longest suffix of ``turns`` whose rendering fits ``max_tokens`` tokens (at least one turn)."""
    turns = list(turns)
    if tokenizer is None or max_tokens is None:
        return turns

    def n_tokens(ts: Sequence[str]) -> int:
        return len(tokenizer(render(ts), add_special_tokens=True)["input_ids"])

    # Binary search over the start index: the token count only shrinks as older turns go.
    lo, hi = 0, len(turns) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        if n_tokens(turns[mid:]) <= max_tokens:
            hi = mid
        else:
            lo = mid + 1
    return turns[lo:]


def serialize_context(turns: Sequence[str], tokenizer=None, max_tokens: int | None = None,
                      speaker_tag: str = "Speaker:", listener_tag: str = "Listener:") -> str:
    """Turns joined with role tags, oldest dropped first to fit ``max_tokens``.

    If even the newest turn alone is too long, its beginning is cut (its end is what the reply
    answers)."""

    def render(ts: Sequence[str]) -> str:
        tags = {"speaker": speaker_tag, "listener": listener_tag}
        return " ".join(f"{tags[role]} {text}".strip() for role, text in zip(turn_roles(len(ts)), ts))

    kept = keep_recent_turns(turns, render, tokenizer, max_tokens)
    text = render(kept)
    if tokenizer is not None and max_tokens is not None:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        n_special = len(tokenizer("", add_special_tokens=True)["input_ids"])
        budget = max(1, max_tokens - n_special)
        if len(ids) > budget:
            text = tokenizer.decode(ids[-budget:], skip_special_tokens=True).strip()
    return text

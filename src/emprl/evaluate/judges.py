"""Empathy judges that are not the reward model: they grade generated replies for the evaluation.

The reward's identifiers grade a policy they trained (R_emp and Emp-F1 against their own gold levels),
which measures optimisation, not empathy. A judge gives ER/IP/EX levels (0 no, 1 weak, 2 strong) of a
reply from elsewhere (docs/judges.md):

- ``phrasebank:PATH`` — the oracle for the composed demo corpus: the fragment patterns the composer
  writes beside the data (``judge_phrases.json``); a mechanism's level is the highest level one of whose
  fragments appears in the reply, else 0.
- a folder of identifiers (the identifiers stage's output, e.g. trained on the other half of EPITOME
  with another seed) — their levels on (context, reply).
"""

from __future__ import annotations

import json
import os
import re

from emprl.common.errors import UserError
from emprl.common.mechanisms import MECHANISMS

PHRASEBANK_PREFIX = "phrasebank:"
PHRASEBANK_FORMAT = "emprl-phrasebank-1"


def judge_path(spec: str) -> str:
    """The file or folder a judge spec names (for checks and input fingerprints)."""
    return spec[len(PHRASEBANK_PREFIX):] if spec.startswith(PHRASEBANK_PREFIX) else spec


def check_judge_spec(name: str, spec) -> None:
    """A UserError naming the judge when its spec is not a phrasebank file or an identifiers folder."""
    if not isinstance(spec, str) or not spec.strip():
        raise UserError(f"judges: '{name}': expected phrasebank:PATH or an identifiers folder, got {spec!r}")
    path = judge_path(spec)
    if spec.startswith(PHRASEBANK_PREFIX):
        if not os.path.isfile(path):
            raise UserError(f"judges: '{name}': phrase bank '{path}' does not exist")
    elif not os.path.isdir(path):
        raise UserError(f"judges: '{name}': identifiers folder '{path}' does not exist "
                        "(or write phrasebank:PATH for a phrase bank)")


def _normalise(text: str) -> str:
    # Generated text may come back with spaced punctuation ("sorry .") or typographic apostrophes.
    text = str(text).replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\s+([.,!?])", r"\1", text)
    return " ".join(text.split())


class PhraseBankJudge:
    """Levels from the composer's phrase banks: exact fragments, any slot values, any casing."""

    def __init__(self, path: str):
        try:
            with open(path, encoding="utf-8") as fh:
                data = json.load(fh)
            if data.get("format") != PHRASEBANK_FORMAT:
                raise ValueError(f"format {data.get('format')!r}, expected {PHRASEBANK_FORMAT!r}")
            self.patterns = [
                [(level, re.compile(p, re.IGNORECASE)) for level in (2, 1) for p in data["patterns"][m][str(level)]]
                for m in MECHANISMS]
        except (OSError, ValueError, KeyError, TypeError, AttributeError, re.error) as err:
            raise UserError(f"{path}: not a phrase bank of emprl-phrasebank-1 patterns ({err})") from None
        self.path = path

    def level(self, reply: str) -> list[int]:
        text = _normalise(reply)
        return [next((lvl for lvl, pat in mech if pat.search(text)), 0) for mech in self.patterns]

    def levels(self, contexts, responses) -> list[list[int]]:
        return [self.level(r) for r in responses]


class IdentifiersJudge:
    """Levels of an identifiers folder on (context, reply), the context serialised as the label stage does."""

    def __init__(self, folder: str, device="cpu", max_context_len: int = 200, max_response_len: int = 50,
                 batch_size: int = 64, speaker_tag: str = "Speaker:", listener_tag: str = "Listener:"):
        from reward_models import EmpathyReward

        self.reward = EmpathyReward.from_pretrained(folder, device=device, max_context_len=max_context_len,
                                                    max_response_len=max_response_len, batch_size=batch_size)
        self.max_context_len, self.tags = max_context_len, (speaker_tag, listener_tag)
        self.path = folder
        self._serialised: dict[tuple, str] = {}  # each context is serialised once, not once per seed and sample

    def levels(self, contexts, responses) -> list[list[int]]:
        from emprl.data import serialize_context

        tok = next(iter(self.reward.tokenizers.values()))
        text = []
        for turns in contexts:
            key = tuple(turns)
            if key not in self._serialised:
                self._serialised[key] = serialize_context(list(turns), tok, self.max_context_len, *self.tags)
            text.append(self._serialised[key])
        return self.reward.levels(text, list(responses)).cpu().tolist()


def load_judge(name: str, spec: str, **identifier_settings):
    """A judge object with ``levels(contexts, responses) -> [[er, ip, ex], ...]``."""
    check_judge_spec(name, spec)
    if spec.startswith(PHRASEBANK_PREFIX):
        return PhraseBankJudge(judge_path(spec))
    return IdentifiersJudge(spec, **identifier_settings)

"""Word vocabulary for ETHREED, built from training text, with an optional GloVe initialisation."""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable

import torch

from emprl.common.errors import UserError
from emprl.common.io import atomic_write_text
from emprl.metrics import split_words

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<bos>", "<eos>"
SPECIALS = (PAD, UNK, BOS, EOS)

_NO_SPACE_BEFORE = re.compile(r" ([.,!?;:%)])")


def detokenize(tokens: list[str]) -> str:
    """Join tokens with spaces, attaching closing punctuation to the previous word."""
    return _NO_SPACE_BEFORE.sub(r"\1", " ".join(tokens))


class Vocab:
    """Index <-> word map. Ids 0..3 are <pad> <unk> <bos> <eos>."""

    def __init__(self, itos: list[str]):
        if tuple(itos[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with {SPECIALS}")
        if len(set(itos)) != len(itos):
            raise ValueError("duplicate words in vocabulary")
        self.itos = list(itos)
        self.stoi = {w: i for i, w in enumerate(self.itos)}

    pad_id, unk_id, bos_id, eos_id = 0, 1, 2, 3

    def __len__(self) -> int:
        return len(self.itos)

    @classmethod
    def build(cls, texts: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        """Most frequent words first (ties broken alphabetically, so builds are reproducible).
        max_size counts the special tokens."""
        counts = Counter(tok for text in texts for tok in split_words(text))
        words = sorted((w for w, c in counts.items() if c >= min_freq and w not in SPECIALS),
                       key=lambda w: (-counts[w], w))
        if max_size is not None:
            words = words[: max(0, max_size - len(SPECIALS))]
        return cls(list(SPECIALS) + words)

    def encode(self, text: str) -> list[int]:
        return [self.stoi.get(tok, self.unk_id) for tok in split_words(text)]

    def decode(self, ids: Iterable[int], strip_special: bool = True) -> str:
        toks = []
        for i in ids:
            i = int(i)
            if i == self.eos_id and strip_special:
                break
            if strip_special and i in (self.pad_id, self.bos_id):
                continue
            toks.append(self.itos[i] if 0 <= i < len(self.itos) else UNK)
        return detokenize(toks)

    def save(self, path: str) -> None:
        atomic_write_text(path, json.dumps({"itos": self.itos}, ensure_ascii=False))

    @classmethod
    def load(cls, path: str) -> Vocab:
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
            return cls(data["itos"])
        except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise UserError(f"{path}: not a vocabulary file written by Vocab.save ({e})") from e


def load_glove(path: str, vocab: Vocab, dim: int, init_std: float = 0.1,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Embedding matrix [len(vocab), dim] from a GloVe-format text file ("word v1 ... vdim" per line).

    Words missing from the file keep a random N(0, init_std) row; <pad> is all zeros.
    Returns (matrix, number of vocabulary words found)."""
    weight = torch.randn(len(vocab), dim, generator=generator) * init_std
    weight[vocab.pad_id] = 0.0
    found: set[int] = set()
    try:
        f = open(path, encoding="utf-8", errors="replace")
    except OSError as e:
        raise UserError(f"{path}: cannot read GloVe file ({e.strerror})") from e
    with f:
        for lineno, line in enumerate(f, 1):
            parts = line.rstrip("\n").rstrip().split(" ")
            if len(parts) < 2:
                continue
            word, values = parts[0], parts[1:]
            if len(values) != dim:
                # some GloVe releases contain words with spaces; those lines have extra fields
                if len(values) > dim:
                    word, values = " ".join(parts[: len(parts) - dim]), parts[len(parts) - dim:]
                else:
                    raise UserError(f"{path}:{lineno}: expected {dim} numbers after the word, found {len(values)}")
            idx = vocab.stoi.get(word)
            if idx is None:
                idx = vocab.stoi.get(word.lower())
                # an exact-case entry takes precedence over a lower-cased one
                if idx is not None and idx in found:
                    continue
            if idx is None or idx == vocab.pad_id:
                continue
            try:
                weight[idx] = torch.tensor([float(v) for v in values])
            except ValueError as e:
                raise UserError(f"{path}:{lineno}: non-numeric vector value ({e})") from e
            found.add(idx)
    return weight, len(found)

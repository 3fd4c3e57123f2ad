"""Metric building blocks: a download-free word tokenizer, local `evaluate` modules and small statistics.

The metric modules live in sub-folders (distinct, emp_f1, bleu, rouge_l); `load_metric` hands their
absolute folder to `evaluate.load`, which then imports the script of the same name from disk and never
asks a hub (a bare name such as "bleu" would be fetched from the Hugging Face hub and fail offline).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path

METRICS_DIR = Path(__file__).resolve().parent
METRIC_NAMES = ("distinct", "emp_f1", "bleu", "rouge_l", "embedding_similarity")

# Order matters: decimals/thousands ("3.5", "1,000") before plain words; words keep internal
# apostrophes ("don't", "i'm"); "..." stays one token; any other symbol is a token of its own.
_TOKEN_RE = re.compile(r"\d+(?:[.,]\d+)+|\w+(?:'\w+)*|\.\.\.|[^\w\s]")


def split_words(text: str) -> list[str]:
    """Lowercased word tokens; punctuation split off. Curly apostrophes count as straight ones."""
    return _TOKEN_RE.findall(text.lower().replace("\u2019", "'"))


def nltk_words(text: str) -> list[str]:
    """Case-sensitive NLTK word tokens, as the authors counted Dist-n (``nltk.word_tokenize``).

    ``word_tokenize`` first splits sentences with the trained English Punkt model, a download we
    cannot count on offline; an untrained ``PunktSentenceTokenizer`` needs none and splits at the same
    sentence ends except after abbreviations it has not learnt ("Mr."), which it treats as ends."""
    from nltk.tokenize import NLTKWordTokenizer
    from nltk.tokenize.punkt import PunktSentenceTokenizer

    words = NLTKWordTokenizer()
    return [tok for sentence in PunktSentenceTokenizer().tokenize(text) for tok in words.tokenize(sentence)]


def load_metric(name: str, **kwargs):
    """`evaluate.load` of one of our local metric modules (by folder path, so it works offline)."""
    import evaluate

    if name not in METRIC_NAMES:
        raise ValueError(f"unknown metric {name!r}; expected one of {', '.join(METRIC_NAMES)}")
    # In-memory caching avoids Arrow cache files and lock files under ~/.cache for single-process
    # use; evaluate forbids it for distributed (num_process > 1) evaluation.
    kwargs.setdefault("keep_in_memory", kwargs.get("num_process", 1) == 1)
    return evaluate.load(str(METRICS_DIR / name), **kwargs)


def mean_ci95(values: Iterable[float]) -> tuple[float, float]:
    """Mean and half-width of the two-sided 95% Student-t interval (sample std, ddof=1).

    One value gives a NaN half-width: the spread of a single run is unknown.
    """
    from scipy import stats  # a dependency of scikit-learn, so always installed with us

    xs = [float(v) for v in values]
    if not xs:
        raise ValueError("mean_ci95 needs at least one value")
    n = len(xs)
    mean = sum(xs) / n
    if n == 1:
        return mean, math.nan
    sd = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1))
    return mean, float(stats.t.ppf(0.975, n - 1)) * sd / math.sqrt(n)


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(total negative log-likelihood / token count), summed over the whole test set."""
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs a positive token count, got {total_tokens}")
    return math.exp(total_nll / total_tokens)

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

from emprl.common.mechanisms import MECHANISMS

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
    return mean, float(stats.t.ppf(0.975, n - 1) * stats.sem(xs))  # Student t half-width, sem with ddof=1


def perplexity(total_nll: float, total_tokens: int) -> float:
    """exp(total negative log-likelihood / token count), summed over the whole test set."""
    if total_tokens <= 0:
        raise ValueError(f"perplexity needs a positive token count, got {total_tokens}")
    return math.exp(total_nll / total_tokens)


def level_confusion(predictions, references, num_levels: int = 3):
    """Counts [mechanism, gold level, predicted level] of per-example level triples (as emp_f1 takes them).

    Confusion counts add up over examples, so a bootstrap of Emp-F1 over contexts can sum per-context
    counts instead of rerunning scikit-learn on every resample (see emp_f1_from_confusion)."""
    import numpy as np

    pred, gold = np.asarray(predictions, dtype=int), np.asarray(references, dtype=int)
    if pred.shape != gold.shape or pred.ndim != 2:
        raise ValueError(f"expected predictions and references of the same shape [examples, mechanisms], "
                         f"got {pred.shape} and {gold.shape}")
    if pred.size and (min(pred.min(), gold.min()) < 0 or max(pred.max(), gold.max()) >= num_levels):
        raise ValueError(f"empathy levels must lie in 0..{num_levels - 1}")
    counts = np.zeros((pred.shape[1], num_levels, num_levels), dtype=np.int64)
    for m in range(pred.shape[1]):
        np.add.at(counts[m], (gold[:, m], pred[:, m]), 1)
    return counts


def emp_f1_per_mechanism(counts):
    """Per mechanism, the support-weighted F1 (x100) of levels 0/1/2 from level_confusion counts, with
    F1 = 0 where a level is neither gold nor predicted: scikit-learn's f1_score(average="weighted",
    zero_division=0), which a test checks."""
    import numpy as np

    counts = np.asarray(counts, dtype=float)
    tp = np.diagonal(counts, axis1=1, axis2=2)
    support, predicted = counts.sum(axis=2), counts.sum(axis=1)
    denom = support + predicted  # 2 tp + fp + fn
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum(axis=1)
    return 100.0 * np.divide((f1 * support).sum(axis=1), total, out=np.zeros_like(total), where=total > 0)


def emp_f1_from_confusion(counts) -> float:
    """Emp-F1 (x100) from level_confusion counts: the mean over mechanisms of emp_f1_per_mechanism."""
    return float(emp_f1_per_mechanism(counts).mean())


def emp_f1_scores(predictions, references, mechanisms=MECHANISMS) -> dict[str, float]:
    """Emp-F1, the one implementation every stage uses: per-example level triples on (c, generated)
    (``predictions``) against those on (c, reference) (``references``) -> {mechanism: F1 x100, ...,
    "emp_f1": their mean}. Mechanisms in the order of the triples (default: MECHANISMS)."""
    per_mechanism = emp_f1_per_mechanism(level_confusion(predictions, references))
    if len(per_mechanism) != len(mechanisms):
        raise ValueError(f"expected level triples of {len(mechanisms)} mechanisms, got {len(per_mechanism)}")
    scores = {m: float(v) for m, v in zip(mechanisms, per_mechanism)}
    scores["emp_f1"] = float(per_mechanism.mean())
    return scores

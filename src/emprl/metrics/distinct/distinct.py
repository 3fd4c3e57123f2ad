"""Dist-1 / Dist-2 as the authors computed them: distinct n-grams over all n-grams of all generated
responses (corpus level), case-sensitive NLTK word tokens, x100."""

import datasets
import evaluate

from emprl.metrics import nltk_words

_DESCRIPTION = """Corpus-level distinct n-gram ratio (Li et al., 2016) with the authors' tokens: NLTK word
tokenisation, case kept ("I" and "i" are two unigrams). N-grams are counted inside each response (never
across two responses); the score is the number of different n-grams over the number of n-grams in all
predictions, times 100 (0 when there are none). See `emprl.metrics.nltk_words` for the tokenisation."""

_KWARGS = """
Args:
    predictions (list[str]): generated responses.
    max_n (int, default 2): report dist-1 .. dist-max_n.
Returns:
    {"dist-1": float, "dist-2": float, ...} in [0, 100].
"""


class Distinct(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": datasets.Value("string")}),
        )

    def _compute(self, predictions, max_n: int = 2):
        token_lists = [nltk_words(p) for p in predictions]
        scores = {}
        for n in range(1, max_n + 1):
            grams = [tuple(t[i : i + n]) for t in token_lists for i in range(len(t) - n + 1)]
            scores[f"dist-{n}"] = 100.0 * len(set(grams)) / len(grams) if grams else 0.0
        return scores

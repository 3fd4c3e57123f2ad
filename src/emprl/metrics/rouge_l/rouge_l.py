"""ROUGE-L F-measure (x100), the mean over (prediction, reference) pairs, via rouge_score."""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """Sentence-level ROUGE-L F1 (longest common subsequence) from Google's rouge_score, averaged
over pairs, times 100. rouge_score's own tokenizer is kept (lowercase, anything other than a-z0-9 is a
separator, so punctuation is ignored as in the original ROUGE); no stemming."""

_KWARGS = """
Args:
    predictions (list[str]): generated responses.
    references (list[str]): one reference response per prediction.
Returns:
    {"rouge-l": float} in [0, 100] (0 for an empty list).
"""


class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references):
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
        f = [scorer.score(r, p)["rougeL"].fmeasure for p, r in zip(predictions, references)]
        return {"rouge-l": 100.0 * sum(f) / len(f) if f else 0.0}

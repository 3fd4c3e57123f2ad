"""BLEU-1 / BLEU-2 at corpus level (x100) via sacrebleu, on our word tokens."""

import datasets
import evaluate
from sacrebleu.metrics import BLEU

from emprl.metrics import split_words

_DESCRIPTION = """Corpus BLEU-n as the dialogue papers on DailyDialog report it: the cumulative score with
uniform weights (BLEU-2 = brevity penalty x geometric mean of the 1- and 2-gram precisions), i.e.
sacrebleu's BLEU with max_ngram_order=n. Texts are first split with `emprl.metrics.split_words`
(lowercased, punctuation apart, the tokenizer Dist-n uses) and handed over with tokenize="none".
No smoothing: an order with no match gives 0, as NLTK's unsmoothed corpus_bleu does, whose
weights (1,) and (0.5, 0.5) these numbers equal. One reference per prediction."""

_KWARGS = """
Args:
    predictions (list[str]): generated responses.
    references (list[str]): one reference response per prediction.
Returns:
    {"bleu-1": float, "bleu-2": float} in [0, 100].
"""


class Bleu(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features(
                {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
            ),
        )

    def _compute(self, predictions, references, max_n: int = 2):
        hyps = [" ".join(split_words(p)) for p in predictions]
        refs = [" ".join(split_words(r)) for r in references]
        scores = {}
        for n in range(1, max_n + 1):
            bleu = BLEU(tokenize="none", smooth_method="none", max_ngram_order=n)
            scores[f"bleu-{n}"] = float(bleu.corpus_score(hyps, [refs]).score)
        return scores

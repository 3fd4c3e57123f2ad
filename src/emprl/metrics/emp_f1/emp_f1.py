"""Emp-F1: agreement of the empathy identifiers' levels on generated and on reference responses."""

import datasets
import evaluate

from emprl.common.mechanisms import MECHANISMS
from emprl.metrics import emp_f1_scores

_DESCRIPTION = """For each EPITOME mechanism, the weighted F1 (scikit-learn, labels 0/1/2, zero_division=0)
between the level the identifier gives to (context, generated response) and the level it gives to
(context, reference response), times 100; "emp_f1" is the mean over the three mechanisms."""

_KWARGS = """
Args:
    predictions (list[list[int]]): per example, levels on (c, generated) in the order
        (emotional_reactions, interpretations, explorations); each level 0 no, 1 weak, 2 strong.
    references (list[list[int]]): the same for (c, reference), i.e. the cached gold levels.
Returns:
    {"emotional_reactions": float, "interpretations": float, "explorations": float, "emp_f1": float}
"""


class EmpF1(evaluate.Metric):
    def _info(self):
        levels = datasets.Sequence(datasets.Value("int64"), length=len(MECHANISMS))
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS,
            features=datasets.Features({"predictions": levels, "references": levels}),
        )

    def _compute(self, predictions, references):
        bad = {v for row in (*predictions, *references) for v in row} - {0, 1, 2}
        if bad:
            raise ValueError(f"empathy levels must be 0, 1 or 2; got {sorted(bad)}")
        return emp_f1_scores(predictions, references, MECHANISMS)  # the one Emp-F1 (emprl.metrics)

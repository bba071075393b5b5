"""Clean evaluation of a classifier on the evaluation split, with the numbers a record reports.

Besides accuracy, the protocol (METHODS.md, "Statistics and reporting") asks for what reveals a
broken model: the share of the most predicted class (``pred_majority_share``), the Aua a
constant classifier predicting that class would get on the attacked sample
(``constant_clf_aua``, filled in by the pipeline once the sample is known), and calibration
(``ece`` with 15 equal-width bins, ``mean_max_prob``), because saturated probabilities can make
score-based attacks look weaker. Proportions carry 95% Wilson intervals.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from benchmark.data.loading import Example
from benchmark.reporting.stats import expected_calibration_error, wilson_interval


@dataclass(frozen=True)
class CleanEval:
    """Per-example predictions on the evaluation split (in the split's order)."""

    labels: np.ndarray  # (n,)
    probs: np.ndarray  # (n, classes)

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(axis=1)

    def fields(self) -> dict[str, float | int | None]:
        """The record's clean-accuracy fields."""
        n = len(self.labels)
        correct = int((self.preds == self.labels).sum())
        low, high = wilson_interval(correct, n)
        counts = Counter(self.preds.tolist())
        majority_label, majority_n = counts.most_common(1)[0] if counts else (None, 0)
        true_counts = Counter(self.labels.tolist())
        return {
            "clean_acc": correct / n if n else float("nan"),
            "clean_acc_ci_low": low, "clean_acc_ci_high": high,
            "n_eval": n, "n_eval_correct": correct,
            "pred_majority_label": None if majority_label is None else int(majority_label),
            "pred_majority_share": majority_n / n if n else float("nan"),
            "majority_rate": max(true_counts.values()) / n if n else float("nan"),
            "ece": expected_calibration_error(self.probs, self.labels, n_bins=15),
            "mean_max_prob": float(self.probs.max(axis=1).mean()) if n else float("nan"),
        }  # fmt: skip


@torch.inference_mode()
def evaluate_clean(
    model: nn.Module, tokenizer, examples: Sequence[Example], max_length: int,
    device: torch.device, batch_size: int = 64, precision: str = "float32",
) -> CleanEval:  # fmt: skip
    """Probabilities for every example (batches of similar length; results in split order),
    forward passes under the job's ``precision`` (:mod:`benchmark.models.precision`)."""
    from benchmark.models.precision import autocast

    model.eval()
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]))
    probs = np.zeros((len(examples), model.config.num_labels), dtype=np.float64)
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        enc = tokenizer(
            [examples[i][0] for i in idx], padding=True, truncation=True,
            max_length=max_length, return_tensors="pt",
        ).to(device)  # fmt: skip
        with autocast(precision, device):
            logits = model(**enc).logits.float()
        probs[idx] = torch.softmax(logits, dim=-1).cpu().double().numpy()
    labels = np.array([int(y) for _, y in examples], dtype=np.int64)
    return CleanEval(labels=labels, probs=probs)


def constant_clf_aua(sample_labels: Sequence[int], label: int | None) -> float:
    """Aua of a classifier that always predicts ``label``: its share of the attacked sample.

    Such a classifier cannot be flipped by any perturbation, so every example of that class
    survives and every other one is misclassified from the start.
    """
    if not sample_labels or label is None:
        return float("nan")
    return sum(int(y) == int(label) for y in sample_labels) / len(sample_labels)

"""Top-1 accuracy against labels, and agreement between two models' predictions."""

from __future__ import annotations

import numpy as np

from workbench.errors import WorkbenchError

__all__ = ["accuracy", "agreement", "top1"]


def top1(values: np.ndarray) -> np.ndarray:
    """Predicted class per row: argmax of logits (N, C), or the labels themselves if 1-D."""
    a = np.asarray(values)
    if a.ndim == 1:
        return a.astype(np.int64, copy=False)
    if a.ndim == 2:
        return a.argmax(axis=1)
    raise WorkbenchError(
        f"expected logits of shape (N, classes) or labels of shape (N,), got shape {a.shape}",
        "pass the model's output for N inputs, or a 1-D array of class indices",
    )


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of rows whose top-1 prediction equals the label (logits or labels accepted)."""
    return _match_rate(logits, labels, "predictions", "labels")


def agreement(preds_a: np.ndarray, preds_b: np.ndarray) -> float:
    """Fraction of rows on which two models make the same top-1 prediction."""
    return _match_rate(preds_a, preds_b, "first model's predictions", "second model's predictions")


def _match_rate(a: np.ndarray, b: np.ndarray, name_a: str, name_b: str) -> float:
    pa, pb = top1(a), top1(b)
    if len(pa) != len(pb):
        raise WorkbenchError(
            f"{len(pa)} {name_a} cannot be compared with {len(pb)} {name_b}",
            "pass one prediction per example of the same split, in the same order",
        )
    if len(pa) == 0:
        raise WorkbenchError("no examples to score", "pass at least one prediction and label")
    return float(np.mean(pa == pb))

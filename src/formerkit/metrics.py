"""Classification metrics shared by the tasks: accuracy, macro F1 and the confusion matrix
(per-class F1 as in Sokolova and Lapalme 2009, averaged with equal class weights).

Inputs are integer class ids as numpy arrays, torch tensors or lists; entries whose target
equals ``ignore_index`` (-100, the loss convention) are skipped.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def _as_ids(predictions: Any, targets: Any, ignore_index: int | None
            ) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(_to_numpy(predictions)).reshape(-1).astype(np.int64)
    true = np.asarray(_to_numpy(targets)).reshape(-1).astype(np.int64)
    if pred.shape != true.shape:
        raise ValueError(f"predictions and targets differ in size: {pred.size} vs {true.size}")
    if ignore_index is not None:
        keep = true != ignore_index
        pred, true = pred[keep], true[keep]
    return pred, true


def _to_numpy(values: Any) -> Any:
    if hasattr(values, "detach"):  # torch tensor
        return values.detach().cpu().numpy()
    return values


def accuracy(predictions: Any, targets: Any, *, ignore_index: int | None = -100) -> float:
    """Fraction of predictions equal to their targets (0.0 for no entries)."""
    pred, true = _as_ids(predictions, targets, ignore_index)
    return float((pred == true).mean()) if true.size else 0.0


def confusion_matrix(predictions: Any, targets: Any, n_classes: int, *,
                     ignore_index: int | None = -100) -> np.ndarray:
    """(n_classes, n_classes) counts; row = true class, column = predicted class."""
    pred, true = _as_ids(predictions, targets, ignore_index)
    for name, ids in (("predictions", pred), ("targets", true)):
        if ids.size and (ids.min() < 0 or ids.max() >= n_classes):
            raise ValueError(f"{name} hold class ids outside [0, {n_classes}): "
                             f"{int(ids.min())}..{int(ids.max())}")
    flat = np.bincount(true * n_classes + pred, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes)


def f1_per_class(matrix: np.ndarray) -> np.ndarray:
    """F1 of every class from a confusion matrix; a class never true nor predicted gets 0."""
    matrix = np.asarray(matrix, dtype=np.float64)
    tp = np.diag(matrix)
    denominator = matrix.sum(axis=0) + matrix.sum(axis=1)  # 2 tp + fp + fn
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp), where=denominator > 0)


def macro_f1(predictions: Any, targets: Any, n_classes: int | None = None, *,
             ignore_index: int | None = -100) -> float:
    """Unweighted mean of per-class F1 over the classes present in targets or predictions
    (as scikit-learn's ``f1_score(average="macro")``)."""
    pred, true = _as_ids(predictions, targets, ignore_index)
    if not true.size:
        return 0.0
    n_classes = n_classes or int(max(pred.max(), true.max())) + 1
    matrix = confusion_matrix(pred, true, n_classes, ignore_index=None)
    present = (matrix.sum(axis=0) + matrix.sum(axis=1)) > 0
    return float(f1_per_class(matrix)[present].mean())

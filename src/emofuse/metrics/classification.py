"""Categorical emotion metrics (e.g. MELD's 7 classes); the confusion-matrix plot is
emofuse.training.artifacts.plot_confusion_matrix."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support

from emofuse.metrics.regression import _to_numpy

__all__ = ["classification_metrics"]


# The ValueErrors of this module are bugs, not the user's: predictions come from a model and labels
# and class names were checked where the data was read (data.labels).
def _class_ids(x: Any, name: str, num_classes: int) -> np.ndarray:
    """1-D integer class ids in ``0..num_classes-1`` (integral floats accepted)."""
    arr = _to_numpy(x)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D class ids, got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.issubdtype(arr.dtype, np.integer):
        f = arr.astype(np.float64)
        bad = int((~np.isfinite(f) | (f != np.round(f))).sum())
        if bad:
            raise ValueError(f"{name} contains {bad} non-integer/non-finite value(s)")
        arr = f
    arr = arr.astype(np.int64)
    out = (arr < 0) | (arr >= num_classes)
    if out.any():
        raise ValueError(
            f"{name} has {int(out.sum())} value(s) outside 0..{num_classes - 1} "
            f"(e.g. {int(arr[out][0])}); check num_classes / label mapping"
        )
    return arr


def _pred_ids(preds: Any, num_classes: int) -> np.ndarray:
    arr = _to_numpy(preds)
    if arr.ndim == 2:  # logits / probabilities (N, C)
        if arr.shape[1] != num_classes:
            raise ValueError(
                f"preds logits have {arr.shape[1]} columns, expected num_classes={num_classes}"
            )
        f = arr.astype(np.float64)
        bad = int((~np.isfinite(f)).sum())
        if bad:
            raise ValueError(f"preds logits contain {bad} non-finite value(s)")
        return np.argmax(f, axis=1)
    return _class_ids(arr, "preds", num_classes)


def classification_metrics(
    preds: Any,
    labels: Any,
    num_classes: int,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracy, weighted/macro F1, per-class P/R/F1 and the confusion matrix.

    ``preds``: class ids (N,) or logits/probabilities (N, C) -> argmax.
    ``labels``: class ids (N,) in ``0..num_classes-1``.

    * ``accuracy = mean(pred == label)``
    * per class c: ``P_c = TP_c/(TP_c+FP_c)``, ``R_c = TP_c/(TP_c+FN_c)``,
      ``F1_c = 2 P_c R_c/(P_c+R_c)`` (0 when a denominator is 0), support = #labels == c.
    * ``f1_weighted = sum_c support_c F1_c / N`` (the MELD convention).
    * ``f1_macro = mean_c F1_c`` over the classes present in labels or preds —
      sklearn's default label set, i.e. what ``f1_score(y, p, average="macro")``
      gives in published code; a class absent from both does not drag it down.
    * ``confusion_matrix[i][j]`` = #(label i, pred j), always C x C.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if class_names is None:
        class_names = [str(i) for i in range(num_classes)]
    names = [str(n) for n in class_names]
    if len(names) != num_classes or len(set(names)) != num_classes:
        raise ValueError(f"class_names must be {num_classes} unique names, got {names}")
    y = _class_ids(labels, "labels", num_classes)
    p = _pred_ids(preds, num_classes)
    if p.shape != y.shape:
        raise ValueError(f"preds and labels differ in length: {p.size} vs {y.size}")

    all_ids = list(range(num_classes))
    prec, rec, f1, sup = precision_recall_fscore_support(
        y, p, labels=all_ids, zero_division=0
    )
    return {
        "accuracy": float(np.mean(p == y)),
        "f1_weighted": float(f1_score(y, p, average="weighted", zero_division=0)),
        "f1_macro": float(f1_score(y, p, average="macro", zero_division=0)),
        "per_class": {
            names[c]: {
                "precision": float(prec[c]),
                "recall": float(rec[c]),
                "f1": float(f1[c]),
                "support": int(sup[c]),
            }
            for c in all_ids
        },
        "confusion_matrix": confusion_matrix(y, p, labels=all_ids).tolist(),
    }


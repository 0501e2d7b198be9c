"""Sentiment-regression metrics, numerically identical to MMSA 2.x.

Reference: ``MetricsTop.__eval_mosi_regression`` in MMSA 2.x
(https://github.com/thuiar/MMSA, ``utils/metricsTop.py``).  CMU-MOSI/MOSEI
labels are continuous in [-3, 3]; published tables report:

* ``Acc-7`` / ``Acc-5`` / ``Acc-3``: clip to +-3 / +-2 / +-1, round to the
  nearest integer, compare.
* ``Acc-2`` / ``F1`` in two conventions ("has0": zero labels count as positive,
  "non0": zero labels are dropped).
* ``MAE`` and Pearson ``Corr``.

Differences from MMSA, all deliberate:

* MMSA rounds every value to 4 decimals; we return full precision (round for
  display only, so averaging over seeds is not biased by early rounding).
* Accuracies are fractions in [0, 1], not percent.
* ``corr`` is ``nan`` (not a warning-emitting ``nan`` from a 0/0) when either
  side is constant; the non0 values are ``nan`` when no label is non-zero
  (MMSA would raise inside sklearn on an empty array).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

from emofuse.errors import OptionError

__all__ = [
    "acc2_has0",
    "acc2_non0",
    "acc3",
    "acc5",
    "acc7",
    "binary_prf_non0",
    "mae",
    "multiclass_acc",
    "pearson_corr",
    "regression_metrics",
    "sentiment_bins",
    "sentiment_class_names",
    "sentiment_classes",
]

SENTIMENT_CLASS_COUNTS = (2, 3, 5, 7)


def _to_numpy(x: Any) -> np.ndarray:
    """numpy / list / torch tensor -> numpy array (no torch import needed)."""
    if hasattr(x, "detach"):  # torch.Tensor
        t = x.detach().cpu()
        if t.is_floating_point():
            t = t.float()  # bf16/fp16 have no numpy equivalent (bf16) or lose precision
        return t.numpy()
    return np.asarray(x)


# _as_1d's and _validate's ValueErrors are bugs, not the user's: predictions come from a model and
# labels were checked where the data was read (data.labels.check_score_range).
def _as_1d(x: Any, name: str) -> np.ndarray:
    """Convert to a finite float64 1-D array.

    A trailing singleton axis, i.e. shape (N, 1) as produced by a regression
    head, is flattened (MMSA does ``.view(-1)``); other shapes are rejected
    rather than silently flattened, since (B, T) would mean a bug upstream.
    """
    try:
        arr = _to_numpy(x).astype(np.float64, copy=False)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"{name} must be numeric, got {type(x).__name__}: {exc}"
        ) from exc
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D (or shape (N, 1)), got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    bad = int((~np.isfinite(arr)).sum())
    if bad:
        raise ValueError(
            f"{name} contains {bad} non-finite value(s) (NaN/inf) out of {arr.size}"
        )
    return arr


def _validate(preds: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p = _as_1d(preds, "preds")
    y = _as_1d(labels, "labels")
    if p.shape != y.shape:
        raise ValueError(f"preds and labels differ in length: {p.size} vs {y.size}")
    return p, y


def multiclass_acc(preds: Any, labels: Any, clip: float) -> float:
    """``mean(round(clip(p, -c, c)) == round(clip(y, -c, c)))``.

    ``np.round`` is round-half-even (2.5 -> 2, 0.5 -> 0, -1.5 -> -2); MMSA uses
    it too, so half-integer labels/preds are binned exactly as in published
    tables.  Python's "round half away from zero" would move those samples to
    a different class.  ``-0.0 == 0.0`` so a sign on zero does not matter.
    """
    p, y = _validate(preds, labels)
    return float(np.mean(sentiment_bins(p, clip) == sentiment_bins(y, clip)))


def sentiment_bins(scores: Any, limit: float) -> np.ndarray:
    """``round(clip(x, -limit, limit))``: the one binning rule of every Acc-3/5/7 and class label.

    ``np.round`` is round-half-even, as MMSA's (see `multiclass_acc`); the shape and the float
    dtype of `scores` (numpy, list or torch tensor) are kept.
    """
    return np.round(np.clip(_to_numpy(scores), -limit, limit))


def _half_range(n_classes: int) -> int:
    if n_classes not in SENTIMENT_CLASS_COUNTS:
        raise OptionError(f"classes must be 2, 3, 5 or 7 for sentiment scores, not {n_classes}")
    return n_classes // 2


def sentiment_classes(scores: Any, n_classes: int) -> np.ndarray:
    """Sentiment scores as class ids 0..n_classes-1 (int64, the shape of `scores`), as MOSI's metrics
    bin them.

    2: 1 (non-negative) iff ``x >= 0``, else 0 (negative): the has0 convention of Acc-2;
    3 / 5 / 7: ``round(clip(x, -h, h)) + h`` with h = 1 / 2 / 3 (`sentiment_bins`).
    """
    half = _half_range(n_classes)
    if n_classes == 2:
        return (_to_numpy(scores) >= 0).astype(np.int64)
    return (sentiment_bins(scores, half) + half).astype(np.int64)


def sentiment_class_names(n_classes: int) -> list[str]:
    """The names of `sentiment_classes`' ids: negative / non-negative, or the signed bins (-1, +0, +1)."""
    half = _half_range(n_classes)
    if n_classes == 2:
        return ["negative", "non-negative"]
    return [f"{v:+d}" for v in range(-half, half + 1)]


def acc7(preds: Any, labels: Any) -> float:
    """7-class accuracy: classes -3..3 after ``round(clip(x, -3, 3))``."""
    return multiclass_acc(preds, labels, 3.0)


def acc5(preds: Any, labels: Any) -> float:
    """5-class accuracy: classes -2..2 after ``round(clip(x, -2, 2))``."""
    return multiclass_acc(preds, labels, 2.0)


def acc3(preds: Any, labels: Any) -> float:
    """3-class accuracy: classes -1..1 after ``round(clip(x, -1, 1))``."""
    return multiclass_acc(preds, labels, 1.0)


def _acc_f1(pb: np.ndarray, yb: np.ndarray) -> tuple[float, float]:
    # Weighted F1 = sum_c support_c * F1_c / N over the classes present in
    # y_true U y_pred (sklearn's default label set), exactly MMSA's call.
    # zero_division=0 equals sklearn's default "warn" value, minus the warning.
    acc = float(accuracy_score(yb, pb))
    f1 = float(f1_score(yb, pb, average="weighted", zero_division=0))
    return acc, f1


def acc2_has0(preds: Any, labels: Any) -> tuple[float, float]:
    """MMSA ``Has0_acc_2`` / ``Has0_F1_score`` -> ``(accuracy, weighted F1)``.

    All samples; positive iff ``x >= 0`` (so label 0 and prediction 0 are
    both positive).
    """
    p, y = _validate(preds, labels)
    return _acc_f1(sentiment_classes(p, 2) == 1, sentiment_classes(y, 2) == 1)


def _non0(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = y != 0
    return p[keep] > 0, y[keep] > 0


def acc2_non0(preds: Any, labels: Any) -> tuple[float, float]:
    """MMSA ``Non0_acc_2`` / ``Non0_F1_score`` -> ``(accuracy, weighted F1)``.

    Only samples with ``label != 0``; positive iff ``x > 0`` (a prediction of
    exactly 0 is negative here).  ``(nan, nan)`` if every label is 0.
    """
    p, y = _validate(preds, labels)
    pb, yb = _non0(p, y)
    if yb.size == 0:
        return math.nan, math.nan
    return _acc_f1(pb, yb)


def mae(preds: Any, labels: Any) -> float:
    """Mean absolute error ``mean(|p - y|)``."""
    p, y = _validate(preds, labels)
    return float(np.mean(np.abs(p - y)))


def pearson_corr(preds: Any, labels: Any) -> float:
    """Pearson r via ``np.corrcoef`` (as MMSA).

    ``r = sum((p - mean p)(y - mean y)) / sqrt(sum((p - mean p)^2) sum((y - mean y)^2))``.
    Undefined when either side is constant (incl. N == 1): returns ``nan``
    instead of letting numpy emit a divide warning.  A collapsed model that
    predicts a constant therefore shows ``corr = nan``, not 0.
    """
    p, y = _validate(preds, labels)
    if np.ptp(p) == 0 or np.ptp(y) == 0:
        return math.nan
    return float(np.corrcoef(p, y)[0, 1])


def binary_prf_non0(preds: Any, labels: Any) -> tuple[float, float, float]:
    """Positive-class ``(precision, recall, F1)`` on the non0 subset.

    Positive means ``label > 0`` / ``pred > 0`` among samples with
    ``label != 0``.  ``P = TP/(TP+FP)``, ``R = TP/(TP+FN)``,
    ``F1 = 2PR/(P+R)``; each ratio is 0 when its denominator is 0.
    ``(nan, nan, nan)`` if every label is 0.
    """
    p, y = _validate(preds, labels)
    pb, yb = _non0(p, y)
    if yb.size == 0:
        return math.nan, math.nan, math.nan
    tp = int(np.sum(pb & yb))
    fp = int(np.sum(pb & ~yb))
    fn = int(np.sum(~pb & yb))
    prec = tp / (tp + fp) if tp + fp else 0.0
    rec = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * prec * rec / (prec + rec) if prec + rec else 0.0
    return float(prec), float(rec), float(f1)


def regression_metrics(preds: Any, labels: Any) -> dict[str, float]:
    """All MOSI/MOSEI regression metrics in one dict.

    Keys: ``acc2_has0, f1_has0, acc2_non0, f1_non0, acc3, acc5, acc7, mae,
    corr, precision_non0, recall_non0, f1_binary_non0, n, n_non0``.
    Accuracies are fractions; ``n``/``n_non0`` are sample counts (ints).
    Raises ``ValueError`` on empty, non-finite or mismatched inputs.
    """
    p, y = _validate(preds, labels)
    a2h, f1h = acc2_has0(p, y)
    a2n, f1n = acc2_non0(p, y)
    prec, rec, f1b = binary_prf_non0(p, y)
    return {
        "acc2_has0": a2h,
        "f1_has0": f1h,
        "acc2_non0": a2n,
        "f1_non0": f1n,
        "acc3": acc3(p, y),
        "acc5": acc5(p, y),
        "acc7": acc7(p, y),
        "mae": mae(p, y),
        "corr": pearson_corr(p, y),
        "precision_non0": prec,
        "recall_non0": rec,
        "f1_binary_non0": f1b,
        "n": int(p.size),
        "n_non0": int(np.count_nonzero(y)),
    }

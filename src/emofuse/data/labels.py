"""Label checks shared by every file format: sentiment scores in range, class ids in 0..C-1.

A broken label (42.0, -1e9, a class id 10 among 0..2) is otherwise trained on and scored without
a word: the loss and MAE silently absorb it. Every reader therefore refuses such labels, naming
the file, split and rows; for scores a caller may opt in to clipping instead (with a warning).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import numpy as np

from emofuse.data.dataset import DataFormatError
from emofuse.errors import OptionError

# MOSI and MOSEI score sentiment in [-3, 3] (SIMS in [-1, 1]); a score outside is a broken file.
SCORE_RANGE: tuple[float, float] = (-3.0, 3.0)
LABEL_KINDS: tuple[str, ...] = ("auto", "regression", "classification")
MAX_REPORTED = 5
CLIP_HINT = ("fix the file, or load it with clip_labels=True (command line: --clip-labels) to clip them; "
             "class ids (an emotion dataset) are read with --labels classification")


def _listing(rows: np.ndarray, name: Callable[[int], str], values: np.ndarray) -> str:
    shown = ", ".join(f"{name(int(i))} = {values[i]:g}" for i in rows[:MAX_REPORTED])
    more = f" and {len(rows) - MAX_REPORTED} more" if len(rows) > MAX_REPORTED else ""
    return shown + more


def check_score_range(
    labels: np.ndarray,
    where: str,
    row_name: Callable[[int], str],
    clip: bool = False,
    stacklevel: int = 3,
) -> np.ndarray:
    """Refuse regression labels outside SCORE_RANGE, or with clip=True warn and clip them.

    where: the file and split ('data.pkl [split 'train']'); row_name(i) names sample i
    ('row 4 (id vid$_$2)'). Returns the labels, clipped when asked (same dtype).
    """
    low, high = SCORE_RANGE
    values = np.asarray(labels)
    bad = np.flatnonzero((values < low) | (values > high))
    if not len(bad):
        return labels
    message = (
        f"{where}: {len(bad)} sentiment label(s) outside [{low:g}, {high:g}]: "
        f"{_listing(bad, row_name, values)}"
    )
    if not clip:
        raise DataFormatError(f"{message}; {CLIP_HINT}")
    warnings.warn(f"{message}; clipped to [{low:g}, {high:g}]", stacklevel=stacklevel)
    return np.clip(values, low, high).astype(values.dtype)


def check_class_ids(
    labels: Sequence[np.ndarray], wheres: Sequence[str], row_names: Sequence[Callable[[int], str]],
    num_classes: int | None = None,
) -> int:
    """Class ids of all splits must be 0..C-1; returns C.

    C is `num_classes` when known (e.g. from class names), else the number of distinct ids over
    all splits: ids 0, 1, 2 and a stray 10 give C = 4, so the 10 is reported, not a 11-class task.
    """
    distinct = np.unique(np.concatenate([np.asarray(y).reshape(-1) for y in labels]))
    classes = num_classes if num_classes is not None else len(distinct)
    for y, where, name in zip(labels, wheres, row_names, strict=True):
        values = np.asarray(y)
        bad = np.flatnonzero((values < 0) | (values >= classes))
        if len(bad):
            raise DataFormatError(
                f"{where}: {len(bad)} class label(s) outside 0..{classes - 1} (the data has "
                f"{classes} classes, ids {distinct[:10].tolist()}): {_listing(bad, name, values)}"
            )
    return classes


def check_label_kind(labels: str) -> str:
    """`labels` itself when it is a known label kind (see LABEL_KINDS), else OptionError."""
    if labels not in LABEL_KINDS:
        raise OptionError(f"labels must be one of {', '.join(LABEL_KINDS)}, not {labels!r}")
    return labels

"""Read and write MMSA's pickled datasets (aligned_50.pkl, unaligned_50.pkl, ...).

An MMSA pickle is a dict with 'train', 'valid' and 'test', each a dict of per-sample arrays:
'id' ('video$_$clip'), 'raw_text', 'text' (N x L x 768 features), optionally 'text_bert'
(N x 3 x L token ids / attention mask / segment ids), 'audio', 'vision' (N x L x D),
'regression_labels', 'classification_labels', 'annotations', and for unaligned data
'audio_lengths' / 'vision_lengths'.

Security: pickles execute code while they load. Only open pickles you trust (the MMSA release, files
you wrote yourself); never a pickle from an unknown source.
"""

from __future__ import annotations

import os
import pickle
import warnings
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import (
    MODALITIES,
    RAW_EXTRAS,
    SPLITS,
    DataFormatError,
    DatasetSplits,
    MultimodalDataset,
)
from emofuse.data.frontend import frontend_record
from emofuse.data.labels import check_class_ids, check_score_range
from emofuse.data.raw import RAW_DTYPES, RAW_KEY_OF, LazyRawArray
from emofuse.data.sources import SourceRequest, register_source
from emofuse.errors import InputNotFound
from emofuse.files import atomic_path

TEXT_TOKENS_KEY = "text_bert"
# Share of a split's clips that must start with zero steps (and none end with one) before the
# split is read as padded at the front; a few real clips open with a silent/empty frame.
FRONT_PADDED_SHARE = 0.05
REGRESSION_KEY = "regression_labels"
META_KEY = "emofuse"  # top-level: how `emofuse extract` made the file (beside the splits)
CLASSIFICATION_KEY = "classification_labels"


# --------------------------------------------------------------------------- loading
@register_source("mmsa-pickle", matches=lambda path: not path.is_dir() and path.suffix in (".pkl", ".pickle"),
                 order=50)
def _mmsa_source(request: SourceRequest) -> DatasetSplits:
    """An MMSA pickle (aligned or unaligned); labels='classification' reads its class labels."""
    assert request.path is not None
    key = CLASSIFICATION_KEY if request.labels == "classification" else REGRESSION_KEY
    return load_mmsa_pickle(request.path, label_key=key, clip_labels=request.clip_labels)


def load_mmsa_pickle(
    path: str | os.PathLike[str],
    text_key: str | None = "auto",
    label_key: str = REGRESSION_KEY,
    clip_labels: bool = False,
) -> DatasetSplits:
    """Load an MMSA pickle into `DatasetSplits`.

    text_key: 'auto' reads 'text' (features); another name reads that key as the text features;
        None loads no text (e.g. a pickle that only carries BERT token ids).
    label_key: 'regression_labels' (float32 labels) or 'classification_labels' (int64 labels,
        class names taken from 'annotations' when they map one-to-one onto the ids), or any other
        per-sample key (read as regression unless its name starts with 'classification').
    clip_labels: regression labels outside [-3, 3] are refused (naming split and rows); with
        True they are clipped with a warning. Class ids must be 0..C-1 in every split.

    Refused as well: an empty split, and ids repeated within a split (predictions could not be
    joined back to clips).

    Lengths: '<modality>_lengths' keys are used when present (unaligned data). Otherwise text
    length comes from the 'text_bert' attention mask when present, else from the data (MMSA pads
    with zero rows at the end); aligned audio/vision take the text length when their L matches.
    Steps beyond a sample's length are zeroed, as `MultimodalDataset` promises. A modality padded
    at the front (zero steps first, real steps last, as some MMSA files are) is recognised and its
    real steps moved to the front, with a warning. Splits whose padded lengths differ are padded
    to the longest, with a warning. NaN/inf features are replaced by 0 with a warning. Every
    other per-sample key is kept in `extras`, so `save_mmsa_pickle` writes back what was read.

    Pickles execute code when loaded: only open trusted files.
    """
    path = Path(path)
    raw = _read_pickle(path)
    datasets = {
        split: _load_split(raw[split], path, split, text_key, label_key, clip_labels)
        for split in SPLITS
    }
    _check_splits_agree(datasets, path)
    datasets = _pad_to_common_lengths(datasets, path)
    stored_meta = raw.get(META_KEY)
    meta: dict[str, Any] = stored_meta if isinstance(stored_meta, dict) else {}
    _attach_raw_store(datasets, path, meta)
    classification = _is_classification_key(label_key)
    class_names = _class_names(datasets) if classification else []
    if classification:
        check_class_ids(
            [ds.labels.numpy() for ds in datasets.values()],
            [ds.source for ds in datasets.values()],
            [_row_namer(ds.ids) for ds in datasets.values()],
            len(class_names) or None,
        )
    return DatasetSplits(**datasets, name=path.stem, class_names=class_names, frontend=_frontend(meta))


def _attach_raw_store(datasets: dict[str, MultimodalDataset], path: Path, meta: dict[str, Any]) -> None:
    """'raw_<m>_file' paths (relative to the pickle's folder) -> lazily read raw inputs."""
    shapes = (meta.get("raw") or {}).get("shapes") or {}
    for split, ds in datasets.items():
        for m in ("vision", "audio"):
            key = f"raw_{m}_file"
            if key not in ds.extras:
                continue
            names = [str(x) for x in ds.extras.pop(key).tolist()]
            if m not in ds.features:
                continue
            files = [path.parent / name for name in names]
            absent = [f for f in files if not f.is_file()]
            if absent:
                store = (meta.get("raw") or {}).get("store", "the raw store")
                raise DataFormatError(
                    f"{path} [split {split!r}]: {len(absent)} of {len(files)} raw {m} files are missing, "
                    "e.g. "
                    f"{absent[0]}; the raw store ({store}, relative to the pickle) must move with the pickle"
                )
            shape = shapes.get(m) or list(np.load(files[0], mmap_mode="r").shape[1:])
            ds.extras[RAW_KEY_OF[m]] = LazyRawArray(files, tuple(shape), RAW_DTYPES[RAW_KEY_OF[m]])


def _frontend(meta: dict[str, Any]) -> dict[str, Any]:
    """The front-end record (`emofuse.data.frontend`) of an `emofuse extract` pickle; {} for others."""
    if meta.get("format") != "emofuse-extract":
        return {}
    return frontend_record("extract", segments="words", extract=meta.get("extract_config"),
                           view=meta.get("view", "aligned"), logmel=meta.get("logmel"),
                           raw_shapes=(meta.get("raw") or {}).get("shapes") or {})


def _row_namer(ids: list[str]) -> Callable[[int], str]:
    return lambda i: f"index {i} (id {ids[i]!r})"


def _read_pickle(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputNotFound(path, f"MMSA pickle {path} does not exist")
    try:
        with open(path, "rb") as handle:
            raw = pickle.load(handle)  # trusted files only (see module docstring)
    except Exception as exc:  # truncated files raise EOFError, garbage UnpicklingError, ...
        raise DataFormatError(
            f"file {path} is not a readable pickle: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(raw, Mapping):
        raise DataFormatError(
            f"{path}: expected a dict with keys {list(SPLITS)}, found {type(raw).__name__}"
        )
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise DataFormatError(
            f"{path}: missing split(s) {missing}; expected keys {list(SPLITS)}, found {list(raw)}"
        )
    return dict(raw)


def _load_split(
    data: Any, path: Path, split: str, text_key: str | None, label_key: str, clip_labels: bool
) -> MultimodalDataset:
    where = f"{path} [split {split!r}]"
    if not isinstance(data, Mapping):
        raise DataFormatError(f"{where}: expected a dict of arrays, found {type(data).__name__}")
    labels = _labels(data, label_key, where)
    n = len(labels)
    if n == 0:
        raise DataFormatError(f"{where}: the split holds no samples (its {label_key!r} is empty)")
    used = {label_key, "id", "raw_text"}
    ids = _strings(data, "id", n, where, required=True)
    _check_unique_ids(ids, where)
    if not _is_classification_key(label_key):
        labels = check_score_range(labels, where, _row_namer(ids), clip_labels, stacklevel=4)
    raw_text = _strings(data, "raw_text", n, where, required=False)

    feature_keys = _feature_keys(data, text_key, where)
    if not feature_keys:
        raise DataFormatError(
            f"{where}: no feature key found; expected at least one of 'text', 'audio', 'vision', "
            f"found keys {sorted(map(str, data))}"
        )
    features: dict[str, np.ndarray] = {}
    lengths: dict[str, np.ndarray] = {}
    for modality, key in feature_keys.items():
        x = _features(data, key, n, where, path, split, modality)
        if any(np.may_share_memory(x, y) for y in features.values()):
            x = x.copy()  # one array pickled under two keys: padding must not leak across
        features[modality] = x
        used.add(key)
    _unpad_front(features, data, path, split)
    for modality, x in features.items():
        lengths[modality], length_key = _lengths_for(modality, data, features, lengths, n, where)
        if length_key:
            used.add(length_key)
        _zero_padding(x, lengths[modality])

    return MultimodalDataset(
        features={m: torch.from_numpy(x) for m, x in features.items()},
        lengths={m: torch.from_numpy(v) for m, v in lengths.items()},
        labels=torch.from_numpy(labels),
        ids=ids,
        raw_text=raw_text,
        source=where,
        extras=_extras(data, used, n, where),
    )


def _check_unique_ids(ids: list[str], where: str) -> None:
    repeated = sorted(i for i, count in Counter(ids).items() if count > 1)
    if repeated:
        shown = ", ".join(repr(i) for i in repeated[:5])
        more = f" and {len(repeated) - 5} more" if len(repeated) > 5 else ""
        raise DataFormatError(
            f"{where}: {len(repeated)} id(s) occur more than once: {shown}{more}; every clip needs "
            "its own id, or predictions cannot be joined back to clips"
        )


def _is_classification_key(label_key: str) -> bool:
    return label_key.startswith("classification")


def _as_array(value: Any, key: str, where: str) -> np.ndarray:
    try:
        return np.asarray(value)
    except Exception as exc:  # ragged lists and the like
        raise DataFormatError(f"{where}: key {key!r} is not an array ({exc})") from exc


def _labels(data: Mapping[str, Any], label_key: str, where: str) -> np.ndarray:
    if label_key not in data:
        raise DataFormatError(
            f"{where}: missing label key {label_key!r}; found keys {sorted(map(str, data))}"
        )
    labels = _as_array(data[label_key], label_key, where)
    if labels.ndim == 2 and labels.shape[1] == 1:  # some releases store N x 1
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.number):
        raise DataFormatError(
            f"{where}: key {label_key!r} must be a numeric vector of N labels, found "
            f"shape {labels.shape} dtype {labels.dtype}"
        )
    labels = labels.astype(np.float64)
    bad = int((~np.isfinite(labels)).sum())
    if bad:
        raise DataFormatError(f"{where}: key {label_key!r} holds {bad} NaN/inf labels")
    if not _is_classification_key(label_key):
        return labels.astype(np.float32)
    if (labels != np.round(labels)).any() or (labels < 0).any():
        raise DataFormatError(
            f"{where}: key {label_key!r} must hold class ids 0, 1, 2, ..., found "
            f"{np.unique(labels)[:10].tolist()}"
        )
    return labels.astype(np.int64)


def _strings(
    data: Mapping[str, Any], key: str, n: int, where: str, required: bool
) -> list[str]:
    if key not in data:
        if required:
            raise DataFormatError(
                f"{where}: missing key {key!r}; found keys {sorted(map(str, data))}"
            )
        return [""] * n
    values = _as_array(data[key], key, where)
    if values.ndim != 1 or len(values) != n:
        raise DataFormatError(
            f"{where}: key {key!r} must hold one string per sample (N={n}), found shape "
            f"{values.shape}"
        )
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values.tolist()]


def _feature_keys(data: Mapping[str, Any], text_key: str | None, where: str) -> dict[str, str]:
    keys: dict[str, str] = {}
    if text_key == "auto":
        if "text" in data:
            keys["text"] = "text"
        elif TEXT_TOKENS_KEY in data:
            raise _token_ids_error(where)
    elif text_key is not None:
        if text_key == TEXT_TOKENS_KEY:
            raise _token_ids_error(where)
        if text_key not in data:
            raise DataFormatError(
                f"{where}: missing text key {text_key!r}; found keys {sorted(map(str, data))}"
            )
        keys["text"] = text_key
    for modality in MODALITIES[1:]:
        if modality in data:
            keys[modality] = modality
    return keys


def _token_ids_error(where: str) -> DataFormatError:
    return DataFormatError(
        f"{where}: key {TEXT_TOKENS_KEY!r} holds BERT token ids / attention mask / segment ids, "
        "not text features, and there is no 'text' features key. Compute text features with "
        "emofuse's text encoder ('emofuse prepare-text') or load audio/vision only with "
        "text_key=None."
    )


def _features(
    data: Mapping[str, Any], key: str, n: int, where: str, path: Path, split: str, modality: str
) -> np.ndarray:
    x = _as_array(data[key], key, where)
    if x.ndim != 3 or not np.issubdtype(x.dtype, np.number):
        raise DataFormatError(
            f"{where}: key {key!r} must be numeric N x L x D features, found shape {x.shape} "
            f"dtype {x.dtype}"
        )
    if x.shape[0] != n:
        raise DataFormatError(
            f"{where}: key {key!r} has {x.shape[0]} samples but the labels have {n}"
        )
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise DataFormatError(f"{where}: key {key!r} has an empty axis: shape {x.shape}")
    # The arrays come from our own fresh unpickling, so cleaning them in place is safe and
    # avoids holding two copies of a multi-GB MOSEI split; copy only when numpy must.
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not x.flags.writeable:
        x = x.copy()
    count = _zero_nonfinite(x)
    if count:
        warnings.warn(
            f"{path}: split {split!r}, {modality} (key {key!r}): replaced {count} NaN/inf "
            "values by 0",
            stacklevel=4,
        )
    return x


def _lengths_for(
    modality: str,
    data: Mapping[str, Any],
    features: Mapping[str, np.ndarray],
    known: Mapping[str, np.ndarray],
    n: int,
    where: str,
) -> tuple[np.ndarray, str | None]:
    """Lengths of one modality and the key they came from (None when derived from the data).

    `known` holds the lengths already found (text comes first), for word-aligned audio/vision.
    """
    x = features[modality]
    key = f"{modality}_lengths"
    if key in data:
        return _given_lengths(data[key], key, n, x.shape[1], where), key
    if modality == "text":
        from_mask = _lengths_from_token_mask(data, x.shape[1])
        return (from_mask if from_mask is not None else _trailing_zero_lengths(x)), None
    text = known.get("text")
    if text is not None and features["text"].shape[1] == x.shape[1]:
        # Word-aligned data: one audio/vision step per word, so the text length applies.
        return text.copy(), None
    return _trailing_zero_lengths(x), None


def _given_lengths(value: Any, key: str, n: int, max_len: int, where: str) -> np.ndarray:
    lengths = _as_array(value, key, where)
    if lengths.ndim != 1 or len(lengths) != n or not np.issubdtype(lengths.dtype, np.number):
        raise DataFormatError(
            f"{where}: key {key!r} must hold N={n} integer lengths, found shape {lengths.shape} "
            f"dtype {lengths.dtype}"
        )
    if not np.isfinite(lengths).all() or (lengths != np.round(lengths)).any():
        raise DataFormatError(f"{where}: key {key!r} holds non-integer lengths")
    lengths = lengths.astype(np.int64)
    if (lengths < 0).any():
        raise DataFormatError(f"{where}: key {key!r} holds negative lengths")
    too_long, empty = int((lengths > max_len).sum()), int((lengths == 0).sum())
    if too_long:
        warnings.warn(
            f"{where}: key {key!r}: {too_long} lengths exceed the padded length {max_len}; "
            f"clipped to {max_len}",
            stacklevel=5,
        )
    if empty:
        # A zero-length clip exists in MMSA's releases; one zero step keeps it usable.
        warnings.warn(
            f"{where}: key {key!r}: {empty} lengths are 0; set to 1", stacklevel=5
        )
    return np.clip(lengths, 1, max_len)


def _lengths_from_token_mask(data: Mapping[str, Any], max_len: int) -> np.ndarray | None:
    """Text lengths from text_bert's attention mask (row 1), the exact count of real tokens.

    BERT features of [PAD] tokens are not zero, so the trailing-zero rule would see full length.
    """
    if TEXT_TOKENS_KEY not in data:
        return None
    tokens = np.asarray(data[TEXT_TOKENS_KEY])
    if tokens.ndim != 3 or tokens.shape[1] != 3 or tokens.shape[2] != max_len:
        return None
    mask = tokens[:, 1, :]
    if not np.isin(mask, (0, 1)).all():
        return None
    return np.clip(mask.sum(axis=1).astype(np.int64), 1, max_len)


def _sample_chunks(x: np.ndarray, rows: int = 512) -> Iterator[np.ndarray]:
    """Views of `rows` samples at a time: boolean temporaries stay small on MOSEI-sized data."""
    for start in range(0, len(x), rows):
        yield x[start : start + rows]


def _zero_nonfinite(x: np.ndarray) -> int:
    """Set NaN/inf to 0 in place (MMSA itself zeroes audio's -inf); returns how many."""
    count = 0
    for chunk in _sample_chunks(x):
        bad = ~np.isfinite(chunk)
        count += int(bad.sum())
        chunk[bad] = 0.0
    return count


def _trailing_zero_lengths(x: np.ndarray) -> np.ndarray:
    """Index of the last step with any non-zero value, plus one; at least 1."""
    nonzero = np.concatenate([np.any(c != 0, axis=2) for c in _sample_chunks(x)])  # N x L
    last = x.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)
    last[~nonzero.any(axis=1)] = 1
    return last.astype(np.int64)


def _zero_padding(x: np.ndarray, lengths: np.ndarray) -> None:
    x[np.arange(x.shape[1])[None, :] >= lengths[:, None]] = 0.0


# --------------------------------------------------------------------------- front padding
def _nonzero_steps(x: np.ndarray) -> np.ndarray:
    return np.concatenate([np.any(c != 0, axis=2) for c in _sample_chunks(x)])  # N x L


def _leading_zero_steps(x: np.ndarray) -> np.ndarray:
    """Per clip, the number of all-zero steps before the first real one (L for an empty clip)."""
    nonzero = _nonzero_steps(x)
    return np.where(nonzero.any(axis=1), np.argmax(nonzero, axis=1), x.shape[1]).astype(np.int64)


def _front_padding_of_data(x: np.ndarray) -> np.ndarray | None:
    """Leading zero steps per clip when the split is padded at the front, else None.

    Front padding shows across a split: no clip ends in a zero step, and a fair share of clips
    (FRONT_PADDED_SHARE) starts with zero steps followed by real ones. Clips that are all zero
    say nothing either way.
    """
    nonzero = _nonzero_steps(x)
    real = nonzero.any(axis=1)
    if not real.any() or not nonzero[real, -1].all():
        return None  # some clip ends in padding: padded at the end
    leading = np.where(real, np.argmax(nonzero, axis=1), 0)
    front = int((leading > 0).sum())
    if front == 0 or front < FRONT_PADDED_SHARE * len(x):
        return None
    return leading.astype(np.int64)


def _front_padding_of_mask(data: Mapping[str, Any], max_len: int) -> np.ndarray | None:
    """Leading padding per clip when text_bert's attention mask is padded at the front."""
    tokens = data.get(TEXT_TOKENS_KEY)
    if tokens is None:
        return None
    tokens = np.asarray(tokens)
    if tokens.ndim != 3 or tokens.shape[1] != 3 or tokens.shape[2] != max_len:
        return None
    mask = tokens[:, 1, :]
    if not np.isin(mask, (0, 1)).all() or not (mask[:, 0] == 0).any():
        return None
    count = mask.sum(axis=1).astype(np.int64)
    front = max_len - count
    # a front-padded mask is 0...0 1...1: the ones are exactly the last `count` positions
    if not (mask == (np.arange(max_len)[None, :] >= front[:, None])).all():
        return None
    return front


def _front_padding(
    x: np.ndarray, data: Mapping[str, Any], modality: str, where: str
) -> np.ndarray | None:
    """How many steps to move each clip of `x` forward (None: padded at the end)."""
    if modality == "text":
        from_mask = _front_padding_of_mask(data, x.shape[1])
        if from_mask is not None:
            return from_mask
    leading = _front_padding_of_data(x)
    key = f"{modality}_lengths"
    if leading is None or key not in data:
        return leading
    # Given lengths say where the real steps start (malformed ones are reported later).
    lengths = np.asarray(data[key])
    if lengths.shape != (len(x),) or not np.issubdtype(lengths.dtype, np.number):
        return leading
    shift = x.shape[1] - np.clip(np.nan_to_num(lengths), 1, x.shape[1]).astype(np.int64)
    _check_shift(
        x,
        shift,
        where,
        f"{modality} is padded at the front, but {key!r} is longer than the real steps at the end",
    )
    return shift


def _check_shift(x: np.ndarray, shift: np.ndarray, where: str, problem: str) -> None:
    """Moving a clip forward by `shift` steps must drop only zero steps."""
    clash = np.flatnonzero(shift > _leading_zero_steps(x))
    if len(clash):
        raise DataFormatError(
            f"{where}: {problem} in {len(clash)} clip(s) (first: index {clash[0]}); cannot tell where "
            "the real steps start"
        )


def _unpad_front(features: dict[str, np.ndarray], data: Mapping[str, Any], path: Path, split: str) -> None:
    """Move the real steps of front-padded modalities to the front, in place.

    Read as padded at the end, a front-padded clip would count its leading zeros as steps, and
    any length rule would then cut real steps off. Word-aligned audio/vision (text's padded
    length, no lengths key of their own) move with the text, so word i still meets frame i.
    """
    where = f"{path} [split {split!r}]"
    text = features.get("text")
    text_shift = _front_padding(text, data, "text", where) if text is not None else None
    moved: dict[str, int] = {}
    for modality, x in features.items():
        own_lengths = f"{modality}_lengths" in data
        aligned = modality != "text" and text is not None and not own_lengths and x.shape[1] == text.shape[1]
        if modality == "text" or aligned:
            shift = text_shift
            if aligned and shift is None and _front_padding_of_data(x) is not None:
                raise DataFormatError(
                    f"{where}: {modality} is padded at the front but text at the end, though both "
                    f"have {x.shape[1]} steps; cannot tell which {modality} step belongs to which word"
                )
            if aligned and shift is not None:
                _check_shift(x, shift, where, f"text is padded at the front but {modality} is not")
        else:
            shift = _front_padding(x, data, modality, where)
        if shift is None or not shift.any():
            continue
        _shift_to_front(x, shift)
        moved[modality] = int((shift > 0).sum())
    if moved:
        warnings.warn(
            f"{path}: split {split!r}: padded at the front (zero steps first), real steps moved to "
            f"the front: {', '.join(f'{m} in {k} clip(s)' for m, k in moved.items())}",
            stacklevel=4,
        )


def _shift_to_front(x: np.ndarray, shift: np.ndarray) -> None:
    steps = x.shape[1]
    for i in np.flatnonzero(shift):
        k = int(shift[i])
        x[i, : steps - k] = x[i, k:].copy()
        x[i, steps - k :] = 0.0


def _pad_to_common_lengths(
    datasets: dict[str, MultimodalDataset], path: Path
) -> dict[str, MultimodalDataset]:
    """Pad every split to the longest padded length per modality (zeros, masked out).

    Models with fixed-length layers size them from the training split; a longer valid or test
    split would otherwise fail in the middle of validation.
    """
    modalities = datasets["train"].modalities
    longest = {m: max(ds.features[m].shape[1] for ds in datasets.values()) for m in modalities}
    differ = [m for m in modalities if any(ds.features[m].shape[1] != longest[m] for ds in datasets.values())]
    if not differ:
        return datasets
    found = "; ".join(
        f"{m}: " + ", ".join(f"{split} {ds.features[m].shape[1]}" for split, ds in datasets.items())
        for m in differ
    )
    warnings.warn(
        f"{path}: the splits have different padded lengths ({found}); shorter splits are padded "
        "with zero steps to the longest",
        stacklevel=3,
    )
    out = {}
    for split, ds in datasets.items():
        features = {
            m: torch.nn.functional.pad(x, (0, 0, 0, longest[m] - x.shape[1])) for m, x in ds.features.items()
        }
        out[split] = MultimodalDataset(
            features, ds.lengths, ds.labels, ds.ids, ds.raw_text, ds.source, ds.extras
        )
    return out


def _extras(data: Mapping[str, Any], used: set[str], n: int, where: str) -> dict[str, np.ndarray]:
    """Every other per-sample array (annotations, classification labels, token ids, ...)."""
    extras: dict[str, np.ndarray] = {}
    dropped = []
    for key, value in data.items():
        if key in used:
            continue
        try:
            arr = np.asarray(value)
        except (ValueError, TypeError):  # ragged nested lists
            arr = np.empty(0)
        if arr.ndim >= 1 and len(arr) == n:
            extras[str(key)] = arr
        else:
            dropped.append(str(key))
    if dropped:
        warnings.warn(
            f"{where}: keys {dropped} are not per-sample arrays of length {n}; not kept",
            stacklevel=4,
        )
    return extras


def _check_splits_agree(datasets: dict[str, MultimodalDataset], path: Path) -> None:
    train = datasets["train"]
    for split, ds in datasets.items():
        if ds.modalities != train.modalities:
            raise DataFormatError(
                f"{path}: split {split!r} has modalities {list(ds.modalities)} but 'train' has "
                f"{list(train.modalities)}"
            )
        if ds.dims() != train.dims():
            raise DataFormatError(
                f"{path}: split {split!r} has feature sizes {ds.dims()} but 'train' has "
                f"{train.dims()}"
            )
        if ds.is_classification != train.is_classification:
            raise DataFormatError(f"{path}: split {split!r} label type differs from 'train'")


def _class_names(datasets: dict[str, MultimodalDataset]) -> list[str]:
    """Class names from 'annotations' when every class id carries exactly one annotation."""
    names: dict[int, set[str]] = {}
    for ds in datasets.values():
        annotations = ds.extras.get("annotations")
        if annotations is None or annotations.ndim != 1:
            return []
        for label, note in zip(ds.labels.tolist(), annotations.tolist(), strict=True):
            names.setdefault(int(label), set()).add(str(note))
    if sorted(names) != list(range(len(names))) or any(len(v) != 1 for v in names.values()):
        return []
    return [next(iter(names[i])) for i in range(len(names))]


# --------------------------------------------------------------------------- saving
def save_mmsa_pickle(
    splits: DatasetSplits, path: str | os.PathLike[str], meta: dict[str, Any] | None = None
) -> None:
    """Write `splits` as an MMSA pickle (atomically: temp file beside `path`, then os.replace).

    Features are float32 N x L x D under 'text'/'audio'/'vision'; labels go to
    'regression_labels' (float32) or 'classification_labels' (int64); '<modality>_lengths' are
    always written (aligned readers ignore them); extras are written under their own keys.
    meta: emofuse's own record of how the file was made (`emofuse extract`), under the top-level
    key 'emofuse', beside the splits (MMSA's readers index the splits only).
    """
    payload: dict[str, Any] = {split: _split_payload(ds) for split, ds in splits.items()}
    if meta is not None:
        payload[META_KEY] = meta
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        pickle.dump(payload, handle, protocol=4)  # protocol 4: readable by every Python 3.8+


def _split_payload(ds: MultimodalDataset) -> dict[str, Any]:
    label_key = CLASSIFICATION_KEY if ds.is_classification else REGRESSION_KEY
    labels = ds.labels.numpy().astype(np.int64 if ds.is_classification else np.float32)
    out: dict[str, Any] = {
        "id": np.array(ds.ids, dtype=object),
        "raw_text": np.array(ds.raw_text, dtype=object),
    }
    for modality in ds.modalities:
        out[modality] = ds.features[modality].numpy().astype(np.float32)
        out[f"{modality}_lengths"] = ds.lengths[modality].numpy().astype(np.int64)
    for key, value in ds.extras.items():
        if key in RAW_EXTRAS:  # lazily read raw inputs live in their store, not in a pickle
            continue
        if key in out:
            warnings.warn(f"{ds.source}: extra {key!r} clashes with a standard key; not written",
                          stacklevel=3)
            continue
        out[key] = np.asarray(value)
    if label_key in out and not np.array_equal(out[label_key], labels):
        warnings.warn(
            f"{ds.source}: extra {label_key!r} differs from the dataset's labels; the labels win",
            stacklevel=3,
        )
    out[label_key] = labels
    return out

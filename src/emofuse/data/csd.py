"""CMU-MultimodalSDK computational sequences (.csd, HDF5): read, write, align, segment.

Layout (as the SDK writes it):
    /<root name>/data/<video_id>/features   m x n (float, or byte strings for words)
    /<root name>/data/<video_id>/intervals  m x 2 float seconds [start, end]
    /<root name>/metadata/<key>             1-element string dataset holding JSON text

Alignment and segmentation use the SDK's overlap rule (`emofuse.data.intervals.overlapping`, the
one rule `emofuse extract` uses too): a frame belongs to a reference interval when their
intersection is longer than `epsilon` seconds, so frames that merely touch a boundary are left out.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch

from emofuse.data.dataset import (
    MODALITIES,
    SPLITS,
    DataFormatError,
    DatasetSplits,
    MultimodalDataset,
)
from emofuse.data.intervals import EPSILON, overlapping, row_chunks
from emofuse.data.labels import check_score_range
from emofuse.errors import InputNotFound, OptionError
from emofuse.files import atomic_path

# Metadata every SDK computational sequence must carry (mmsdk's featuresetMetadataTemplate);
# the SDK refuses a file that lacks one of them.
SDK_METADATA_KEYS: tuple[str, ...] = (
    "root name",
    "computational sequence description",
    "dimension names",
    "computational sequence version",
    "alignment compatible",
    "dataset name",
    "dataset version",
    "creator",
    "contact",
    "featureset bib citation",
    "dataset bib citation",
)
FOLD_KEYS = {"train": "standard_train_fold", "valid": "standard_valid_fold", "test": "standard_test_fold"}
# The SDK's word sequences mark silence with 'sp'; it is not part of the transcript.
SILENCE_TOKENS = frozenset({"sp", "SP", ""})

Entry = tuple[np.ndarray, np.ndarray]  # (features m x n, intervals m x 2)


@dataclass
class ComputationalSequence:
    """One computational sequence: per video, features and their [start, end] intervals.

    metadata values are the JSON-decoded values the SDK returns (strings, lists, booleans,
    None); `write_csd` JSON-encodes them back.
    """

    name: str
    data: dict[str, Entry]
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def video_ids(self) -> list[str]:
        return list(self.data)

    @property
    def is_text(self) -> bool:
        """True for word sequences (byte/str features), which cannot be averaged."""
        return any(not np.issubdtype(f.dtype, np.number) for f, _ in self.data.values())

    def feature_dim(self) -> int:
        for features, _ in self.data.values():
            return int(features.shape[1])
        raise DataFormatError(f"computational sequence {self.name!r} holds no video")


# --------------------------------------------------------------------------- reading
def read_csd(path: str | os.PathLike[str]) -> ComputationalSequence:
    """Read a .csd file; NaN/inf features are replaced by 0 with a warning.

    A damaged file (truncated, a missing group, features of the wrong shape or type) and a file
    holding no video raise DataFormatError naming the file, never a raw h5py error.
    """
    path = Path(path)
    if not path.is_file():
        raise InputNotFound(path, f"computational sequence {path} does not exist")
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        raise DataFormatError(
            f"file {path} is not a readable HDF5 computational sequence (not HDF5, or "
            f"truncated): {exc}"
        ) from exc
    try:
        with handle:
            name, data, replaced, metadata = _read_root(handle, path)
    except DataFormatError:
        raise
    except (RuntimeError, KeyError, TypeError, ValueError, OSError, AttributeError) as exc:
        # h5py reports damage deep inside a file (a truncated chunk, a dangling link) with
        # whatever error its C layer chose; to the user they all mean "this file is damaged".
        raise DataFormatError(
            f"{path}: damaged computational sequence ({type(exc).__name__}: {exc})"
        ) from exc
    if not data:
        raise DataFormatError(f"{path}: the computational sequence holds no video (its data group is empty)")
    if replaced:
        warnings.warn(f"{path}: replaced {replaced} NaN/inf feature values by 0", stacklevel=2)
    return ComputationalSequence(name=name, data=data, metadata=metadata)


def _read_root(handle: h5py.File, path: Path) -> tuple[str, dict[str, Entry], int, dict[str, Any]]:
    root = _root_group(handle, path)
    name = root.name.lstrip("/")
    if "data" not in root or not isinstance(root["data"], h5py.Group):
        raise DataFormatError(f"{path}: group '{root.name}/data' is missing")
    data, replaced = {}, 0
    for vid, group in root["data"].items():
        (features, intervals), bad = _read_entry(group, path, vid)
        data[vid] = (features, intervals)
        replaced += bad
    return name, data, replaced, _read_metadata(root, path)


def _root_group(handle: h5py.File, path: Path) -> h5py.Group:
    groups = [k for k, v in handle.items() if isinstance(v, h5py.Group)]
    if not groups:
        raise DataFormatError(f"{path}: no root group; expected /<root name>/data/<video_id>/...")
    if len(groups) > 1:
        # The SDK reads the first root and ignores the rest; say so instead of guessing silently.
        warnings.warn(f"{path}: {len(groups)} root groups {groups}; reading {groups[0]!r}",
                      stacklevel=3)
    return handle[groups[0]]


def _read_entry(group: Any, path: Path, vid: str) -> tuple[Entry, int]:
    where = f"{path}: video {vid!r}"
    if not isinstance(group, h5py.Group) or not all(
        isinstance(group.get(k), h5py.Dataset) for k in ("features", "intervals")
    ):
        raise DataFormatError(f"{where}: expected datasets 'features' and 'intervals'")
    try:
        features = np.asarray(group["features"][()])
        intervals = np.asarray(group["intervals"][()], dtype=np.float64)
    except (OSError, ValueError, TypeError, RuntimeError, KeyError) as exc:  # a damaged file
        raise DataFormatError(f"{where}: unreadable data ({type(exc).__name__}: {exc})") from exc
    if features.dtype.kind not in "biufSO" or features.dtype.names is not None:
        raise DataFormatError(
            f"{where}: features must be numbers or word strings, found dtype {features.dtype}"
        )
    return _checked_entry(features, intervals, where)


def _checked_entry(features: np.ndarray, intervals: np.ndarray, where: str) -> tuple[Entry, int]:
    """Validate one video's arrays; returns the cleaned entry and the NaN/inf count replaced."""
    if features.ndim == 1:
        features = features[:, None]
    if intervals.ndim != 2 or intervals.shape[1] != 2:
        raise DataFormatError(f"{where}: intervals must be m x 2, found {intervals.shape}")
    if features.ndim != 2:
        raise DataFormatError(f"{where}: features must be m x n, found shape {features.shape}")
    if features.shape[0] != intervals.shape[0]:
        raise DataFormatError(
            f"{where}: {features.shape[0]} feature rows but {intervals.shape[0]} intervals "
            f"(features {features.shape}, intervals {intervals.shape})"
        )
    if not np.isfinite(intervals).all():
        raise DataFormatError(f"{where}: intervals hold NaN/inf")
    backwards = int((intervals[:, 1] < intervals[:, 0]).sum())
    if backwards:
        raise DataFormatError(f"{where}: {backwards} intervals end before they start")
    bad = 0
    if np.issubdtype(features.dtype, np.number):
        mask = ~np.isfinite(features)
        bad = int(mask.sum())
        if bad:
            features = features.copy()
            features[mask] = 0
    return (features, intervals), bad


def _read_metadata(root: h5py.Group, path: Path) -> dict[str, Any]:
    if "metadata" not in root:
        warnings.warn(f"{path}: no metadata group; the SDK would refuse this file", stacklevel=3)
        return {}
    metadata: dict[str, Any] = {}
    for key, dataset in root["metadata"].items():
        value = dataset[()]
        if isinstance(value, np.ndarray):
            value = value.reshape(-1)[0] if value.size else ""
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        metadata[key] = _decode_json(value)
    return metadata


def _decode_json(value: Any) -> Any:
    """The SDK stores json.dumps(value); undo it, keeping text that is not JSON as it is."""
    if not isinstance(value, str):
        return value.item() if isinstance(value, np.generic) else value
    try:
        return json.loads(value)
    except ValueError:
        return value


# --------------------------------------------------------------------------- writing
def write_csd(
    seq: ComputationalSequence,
    path: str | os.PathLike[str],
    compression: str | None = "gzip",
) -> None:
    """Write `seq` the way the SDK does (same groups, datasets, metadata keys); atomic.

    Missing SDK metadata keys get neutral defaults so the SDK's format check passes.
    """
    metadata = _complete_metadata(seq)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as handle:
        root = handle.create_group(seq.name)
        data = root.create_group("data")
        for vid, (features, intervals) in seq.data.items():
            (features, intervals), _ = _checked_entry(
                np.asarray(features), np.asarray(intervals, dtype=np.float64), f"{path}: video {vid!r}"
            )
            group = data.create_group(vid)
            group.create_dataset("features", data=_storable(features), compression=compression)
            group.create_dataset("intervals", data=intervals, compression=compression)
        meta = root.create_group("metadata")
        for key, value in metadata.items():
            dataset = meta.create_dataset(key, (1,), dtype=h5py.string_dtype())
            dataset[0] = json.dumps(value)


def _complete_metadata(seq: ComputationalSequence) -> dict[str, Any]:
    defaults: dict[str, Any] = {
        "computational sequence description": seq.name,
        "dimension names": [],
        "computational sequence version": "1.0",
        "alignment compatible": True,
        "dataset name": "",
        "dataset version": "",
        "creator": "emofuse",
        "contact": "",
        "featureset bib citation": "",
        "dataset bib citation": "",
    }
    metadata = {**defaults, **seq.metadata}
    metadata["root name"] = seq.name  # the SDK trusts this key to name the root group
    return metadata


def _storable(features: np.ndarray) -> np.ndarray:
    """h5py cannot store numpy unicode arrays; words go to UTF-8 bytes like the SDK's."""
    if features.dtype.kind == "U":
        return np.char.encode(features, "utf-8")
    if features.dtype == object:
        encode = np.vectorize(lambda v: v if isinstance(v, bytes) else str(v).encode("utf-8"),
                              otypes=[object])
        return encode(features).astype(bytes)
    return features


# --------------------------------------------------------------------------- alignment
Collapse = Callable[[np.ndarray], np.ndarray]
_COLLAPSE: dict[str, Collapse] = {
    "max": lambda x: x.max(axis=0),
    "min": lambda x: x.min(axis=0),
    "median": lambda x: np.median(x, axis=0),
}


def _collapse_video(
    ref_iv: np.ndarray, frames: Entry, collapse: str, epsilon: float
) -> tuple[np.ndarray, int]:
    """Collapse one video's frames onto its reference intervals; returns (R x n, #empty rows)."""
    features, intervals = frames
    values = np.nan_to_num(features.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    out = np.zeros((len(ref_iv), values.shape[1]), dtype=np.float64)
    empty = 0
    chunks = row_chunks(len(ref_iv), len(intervals))
    for start in chunks:
        rows = slice(start, start + chunks.step)
        hit = overlapping(ref_iv[rows], intervals, epsilon)
        counts = hit.sum(axis=1)
        empty += int((counts == 0).sum())
        if collapse in ("mean", "sum"):
            # One matrix product replaces a python loop over words and frames.
            total = hit.astype(np.float64) @ values
            out[rows] = total / np.maximum(counts, 1)[:, None] if collapse == "mean" else total
        else:
            chunk = out[rows]
            for r in np.flatnonzero(counts):
                chunk[r] = _COLLAPSE[collapse](values[hit[r]])
    return out.astype(np.float32), empty


def align_to_reference(
    reference: ComputationalSequence,
    others: Mapping[str, ComputationalSequence] | Sequence[ComputationalSequence],
    collapse: str = "mean",
    epsilon: float = EPSILON,
) -> tuple[dict[str, ComputationalSequence], dict[str, int]]:
    """Word-level alignment like the SDK's `align`: collapse frames onto reference intervals.

    For each reference interval (e.g. a word) of each video, the frames of every other sequence
    whose interval overlaps it by more than `epsilon` seconds are collapsed ('mean', 'sum', 'max',
    'min' or 'median'). Intervals with no overlapping frame get zeros. Returns the aligned
    sequences (keyed like `others`; they share the reference intervals) and, per sequence, the
    number of reference intervals that got zeros (a warning also reports them).
    """
    if collapse not in ("mean", "sum", *_COLLAPSE):
        raise OptionError(f"unknown collapse {collapse!r}; use mean, sum, {', '.join(_COLLAPSE)}")
    named = dict(others) if isinstance(others, Mapping) else {s.name: s for s in others}
    aligned: dict[str, ComputationalSequence] = {}
    empty: dict[str, int] = {}
    for key, seq in named.items():
        aligned[key], empty[key] = _align_one(reference, seq, collapse, epsilon)
    if any(empty.values()):
        warnings.warn(
            f"alignment to {reference.name!r}: reference intervals without any overlapping frame "
            f"(set to zeros): {empty}",
            stacklevel=2,
        )
    return aligned, empty


def _align_one(
    reference: ComputationalSequence, seq: ComputationalSequence, collapse: str, epsilon: float
) -> tuple[ComputationalSequence, int]:
    if seq.is_text:
        raise DataFormatError(
            f"sequence {seq.name!r} holds words (strings); it cannot be averaged onto "
            f"{reference.name!r} - use it as the reference instead"
        )
    dim = seq.feature_dim()
    data: dict[str, Entry] = {}
    empty = 0
    for vid, (_, ref_iv) in reference.data.items():
        if vid in seq.data:
            features, n_empty = _collapse_video(ref_iv, seq.data[vid], collapse, epsilon)
        else:
            features, n_empty = np.zeros((len(ref_iv), dim), np.float32), len(ref_iv)
        data[vid] = (features, ref_iv.copy())
        empty += n_empty
    return ComputationalSequence(name=seq.name, data=data, metadata=dict(seq.metadata)), empty


# --------------------------------------------------------------------------- segmentation
def segment(
    sequence: ComputationalSequence,
    label_sequence: ComputationalSequence,
    epsilon: float = EPSILON,
) -> tuple[dict[str, Entry], dict[str, np.ndarray]]:
    """Split each video's frames into its labelled segments.

    Segment i of video v is named 'v[i]' (the SDK's convention) and holds the frames whose
    intervals overlap the labelled interval, with intervals clipped to the segment as the SDK's
    alignment does. A segment with no frame is returned with 0 rows (the caller decides). Videos
    labelled but absent from `sequence` are skipped with a warning.
    Returns (segment_id -> (features, intervals), segment_id -> label vector).
    """
    segments: dict[str, Entry] = {}
    labels: dict[str, np.ndarray] = {}
    absent = 0
    for vid, (label_values, label_iv) in label_sequence.data.items():
        if vid not in sequence.data:
            absent += 1
            continue
        features, intervals = sequence.data[vid]
        hit = overlapping(label_iv, intervals, epsilon)
        for i, (start, end) in enumerate(label_iv):
            rows = hit[i]
            clipped = np.clip(intervals[rows], start, end)
            segments[f"{vid}[{i}]"] = (features[rows], clipped)
            labels[f"{vid}[{i}]"] = np.asarray(label_values[i])
    if absent:
        warnings.warn(
            f"segmenting {sequence.name!r} by {label_sequence.name!r}: {absent} labelled videos "
            "are absent from the sequence; their segments are skipped",
            stacklevel=2,
        )
    return segments, labels


def pad_sequence(
    features: np.ndarray, max_len: int, side: str = "post"
) -> tuple[np.ndarray, int]:
    """Pad with zeros / truncate `features` (m x n) to max_len rows; returns (padded, length).

    side='post' keeps the first max_len rows and pads at the end (what `MultimodalDataset`'s
    masks assume); side='pre' keeps the last max_len rows and pads at the front.
    """
    if side not in (
        "post",
        "pre",
    ):  # a bug, not the user's: emofuse pads 'post' with DataConfig's checked max_words
        raise ValueError(f"side must be 'post' or 'pre', not {side!r}")
    if max_len < 1:
        raise ValueError(f"max_len must be >= 1, not {max_len}")
    features = np.asarray(features)
    length = min(len(features), max_len)
    padded = np.zeros((max_len, *features.shape[1:]), dtype=features.dtype)
    if length:
        if side == "post":
            padded[:length] = features[:length]
        else:
            padded[max_len - length :] = features[len(features) - length :]
    return padded, length


def standard_folds(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read standard_folds.json -> {'train': [...], 'valid': [...], 'test': [...]} video ids."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DataFormatError(f"file {path} is not readable JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise DataFormatError(f"{path}: expected a JSON object, found {type(raw).__name__}")
    folds: dict[str, list[str]] = {}
    for split, key in FOLD_KEYS.items():
        value = raw.get(key, raw.get(split))
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DataFormatError(
                f"{path}: key {key!r} must be a list of video ids; found keys {list(raw)}"
            )
        folds[split] = value
    _check_disjoint(folds, str(path))
    return folds


def _check_disjoint(folds: Mapping[str, Sequence[str]], where: str) -> None:
    seen: dict[str, str] = {}
    for split, vids in folds.items():
        for vid in vids:
            if vid in seen and seen[vid] != split:
                raise DataFormatError(f"{where}: video {vid!r} is in both {seen[vid]} and {split}")
            seen[vid] = split


# --------------------------------------------------------------------------- to a dataset
def csd_to_splits(
    sequences: Mapping[str, ComputationalSequence],
    labels: ComputationalSequence,
    folds: Mapping[str, Sequence[str]],
    max_len: int | Mapping[str, int],
    label_column: int = 0,
    name: str | None = None,
    epsilon: float = EPSILON,
    clip_labels: bool = False,
    source: str | None = None,
) -> DatasetSplits:
    """Turn computational sequences into `DatasetSplits` (one sample per labelled segment).

    sequences: modality name ('text', 'audio', 'vision') -> sequence; an extra 'words' entry
        holding word strings supplies raw_text (silence tokens 'sp' dropped).
    Each modality is segmented by the label intervals and padded/truncated to max_len (one value
    or one per modality). Sample ids are 'video$_$clip' with clip = segment index + 1 (MMSA's
    numbering). Samples whose video is in no fold, or with no frame in some modality, are dropped
    and counted in a warning. The label is column `label_column` of the label vector; when the
    label sequence has several columns all of them are kept in extras['label_vector'].
    Labels outside [-3, 3] are refused naming the split and segments (clip_labels=True: clipped
    with a warning); `source` (e.g. the labels file) names the data in messages.
    """
    words = sequences.get("words")
    modal = {k: v for k, v in sequences.items() if k != "words"}
    unknown = [k for k in modal if k not in MODALITIES]
    if (
        unknown or not modal
    ):  # a bug, not the user's: load_csd_folder builds both from the files it recognised
        raise ValueError(f"sequences must be keyed by {MODALITIES} (plus 'words'), got {list(sequences)}")
    if set(folds) - set(SPLITS):
        raise ValueError(f"folds must be keyed by {SPLITS} (see standard_folds), got {list(folds)}")
    _check_disjoint(folds, "folds")
    split_of = {vid: split for split, vids in folds.items() for vid in vids}
    lengths = {m: (max_len if isinstance(max_len, int) else max_len[m]) for m in modal}

    segmented = {m: segment(seq, labels, epsilon)[0] for m, seq in modal.items()}
    text_segments = segment(words, labels, epsilon)[0] if words is not None else {}
    rows: dict[str, list[dict[str, Any]]] = {s: [] for s in SPLITS}
    dropped = {"video in no fold": 0, "no frame in a modality": 0}
    for vid, (label_values, _) in labels.data.items():
        split = split_of.get(vid)
        for i in range(len(label_values)):
            seg_id = f"{vid}[{i}]"
            if split is None:
                dropped["video in no fold"] += 1
                continue
            parts = [segmented[m].get(seg_id) for m in modal]
            if any(p is None or len(p[0]) == 0 for p in parts):
                dropped["no frame in a modality"] += 1
                continue
            rows[split].append(_sample(vid, i, label_values[i], modal, segmented, lengths,
                                       text_segments.get(seg_id)))
    if any(dropped.values()):
        warnings.warn(f"csd_to_splits: dropped samples: {dropped}", stacklevel=2)
    where = source or f"computational sequences ({labels.name})"
    datasets = {s: _split_dataset(rows[s], s, label_column, where, clip_labels) for s in SPLITS}
    title = name or str(labels.metadata.get("dataset name") or labels.name)
    return DatasetSplits(datasets["train"], datasets["valid"], datasets["test"], name=title)


def _sample(
    vid: str,
    index: int,
    label: np.ndarray,
    modal: Mapping[str, ComputationalSequence],
    segmented: Mapping[str, dict[str, Entry]],
    lengths: Mapping[str, int],
    words: Entry | None,
) -> dict[str, Any]:
    seg_id = f"{vid}[{index}]"
    sample: dict[str, Any] = {
        "id": f"{vid}$_${index + 1}",
        "label": np.atleast_1d(np.asarray(label, dtype=np.float64)),
        "raw_text": _join_words(words[0]) if words is not None else "",
    }
    for m in modal:
        padded, length = pad_sequence(segmented[m][seg_id][0].astype(np.float32), lengths[m])
        sample[m] = (padded, length)
    return sample


def _join_words(tokens: np.ndarray) -> str:
    words = []
    for token in np.asarray(tokens).reshape(-1).tolist():
        word = token.decode("utf-8", errors="replace") if isinstance(token, bytes) else str(token)
        if word not in SILENCE_TOKENS:
            words.append(word)
    return " ".join(words)


def _split_dataset(
    rows: list[dict[str, Any]], split: str, label_column: int, source: str, clip_labels: bool
) -> MultimodalDataset:
    where = f"{source} [split {split!r}]"
    if not rows:
        raise DataFormatError(f"{where}: no labelled segment falls in the {split!r} fold")
    modalities = [m for m in MODALITIES if m in rows[0]]
    label_matrix = np.stack([r["label"] for r in rows])
    if not np.isfinite(label_matrix).all():
        raise DataFormatError(f"{where}: labels hold NaN/inf")
    if not 0 <= label_column < label_matrix.shape[1]:
        raise OptionError(
            f"label_column {label_column} is out of range: labels have {label_matrix.shape[1]} columns"
        )
    ids = [r["id"] for r in rows]
    labels = check_score_range(
        label_matrix[:, label_column].astype(np.float32), where,
        lambda i: f"segment {ids[i]!r}", clip_labels, stacklevel=4,
    )
    extras = {"label_vector": label_matrix.astype(np.float32)} if label_matrix.shape[1] > 1 else {}
    return MultimodalDataset(
        features={m: torch.from_numpy(np.stack([r[m][0] for r in rows])) for m in modalities},
        lengths={m: torch.tensor([r[m][1] for r in rows], dtype=torch.long) for m in modalities},
        labels=torch.from_numpy(labels),
        ids=ids,
        raw_text=[r["raw_text"] for r in rows],
        source=where,
        extras=extras,
    )


# --------------------------------------------------------------------------- a folder of files
# Which modality a computational sequence feeds, by words in its file name (lower-cased). The
# SDK's own names: CMU_MOSI_TimestampedWords, _TimestampedWordVectors (GloVe), _COVAREP,
# _Visual_Facet_42, _Visual_OpenFace_2, CMU_MOSI_Opinion_Labels, CMU_MOSEI_Labels.
CSD_KEYWORDS: dict[str, tuple[str, ...]] = {
    "text": ("words", "wordvector", "word_vector", "glove", "bert", "text"),
    "audio": ("covarep", "opensmile", "audio", "acoustic"),
    "vision": ("facet", "openface", "vision", "visual"),
}
LABEL_KEYWORD = "label"
FOLDS_FILE = "standard_folds.json"


def _classify_csd_files(folder: Path) -> tuple[Path, dict[str, list[Path]], list[Path]]:
    """(labels file, modality -> candidate files, files matching nothing), by file name."""
    files = sorted(folder.glob("*.csd"))
    labels = [f for f in files if LABEL_KEYWORD in f.name.lower()]
    if len(labels) != 1:
        found = [f.name for f in labels] or "none"
        raise DataFormatError(
            f"{folder}: expected exactly one labels file (a .csd whose name contains 'label', like "
            f"CMU_MOSI_Opinion_Labels.csd), found {found}; .csd files present: {[f.name for f in files]}"
        )
    candidates: dict[str, list[Path]] = {m: [] for m in MODALITIES}
    unmatched = []
    for f in files:
        if f == labels[0]:
            continue
        lower = f.name.lower()
        hits = [m for m, words in CSD_KEYWORDS.items() if any(w in lower for w in words)]
        if len(hits) > 1:
            raise DataFormatError(
                f"{folder}: cannot tell whether {f.name} is {' or '.join(hits)} from its name; rename "
                f"it to contain only one of {_keyword_help()}"
            )
        if hits:
            candidates[hits[0]].append(f)
        else:
            unmatched.append(f)
    return labels[0], candidates, unmatched


def _keyword_help() -> str:
    return "; ".join(f"{m}: {', '.join(words)}" for m, words in CSD_KEYWORDS.items())


def _pick_sequences(
    folder: Path, candidates: Mapping[str, list[Path]]
) -> tuple[ComputationalSequence | None, dict[str, ComputationalSequence]]:
    """Read the candidates: (word strings or None, modality -> feature sequence).

    Text may have two files, the words (strings) and their vectors; every other modality one.
    """
    words: list[tuple[Path, ComputationalSequence]] = []
    features: dict[str, list[tuple[Path, ComputationalSequence]]] = {m: [] for m in MODALITIES}
    for modality, files in candidates.items():
        for f in files:
            seq = read_csd(f)
            if seq.is_text:
                if modality != "text":
                    raise DataFormatError(f"{f}: holds word strings, but its name says {modality}")
                words.append((f, seq))
            else:
                features[modality].append((f, seq))
    many = {m: [f.name for f, _ in found] for m, found in features.items() if len(found) > 1}
    if len(words) > 1:
        many["words"] = [f.name for f, _ in words]
    if many:
        raise DataFormatError(
            f"{folder}: more than one computational sequence per modality: {many}; keep one file "
            "per modality in the folder (e.g. a folder of links to the ones you want)"
        )
    chosen = {m: found[0][1] for m, found in features.items() if found}
    if not chosen:
        raise DataFormatError(
            f"{folder}: no text, audio or vision features among the .csd files (file names are "
            f"matched by keyword: {_keyword_help()})"
        )
    return (words[0][1] if words else None), chosen


def _without_silence(words: ComputationalSequence) -> ComputationalSequence:
    """The word sequence minus the SDK's silence tokens ('sp'): the intervals to align to."""
    data: dict[str, Entry] = {}
    for vid, (tokens, intervals) in words.data.items():
        text = [
            t.decode("utf-8", errors="replace") if isinstance(t, bytes) else str(t)
            for t in np.asarray(tokens).reshape(len(tokens), -1)[:, 0].tolist()
        ]
        keep = np.array([t not in SILENCE_TOKENS for t in text], dtype=bool)
        if keep.any():
            data[vid] = (tokens[keep], intervals[keep])
    return ComputationalSequence(words.name, data, dict(words.metadata))


def load_csd_folder(
    folder: str | os.PathLike[str],
    max_len: int = 50,
    clip_labels: bool = False,
    label_column: int = 0,
    collapse: str = "mean",
) -> DatasetSplits:
    """A folder of CMU-SDK computational sequences -> word-aligned `DatasetSplits`.

    The folder holds one labels .csd (name containing 'label'), feature .csd files recognised by
    name (CSD_KEYWORDS: words/glove/bert/text, covarep/opensmile/audio, facet/openface/vision;
    text may be a words file of strings plus a vectors file) and standard_folds.json. Audio and
    vision are averaged onto the words (silence tokens dropped; the word vectors when there is
    no words file), segmented by the labels and split by the standard folds; every modality is
    padded/truncated to max_len words. Files matching no keyword are ignored with a warning;
    two files for one modality are refused with the list of what was found.
    """
    folder = Path(folder)
    labels_file, candidates, unmatched = _classify_csd_files(folder)
    if unmatched:
        warnings.warn(
            f"{folder}: ignoring {[f.name for f in unmatched]} (no modality keyword in the name: "
            f"{_keyword_help()})",
            stacklevel=2,
        )
    words, features = _pick_sequences(folder, candidates)
    folds_path = folder / FOLDS_FILE
    if not folds_path.is_file():
        raise DataFormatError(
            f"{folder}: {FOLDS_FILE} is missing; it lists the standard_train_fold, "
            "standard_valid_fold and standard_test_fold video ids (the SDK's standard folds)"
        )
    folds = standard_folds(folds_path)
    if words is not None:
        reference = _without_silence(words)
    elif "text" in features:
        reference = features["text"]
    else:
        raise DataFormatError(
            f"{folder}: nothing to align to: no words .csd (e.g. *_TimestampedWords.csd) and no text "
            "features (e.g. *_TimestampedWordVectors.csd)"
        )
    others = {m: seq for m, seq in features.items() if seq is not reference}
    aligned, _ = align_to_reference(reference, others, collapse=collapse)
    if "text" in features and features["text"] is reference:
        aligned["text"] = reference
    sequences: dict[str, ComputationalSequence] = dict(aligned)
    if words is not None:
        sequences["words"] = reference
    labels = read_csd(labels_file)
    return csd_to_splits(
        sequences, labels, folds, max_len, label_column=label_column, name=folder.name,
        clip_labels=clip_labels, source=str(labels_file),
    )

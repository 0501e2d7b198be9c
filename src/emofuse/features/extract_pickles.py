"""The MMSA pickles `emofuse extract` writes, assembled from the clips' results.

For --out FILE.pkl:
- FILE.pkl: aligned to words (text/audio/vision each N x max_words x D) - what `train` reads;
- FILE_unaligned.pkl: text per word, audio frames (unaligned_audio_rate), video frames, each with
  its '<modality>_lengths'.
Classification pickles carry 'classification_labels' and the class names as 'annotations', as
`train --labels classification` reads them. With on_error='pad' a failed clip is kept with one
all-zero step per modality (its 'extract_status' extra says why).
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import SPLITS, DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.mmsa import save_mmsa_pickle
from emofuse.data.raw import RAW_DTYPES, RAW_KEY_OF, write_clip
from emofuse.features.clip import ExtractConfig
from emofuse.features.clip_table import DatasetTable
from emofuse.features.extract_report import report_paths
from emofuse.features.pool import ClipResult


def unaligned_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_unaligned{out.suffix or '.pkl'}")


def write_pickles(table: DatasetTable, results: Sequence[ClipResult], config: ExtractConfig, out: Path,
                  on_error: str, raw_store: Path | None = None) -> list[Path]:
    """Build the aligned and unaligned MMSA pickles from clip results (label.csv row order).

    Both carry, under the top-level key 'emofuse' (MMSA's readers look at the splits only), the
    extraction config and the log-mel map; with a raw store, the aligned pickle also names each
    clip's raw files relative to its own folder ('raw_vision_file', 'raw_audio_file') and the
    store's item shapes, which `load_mmsa_pickle` turns into lazily read raw inputs.
    """
    by_id = {r.clip_id: r for r in results}
    ok = [r for r in results if r.status == "ok" and r.record is not None]
    if not ok:
        reasons = dict(Counter(r.status for r in results))
        raise DataFormatError(f"no clip could be extracted ({reasons}); see {report_paths(out)[0]}")
    dims = {m: x.shape[1] for m, x in ok[0].record["aligned"].items()}
    # one padded length per modality across all splits, as MMSA's files have
    longest = {m: max(len(r.record["unaligned"][m]) for r in ok) for m in dims}
    raw = _raw_references(ok, config, out, raw_store) if raw_store is not None else None
    aligned = _splits(table, by_id, dims, {m: config.max_words for m in dims}, on_error == "pad",
                      out.stem, aligned=True, raw=raw)
    unaligned = _splits(table, by_id, dims, longest, on_error == "pad", unaligned_path(out).stem,
                        aligned=False)
    meta = pickle_meta(config)
    save_mmsa_pickle(
        aligned, out, meta={**meta, "view": "aligned", "raw": None if raw is None else raw["meta"]}
    )
    save_mmsa_pickle(unaligned, unaligned_path(out), meta={**meta, "view": "unaligned", "raw": None})
    return [out, unaligned_path(out)]


def pickle_meta(config: ExtractConfig) -> dict[str, Any]:
    """What an extracted pickle says about how it was made (see `emofuse.data.frontend`)."""
    from emofuse.features.align import ALIGNMENT_RULE
    from emofuse.features.audio import logmel_config

    logmel = logmel_config(config.n_mels, config.n_fft, config_sample_rate(config))
    return {"format": "emofuse-extract", "extract_config": config.to_dict(), "logmel": logmel.describe(),
            "alignment": ALIGNMENT_RULE}


def config_sample_rate(config: ExtractConfig) -> int:
    """The decoder's audio rate: the log-mel is computed at it."""
    from emofuse.features.registry import get_extractor

    return int(get_extractor(config.decoder, "decode").Config().sample_rate)


def _raw_references(
    ok: Sequence[ClipResult], config: ExtractConfig, out: Path, store: Path
) -> dict[str, Any]:
    """Per clip id, its raw files relative to the pickle's folder; an empty file for padded clips."""
    kinds = [m for m in ("vision", "audio") if all(m in r.raw_files for r in ok)]
    shapes = {m: list(shape) for m, shape in config.raw_shapes.items()}
    base = out.resolve().parent
    files = {r.clip_id: {m: os.path.relpath(r.raw_files[m], base) for m in kinds} for r in ok}
    empty = {}
    for m in kinds:  # a clip kept by --on-error pad has one all-zero word, as its features do
        path = write_clip(store / "empty", m, np.zeros((1, *shapes[m])), RAW_DTYPES[RAW_KEY_OF[m]])
        empty[m] = os.path.relpath(path.resolve(), base)
    return {"files": files, "empty": empty,
            "meta": {"store": os.path.relpath(store.resolve(), base), "shapes": {m: shapes[m] for m in kinds},
                     "dtypes": {m: RAW_DTYPES[RAW_KEY_OF[m]] for m in kinds}}}


def _splits(table: DatasetTable, by_id: dict[str, ClipResult], dims: dict[str, int],
            max_lengths: dict[str, int], pad: bool, name: str, aligned: bool,
            raw: dict[str, Any] | None = None) -> DatasetSplits:
    df = table.df
    classification = table.task == "classification"
    labels_all = df["label"].to_numpy(dtype=np.float64)
    # scores that happen to be class ids also get a classification key (as before)
    integral = not classification and bool(
        np.all(labels_all == np.round(labels_all)) and np.all(labels_all >= 0)
    )
    datasets = {}
    for split in SPLITS:
        rows = df[df["mode"] == split]
        samples = []
        for row in rows.itertuples(index=False):
            clip_id = f"{row.video_id}$_${row.clip_id}"
            result = by_id.get(clip_id)
            if result is None:
                continue
            if result.status == "ok" and result.record is not None:
                samples.append((row, result))
            elif pad:
                samples.append((row, result))
        if not samples:
            raise DataFormatError(f"split {split!r} has no extracted clip; see the report")
        datasets[split] = _dataset(samples, dims, max_lengths, aligned, split, integral, classification, raw)
    return DatasetSplits(**datasets, name=name, class_names=list(table.class_names))


def _dataset(
    samples: list,
    dims: dict[str, int],
    max_lengths: dict[str, int],
    aligned: bool,
    split: str,
    integral: bool,
    classification: bool = False,
    raw: dict[str, Any] | None = None,
) -> MultimodalDataset:
    n = len(samples)
    sequences: dict[str, list[np.ndarray]] = {m: [] for m in dims}
    for _, result in samples:
        record = result.record
        for m, d in dims.items():
            if record is None:
                sequences[m].append(np.zeros((1, d), np.float32))
            else:
                x = record["aligned" if aligned else "unaligned"][m]
                sequences[m].append(x if len(x) else np.zeros((1, d), np.float32))
    features, lengths = {}, {}
    for m, seqs in sequences.items():
        max_len = max_lengths[m]
        arr = np.zeros((n, max_len, dims[m]), np.float32)
        lens = np.zeros(n, np.int64)
        for i, x in enumerate(seqs):
            k = min(len(x), max_len)
            arr[i, :k] = x[:k]
            lens[i] = max(k, 1)
        features[m], lengths[m] = torch.from_numpy(arr), torch.from_numpy(lens)
    rows = [row for row, _ in samples]
    results = [r for _, r in samples]
    labels = (np.array([int(row.label) for row in rows], np.int64) if classification
              else np.array([float(row.label) for row in rows], np.float32))
    extras = {
        "annotations": np.array([str(row.annotation) for row in rows], dtype=object),
        "extract_status": np.array([r.status for r in results], dtype=object),
        "word_source": np.array([r.record["word_source"] if r.record else "" for r in results], dtype=object),
        "word_times": np.array([json.dumps(_word_times(r.record)) for r in results], dtype=object),
    }
    if integral:
        extras["classification_labels"] = labels.astype(np.int64)
    if aligned and "vision" in dims:
        # words during which no face was seen: their vision is missing (emofuse.data.normalize)
        missing = np.zeros((n, max_lengths["vision"]), dtype=bool)
        for i, r in enumerate(results):
            flags = np.asarray((r.record or {}).get("vision_missing", []), dtype=bool)[: missing.shape[1]]
            missing[i, : len(flags)] = flags
        if missing.any():
            extras["vision_missing"] = missing
    for m in raw["empty"] if raw is not None else ():
        extras[f"raw_{m}_file"] = np.array(
            [raw["files"][r.clip_id][m] if r.clip_id in raw["files"] else raw["empty"][m] for r in results],
            dtype=object,
        )
    return MultimodalDataset(
        features=features,
        lengths=lengths,
        labels=torch.from_numpy(labels),
        ids=[r.clip_id for r in results],
        raw_text=[r.record["raw_text"] if r.record else str(row.text) for row, r in samples],
        source=f"extract [{split}]",
        extras=extras,
    )


def _word_times(record: dict[str, Any] | None) -> list[list[Any]]:
    if record is None:
        return []
    return [[w, round(float(s), 3), round(float(e), 3)]
            for w, s, e in zip(record["words"], record["starts"], record["ends"], strict=True)]


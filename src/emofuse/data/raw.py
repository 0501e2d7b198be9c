"""Raw per-word inputs for the paper's front end, stored on disk and read lazily.

A clip's raw video is one grey face-crop stack per word (words x F x H x W, uint8) and its raw
audio one log-mel patch per word (words x n_mels x T, float16). Each clip is one `.npy` file per
kind under a store folder, so a dataset of MOSI's size (2,199 clips x 50 words x 16 x 64 x 64
bytes, about 22 GB) is never in memory: a batch reads only its own clips.

In a `MultimodalDataset` the raw arrays travel in `extras` under `RAW_EXTRAS`' keys as `LazyRawArray`s,
and the modality's feature slot holds a one-dimensional zero placeholder whose lengths are the
clip's word counts, so masks, batching by length and every model's padding logic are unchanged.
An encoder (`WithRawEncoders`) fills the slot with one learned vector per word.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from emofuse.data.dataset import RAW_EXTRAS, DataFormatError
from emofuse.files import atomic_path, sha256_text

# compact on-disk types: grey crops are bytes, log-mel values need no more than half precision
RAW_DTYPES = {"raw_vision": "uint8", "raw_audio": "float16"}
RAW_KEY_OF = {modality: key for key, modality in RAW_EXTRAS.items()}


class LazyRawArray:
    """Per-clip arrays of shape (words, *item_shape) in `folder`, indexed like an array of clips.

    Indexing with clip indices gives a view (no I/O); `load(idx, words)` reads those clips and
    pads them to `words` words with zeros. Views keep subsets (train/valid splits, robustness
    copies) from ever reading the data.
    """

    def __init__(self, files: Sequence[str | Path], item_shape: tuple[int, ...], dtype: str) -> None:
        self.files = [str(f) for f in files]
        self.item_shape = tuple(int(s) for s in item_shape)
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return len(self.files)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.files), *self.item_shape)

    def __getitem__(self, idx: np.ndarray | Sequence[int] | slice | int) -> LazyRawArray:
        picked = np.arange(len(self.files))[idx]
        return LazyRawArray([self.files[i] for i in np.atleast_1d(picked)], self.item_shape, str(self.dtype))

    def load(self, idx: Sequence[int] | np.ndarray, words: int) -> np.ndarray:
        """Clips `idx`, padded or cut to `words` words: len(idx) x words x *item_shape."""
        out = np.zeros((len(idx), words, *self.item_shape), dtype=self.dtype)
        for row, i in enumerate(np.asarray(idx).tolist()):
            path = self.files[i]
            try:
                clip = np.load(path, mmap_mode="r")
            except (OSError, ValueError) as err:
                raise DataFormatError(f"{path}: unreadable raw clip file ({err})") from None
            if clip.shape[1:] != self.item_shape:
                raise DataFormatError(
                    f"{path}: raw clip items have shape {clip.shape[1:]}, the store says {self.item_shape}"
                )
            n = min(words, clip.shape[0])
            out[row, :n] = clip[:n]
        return out


def write_clip(folder: Path, name: str, array: np.ndarray, dtype: str) -> Path:
    """Write one clip's per-word array atomically (a killed writer leaves no half file)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.npy"
    with atomic_path(path, suffix=".npy") as tmp:  # .npy last, or np.save would append it
        np.save(tmp, np.ascontiguousarray(array, dtype=dtype))
    return path


def store_key(**config: object) -> str:
    """A short stable hash of a generator or extractor config: one store folder per config."""
    return sha256_text(json.dumps(config, sort_keys=True, default=str))[:16]


def raw_modalities(extras: dict[str, object]) -> tuple[str, ...]:
    """The modalities whose raw inputs a dataset carries."""
    return tuple(m for k, m in RAW_EXTRAS.items() if k in extras)

"""Frame-rate streams and their word-level alignment.

A `Stream` is one frame-rate feature sequence (eGeMAPS at 100 Hz, blendshapes at the video fps)
with the centre time of every frame and an optional mask of valid frames (frames without a face).
Word alignment follows CMU-MultimodalSDK: a word's value is the mean of the valid frames whose
centre lies inside its span; a span too short to hold a frame centre takes the nearest frame, so
every word gets a value. For the raw encoders, face crops and log-mel columns are cut per word
at a fixed size (frames sampled evenly across the span).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Stream:
    """values: T x D float32; times: T frame centres (s); valid: T bools (None = all valid)."""

    name: str
    values: np.ndarray
    times: np.ndarray
    columns: list[str]
    valid: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.values = np.asarray(self.values, dtype=np.float32)
        if self.values.ndim == 1:
            self.values = self.values[:, None]
        self.times = np.asarray(self.times, dtype=np.float64)
        if len(self.values) != len(self.times):
            raise ValueError(f"stream {self.name!r}: {len(self.values)} frames but {len(self.times)} times")
        if self.valid is not None:
            self.valid = np.asarray(self.valid, dtype=bool)

    @property
    def dim(self) -> int:
        return int(self.values.shape[1])


def regular_times(n: int, rate: float) -> np.ndarray:
    """Centres of n frames of 1/rate seconds starting at 0."""
    return (np.arange(n) + 0.5) / rate


def word_frame_indices(times: np.ndarray, start: float, end: float,
                       valid: np.ndarray | None = None) -> np.ndarray:
    """Indices of the (valid) frames centred in [start, end); else the nearest (valid) frame."""
    candidates = np.arange(len(times)) if valid is None else np.flatnonzero(valid)
    if len(candidates) == 0:
        return candidates
    t = times[candidates]
    inside = candidates[(t >= start) & (t < end)]
    if len(inside):
        return inside
    return candidates[[int(np.argmin(np.abs(t - 0.5 * (start + end))))]]


def words_with_valid_frames(times: np.ndarray, valid: np.ndarray, starts: np.ndarray,
                            ends: np.ndarray) -> np.ndarray:
    """W bools: the word's span holds a valid frame (a span holding no frame centre asks its
    nearest frame). A word without one has no face to show: its vision input is missing."""
    out = np.zeros(len(starts), dtype=bool)
    if len(times) == 0:
        return out
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        inside = np.flatnonzero((times >= s) & (times < e))
        if len(inside) == 0:
            inside = np.array([int(np.argmin(np.abs(times - 0.5 * (s + e))))])
        out[i] = bool(np.any(valid[inside]))
    return out


def average_over_words(stream: Stream, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """W x D: each word's mean over its valid frames (zeros where the stream has none)."""
    out = np.zeros((len(starts), stream.dim), dtype=np.float32)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        idx = word_frame_indices(stream.times, float(s), float(e), stream.valid)
        if len(idx):
            out[i] = stream.values[idx].mean(axis=0)
    return out


def _even_samples(idx: np.ndarray, count: int) -> np.ndarray:
    """`count` indices spread evenly over idx (repeating when idx is shorter)."""
    pick = np.linspace(0, len(idx) - 1, count)
    return idx[np.round(pick).astype(np.int64)]


def cut_frames_per_word(frames: np.ndarray, times: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                        count: int, valid: np.ndarray | None = None) -> np.ndarray:
    """W x count x H x W' stacks (frames' dtype) of each word's frames, sampled evenly.

    Frames flagged invalid (no face) are skipped when the word has valid ones; a word with
    none gets zeros, so a downstream encoder sees "no face" rather than a wrong face.
    """
    out = np.zeros((len(starts), count, *frames.shape[1:]), dtype=frames.dtype)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        idx = word_frame_indices(times, float(s), float(e), valid)
        if len(idx):
            out[i] = frames[_even_samples(idx, count)]
    return out


def cut_columns_per_word(matrix: np.ndarray, times: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                         count: int) -> np.ndarray:
    """W x D x count patches of a T x D matrix (a log-mel map), columns sampled evenly per word."""
    out = np.zeros((len(starts), matrix.shape[1], count), dtype=matrix.dtype)
    for i, (s, e) in enumerate(zip(starts, ends, strict=True)):
        idx = word_frame_indices(times, float(s), float(e))
        if len(idx):
            out[i] = matrix[_even_samples(idx, count)].T
    return out


def resample_stream(stream: Stream, rate: float, duration: float) -> Stream:
    """Average a stream into frames of 1/rate seconds (for shorter unaligned sequences)."""
    n = max(1, int(np.ceil(duration * rate - 1e-9)))
    edges = np.arange(n + 1) / rate
    starts, ends = edges[:-1], edges[1:]
    values = average_over_words(stream, starts, ends)
    return Stream(stream.name, values, regular_times(n, rate), stream.columns)

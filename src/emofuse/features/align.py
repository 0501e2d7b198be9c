"""Frame-rate streams and their word-level alignment.

A `Stream` is one frame-rate feature sequence (eGeMAPS at 100 Hz, blendshapes at the video fps)
with the centre time of every frame and an optional mask of valid frames (frames without a face).
Word alignment is the CMU Multimodal SDK's, the rule `.csd` loading uses too
(`emofuse.data.intervals.overlapping`): each frame covers its centre +- half the stream's frame
period, and a frame belongs to a word when the two overlap by more than a microsecond, so a frame
straddling a word boundary belongs to both words. A word's value is the mean of its valid frames
(the SDK's `myavg` collapse). A span no frame overlaps (past the stream's end) takes the nearest
frame, so every word gets a value. For the raw encoders, face crops and log-mel columns are cut
per word at a fixed size (frames sampled evenly across the word's frames).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emofuse.data.intervals import overlapping, row_chunks


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


# which rule assigns frames to words; part of the key of every cached extraction that aligns
# (a pickle made under the old frame-centre rule is not reused)
ALIGNMENT_RULE = "cmu-sdk-interval-overlap"

def regular_times(n: int, rate: float) -> np.ndarray:
    """Centres of n frames of 1/rate seconds starting at 0."""
    return (np.arange(n) + 0.5) / rate


def frame_intervals(times: np.ndarray) -> np.ndarray:
    """T x 2 [start, end] of frames given by their centres: centre +- half the frame period.

    The period is the median spacing of the centres: 1/rate for a regular stream (the 10 ms audio
    grid), the decoded frame rate for video (a dropped frame does not stretch its neighbours).
    A lone frame is an instant.
    """
    times = np.asarray(times, dtype=np.float64)
    half = 0.5 * float(np.median(np.diff(times))) if len(times) > 1 else 0.0
    return np.stack([times - half, times + half], axis=1)


def word_frames(times: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                valid: np.ndarray | None = None) -> list[np.ndarray]:
    """Per word [start, end], the indices of the (valid) frames that belong to it.

    The rule is `emofuse.data.intervals.overlapping` (the CMU SDK's: frame and word overlap by
    more than epsilon) on `frame_intervals(times)`. A word that no (valid) frame overlaps takes
    the (valid) frame whose centre is nearest its middle; with no (valid) frame at all, nothing.
    """
    times = np.asarray(times, dtype=np.float64)
    candidates = np.arange(len(times)) if valid is None else np.flatnonzero(valid)
    spans = np.stack([np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)], axis=1)
    if len(candidates) == 0:
        return [candidates for _ in range(len(spans))]
    frames = frame_intervals(times)[candidates]
    t = times[candidates]
    out: list[np.ndarray] = []
    chunks = row_chunks(len(spans), len(candidates))
    for first in chunks:
        block = spans[first:first + chunks.step]
        for (s, e), hit in zip(block, overlapping(block, frames), strict=True):
            inside = candidates[hit]
            out.append(inside if len(inside) else candidates[[int(np.argmin(np.abs(t - 0.5 * (s + e))))]])
    return out


def word_frame_indices(times: np.ndarray, start: float, end: float,
                       valid: np.ndarray | None = None) -> np.ndarray:
    """Indices of the (valid) frames overlapping [start, end]; else the nearest (valid) frame
    (`word_frames` for one word)."""
    return word_frames(times, np.array([start]), np.array([end]), valid)[0]


def words_with_valid_frames(times: np.ndarray, valid: np.ndarray, starts: np.ndarray,
                            ends: np.ndarray) -> np.ndarray:
    """W bools: one of the word's frames is valid (a span no frame overlaps asks its nearest
    frame). A word without one has no face to show: its vision input is missing."""
    out = np.zeros(len(starts), dtype=bool)
    if len(times) == 0:
        return out
    valid = np.asarray(valid, dtype=bool)
    for i, idx in enumerate(word_frames(times, starts, ends)):
        out[i] = bool(np.any(valid[idx]))
    return out


def average_over_words(stream: Stream, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """W x D: each word's mean over its valid frames (zeros where the stream has none)."""
    out = np.zeros((len(starts), stream.dim), dtype=np.float32)
    for i, idx in enumerate(word_frames(stream.times, starts, ends, stream.valid)):
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
    for i, idx in enumerate(word_frames(times, starts, ends, valid)):
        if len(idx):
            out[i] = frames[_even_samples(idx, count)]
    return out


def cut_columns_per_word(matrix: np.ndarray, times: np.ndarray, starts: np.ndarray, ends: np.ndarray,
                         count: int) -> np.ndarray:
    """W x D x count patches of a T x D matrix (a log-mel map), columns sampled evenly per word."""
    out = np.zeros((len(starts), matrix.shape[1], count), dtype=matrix.dtype)
    for i, idx in enumerate(word_frames(times, starts, ends)):
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

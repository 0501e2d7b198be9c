"""A SYNTHETIC raw-clip dataset with a planted visual cue, for the paper's front end.

Generated, not real: it exists so that the worth of the Harris attention is measurable. Each clip
is a sequence of words; each word carries a stack of grey "face crop" frames (F x S x S, uint8), a
log-mel-like patch (n_mels x T, float16) and a word vector. The label is

    y = clip(0.8 T + 0.6 A + 1.0 V + noise, -3, 3),   noise ~ N(0, 0.25^2)

- T (text): one word of the clip carries t ~ U(-1, 1) along a fixed direction of its vector.
- A (audio): every word's patch has a bright band whose mel position encodes a ~ U(-1, 1).
- V (video, the planted cue): a small bright patch on the face. In one word of the clip it starts
  moving, up (v = +1) or down (v = -1), and stops again a few frames later; in a third of the clips
  it never moves (v = 0). Starting and stopping are space-time corners, what Harris-3D finds.
- The distractor: a static high-contrast checkerboard at a random place on every frame, and the
  face drawn at a random offset. It is full of 2D corners and has no 3D ones, and it is drawn
  independently of the label: changing it never changes the label (a test checks this).

`extras` keeps the planted parts and the reference predictions: `oracle_full` (the noiseless
label: the Bayes ceiling), `oracle_no_video` (0.8 T + 0.6 A: the best without the visual cue) and
`oracle_video` (1.0 V: the best from the video alone, what a V-only model can reach).

Raw inputs are written once per config into the emofuse cache as one .npy per clip and kind and
read lazily (`emofuse.data.raw`), the same path a real extracted dataset takes.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from emofuse.data.dataset import DatasetSplits, MultimodalDataset
from emofuse.data.raw import RAW_DTYPES, LazyRawArray, store_key, write_clip
from emofuse.data.sources import SourceRequest, data_config, register_source
from emofuse.runtime import resolve_cache_dir

WEIGHTS = {"T": 0.8, "A": 0.6, "V": 1.0}
NOISE_STD = 0.25
# part of the cache key: bump it whenever the drawing code changes, so no stale clips are reused
DRAWING_VERSION = 2


@dataclass
class SyntheticRawConfig:
    n_train: int = 400
    n_valid: int = 100
    n_test: int = 100
    max_words: int = 4
    min_words: int = 2
    frames: int = 8  # frames per word span
    size: int = 32  # face-crop side in pixels
    n_mels: int = 24
    mel_steps: int = 12  # log-mel columns per word
    text_dim: int = 8
    seed: int = 0
    distractor_seed: int = 0  # draws the face offsets and checkerboards only: never the label


def make_synthetic_raw(
    config: SyntheticRawConfig | None = None, cache: str | Path | None = None
) -> DatasetSplits:
    """Build (or reopen from the cache) train/valid/test; the same config gives the same data."""
    cfg = config or SyntheticRawConfig()
    root = (
        resolve_cache_dir(cache)
        / "synthetic_raw"
        / store_key(**dataclasses.asdict(cfg), version=DRAWING_VERSION)
    )
    rng = np.random.default_rng(cfg.seed)
    # the distractors come from their own stream, so changing them cannot move any label
    distractor_rng = np.random.default_rng([cfg.distractor_seed, 1])
    splits = {
        name: _make_split(rng, distractor_rng, n, cfg, name, root / name)
        for name, n in (("train", cfg.n_train), ("valid", cfg.n_valid), ("test", cfg.n_test))
    }
    from emofuse.data.frontend import frontend_record

    # generated arrays, not media: the record keeps the sizes a clip's crops and log-mel are resized to
    shapes = {"vision": [cfg.frames, cfg.size, cfg.size], "audio": [cfg.n_mels, cfg.mel_steps]}
    return DatasetSplits(splits["train"], splits["valid"], splits["test"], name="synthetic-raw",
                         frontend=frontend_record("synthetic-raw", raw_shapes=shapes))


def _make_split(
    rng: np.random.Generator,
    distractor_rng: np.random.Generator,
    n: int,
    cfg: SyntheticRawConfig,
    split: str,
    folder: Path,
) -> MultimodalDataset:
    n_words = rng.integers(cfg.min_words, cfg.max_words + 1, size=n)
    t_part = rng.uniform(-1, 1, size=n)
    a_part = rng.uniform(-1, 1, size=n)
    v_part = rng.choice([-1.0, 0.0, 1.0], size=n)
    clean = WEIGHTS["T"] * t_part + WEIGHTS["A"] * a_part + WEIGHTS["V"] * v_part
    label = np.clip(clean + rng.normal(0, NOISE_STD, n), -3, 3)

    direction = np.zeros(cfg.text_dim)
    direction[0] = 1.0
    text = rng.normal(0, 0.3, size=(n, cfg.max_words, cfg.text_dim))
    video_files, audio_files = [], []
    for i in range(n):
        words = int(n_words[i])
        text[i, rng.integers(words)] += 2.0 * t_part[i] * direction
        text[i, words:] = 0.0
        # the random draws below happen whether or not the files exist, so a cached dataset
        # and a freshly written one are the same data
        frames = draw_clip_frames(rng, distractor_rng, cfg, words, v_part[i])
        mel = draw_clip_mel(rng, cfg, words, a_part[i])
        name = f"{i:06d}"
        video_files.append(_cached(folder / "video", name, frames, RAW_DTYPES["raw_vision"]))
        audio_files.append(_cached(folder / "audio", name, mel, RAW_DTYPES["raw_audio"]))

    lengths = torch.from_numpy(n_words.astype(np.int64))
    placeholder = torch.zeros(n, cfg.max_words, 1)
    extras = {
        "raw_vision": LazyRawArray(video_files, (cfg.frames, cfg.size, cfg.size), RAW_DTYPES["raw_vision"]),
        "raw_audio": LazyRawArray(audio_files, (cfg.n_mels, cfg.mel_steps), RAW_DTYPES["raw_audio"]),
        "T": t_part.astype(np.float32),
        "A": a_part.astype(np.float32),
        "V": v_part.astype(np.float32),
        "oracle_full": np.clip(clean, -3, 3).astype(np.float32),
        "oracle_no_video": np.clip(clean - WEIGHTS["V"] * v_part, -3, 3).astype(np.float32),
        "oracle_video": np.clip(WEIGHTS["V"] * v_part, -3, 3).astype(np.float32),
    }
    return MultimodalDataset(
        features={
            "text": torch.from_numpy(text.astype(np.float32)),
            "audio": placeholder,
            "vision": placeholder.clone(),
        },
        lengths={"text": lengths, "audio": lengths.clone(), "vision": lengths.clone()},
        labels=torch.from_numpy(label.astype(np.float32)),
        ids=[f"synthetic_raw_{split}$_${i}" for i in range(n)],
        raw_text=[" ".join(["word"] * int(w)) for w in n_words],
        source=f"synthetic-raw:{split}",
        extras=extras,
    )


def _cached(folder: Path, name: str, array: np.ndarray, dtype: str) -> str:
    path = folder / f"{name}.npy"
    if not path.exists():
        write_clip(folder, name, array, dtype)
    return str(path)


# --------------------------------------------------------------------------- drawing
def draw_face(rng: np.random.Generator, size: int) -> tuple[np.ndarray, tuple[int, int]]:
    """A face-like grey image (oval, eyes, mouth) plus a static checkerboard distractor.

    Returns the image and the (row, col) where the cue patch rests on the cheek.
    """
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    cy, cx = size / 2 + rng.uniform(-2, 2), size / 2 + rng.uniform(-2, 2)
    img = np.full((size, size), 0.25)
    face = ((yy - cy) / (0.45 * size)) ** 2 + ((xx - cx) / (0.35 * size)) ** 2 <= 1
    img[face] = 0.55
    for ex in (cx - 0.15 * size, cx + 0.15 * size):  # eyes
        img[((yy - (cy - 0.12 * size)) ** 2 + (xx - ex) ** 2) <= (0.05 * size) ** 2] = 0.15
    img[(np.abs(yy - (cy + 0.22 * size)) <= 0.03 * size) & (np.abs(xx - cx) <= 0.12 * size)] = 0.2
    # the distractor: a 2-pixel checkerboard, 1/4 of the side, somewhere on the frame
    side = max(4, size // 4)
    r0, c0 = rng.integers(0, size - side, size=2)
    checks = ((np.arange(side)[:, None] // 2 + np.arange(side)[None, :] // 2) % 2).astype(np.float64)
    img[r0 : r0 + side, c0 : c0 + side] = 0.1 + 0.8 * checks
    patch_at = (int(round(cy)), int(round(cx - 0.22 * size)))
    return img, patch_at


def draw_clip_frames(
    rng: np.random.Generator,
    distractor_rng: np.random.Generator,
    cfg: SyntheticRawConfig,
    words: int,
    v: float,
) -> np.ndarray:
    """words x F x S x S uint8. The cue patch moves 2 px a frame for half the frames of one word."""
    img, (pr, pc) = draw_face(distractor_rng, cfg.size)
    half = max(1, cfg.size // 10)
    cue_word = int(rng.integers(words))
    start = int(rng.integers(1, max(2, cfg.frames // 2)))
    moves = max(2, cfg.frames // 2)
    offset = 0
    out = np.empty((words, cfg.frames, cfg.size, cfg.size), dtype=np.uint8)
    for w in range(words):
        for f in range(cfg.frames):
            if v != 0 and w == cue_word and start <= f < start + moves:
                offset -= 2 * int(v)  # 2 px a frame; up is -row
            frame = img.copy()
            r = int(np.clip(pr + offset, half, cfg.size - half - 1))
            frame[r - half : r + half + 1, pc - half : pc + half + 1] = 0.95
            frame += distractor_rng.normal(0, 0.01, size=frame.shape)
            out[w, f] = np.clip(frame * 255, 0, 255).astype(np.uint8)
    return out


def draw_clip_mel(rng: np.random.Generator, cfg: SyntheticRawConfig, words: int, a: float) -> np.ndarray:
    """words x n_mels x T: log-mel-like noise with a bright band at a mel position set by `a`."""
    mel = rng.normal(-4.0, 0.5, size=(words, cfg.n_mels, cfg.mel_steps))
    band = int(round((a + 1) / 2 * (cfg.n_mels - 3))) + 1
    mel[:, band - 1 : band + 2, :] += 3.0
    return mel


@register_source("synthetic-raw", options=True)
def _synthetic_raw_source(request: SourceRequest) -> DatasetSplits:
    """`--data synthetic-raw`: the data options are a `SyntheticRawConfig`."""
    return make_synthetic_raw(data_config(SyntheticRawConfig, request.options, request.source))

"""Clip embeddings from a frozen pretrained speech encoder: every layer's statistics, not the last's.

`whisper_layer_statistics` runs Whisper base's encoder over a whole clip (its own 80-band log-mel,
silence trimmed) and keeps, for each hidden state (the convolutional stem's output and each of the
transformer layers', the last after the final LayerNorm), the mean and the standard deviation over
frames: a (layers + 1) x (2 * dim) array, one row per layer.

Why every layer: emotion sits in the middle layers of a speech encoder (the SUPERB finding, and
here on RAVDESS's validation actors: a linear probe on layer 3 of 6 scores 75 %, on the last 68 %).
A head that learns one weight per row (`--model pooled -o pool=weighted`) is SUPERB's weighted layer
sum. Why the whole clip: Whisper was trained on long windows; a 0.5 s window gives it 25 positions
and no context (the earlier recipe on 0.5 s windows scored 62.1 % on RAVDESS's test actors, this
one 82.2 %; README).

`egemaps_functionals` is openSMILE's eGeMAPSv02 functionals of the clip (88 values, one row).
`-D embeddings=whisper_base+egemaps` appends them to every Whisper row, so the head sees both;
on RAVDESS's validation actors they added nothing to the Whisper rows (see the README).

`register` adds the embedders to the RAVDESS loader (`-D embeddings=NAME[+NAME]`), which caches
the rows per clip and standardises them per speaker.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from emofuse.audio_frontend import SAMPLE_RATE, LogMelConfig, log_mel_db
from emofuse.features.media_models import require_module
from emofuse.features.whisper_encoder import (
    WHISPER_LOG_MEL,
    WhisperEncoder,
    db_to_whisper_scale,
    load_whisper_encoder,
)

# bump when the rows computed for a clip change, so cached embeddings are not reused
WHISPER_STATISTICS_VERSION = 1
WHISPER_MEL = LogMelConfig(sample_rate=SAMPLE_RATE, **WHISPER_LOG_MEL)  # type: ignore[arg-type]


def trim_silence(mel_db: np.ndarray, top_db: float) -> np.ndarray:
    """The frames from the first to the last whose loudest band is within top_db of the clip's peak."""
    energy = mel_db.max(axis=0)
    voiced = np.flatnonzero(energy >= energy.max() - top_db)
    return mel_db[:, voiced[0] : voiced[-1] + 1] if voiced.size else mel_db


@torch.no_grad()
def whisper_layer_statistics(mel_db: np.ndarray, encoder: WhisperEncoder) -> np.ndarray:
    """80 x T dB log-mel of one clip -> (layers + 1) x (2 * dim) float32: per hidden state, the mean
    and the standard deviation over the clip's frames.

    A clip longer than Whisper's 30 s window is encoded in 30 s pieces (each from position 0, as
    Whisper reads a long recording) and the statistics are taken over all the pieces' frames.
    """
    if mel_db.ndim != 2 or mel_db.shape[0] != encoder.conv1.in_channels or mel_db.shape[1] < 1:
        raise ValueError(f"expected {encoder.conv1.in_channels} x T log-mel, got {mel_db.shape}")
    pieces: list[list[torch.Tensor]] = []
    for start in range(0, mel_db.shape[1], encoder.max_frames):
        chunk = torch.from_numpy(np.ascontiguousarray(mel_db[:, start : start + encoder.max_frames]))
        h = encoder.embed(db_to_whisper_scale(chunk[None].float()))
        states = [h]
        for layer in encoder.layers:
            h = layer(h)
            states.append(h)
        states[-1] = encoder.norm(h)
        pieces.append([s[0] for s in states])
    rows = []
    for layer_states in zip(*pieces):
        frames = torch.cat(layer_states, dim=0)  # all pieces' frames of this hidden state
        std = frames.std(dim=0, unbiased=False)
        rows.append(torch.cat([frames.mean(dim=0), std]))
    return torch.stack(rows).numpy().astype(np.float32)


@functools.lru_cache(maxsize=1)
def _frozen_whisper() -> WhisperEncoder:
    encoder = load_whisper_encoder()
    encoder.eval()
    for p in encoder.parameters():
        p.requires_grad = False
    return encoder


def whisper_base_rows(audio: np.ndarray, top_db: float) -> np.ndarray:
    """16 kHz mono audio of one clip -> its Whisper-base layer statistics (the carried model)."""
    mel = trim_silence(log_mel_db(audio, WHISPER_MEL), top_db)
    return whisper_layer_statistics(mel, _frozen_whisper())


@functools.lru_cache(maxsize=1)
def _functionals_smile() -> object:
    require_module("opensmile", "opensmile==2.6.0")
    import opensmile

    return opensmile.Smile(feature_set=opensmile.FeatureSet.eGeMAPSv02,
                           feature_level=opensmile.FeatureLevel.Functionals)


def egemaps_functionals(audio: np.ndarray, top_db: float) -> np.ndarray:
    """16 kHz mono audio of one clip -> 1 x 88 eGeMAPSv02 functionals (of the whole clip: openSMILE's
    voice-activity-aware functionals need no trimming; top_db is unused)."""
    del top_db
    smile = _functionals_smile()
    values = smile.process_signal(np.asarray(audio, np.float32), SAMPLE_RATE)  # type: ignore[attr-defined]
    return np.asarray(values, np.float32).reshape(1, -1)


def register() -> None:
    """Make `-D embeddings=whisper_base|egemaps` available to the RAVDESS loader (idempotent)."""
    from emofuse.data.ravdess import CLIP_EMBEDDERS

    CLIP_EMBEDDERS.setdefault("whisper_base", (whisper_base_rows, WHISPER_STATISTICS_VERSION))
    CLIP_EMBEDDERS.setdefault("egemaps", (egemaps_functionals, 1))


register()

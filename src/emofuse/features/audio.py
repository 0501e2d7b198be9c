"""Audio streams at 100 frames per second (10 ms hop), all on one frame grid.

- ``egemaps``: openSMILE 2.6's eGeMAPSv02 low-level descriptors (25 per frame: loudness, F0,
  jitter, shimmer, formants, spectral slopes, ...), computed with `process_signal` on the
  decoded array (no temporary file).
- ``librosa``: 13 MFCCs, pitch (YIN, log2 of F0 in Hz) and energy (log RMS): 15 per frame.
- ``logmel``: the log-mel map in dB (n_mels per frame, float16; `emofuse.audio_frontend`) for the
  raw audio encoder; it is cut per word rather than averaged into the pickle.

Every stream has floor(duration * 100) frames; frame i covers [i/100, (i+1)/100) seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emofuse.features.align import Stream, regular_times
from emofuse.features.media_models import require_module
from emofuse.features.registry import Extractor, register_extractor

FRAME_RATE = 100


def frame_count(n_samples: int, sample_rate: int) -> int:
    return max(1, n_samples * FRAME_RATE // sample_rate)


def _fit(values: np.ndarray, n: int) -> np.ndarray:
    """Cut or edge-pad T x D rows to exactly n (libraries differ by a frame or two at the ends)."""
    values = np.nan_to_num(np.asarray(values, dtype=np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    if len(values) >= n:
        return values[:n]
    if len(values) == 0:
        return np.zeros((n, values.shape[1]), dtype=np.float32)
    return np.concatenate([values, np.repeat(values[-1:], n - len(values), axis=0)])


class AudioExtractor(Extractor):
    stage = "audio"

    def __call__(self, audio: np.ndarray, sample_rate: int) -> Stream:
        raise NotImplementedError


@register_extractor
class EGeMAPS(AudioExtractor):
    """openSMILE eGeMAPSv02 low-level descriptors (25-d)."""

    name = "egemaps"
    version = 1

    def __init__(self, config: Extractor.Config | None = None) -> None:
        super().__init__(config)
        self._smile = None

    def __call__(self, audio: np.ndarray, sample_rate: int) -> Stream:
        if self._smile is None:
            require_module("opensmile", "opensmile==2.6.0")
            import opensmile

            self._smile = opensmile.Smile(
                feature_set=opensmile.FeatureSet.eGeMAPSv02,
                feature_level=opensmile.FeatureLevel.LowLevelDescriptors,
            )
        df = self._smile.process_signal(np.asarray(audio, dtype=np.float32), sample_rate)
        n = frame_count(len(audio), sample_rate)
        return Stream(self.name, _fit(df.to_numpy(), n), regular_times(n, FRAME_RATE), list(df.columns))


@register_extractor
class LibrosaProsody(AudioExtractor):
    """librosa MFCCs + YIN pitch + RMS energy (n_mfcc + 2 dims)."""

    name = "librosa"
    version = 1

    @dataclass(frozen=True)
    class Config:
        n_mfcc: int = 13
        fmin: float = 60.0
        fmax: float = 500.0

    def __call__(self, audio: np.ndarray, sample_rate: int) -> Stream:
        require_module("librosa", "librosa")
        import librosa

        cfg = self.config
        y = np.asarray(audio, dtype=np.float32)
        hop, win = sample_rate // FRAME_RATE, int(0.025 * sample_rate)
        n = frame_count(len(y), sample_rate)
        if len(y) < 2048:  # YIN needs a full analysis window
            y = np.pad(y, (0, 2048 - len(y)))
        mfcc = librosa.feature.mfcc(y=y, sr=sample_rate, n_mfcc=cfg.n_mfcc, n_fft=512, win_length=win,
                                    hop_length=hop).T
        f0 = librosa.yin(y, fmin=cfg.fmin, fmax=cfg.fmax, sr=sample_rate, frame_length=2048, hop_length=hop)
        rms = librosa.feature.rms(y=y, frame_length=win, hop_length=hop)[0]
        m = min(len(mfcc), len(f0), len(rms))
        values = np.column_stack([mfcc[:m], np.log2(f0[:m]), np.log(rms[:m] + 1e-6)])
        columns = [f"mfcc{i}" for i in range(cfg.n_mfcc)] + ["log2_f0", "log_rms"]
        return Stream(self.name, _fit(values, n), regular_times(n, FRAME_RATE), columns)


@register_extractor
class LogMel(AudioExtractor):
    """Log-mel map (n_mels per frame) in dB, from the one front end (`emofuse.audio_frontend`).

    25 ms windows, 10 ms hop (this module's frame grid), floor -100 dB: the same map the RAVDESS
    loader uses, so a patch means the same thing whichever path made it. Version 2: version 1
    was the natural log of power + 1e-6.
    """

    name = "logmel"
    version = 2

    @dataclass(frozen=True)
    class Config:
        n_mels: int = 64
        n_fft: int = 512

    def __call__(self, audio: np.ndarray, sample_rate: int) -> Stream:
        from emofuse.audio_frontend import log_mel_db

        n = frame_count(len(audio), sample_rate)
        config = logmel_config(self.config.n_mels, self.config.n_fft, sample_rate)
        # round through float16 here, so a fresh result equals one read back from the cache
        values = log_mel_db(audio, config).T.astype(np.float16).astype(np.float32)
        return Stream(self.name, _fit(values, n), regular_times(n, FRAME_RATE),
                      [f"mel{i}" for i in range(self.config.n_mels)])


def logmel_config(n_mels: int, n_fft: int, sample_rate: int):  # -> emofuse.audio_frontend.LogMelConfig
    """The log-mel map of the `logmel` stream: 25 ms windows on this module's 10 ms frame grid.
    Extracted pickles record it (`emofuse.features.extract_pickles.pickle_meta`), so it is defined once."""
    from emofuse.audio_frontend import LogMelConfig

    return LogMelConfig(
        n_mels=n_mels, n_fft=n_fft, win_ms=25.0, hop_ms=1000.0 / FRAME_RATE, sample_rate=sample_rate
    )

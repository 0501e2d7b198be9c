"""The one log-mel front end: RAVDESS's loader, `emofuse extract` and `predict` all call it.

Before it there were two: the RAVDESS loader's dB map (power_to_db, floor -100 dB) and extract's
natural log of power + 1e-6 (floor about -60 dB), converted to dB at predict time. Two paths to
one thing drift apart; a run must be fed at predict time exactly what it was trained on, so
there is now one definition, kept on the ground floor (numpy and librosa only) where every layer
can import it.

The map: mono audio at `sample_rate` -> mel power spectrogram (librosa, Hann window of `win_ms`,
`n_fft`-point FFT, hop `hop_ms`, centred frames) -> 10 log10(max(power, 1e-10)) dB (ref 1, so a
full-scale sine is near 0 dB and digital silence sits on the floor, -100 dB). The raw audio
encoder's level map (`models/encoders/audio_cnn.py`, -50 +- 20 dB) assumes this scale.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from emofuse.errors import OptionError, UserError
from emofuse.runtime import EXTRACT_INSTALL_HINT, require_module

SAMPLE_RATE = 16_000
# 10 log10 of librosa's amin (1e-10): where silence lands
FLOOR_DB = -100.0
SCALE = "dB"  # recorded with every raw store and run, so a reader can check what it gets


@dataclass(frozen=True)
class LogMelConfig:
    """Every knob of the log-mel map (recorded with the raw store and in the run folder)."""

    n_mels: int = 64
    n_fft: int = 512
    win_ms: float = 25.0
    hop_ms: float = 10.0
    sample_rate: int = SAMPLE_RATE

    def __post_init__(self) -> None:
        for name in ("n_mels", "n_fft", "win_ms", "hop_ms", "sample_rate"):
            if getattr(self, name) <= 0:
                raise OptionError(f"log-mel {name} must be positive, got {getattr(self, name)}")

    def describe(self) -> dict[str, Any]:
        """The config plus the scale and floor: what a run folder records about its audio."""
        return {**asdict(self), "scale": SCALE, "floor_db": FLOOR_DB}


def log_mel_db(audio: np.ndarray, config: LogMelConfig | None = None) -> np.ndarray:
    """n_mels x frames log-mel in dB (float32) of mono audio at `config.sample_rate`."""
    require_module("librosa", "librosa", EXTRACT_INSTALL_HINT)
    import librosa

    cfg = config or LogMelConfig()
    hop = int(round(cfg.sample_rate * cfg.hop_ms / 1000))
    win = int(round(cfg.sample_rate * cfg.win_ms / 1000))
    power = librosa.feature.melspectrogram(
        y=np.asarray(audio, dtype=np.float32), sr=cfg.sample_rate, n_fft=cfg.n_fft, win_length=win,
        hop_length=hop, n_mels=cfg.n_mels, center=True,
    )
    return librosa.power_to_db(power, ref=1.0, amin=10 ** (FLOOR_DB / 10), top_db=None).astype(np.float32)


def read_audio(path: str | os.PathLike[str], sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 at `sample_rate`: libsndfile for what it reads (wav, flac, ogg), PyAV otherwise.

    RAVDESS's loader reads its wavs through here, and so does `predict` for a run trained on
    RAVDESS, so a training clip given to predict yields the very samples training saw.
    Raises a UserError naming the file when neither can read it.
    """
    require_module("soundfile", "soundfile", EXTRACT_INSTALL_HINT)
    import soundfile
    from scipy.signal import resample_poly

    try:
        audio, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
        mono = audio.mean(axis=1)
    except (RuntimeError, soundfile.LibsndfileError):
        mono, rate = _read_with_pyav(path)
    if mono.size == 0:
        raise UserError(f"{path}: the audio holds no samples")
    if rate != sample_rate:
        g = np.gcd(int(rate), sample_rate)
        mono = resample_poly(mono, sample_rate // g, int(rate) // g).astype(np.float32)
    return np.ascontiguousarray(mono, dtype=np.float32)


def _read_with_pyav(path: str | os.PathLike[str]) -> tuple[np.ndarray, int]:
    """All audio of a container PyAV reads (mp4, flv, mkv, m4a, ...), mono at its own rate."""
    require_module("av", "av", EXTRACT_INSTALL_HINT)
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.audio:
                raise UserError(f"{path}: the file has no audio stream")
            stream = container.streams.audio[0]
            rate = int(stream.rate or stream.codec_context.sample_rate)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            chunks = []
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray().reshape(-1))
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray().reshape(-1))
    except av.error.FFmpegError as err:
        raise UserError(f"{path}: unreadable audio ({err})") from None
    return (np.concatenate(chunks) if chunks else np.zeros(0, np.float32)), rate

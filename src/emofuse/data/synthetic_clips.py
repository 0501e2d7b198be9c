"""A GENERATED talking-face clip set (real mp4 files) with a planted label, for learning from video.

No labelled talking-face corpus is reachable here, so learning from video files is shown on clips
with a known answer. Each clip is an MMSA-FET row: `label.csv` + `Raw/<video_id>/<clip_id>.mp4`
(H.264 video at 25 fps, AAC audio), which `emofuse extract` reads like any real dataset. It is not
real data and says nothing about real emotions.

A clip is 5-7 words spoken one by one by espeak-ng (joined with short pauses, so every word's
[start, end] is known exactly), over a still frame of scikit-image's astronaut. Three cues and
an interaction are planted, each in {-1, 0, +1}:

- t (text): one word is from a positive list (t = +1) or a negative list (t = -1), or none is
  (t = 0); the other words are neutral filler nouns.
- a (audio): one word is spoken with a clearly different pitch, espeak `-p 85` (a = +1) or
  `-p 15` (a = -1); the others at `-p 50`; a = 0: no word differs.
- v (video): inside ONE word's span a local face deformation starts and stops (a space-time
  corner for Harris-3D): v = +1 the mouth opens and closes, v = -1 the brows lift and lower;
  v = 0: the face never moves. The deformation is local (lips / brows), so it survives the face
  crop, which follows the landmarks' box; the head itself never moves.
- i (interaction): i = t when the visual event falls in the SAME word as the text cue, else 0.
  When a clip has both cues, the event is put in the text cue's word with probability
  `same_word` (default 1/2): only a model that fuses word by word can tell these apart.

    y = clip(w_t t + w_a a + w_v v + w_i i + noise, -3, 3),   noise ~ N(0, noise_std^2)

with (w_t, w_a, w_v, w_i) = (1.0, 0.6, 0.8, 0.8) and noise_std = 0.2 by default; t, a, v are
uniform on {-1, 0, +1}. The label is written rounded to 4 decimals.

What must not matter is drawn from its own stream (`nuisance_seed`): which face variant (crop
position and scale of the astronaut, a horizontal flip, brightness and contrast), which espeak
voice, and where a static high-contrast checkerboard (a 2D-corner distractor that never moves)
sits beside the face, inside the area mediapipe's face crop covers. Words keep the same times in
every voice (each word is time-stretched, pitch kept, to its length in the reference voice), so
changing `nuisance_seed` changes no label, no text and no word time.

`planted.json` keeps per clip id (`video_id$_$clip_id`) the planted parts, the word times, the
event's time span and the reference predictions (the "ceilings", as in `emofuse.data.synthetic`
and `emofuse.data.synthetic_raw`), each the exact conditional mean of the noiseless label given
what a family of models can see:

- `oracle_full`: the noiseless label (the Bayes prediction; needs t, a, v and whether the event
  fell in the text cue's word);
- `oracle_no_interaction`: given t, a and v but not where the event fell (what clip-level fusion
  can reach);
- `oracle_no_video`: given t and a (what T+A models can reach);
- `oracle_video`: given the video alone (v; t is unknown, so i averages to 0).

`planted_extras(folder, ids)` gives them as arrays to attach to a dataset; `ceilings(folder,
split)` gives the metrics they reach on a split.

The folder is written once per config (the default folder's name is a hash of the config, the
generator version and the espeak-ng version) and is complete only when the marker file
`COMPLETE` exists; it is written last. Every clip is written atomically, so a killed generation
resumes where it stopped. Generation is deterministic: the same config gives the same labels,
texts and word times (and, with the same ffmpeg/espeak-ng, the same bytes).

Needs espeak-ng, sox and ffmpeg (Debian: `apt-get install espeak-ng sox ffmpeg`) and the
extraction extras (scikit-image, scipy).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import json
import math
import os
import shutil
import subprocess
import tempfile
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.errors import InputNotFound, MissingDependency, OptionError, OutputError, UserError
from emofuse.files import atomic_path, atomic_write_text
from emofuse.runtime import resolve_cache_dir

# part of the default folder's name: bump it whenever the generated clips change
GENERATOR_VERSION = 1
MARKER = "COMPLETE"
STALE_PART_SECONDS = 300  # a half-written clip this old is from a killed run, not a running one
SPLITS = ("train", "valid", "test")
REQUIRED_TOOLS = ("espeak-ng", "sox", "ffmpeg")
INSTALL_HINT = "apt-get install espeak-ng sox ffmpeg"

POSITIVE_WORDS = (
    "wonderful",
    "excellent",
    "lovely",
    "happy",
    "brilliant",
    "delightful",
    "fantastic",
    "perfect",
)
NEGATIVE_WORDS = ("terrible", "horrible", "awful", "dreadful", "miserable", "boring", "painful", "disgusting")
NEUTRAL_WORDS = (
    "table", "window", "paper", "morning", "river", "garden", "number", "kitchen", "pencil", "letter",
    "corner", "station", "bottle", "basket", "orange", "carpet", "button", "ladder", "market", "engine",
    "island", "valley", "silver", "cotton", "yellow", "tuesday", "chapter", "member",
)
# the nuisance voices (espeak-ng names); word lengths come from the reference voice at REST_PITCH
VOICES = ("en-us", "en-us+m3", "en-us+f2", "en-gb-x-rp")
REFERENCE_VOICE = "en-us"
REST_PITCH = 50
CUE_PITCH = {1: 85, -1: 15}
CUE_VALUES = (-1, 0, 1)  # t, a and v are uniform on these
EVENT_KINDS = {1: "mouth", -1: "brows", 0: "none"}
ORACLES = ("oracle_full", "oracle_no_interaction", "oracle_no_video", "oracle_video")

# the astronaut's face in skimage.data.astronaut() coordinates (512 x 512), from mediapipe's
# FaceLandmarker: the landmarks' box, the mouth (centre, half width) and the two brows' centres
FACE_BOX = (181.0, 72.0, 270.0, 177.0)  # x0, y0, x1, y1
FACE_CENTRE = (225.5, 124.5)
MOUTH = (223.5, 145.5, 21.5)  # x, y, half width
BROWS = ((192.0, 88.5), (259.0, 92.0))
SPEECH_RATE = 22050  # espeak-ng's output rate
AUDIO_LEVEL = 0.08  # every word's RMS (loudness is no cue)


@dataclass(frozen=True)
class SyntheticClipsConfig:
    """What decides a generated clip set (all of it is part of the default folder's name).

    n_train, n_valid, n_test: clips per split.
    min_words, max_words: words per clip (inclusive range).
    frame_size: the frames' side in pixels (square video).
    fps: video frame rate.
    sample_rate: the audio's sample rate (Hz).
    speed: espeak-ng's speaking rate (words per minute, `-s`).
    same_word: when a clip has a text cue and a visual event, the probability that the event
        falls in the text cue's word (the interaction i = t then).
    w_text, w_audio, w_video, w_interaction: the label's weights on t, a, v and i.
    noise_std: the label noise's standard deviation.
    face_variants: how many variants of the astronaut's face the nuisance stream draws.
    seed: draws the labels' parts, the words, the cue positions, the pauses and the noise.
    nuisance_seed: draws only what must not matter (face variant, voice, distractor place);
        changing it changes no label, text or word time.
    """

    n_train: int = 200
    n_valid: int = 60
    n_test: int = 60
    min_words: int = 5
    max_words: int = 7
    frame_size: int = 256
    fps: int = 25
    sample_rate: int = 16000
    speed: int = 150
    same_word: float = 0.5
    w_text: float = 1.0
    w_audio: float = 0.6
    w_video: float = 0.8
    w_interaction: float = 0.8
    noise_std: float = 0.2
    face_variants: int = 4
    seed: int = 0
    nuisance_seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_train", "n_valid", "n_test"):
            if getattr(self, name) < 0:
                raise OptionError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 2 <= self.min_words <= self.max_words:
            raise OptionError(f"need 2 <= min_words <= max_words, got {self.min_words}, {self.max_words}")
        if self.frame_size < 96 or self.frame_size % 2:
            raise OptionError(f"frame_size must be even and >= 96 (mediapipe needs a face it can find), "
                              f"got {self.frame_size}")
        if not 0.0 <= self.same_word <= 1.0:
            raise OptionError(f"same_word is a probability, got {self.same_word}")
        if self.max_words > len(NEUTRAL_WORDS):
            raise OptionError(
                f"max_words can be at most {len(NEUTRAL_WORDS)} (the filler words), got {self.max_words}"
            )
        if self.fps <= 0 or self.sample_rate < 8000 or self.speed <= 0 or self.face_variants < 1:
            raise OptionError("fps, speed and face_variants must be positive and sample_rate >= 8000")

    @property
    def sizes(self) -> dict[str, int]:
        return {"train": self.n_train, "valid": self.n_valid, "test": self.n_test}

    @property
    def weights(self) -> dict[str, float]:
        return {"t": self.w_text, "a": self.w_audio, "v": self.w_video, "i": self.w_interaction}


class MissingTool(MissingDependency):
    """A command-line tool the generator needs is not installed; the message says how to get it
    (a UserError, so the command line prints it as one line, not as a traceback)."""


def missing_tools() -> list[str]:
    """The command-line tools the generator needs that are not on PATH."""
    return [t for t in REQUIRED_TOOLS if shutil.which(t) is None]


def require_tools() -> None:
    missing = missing_tools()
    if missing:
        raise MissingTool(f"the synthetic clip set needs {', '.join(missing)} (not found on PATH); "
                          f"install with: {INSTALL_HINT}")


def _run_tool(command: list[str], stdin: bytes | None = None) -> bytes:
    """A tool's stdout; a tool that fails (an incomplete install: a missing espeak-ng voice, a sox
    without its effects) is a MissingTool naming the command and what it printed."""
    done = subprocess.run(command, input=stdin, capture_output=True)
    if done.returncode != 0:
        said = done.stderr.decode(errors="replace").strip().splitlines()
        raise MissingTool(f"{' '.join(command[:3])} ... failed (exit {done.returncode}: "
                          f"{said[-1] if said else 'no message'}); check the install: {INSTALL_HINT}")
    return done.stdout


# --------------------------------------------------------------------------- the plan
@dataclass
class ClipPlan:
    """One clip's planted parts and timing (everything here comes from `seed` only)."""

    split: str
    index: int
    words: list[str]
    starts: list[float]  # word start / end times (s)
    ends: list[float]
    duration: float
    t: int
    a: int
    v: int
    i: int
    text_word: int  # the text cue's word (-1: none)
    audio_word: int  # the pitched word (-1: none)
    event_word: int  # the visual event's word (-1: none)
    event_span: tuple[float, float] | None  # when the deformation starts and stops (s)
    noise: float
    label: float
    oracles: dict[str, float] = field(default_factory=dict)

    @property
    def video_id(self) -> str:
        return f"{self.split}_{self.index:04d}"

    @property
    def clip_id(self) -> str:
        return "1"

    @property
    def id(self) -> str:
        return f"{self.video_id}$_${self.clip_id}"

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass
class NuisancePlan:
    """What must not matter (from `nuisance_seed` only)."""

    face_variant: int
    voice: str
    distractor: tuple[float, float, float]  # centre x, y and side, in the astronaut's coordinates


def plan_clips(config: SyntheticClipsConfig | None = None, speech: _Speech | None = None) -> list[ClipPlan]:
    """Every clip's planted parts, words and word times, in label.csv order (train, valid, test).

    Clip k of a split depends only on (seed, split, k), so growing one split changes no other clip.
    """
    cfg = config or SyntheticClipsConfig()
    speech = speech or _Speech(cfg)
    plans = []
    for code, split in enumerate(SPLITS):
        for k in range(cfg.sizes[split]):
            plans.append(_plan_clip(cfg, np.random.default_rng([cfg.seed, code, k]), split, k, speech))
    return plans


def _plan_clip(cfg: SyntheticClipsConfig, rng: np.random.Generator, split: str, k: int,
               speech: _Speech) -> ClipPlan:
    n = int(rng.integers(cfg.min_words, cfg.max_words + 1))
    t, a, v = (int(x) for x in rng.choice(CUE_VALUES, size=3))
    words = [str(w) for w in rng.choice(NEUTRAL_WORDS, size=n, replace=False)]
    positions = rng.permutation(n)
    text_word = int(positions[0]) if t else -1
    if t:
        words[text_word] = str(rng.choice(POSITIVE_WORDS if t > 0 else NEGATIVE_WORDS))
    audio_word = int(rng.integers(n)) if a else -1
    same = bool(rng.random() < cfg.same_word)
    event_word = -1
    if v:
        if t and same:
            event_word = text_word
        elif t:
            event_word = int(positions[1 + rng.integers(n - 1)])  # any word but the text cue's
        else:
            event_word = int(rng.integers(n))
    i = t if (t and v and event_word == text_word) else 0
    noise = float(rng.normal(0.0, cfg.noise_std))

    # timing: a lead, then each word (its length in the reference voice) and a pause
    sr = cfg.sample_rate
    cursor = int(round(rng.uniform(0.3, 0.5) * sr))
    starts, ends = [], []
    for word in words:
        length = speech.reference_length(word)
        starts.append(cursor / sr)
        ends.append((cursor + length) / sr)
        cursor += length + int(round(rng.uniform(0.08, 0.2) * sr))
    duration = (cursor + int(round(0.4 * sr))) / sr
    span = None
    if v:
        s, e = starts[event_word], ends[event_word]
        span = (s + 0.15 * (e - s), e - 0.15 * (e - s))
    w = cfg.weights
    clean = w["t"] * t + w["a"] * a + w["v"] * v + w["i"] * i
    label = round(float(np.clip(clean + noise, -3, 3)), 4)
    plan = ClipPlan(split, k, words, starts, ends, duration, t, a, v, i, text_word, audio_word, event_word,
                    span, noise, label)
    plan.oracles = oracle_predictions(cfg, t, a, v, i)
    return plan


def oracle_predictions(cfg: SyntheticClipsConfig, t: int, a: int, v: int, i: int) -> dict[str, float]:
    """The reference predictions: E[noiseless label | what each family of models sees], exactly."""
    w = cfg.weights

    def clean(t_: int, a_: int, v_: int, same: bool) -> float:
        return float(
            np.clip(
                w["t"] * t_ + w["a"] * a_ + w["v"] * v_ + w["i"] * (t_ if same and t_ and v_ else 0), -3, 3
            )
        )

    def over_same(t_: int, a_: int, v_: int) -> float:
        if not (t_ and v_):
            return clean(t_, a_, v_, False)
        return cfg.same_word * clean(t_, a_, v_, True) + (1 - cfg.same_word) * clean(t_, a_, v_, False)

    uniform = 1.0 / len(CUE_VALUES)
    return {
        "oracle_full": clean(t, a, v, bool(i)),
        "oracle_no_interaction": over_same(t, a, v),
        "oracle_no_video": sum(uniform * over_same(t, a, v_) for v_ in CUE_VALUES),
        "oracle_video": sum(
            uniform * uniform * over_same(t_, a_, v) for t_ in CUE_VALUES for a_ in CUE_VALUES
        ),
    }


def _nuisance(cfg: SyntheticClipsConfig, split: str, k: int) -> NuisancePlan:
    rng = np.random.default_rng([cfg.nuisance_seed, 101, SPLITS.index(split), k])
    variant = int(rng.integers(cfg.face_variants))
    voice = VOICES[int(rng.integers(len(VOICES)))]
    # beside the face (left or right of the landmarks' box), at cheek-to-jaw height: inside the
    # face crop's square (its side is the box's height x 1.3, wider than the face), off the face
    side = 18.0
    x0, _, x1, _ = FACE_BOX
    x = x0 - 13.0 if rng.random() < 0.5 else x1 + 13.0
    y = float(rng.uniform(128.0, 168.0))
    return NuisancePlan(variant, voice, (x, y, side))


# --------------------------------------------------------------------------- speech
class _Speech:
    """espeak-ng words at fixed lengths: trimmed, time-stretched by sox (pitch kept), cached."""

    def __init__(self, cfg: SyntheticClipsConfig) -> None:
        self.cfg = cfg
        self._trimmed: dict[tuple[str, str, int], np.ndarray] = {}
        self._rendered: dict[tuple[str, str, int], np.ndarray] = {}

    def _espeak(self, word: str, voice: str, pitch: int) -> np.ndarray:
        key = (word, voice, pitch)
        if key not in self._trimmed:
            require_tools()
            raw = _run_tool(["espeak-ng", "-v", voice, "-p", str(pitch), "-s", str(self.cfg.speed),
                             "--stdout", word])
            with wave.open(io.BytesIO(raw)) as handle:
                if handle.getframerate() != SPEECH_RATE:
                    raise MissingTool(f"espeak-ng gave {handle.getframerate()} Hz, expected {SPEECH_RATE}")
                x = np.frombuffer(handle.readframes(handle.getnframes()), dtype=np.int16)
            loud = np.flatnonzero(np.abs(x.astype(np.int32)) > 0.02 * np.abs(x.astype(np.int32)).max())
            if len(loud) == 0:
                raise MissingTool(f"espeak-ng gave silence for {word!r} (voice {voice})")
            self._trimmed[key] = x[loud[0] : loud[-1] + 1].copy()
        return self._trimmed[key]

    def reference_length(self, word: str) -> int:
        """The word's length in samples at the config's rate: the reference voice's, at rest pitch."""
        x = self._espeak(word, REFERENCE_VOICE, REST_PITCH)
        return int(round(len(x) * self.cfg.sample_rate / SPEECH_RATE))

    def render(self, word: str, voice: str, pitch: int) -> np.ndarray:
        """float32 samples, exactly `reference_length(word)` long, RMS `AUDIO_LEVEL`."""
        key = (word, voice, pitch)
        if key not in self._rendered:
            x = self._espeak(word, voice, pitch)
            sr, target = self.cfg.sample_rate, self.reference_length(word)
            ratio = (len(x) / SPEECH_RATE) / (target / sr)  # > 1: speed up
            if abs(ratio - 1.0) < 0.01:
                y = x.astype(np.float64) / 32768
            else:
                buf = io.BytesIO()
                with wave.open(buf, "wb") as handle:
                    handle.setnchannels(1)
                    handle.setsampwidth(2)
                    handle.setframerate(SPEECH_RATE)
                    handle.writeframes(x.tobytes())
                out = _run_tool(
                    [
                        "sox",
                        "-D",
                        "-t",
                        "wav",
                        "-",
                        "-t",
                        "raw",
                        "-e",
                        "floating-point",
                        "-b",
                        "32",
                        "-c",
                        "1",
                        "-r",
                        str(SPEECH_RATE),
                        "-",
                        "tempo",
                        "-s",
                        f"{ratio:.6f}",
                    ],
                    stdin=buf.getvalue(),
                )
                y = np.frombuffer(out, dtype=np.float32).astype(np.float64)
            # the last small change of length (and the rate change) by interpolation
            y = np.interp(np.linspace(0, len(y) - 1, target), np.arange(len(y)), y)
            ramp = min(len(y) // 4, int(0.005 * sr))
            if ramp:
                fade = np.linspace(0.0, 1.0, ramp)
                y[:ramp] *= fade
                y[-ramp:] *= fade[::-1]
            rms = float(np.sqrt(np.mean(y**2))) or 1.0
            y = np.clip(y * (AUDIO_LEVEL / rms), -0.99, 0.99)
            self._rendered[key] = y.astype(np.float32)
        return self._rendered[key]


def clip_audio(plan: ClipPlan, nuisance: NuisancePlan, speech: _Speech) -> np.ndarray:
    sr = speech.cfg.sample_rate
    audio = np.zeros(int(round(plan.duration * sr)), dtype=np.float32)
    for w, (word, start) in enumerate(zip(plan.words, plan.starts)):
        pitch = CUE_PITCH[plan.a] if w == plan.audio_word else REST_PITCH
        x = speech.render(word, nuisance.voice, pitch)
        s = int(round(start * sr))
        audio[s : s + len(x)] = x
    return audio


# --------------------------------------------------------------------------- faces
@dataclass
class _Warp:
    """A local deformation on a window of the frame: source rows = rows - amplitude * dy."""

    rows: slice
    cols: slice
    yy: np.ndarray  # window pixel coordinates
    xx: np.ndarray
    dy: np.ndarray  # displacement at full amplitude (px)
    dark: tuple[float, ...] | None = None  # mouth only: centre x, y, gap offset, semi-axes x, y (at amp 1)


@dataclass
class _Face:
    image: np.ndarray  # frame_size x frame_size x 3 uint8, distractor not drawn
    to_frame: Any  # (x, y) astronaut -> frame
    scale: float
    warps: dict[int, _Warp]


def face_variants(cfg: SyntheticClipsConfig) -> list[_Face]:
    """The astronaut variants (crop position and scale, flip, brightness, contrast) and their warps."""
    from skimage import data
    from skimage.transform import resize

    rng = np.random.default_rng([cfg.nuisance_seed, 202])
    src = data.astronaut().astype(np.float64)
    size = cfg.frame_size
    out = []
    for _ in range(cfg.face_variants):
        side = float(rng.uniform(185.0, 235.0))
        cx = FACE_CENTRE[0] + float(rng.uniform(-25.0, 25.0))
        cy = FACE_CENTRE[1] + float(rng.uniform(-20.0, 20.0))
        flip = bool(rng.random() < 0.5)
        contrast, brightness = float(rng.uniform(0.8, 1.15)), float(rng.uniform(-20.0, 20.0))
        x0 = float(np.clip(cx - side / 2, 0, 512 - side))
        y0 = float(np.clip(cy - side / 2, 0, 512 - side))
        r0, c0 = int(round(y0)), int(round(x0))
        s = int(round(side))
        crop = src[r0 : r0 + s, c0 : c0 + s]
        img = resize(crop, (size, size), order=1, anti_aliasing=True, preserve_range=True)
        if flip:
            img = img[:, ::-1]
        img = np.clip((img - 128.0) * contrast + 128.0 + brightness, 0, 255)
        scale = size / s

        def to_frame(x: float, y: float, c0=c0, r0=r0, scale=scale, flip=flip) -> tuple[float, float]:
            fx, fy = (x - c0 + 0.5) * scale - 0.5, (y - r0 + 0.5) * scale - 0.5
            return (size - 1 - fx if flip else fx), fy

        out.append(_Face(np.round(img).astype(np.uint8), to_frame, scale,
                         {1: _mouth_warp(to_frame, scale, size), -1: _brow_warp(to_frame, scale, size)}))
    return out


def _window(cx: float, cy: float, half_x: float, up: float, down: float, size: int):
    r0, r1 = max(0, int(math.floor(cy - up))), min(size, int(math.ceil(cy + down)) + 1)
    c0, c1 = max(0, int(math.floor(cx - half_x))), min(size, int(math.ceil(cx + half_x)) + 1)
    yy, xx = np.mgrid[r0:r1, c0:c1].astype(np.float64)
    return slice(r0, r1), slice(c0, c1), yy, xx


def _mouth_warp(to_frame, scale: float, size: int) -> _Warp:
    """The lower lip drops (up to 9 astronaut px), the upper lip lifts a little, a dark gap opens."""
    mx, my = to_frame(MOUTH[0], MOUTH[1])
    half = MOUTH[2] * scale
    rows, cols, yy, xx = _window(mx, my, 1.5 * half, 14 * scale, 22 * scale, size)
    across = np.cos(0.5 * np.pi * np.clip((xx - mx) / (1.2 * half), -1, 1)) ** 2
    u = yy - my
    below = np.cos(0.5 * np.pi * np.clip(u / (18 * scale), 0, 1)) ** 2
    above = -0.35 * np.cos(0.5 * np.pi * np.clip(-u / (10 * scale), 0, 1)) ** 2
    amplitude = 9.0 * scale
    dy = amplitude * across * np.where(u >= 0, below, above)
    dark = (mx, my, 0.32 * amplitude, 0.7 * half, 0.5 * amplitude)
    return _Warp(rows, cols, yy, xx, dy, dark)


def _brow_warp(to_frame, scale: float, size: int) -> _Warp:
    """Both brows lift (up to 7 astronaut px), the skin below stretches with them."""
    (ax, ay), (bx, by) = to_frame(*BROWS[0]), to_frame(*BROWS[1])
    cx, cy = 0.5 * (ax + bx), 0.5 * (ay + by)
    rows, cols, yy, xx = _window(cx, cy, 0.5 * abs(bx - ax) + 36 * scale, 24 * scale, 22 * scale, size)
    sx, sy = 12.0 * scale, 7.0 * scale
    bump = sum(np.exp(-0.5 * (((xx - x) / sx) ** 2 + ((yy - y) / sy) ** 2)) for x, y in ((ax, ay), (bx, by)))
    return _Warp(rows, cols, yy, xx, -7.0 * scale * bump)


def draw_distractor(image: np.ndarray, face: _Face, nuisance: NuisancePlan) -> np.ndarray:
    """A static black-and-white checkerboard (6 x 6 squares) beside the face."""
    x, y, side = nuisance.distractor
    fx, fy = face.to_frame(x, y)
    half = max(6, int(round(0.5 * side * face.scale)))
    half -= half % 3  # 6 squares of whole pixels
    r0, c0 = int(round(fy)) - half, int(round(fx)) - half
    n = 2 * half
    square = n // 6
    checks = ((np.arange(n)[:, None] // square + np.arange(n)[None, :] // square) % 2).astype(np.uint8)
    out = image.copy()
    rr, cc = slice(max(0, r0), min(image.shape[0], r0 + n)), slice(max(0, c0), min(image.shape[1], c0 + n))
    patch = (20 + 215 * checks)[rr.start - r0 : rr.stop - r0, cc.start - c0 : cc.stop - c0]
    out[rr, cc] = patch[..., None]
    return out


def render_event_frame(base: np.ndarray, warp: _Warp, amplitude: float) -> np.ndarray:
    """`base` with the warp at `amplitude` in [0, 1] applied to its window only."""
    from scipy.ndimage import map_coordinates

    window = base[warp.rows, warp.cols].astype(np.float64)
    ys = (warp.yy - warp.rows.start) - amplitude * warp.dy
    xs = warp.xx - warp.cols.start
    out = np.stack([map_coordinates(window[..., ch], [ys, xs], order=1, mode="nearest") for ch in range(3)],
                   axis=-1)
    if warp.dark is not None and amplitude > 0:  # the mouth's opening: a dark ellipse growing with it
        mx, my, offset, semi_x, semi_y = warp.dark
        r = ((warp.xx - mx) / semi_x) ** 2 + (
            (warp.yy - (my + amplitude * offset)) / (amplitude * semi_y)
        ) ** 2
        mask = 0.85 * amplitude * np.clip(1.5 - r, 0, 1)
        out = out * (1 - mask[..., None]) + 35.0 * mask[..., None]
    frame = base.copy()
    frame[warp.rows, warp.cols] = np.clip(np.round(out), 0, 255).astype(np.uint8)
    return frame


def envelope(plan: ClipPlan, times: np.ndarray) -> np.ndarray:
    """The deformation's amplitude at `times`: 0 outside the event span, ramps of <= 0.1 s, 1 between."""
    if plan.event_span is None:
        return np.zeros(len(times))
    t0, t1 = plan.event_span
    ramp = min(0.1, (t1 - t0) / 3)
    return np.clip(np.minimum(times - t0, t1 - times) / ramp, 0.0, 1.0)


# --------------------------------------------------------------------------- writing
def default_root(
    config: SyntheticClipsConfig | None = None, cache: str | os.PathLike[str] | None = None
) -> Path:
    """<emofuse cache>/synthetic_clips/<hash of the config, GENERATOR_VERSION and espeak-ng's version>."""
    from emofuse.data.raw import store_key

    cfg = config or SyntheticClipsConfig()
    key = store_key(**dataclasses.asdict(cfg), version=GENERATOR_VERSION, espeak=_espeak_version())
    return resolve_cache_dir(cache) / "synthetic_clips" / key


def _espeak_version() -> str:
    if shutil.which("espeak-ng") is None:
        return "missing"
    out = subprocess.run(["espeak-ng", "--version"], capture_output=True, text=True).stdout
    return out.split("Data at")[0].strip()


def is_complete(folder: str | os.PathLike[str]) -> bool:
    return (Path(folder) / MARKER).is_file()


def make_synthetic_clips(
    config: SyntheticClipsConfig | None = None,
    root: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> Path:
    """Write the clip set (once per config) and return its folder (label.csv, Raw/, planted.json).

    root: the folder to write (default `default_root(config)`). A complete folder is returned as
    it is; an incomplete one (a killed run) is completed, reusing the clips already written.
    Raises MissingTool when espeak-ng, sox or ffmpeg is missing, and OutputError (a ValueError)
    when `root` holds a set made with another config.
    """
    cfg = config or SyntheticClipsConfig()
    folder = Path(root) if root is not None else default_root(cfg)
    wanted = {"config": dataclasses.asdict(cfg), "generator_version": GENERATOR_VERSION}
    config_file = folder / "config.json"
    if config_file.is_file():
        found = json.loads(config_file.read_text())
        if found != wanted:
            raise OutputError(f"{folder} holds a synthetic clip set made with another config "
                              f"({found}); give another root or remove that folder")
        if is_complete(folder):
            return folder
    require_tools()
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(config_file, json.dumps(wanted, indent=1, sort_keys=True) + "\n")

    speech = _Speech(cfg)
    plans = plan_clips(cfg, speech)
    faces = face_variants(cfg)
    from tqdm.auto import tqdm

    records: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="emofuse-clips-") as tmp:
        for plan in tqdm(plans, desc="synthetic clips", unit="clip", disable=not progress):
            nuisance = _nuisance(cfg, plan.split, plan.index)
            path = folder / "Raw" / plan.video_id / f"{plan.clip_id}.mp4"
            n_frames = int(math.ceil(plan.duration * cfg.fps - 1e-9))
            if not path.is_file():
                write_clip(path, plan, nuisance, faces[nuisance.face_variant], speech, cfg, Path(tmp))
            records[plan.id] = _record(plan, nuisance, n_frames, cfg)

    rows = [(p.video_id, p.clip_id, p.text, f"{p.label:.4f}", _annotation(p.label), p.split) for p in plans]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["video_id", "clip_id", "text", "label", "annotation", "mode"])
    writer.writerows(rows)
    atomic_write_text(folder / "label.csv", buf.getvalue())
    planted = {
        "generator_version": GENERATOR_VERSION,
        "config": dataclasses.asdict(cfg),
        "weights": cfg.weights,
        "formula": "y = clip(w_t t + w_a a + w_v v + w_i i + noise, -3, 3); i = t if the visual event "
                   "is in the text cue's word else 0; label rounded to 4 decimals",
        "clips": records,
    }
    atomic_write_text(folder / "planted.json", json.dumps(planted, indent=1, sort_keys=True) + "\n")
    atomic_write_text(folder / MARKER, json.dumps({"clips": len(plans)}) + "\n")  # last: the set is complete
    return folder


def _annotation(label: float) -> str:
    return "Positive" if label > 0 else "Negative" if label < 0 else "Neutral"


def _record(
    plan: ClipPlan, nuisance: NuisancePlan, n_frames: int, cfg: SyntheticClipsConfig
) -> dict[str, Any]:
    return {
        "split": plan.split, "words": plan.words, "starts": plan.starts, "ends": plan.ends,
        "duration": plan.duration, "frames": n_frames,
        "t": plan.t, "a": plan.a, "v": plan.v, "i": plan.i,
        "text_word": plan.text_word, "audio_word": plan.audio_word, "event_word": plan.event_word,
        "event": EVENT_KINDS[plan.v], "event_span": list(plan.event_span) if plan.event_span else None,
        "noise": plan.noise, "label": plan.label, **plan.oracles,
        "nuisance": dataclasses.asdict(nuisance),
    }


def write_clip(path: Path, plan: ClipPlan, nuisance: NuisancePlan, face: _Face, speech: _Speech,
               cfg: SyntheticClipsConfig, tmp: Path) -> None:
    """Render one clip and encode it with one ffmpeg call (raw frames on a pipe); atomic."""
    audio = clip_audio(plan, nuisance, speech)
    base = draw_distractor(face.image, face, nuisance)
    n_frames = int(math.ceil(plan.duration * cfg.fps - 1e-9))
    amplitude = envelope(plan, (np.arange(n_frames) + 0.5) / cfg.fps)
    still = base.tobytes()
    frames = [still if amp <= 0 else render_event_frame(base, face.warps[plan.v], float(amp)).tobytes()
              for amp in amplitude]
    wav = tmp / f"{plan.video_id}.wav"
    with wave.open(str(wav), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(cfg.sample_rate)
        handle.writeframes((np.clip(audio, -1, 1) * 32767).round().astype(np.int16).tobytes())
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.stem}.*.part.mp4"):  # left by a killed run
        with contextlib.suppress(OSError):
            if time.time() - stale.stat().st_mtime > STALE_PART_SECONDS:
                stale.unlink()
    size = cfg.frame_size
    cmd = ["ffmpeg", "-y", "-nostats", "-loglevel", "error", "-threads", "1",
           "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{size}x{size}", "-r", str(cfg.fps), "-i", "pipe:0",
           "-i", str(wav), "-map", "0:v", "-map", "1:a",
           "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p", "-threads", "1",
           "-c:a", "aac", "-aac_coder", "fast", "-b:a", "64k",
           "-map_metadata", "-1", "-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]
    try:
        # the part file is `.<name>.<random>.part.mp4` (ffmpeg picks the container from the name)
        with atomic_path(path, suffix=".part.mp4") as part, tempfile.TemporaryFile(dir=tmp) as log:
            # one large write per frame (subprocess.run's input= writes 512 bytes at a time: slow)
            proc = subprocess.Popen(
                [*cmd, str(part)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=log
            )
            assert proc.stdin is not None
            try:
                for frame in frames:
                    proc.stdin.write(frame)
            except BrokenPipeError:
                pass  # ffmpeg stopped early: its exit status and log say why
            finally:
                proc.stdin.close()
            if proc.wait() != 0:
                log.seek(0)
                raise UserError(f"ffmpeg failed on {path}: {log.read().decode(errors='replace').strip()}")
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(wav)


# --------------------------------------------------------------------------- reading back
def read_planted(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """planted.json of a complete set."""
    folder = Path(folder)
    if not is_complete(folder):
        raise InputNotFound(folder, f"{folder} is no complete synthetic clip set (no {MARKER} marker); "
                                    "run make_synthetic_clips first")
    return json.loads((folder / "planted.json").read_text())


def planted_extras(folder: str | os.PathLike[str], clip_ids: list[str]) -> dict[str, np.ndarray]:
    """Per clip id (`video_id$_$clip_id`), in the order given: the planted parts 'T', 'A', 'V', 'I'
    (float32, as `emofuse.data.synthetic` names them), the reference predictions `ORACLES`
    (float32), and the cue positions 'text_word', 'audio_word', 'event_word' (int64, -1: none)."""
    from emofuse.data.dataset import DataFormatError

    clips = read_planted(folder)["clips"]
    missing = [c for c in clip_ids if c not in clips]
    if missing:
        raise DataFormatError(
            f"{len(missing)} clip id(s) are not in {folder}/planted.json, e.g. {missing[:3]}"
        )
    rows = [clips[c] for c in clip_ids]
    out = {name.upper(): np.array([r[name] for r in rows], dtype=np.float32) for name in "tavi"}
    out.update({name: np.array([r[name] for r in rows], dtype=np.float32) for name in ORACLES})
    out.update({name: np.array([r[name] for r in rows], dtype=np.int64)
                for name in ("text_word", "audio_word", "event_word")})
    return out


def ceilings(folder: str | os.PathLike[str], split: str) -> dict[str, dict[str, float]]:
    """The metrics each reference prediction reaches against the (noisy) labels of `split`:
    {oracle name: `emofuse.metrics.regression.regression_metrics` (acc2_has0, acc2_non0, f1s,
    acc3/5/7, mae, corr, ...)}."""
    from emofuse.data.dataset import DataFormatError
    from emofuse.metrics.regression import regression_metrics

    if split not in SPLITS:
        raise OptionError(f"split must be one of {SPLITS}, got {split!r}")
    clips = read_planted(folder)["clips"]
    ids = [c for c, r in clips.items() if r["split"] == split]
    if not ids:
        raise DataFormatError(f"{folder} has no {split} clips")
    labels = np.array([clips[c]["label"] for c in ids])
    return {name: regression_metrics(np.array([clips[c][name] for c in ids]), labels) for name in ORACLES}

"""One clip from file to features: `extract_clip(path, transcript) -> ClipFeatures`.

The stages run in order (decode, words, audio streams, face, text vectors), each through its
registered extractor (`emofuse.features.registry`), then everything is aligned to the words.
Each stage's output is cached on disk under a key of (clip sha256, extractor, version, config,
stage inputs), written atomically, so an interrupted run loses at most the stage in progress.

A clip that cannot give features raises one `ClipError` subclass whose message names the file
and the problem: MissingFile, UnreadableMedia, NoAudioTrack, NoVideoTrack, TooShort, NoSpeech,
NoFace.
"""

from __future__ import annotations

import dataclasses
import os
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.configs import option
from emofuse.errors import OptionError
from emofuse.features.align import (
    Stream,
    average_over_words,
    cut_columns_per_word,
    cut_frames_per_word,
    resample_stream,
    words_with_valid_frames,
)
from emofuse.features.face import FaceTrack
from emofuse.features.registry import (
    NoAudioTrack,
    NoFace,
    NoSpeech,
    NoVideoTrack,
    TooShort,
    create_extractor,
)
from emofuse.features.speech import Words
from emofuse.files import atomic_path, sha256_file

AUDIO_PICKLE_STREAMS = ("egemaps", "librosa")


@dataclass(frozen=True)
class ExtractConfig:
    """Everything that decides a clip's features (saved with every output, part of cache keys).

    words: 'auto' (align the transcript when given, else recognise), 'whisper' or 'pocketsphinx'.
    audio: the audio extractors whose streams form the pickle's audio vector, in order.
    min_face_fraction: fewer frames with a face than this fraction is a NoFace failure. 0 (the
        default) refuses only a clip where no frame has a face: a turned head or a cut-away
        leaves the words with a face their vision input, and the others are marked missing
        (`ClipFeatures.vision_missing`), as `emofuse robustness` removes a modality.
    silence_db: a clip whose loudest 10 ms frame is quieter (dB full scale) has no speech. -60 keeps
        RAVDESS's quietest takes (loudest 10 ms at -53.9 dBFS over all 1440; -50 refused 3 of 720)
        and still refuses digital silence (-200) and a quiet room (RAVDESS's noise floor is below
        -73 dBFS); speech recognition finding no words is the second check behind it.
    require_video: False for audio-only input (a wav with a transcript gives T+A).
    video: False skips the video stream altogether (not decoded, no face stage, no vision features),
        for wavs or for videos whose face is not wanted; implies require_video=False.
    text: False skips the word-vector stage (no text features; words are still found, for the
        alignment): the text model is then never loaded.
    """

    decoder: str = option("pyav", cli=False)
    words: str = option("auto", "auto (align label.csv text, else recognise), whisper or pocketsphinx")
    audio: tuple[str, ...] = option(AUDIO_PICKLE_STREAMS, cli=False)
    face: str = option("mediapipe", cli=False)
    text_model: str = option("minilm", "word features: minilm, mpnet, a HF model name or a local folder")
    fps: float = option(25.0, "video frames per second analysed")
    face_fps: float = option(8.0, "face landmarker runs per second of video; the frames between are "
                             "interpolated, and detected where a face appears or leaves (0: every frame)")
    max_side: int = option(480, cli=False)
    max_words: int = option(50, "words kept per clip")
    min_duration: float = option(0.5, cli=False)
    min_face_fraction: float = option(0.0, "fewer frames with a face fail the clip (no_face); 0: only a clip "
                                      "with no face at all fails, and the words without one have their "
                                      "vision marked missing")
    silence_db: float = option(-60.0, "a clip whose loudest 10 ms is quieter (dBFS) fails as no_speech")
    landmarks: bool = option(False, "add the 478 normalised landmarks to the vision features")
    require_video: bool = option(True, cli=False)
    video: bool = option(True, cli=False)
    text: bool = option(True, cli=False)
    whisper_beam_size: int = option(5, cli=False)
    unaligned_audio_rate: float = option(25.0, cli=False)
    crop_frames: int = option(16, "face-crop frames per word in the raw store")
    crop_size: int = option(64, "face-crop side in pixels")
    n_mels: int = option(64, "mel bands of the log-mel map")
    # 400 with n_mels=80 is Whisper's own input (--audio-encoder whisper_base)
    n_fft: int = option(512, "FFT size of the log-mel map (Whisper's own input: --n-mels 80 --n-fft 400)")
    logmel_frames: int = option(32, "log-mel columns per word in the raw store")

    def __post_init__(self) -> None:
        object.__setattr__(self, "audio", tuple(self.audio))
        if not self.audio:
            raise OptionError("at least one audio extractor is needed")
        for name in ("fps", "max_words", "min_duration", "crop_frames", "crop_size", "n_mels", "n_fft",
                     "logmel_frames", "unaligned_audio_rate", "max_side"):
            if getattr(self, name) <= 0:
                raise OptionError(f"{name} must be positive, got {getattr(self, name)}")
        if self.face_fps < 0:
            raise OptionError(f"face_fps must be 0 (every frame) or positive, got {self.face_fps}")
        if not 0.0 <= self.min_face_fraction <= 1.0:
            raise OptionError(f"min_face_fraction must lie in [0, 1], got {self.min_face_fraction}")
        if not -200.0 <= self.silence_db <= 0.0:
            raise OptionError(f"silence_db is a level in dB full scale, in [-200, 0]; got {self.silence_db}")
        if not self.video:
            object.__setattr__(self, "require_video", False)

    @property
    def modalities(self) -> tuple[str, ...]:
        """The feature sets this config can give ('vision' only when a clip has a video track)."""
        return (("text",) if self.text else ()) + ("audio",) + (("vision",) if self.video else ())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def raw_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-word item shapes of the raw inputs: face-crop stacks and log-mel patches."""
        return {
            "vision": (self.crop_frames, self.crop_size, self.crop_size),
            "audio": (self.n_mels, self.logmel_frames),
        }


@dataclass
class ClipFeatures:
    """A clip's features: words, frame-rate streams, and everything aligned to the words.

    aligned: 'text' / 'audio' / 'vision' -> W x D float32, one row per word (W <= max_words).
    unaligned: 'audio' (frames at unaligned_audio_rate) / 'vision' (video frames) -> T x D.
    word_crops: W x crop_frames x S x S uint8 grey face crops (None without video).
    word_logmel: W x n_mels x logmel_frames float16 log-mel patches (dB, `emofuse.audio_frontend`).
    vision_missing: W bools, the words whose span holds no frame with a face (their vision
        features and crops are zero; None without video).
    timings: seconds spent in each stage (cache hits count as the read time).
    """

    path: str
    duration: float
    words: Words
    streams: dict[str, Stream]
    aligned: dict[str, np.ndarray]
    unaligned: dict[str, np.ndarray]
    word_crops: np.ndarray | None
    word_logmel: np.ndarray
    face_fraction: float | None
    columns: dict[str, list[str]]
    timings: dict[str, float] = field(default_factory=dict)
    face: FaceTrack | None = None
    vision_missing: np.ndarray | None = None

    @property
    def raw_text(self) -> str:
        return self.words.text

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(self.aligned)

    def record(self) -> dict[str, Any]:
        """The per-clip arrays an MMSA pickle row is built from (unpadded; see extract.py)."""
        return {
            "raw_text": self.raw_text,
            "aligned": dict(self.aligned),
            "unaligned": dict(self.unaligned),
            "words": list(self.words.words),
            "starts": self.words.starts.copy(),
            "ends": self.words.ends.copy(),
            "word_source": self.words.source,
            "face_fraction": self.face_fraction,
            **({"vision_missing": self.vision_missing.copy()} if self.vision_missing is not None else {}),
        }


# --------------------------------------------------------------------------- stage cache
class StageCache:
    """npz files under root/<key[:2]>/<key>.npz; an unreadable entry is recomputed, never trusted."""

    def __init__(self, root: str | os.PathLike[str] | None) -> None:
        self.root = Path(root) if root is not None else None

    def _path(self, key: str) -> Path:
        assert self.root is not None
        return self.root / key[:2] / f"{key}.npz"

    def load(self, key: str) -> dict[str, np.ndarray] | None:
        if self.root is None:
            return None
        path = self._path(key)
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                return {k: data[k] for k in data.files}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            return None

    def save(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        if self.root is None:
            return
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # atomic: a kill -9 leaves either nothing or the whole entry
        with atomic_path(path) as tmp, open(tmp, "wb") as handle:
            np.savez(handle, **arrays)


def _words_arrays(w: Words) -> dict[str, np.ndarray]:
    return {"words": np.array(w.words, dtype=str), "starts": w.starts, "ends": w.ends,
            "source": np.array(w.source)}


def _arrays_words(a: dict[str, np.ndarray]) -> Words:
    return Words([str(x) for x in a["words"].tolist()], a["starts"], a["ends"], str(a["source"]))


def _stream_arrays(s: Stream) -> dict[str, np.ndarray]:
    out = {"values": s.values, "times": s.times, "columns": np.array(s.columns, dtype=str),
           "name": np.array(s.name)}
    if s.valid is not None:
        out["valid"] = s.valid
    return out


def _arrays_stream(a: dict[str, np.ndarray]) -> Stream:
    return Stream(str(a["name"]), a["values"], a["times"], [str(c) for c in a["columns"].tolist()],
                  a.get("valid"))


def _track_arrays(t: FaceTrack) -> dict[str, np.ndarray]:
    out = {f.name: getattr(t, f.name) for f in dataclasses.fields(t) if f.name != "blendshape_names"}
    out["blendshape_names"] = np.array(t.blendshape_names, dtype=str)
    return out


def _arrays_track(a: dict[str, np.ndarray]) -> FaceTrack:
    names = [str(c) for c in a["blendshape_names"].tolist()]
    return FaceTrack(a["times"], a["present"], a["landmarks"], a["blendshapes"], a["pose"], a["crops"], names)


class WithoutVideo:
    """A decoder that drops the video stream: no face stage (nor a face) for audio-only features.

    Its cache key is the inner decoder's: the audio is decoded the same, so stage results cached
    with video (words, audio streams) are reused without it.
    """

    def __init__(self, decoder: Any) -> None:
        self.inner = decoder
        self.name, self.stage, self.version = decoder.name, decoder.stage, decoder.version

    def cache_key(self, clip_hash: str, inputs: Any = None) -> str:
        return self.inner.cache_key(clip_hash, inputs)

    def __call__(self, path: str | os.PathLike[str]) -> Any:
        clip = self.inner(path, video=False)  # frames not decoded; the duration still counts them
        return dataclasses.replace(clip, frames=None, frame_times=np.zeros(0))


# --------------------------------------------------------------------------- the pipeline
class ClipExtractor:
    """Holds the loaded extractors (models load once) and turns clips into `ClipFeatures`.

    cache_dir: where stage results are cached (None: no cache).
    Models load on first use; `load()` loads them all up front, so the first clip's stage times
    are its own work and the loading is counted apart (`load_seconds`).
    """

    def __init__(self, config: ExtractConfig | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> None:
        self.config = config or ExtractConfig()
        cfg = self.config
        self.cache = StageCache(cache_dir)
        self.cache_dir = cache_dir
        self.decoder = create_extractor(cfg.decoder, "decode", fps=cfg.fps, max_side=cfg.max_side)
        if not cfg.video:
            self.decoder = WithoutVideo(self.decoder)
        self.words = self._words_extractor(cfg)
        self.audio = [create_extractor(name, "audio") for name in cfg.audio]
        self.logmel = create_extractor("logmel", "audio", n_mels=cfg.n_mels, n_fft=cfg.n_fft)
        self.face = (create_extractor(cfg.face, "face", crop_size=cfg.crop_size, detect_fps=cfg.face_fps)
                     if cfg.video else None)
        self._embedder = None
        # model -> seconds `load()` took for it ('words:whisper', 'audio:librosa', 'text:minilm', ...)
        self.load_seconds: dict[str, float] = {}

    def load(self, recognise: bool = True) -> dict[str, float]:
        """Load every model the config needs, once; returns (and keeps) the seconds per model.

        recognise: whether a clip may need speech recognition. For 'auto' words, False (every clip
            has a transcript) loads only the aligner; whisper would still load on first use.
        The words' models (faster-whisper, pocketsphinx), the audio streams (each run once on half a
        second of quiet noise: opensmile's setup, librosa's import and numba compilation), the face
        landmarker (created and closed: the face extractor makes one per clip; this loads mediapipe
        and its model file) and the text embedder (with cfg.text; one short text through it).
        Nothing here touches the stage cache or changes what `extract` gives. A model loaded
        already is not loaded again; `extract` works without this (each model loads on first use).
        """
        for name, step in self._load_steps(recognise):
            if name not in self.load_seconds:
                started = time.perf_counter()
                step()
                self.load_seconds[name] = time.perf_counter() - started
        return dict(self.load_seconds)

    def _load_steps(self, recognise: bool) -> list[tuple[str, Callable[[], object]]]:
        """(model name, loader) for every model the config needs, in stage order."""
        from emofuse.features.speech import AutoWords

        words = [self.words]
        if isinstance(self.words, AutoWords):
            words = [self.words.aligner, *([self.words.asr] if recognise else [])]
        steps: list[tuple[str, Callable[[], object]]] = [
            (f"words:{w.name}", lambda w=w: _load_words_model(w)) for w in words]
        noise = (0.01 * np.random.default_rng(0).standard_normal(_WARM_UP_RATE // 2)).astype(np.float32)
        steps += [(f"audio:{e.name}", lambda e=e: e(noise, _WARM_UP_RATE))
                  for e in [*self.audio, self.logmel]]
        if self.face is not None:
            steps.append((f"face:{self.face.name}", lambda: _load_face_model(self.face)))
        if self.config.text:
            steps.append((f"text:{self.config.text_model}", lambda: self.embedder.embed(["warm up"])))
        return steps

    @staticmethod
    def _words_extractor(cfg: ExtractConfig):  # an Extractor of stage 'words'
        from emofuse.features.speech import AutoWords, WhisperWords

        if cfg.words == "auto":
            return AutoWords(AutoWords.Config(asr=WhisperWords.Config(beam_size=cfg.whisper_beam_size)))
        if cfg.words == "whisper":
            return WhisperWords(WhisperWords.Config(beam_size=cfg.whisper_beam_size))
        return create_extractor(cfg.words, "words")

    @property
    def embedder(self):  # emofuse.features.text.WordEmbedder, loaded on first use
        if self._embedder is None:
            from emofuse.features.text import WordEmbedder

            self._embedder = WordEmbedder(self.config.text_model, max_words=self.config.max_words)
        return self._embedder

    def _stage(self, extractor, clip_hash: str, inputs: Any, compute, to_arrays, from_arrays):
        key = extractor.cache_key(clip_hash, inputs)
        cached = self.cache.load(key)
        if cached is not None:
            try:
                return from_arrays(cached)
            except (KeyError, ValueError):
                pass  # an entry of an older layout: recompute
        result = compute()
        self.cache.save(key, to_arrays(result))
        return result

    def extract(self, path: str | os.PathLike[str], transcript: str | None = None) -> ClipFeatures:
        """All stages for one clip; raises a ClipError naming the file and the problem."""
        cfg = self.config
        timings: dict[str, float] = {}
        tick = time.perf_counter()

        def lap(stage: str) -> None:
            nonlocal tick
            now = time.perf_counter()
            timings[stage] = timings.get(stage, 0.0) + now - tick
            tick = now

        path = str(path)
        clip = self.decoder(path)
        lap("decode")
        if clip.duration < cfg.min_duration:
            raise TooShort(path, f"{clip.duration:.2f} s long, shorter than the {cfg.min_duration} s minimum")
        if not clip.has_audio:
            raise NoAudioTrack(path, "the file has no audio stream (or no decodable audio)")
        if cfg.require_video and not clip.has_video:
            raise NoVideoTrack(path, "the file has no video stream (or no decodable frame)")
        loudest = _loudest_db(clip.audio, clip.sample_rate)
        if loudest < cfg.silence_db:
            raise NoSpeech(path, f"the audio is silent (loudest 10 ms at {loudest:.0f} dBFS, "
                                 f"threshold {cfg.silence_db:.0f})")
        # stage inputs name the decoding too: the same file decoded differently is another input
        clip_hash = sha256_file(path) + ":" + self.decoder.cache_key("", None)
        lap("decode")

        text = transcript if transcript is not None and transcript.strip() else None
        words = self._stage(self.words, clip_hash, {"transcript": text},
                            lambda: self.words(clip.audio, clip.sample_rate, text),
                            _words_arrays, _arrays_words)
        lap("words")
        if len(words) == 0:
            raise NoSpeech(path, "speech recognition found no words")

        streams: dict[str, Stream] = {}
        for extractor in [*self.audio, self.logmel]:
            streams[extractor.name] = self._stage(
                extractor, clip_hash, None, lambda e=extractor: e(clip.audio, clip.sample_rate),
                _stream_arrays, _arrays_stream)
            lap(f"audio:{extractor.name}")

        track: FaceTrack | None = None
        if clip.has_video and self.face is not None:
            track = self._stage(self.face, clip_hash, None,
                                lambda: self.face(clip.frames, clip.frame_times, clip.fps),
                                _track_arrays, _arrays_track)
            lap("face")
            found = int(track.present.sum())
            if found == 0:
                raise NoFace(path, f"no face was found in any of its {len(track.present)} frames")
            if track.face_fraction < cfg.min_face_fraction:
                raise NoFace(path, f"a face was found in {found} of {len(track.present)} frames "
                                   f"(minimum {cfg.min_face_fraction:.0%})")
            for s in track.streams(cfg.landmarks):
                streams[s.name] = s
            streams["face_present"] = Stream("face_present", track.present.astype(np.float32),
                                             track.times, ["face_present"])

        text_vectors: np.ndarray | None = None
        if cfg.text:
            text_vectors = self._text_vectors(words)
            lap("text")
            n_words = len(text_vectors)
        else:  # the embedder keeps one vector per word, up to max_words: the same words are kept
            n_words = min(len(words), cfg.max_words)
        kept = Words(words.words[:n_words], words.starts[:n_words], words.ends[:n_words], words.source)
        aligned, unaligned, columns = self._assemble(kept, streams, text_vectors, clip.duration,
                                                     track is not None)
        crops = vision_missing = None
        if track is not None:
            crops = cut_frames_per_word(track.crops, track.times, kept.starts, kept.ends,
                                        cfg.crop_frames, track.present)
            vision_missing = ~words_with_valid_frames(track.times, track.present, kept.starts, kept.ends)
            # a word without a face gets nothing rather than a neighbour's face
            crops[vision_missing] = 0
            aligned["vision"][vision_missing] = 0.0
        logmel = streams["logmel"]
        word_logmel = cut_columns_per_word(logmel.values.astype(np.float16), logmel.times, kept.starts,
                                           kept.ends, cfg.logmel_frames)
        lap("align")
        return ClipFeatures(path, clip.duration, kept, streams, aligned, unaligned, crops, word_logmel,
                            None if track is None else track.face_fraction, columns, timings, track,
                            vision_missing)

    def _text_vectors(self, words: Words) -> np.ndarray:
        from emofuse.features.text import embed_cached

        text = [words.text]
        if self.cache_dir is not None:
            features, lengths = embed_cached(text, self.config.text_model, self.config.max_words,
                                             self.cache_dir, embedder=self.embedder)
        else:
            features, lengths = self.embedder.embed(text)
        return features[0, : int(lengths[0])]

    def _assemble(self, words: Words, streams: dict[str, Stream], text_vectors: np.ndarray | None,
                  duration: float, has_face: bool):
        cfg = self.config
        audio_streams = [streams[name] for name in cfg.audio]
        columns: dict[str, list[str]] = {}
        aligned: dict[str, np.ndarray] = {}
        unaligned: dict[str, np.ndarray] = {}
        if text_vectors is not None:
            columns["text"] = [f"t{i}" for i in range(text_vectors.shape[1])]
            aligned["text"] = unaligned["text"] = text_vectors.astype(np.float32)
        columns["audio"] = [f"{s.name}:{c}" for s in audio_streams for c in s.columns]
        aligned["audio"] = np.concatenate([average_over_words(s, words.starts, words.ends)
                                           for s in audio_streams], axis=1)
        unaligned["audio"] = np.concatenate(
            [resample_stream(s, cfg.unaligned_audio_rate, duration).values for s in audio_streams], axis=1)
        if has_face:
            names = ["blendshapes", "pose"] + (["landmarks"] if cfg.landmarks else []) + ["face_present"]
            vision_streams = [streams[n] for n in names]
            columns["vision"] = [f"{s.name}:{c}" for s in vision_streams for c in s.columns]
            aligned["vision"] = np.concatenate([average_over_words(s, words.starts, words.ends)
                                                for s in vision_streams], axis=1)
            unaligned["vision"] = np.concatenate([s.values for s in vision_streams], axis=1)
        return aligned, unaligned, columns

    def close(self) -> None:
        close = getattr(self.face, "close", None) if self.face is not None else None
        if close is not None:
            close()

    def __enter__(self) -> ClipExtractor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_WARM_UP_RATE = 16000  # the decoder's sample rate: what every audio extractor is given


def _load_words_model(extractor: Any) -> None:
    """A words extractor's model: its own lazy loader, or for pocketsphinx (a fresh decoder per
    clip, by design) the import of its library."""
    from emofuse.features.media_models import require_module
    from emofuse.features.speech import PocketsphinxAligner

    if isinstance(extractor, PocketsphinxAligner):
        require_module("pocketsphinx", "pocketsphinx==5.1.1")
        import pocketsphinx  # noqa: F401
    elif callable(getattr(extractor, "_load", None)):
        extractor._load()


def _load_face_model(extractor: Any) -> None:
    """The face extractor's model: loaded by its own lazy loader, and closed again when the
    extractor makes one per clip (mediapipe: it keeps the library and the model file warm)."""
    from emofuse.features.media_models import quiet_native_stderr

    loader = getattr(extractor, "_load", None)
    if not callable(loader):
        return
    with quiet_native_stderr():  # mediapipe's C++ logs on every landmarker it creates
        loader()
        close = getattr(extractor, "close", None)
        if callable(close):
            close()


def _loudest_db(audio: np.ndarray, sample_rate: int) -> float:
    hop = max(1, sample_rate // 100)
    n = len(audio) // hop
    if n == 0:
        return float(20 * np.log10(np.sqrt(np.mean(np.square(audio, dtype=np.float64))) + 1e-10))
    rms = np.sqrt(np.mean(np.square(audio[: n * hop].reshape(n, hop), dtype=np.float64), axis=1))
    return float(20 * np.log10(rms.max() + 1e-10))


def extract_clip(path: str | os.PathLike[str], transcript: str | None = None,
                 config: ExtractConfig | None = None,
                 cache_dir: str | os.PathLike[str] | None = None) -> ClipFeatures:
    """Extract one clip (models load for this call; keep a `ClipExtractor` for many clips)."""
    extractor = ClipExtractor(config, cache_dir)
    try:
        return extractor.extract(path, transcript)
    finally:
        extractor.close()

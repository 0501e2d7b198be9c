"""RAVDESS speech (Livingstone & Russo 2018) as an emofuse dataset: 8 emotions, split by actor.

The folder holds Actor_01 … Actor_24, each with files named 03-01-EE-II-SS-RR-AA.wav:
modality (03 audio-only), vocal channel (01 speech), EE emotion (01 neutral, 02 calm, 03 happy,
04 sad, 05 angry, 06 fearful, 07 disgust, 08 surprised), II intensity, SS statement (01 "Kids are
talking by the door", 02 "Dogs are sitting by the door"), RR repetition, AA actor. The label comes
from EE; the split is by actor (train 1-16, valid 17-20, test 21-24), so no voice is in two splits.

Each clip becomes raw audio for `spectro_cnn`: the wav is decoded, resampled to 16 kHz mono,
trimmed of leading and trailing silence, and cut into fixed windows (0.5 s by default) that take
the place of words, since RAVDESS has no word times; each window's log-mel patch is one "word".
Patches are computed once per config into the emofuse cache (one .npy per clip) and read lazily.
The dataset is CC BY-NC-SA: it is read from where the user keeps it, never bundled.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from emofuse.audio_frontend import SAMPLE_RATE, LogMelConfig, log_mel_db
from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.raw import RAW_DTYPES, LazyRawArray, store_key, write_clip
from emofuse.data.sources import SourceRequest, data_config, register_source
from emofuse.errors import OptionError
from emofuse.runtime import resolve_cache_dir

EMOTIONS = ["neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised"]
STATEMENTS = {1: "kids are talking by the door", 2: "dogs are sitting by the door"}
ACTOR_SPLITS = {"train": range(1, 17), "valid": range(17, 21), "test": range(21, 25)}
FILENAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.wav$")
SPEAKER_NORMS = ("none", "mean", "meanvar")
# where "meanvar" puts a standardised band: spectro_cnn's level map (audio_cnn.LEVEL_*) undoes it
NORMALISED_CENTER_DB, NORMALISED_SCALE_DB = -50.0, 20.0
# name -> (16 kHz audio of a clip, top_db -> rows x dim float32, version of what it computes); the
# features layer fills it (emofuse.features.speech_embeddings), since the encoders live there
CLIP_EMBEDDERS: dict[str, tuple[Callable[[np.ndarray, float], np.ndarray], int]] = {}


@dataclass
class RavdessConfig:
    window: float = 0.5  # seconds per "word" window
    max_windows: int = 12
    n_mels: int = 64  # 80 with n_fft=400 is Whisper's own input (whisper_base)
    n_fft: int = 512
    hop_ms: float = 10.0
    win_ms: float = 25.0
    top_db: float = 40.0  # silence trimming: frames this far below the peak are silence
    # speaker normalisation, from the unlabelled audio of every actor (test actors included):
    # "mean" removes each actor's spectral envelope (the per-band mean of all their speech, less
    # its overall level, so loudness stays); "meanvar" standardises each band per actor (mean and
    # spread), then puts it back on the dB scale the encoders expect (-50 +- 20 dB);
    # "none": the patches as computed
    speaker_norm: str = "none"
    # "none": log-mel windows for a raw audio encoder (spectro_cnn, whisper_base); a name in
    # CLIP_EMBEDDERS (e.g. "whisper_base"): each clip becomes the rows of a frozen pretrained
    # encoder's embedding (one row per layer), standardised per actor by speaker_norm, for a head
    # such as `pooled -o pool=weighted`; n_mels, n_fft and the windows then do not apply
    embeddings: str = "none"

    def __post_init__(self) -> None:
        if self.speaker_norm not in SPEAKER_NORMS:
            raise OptionError(
                f"speaker_norm must be one of {', '.join(SPEAKER_NORMS)}, not {self.speaker_norm!r}"
            )


def is_ravdess_dir(path: Path) -> bool:
    """A RAVDESS folder: Actor_NN subfolders (directly or under RavdessDataSet/)."""
    return ravdess_root(path) is not None


def ravdess_root(path: Path) -> Path | None:
    for candidate in (path, path / "RavdessDataSet"):
        if candidate.is_dir() and any(candidate.glob("Actor_[0-9][0-9]")):
            return candidate
    return None


def parse_name(path: Path) -> dict[str, int]:
    """The codes in a RAVDESS file name; a clear error for a name that is not one."""
    match = FILENAME.match(path.name)
    if not match:
        raise DataFormatError(f"{path}: not a RAVDESS file name (expected 03-01-EE-II-SS-RR-AA.wav)")
    keys = ("modality", "channel", "emotion", "intensity", "statement", "repetition", "actor")
    codes = dict(zip(keys, (int(g) for g in match.groups())))
    if not 1 <= codes["emotion"] <= len(EMOTIONS):
        raise DataFormatError(f"{path}: emotion code {codes['emotion']:02d} is not one of 01-08")
    return codes


def load_ravdess(folder: str | Path, config: RavdessConfig | None = None, cache: str | Path | None = None,
                 progress: bool = True) -> DatasetSplits:
    cfg = config or RavdessConfig()
    root = ravdess_root(Path(folder))
    if root is None:
        raise DataFormatError(f"{folder}: no Actor_NN folders, so not a RAVDESS dataset folder")
    wavs = sorted(root.glob("Actor_[0-9][0-9]/*.wav"))
    if not wavs:
        raise DataFormatError(f"{root}: the Actor_NN folders hold no .wav files")
    items = [(w, parse_name(w)) for w in wavs]
    items = [(w, c) for w, c in items if c["channel"] == 1]  # speech; song clips are another task
    if cfg.embeddings != "none":
        return _embedded_splits(root, items, cfg, cache, progress)
    # the plain patches' key leaves speaker_norm out, so stores written before it existed still count
    stores = resolve_cache_dir(cache) / "ravdess"
    # (and embeddings, which is "none" on this path)
    plain = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("speaker_norm", "embeddings")}
    store = stores / store_key(**plain, version=1)
    files = []
    for wav, _ in tqdm(items, desc="RAVDESS log-mel", disable=not progress, leave=False):
        path = store / "audio" / f"{wav.stem}.npy"
        if not path.exists():
            write_clip(path.parent, wav.stem, window_patches(read_wav(wav), cfg), RAW_DTYPES["raw_audio"])
        files.append(str(path))
    if cfg.speaker_norm != "none":
        files = speaker_normalised(files, [c["actor"] for _, c in items], cfg.speaker_norm,
                                   stores / store_key(**plain, speaker_norm=cfg.speaker_norm, version=1))
    counts = [int(np.load(f, mmap_mode="r").shape[0]) for f in files]
    steps = window_steps(cfg)

    def window_inputs(idx: list[int]) -> Inputs:
        patches = LazyRawArray([files[i] for i in idx], (cfg.n_mels, steps), RAW_DTYPES["raw_audio"])
        return ({"audio": torch.zeros(len(idx), cfg.max_windows, 1)},
                {"audio": torch.tensor([counts[i] for i in idx], dtype=torch.int64)},
                {"raw_audio": patches})

    return _actor_splits(root, items, cfg, window_inputs)


# a split's audio features, lengths and extras, for the clips at some indices
Inputs = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, object]]


def _actor_splits(root: Path, items: list[tuple[Path, dict[str, int]]], cfg: RavdessConfig,
                  inputs: Callable[[list[int]], Inputs]) -> DatasetSplits:
    """The clips split by actor (ACTOR_SPLITS), labels, ids and sentences read off their names;
    `inputs` gives the audio each split's clips are read as (windows or embedding rows)."""
    splits = {}
    for split, actors in ACTOR_SPLITS.items():
        idx = [i for i, (_, c) in enumerate(items) if c["actor"] in actors]
        if not idx:
            raise DataFormatError(
                f"{root}: no clips of actors {actors.start}-{actors.stop - 1} for the {split} split"
            )
        features, lengths, extras = inputs(idx)
        splits[split] = MultimodalDataset(
            features=features,
            lengths=lengths,
            labels=torch.tensor([items[i][1]["emotion"] - 1 for i in idx], dtype=torch.int64),
            ids=[f"Actor_{items[i][1]['actor']:02d}$_${items[i][0].stem}" for i in idx],
            raw_text=[STATEMENTS.get(items[i][1]["statement"], "") for i in idx],
            source=f"{root}:{split}",
            extras=extras,
        )
    return DatasetSplits(**splits, name="ravdess", class_names=list(EMOTIONS), frontend=ravdess_frontend(cfg))


def clip_embedder(name: str) -> tuple[Callable[[np.ndarray, float], np.ndarray], int]:
    """The embedder `name` names; "A+B" joins two: B's columns appended to each of A's rows (a
    one-row embedder, such as eGeMAPS functionals, is repeated beside every row of the other)."""
    parts = name.split("+")
    for part in parts:
        if part not in CLIP_EMBEDDERS:
            known = ", ".join(sorted(CLIP_EMBEDDERS)) or "none registered"
            hint = "" if CLIP_EMBEDDERS else " (import emofuse.features.sources to register them)"
            raise OptionError(f"embeddings={name!r}: {part!r} is not a clip embedder; known: {known} "
                              f"(join two with +){hint}")
    if len(parts) == 1:
        return CLIP_EMBEDDERS[name]
    chosen = [CLIP_EMBEDDERS[part] for part in parts]

    def joined(audio: np.ndarray, top_db: float) -> np.ndarray:
        rows = [embed(audio, top_db) for embed, _ in chosen]
        count = max(len(r) for r in rows)
        if any(len(r) not in (1, count) for r in rows):
            raise OptionError(f"embeddings={name!r}: the parts give {[len(r) for r in rows]} rows; "
                              "they must give the same number, or one")
        return np.concatenate([np.repeat(r, count, axis=0) if len(r) == 1 else r for r in rows], axis=1)

    return joined, sum(version for _, version in chosen)


def _embedded_splits(root: Path, items: list[tuple[Path, dict[str, int]]], cfg: RavdessConfig,
                     cache: str | Path | None, progress: bool) -> DatasetSplits:
    """Each clip as the rows of a frozen encoder's embedding (cached per clip), standardised per actor."""
    embed, version = clip_embedder(cfg.embeddings)
    # a joined embedder ("whisper_base+egemaps") has its own store: its rows are computed whole
    store = resolve_cache_dir(cache) / "ravdess" / store_key(
        embeddings=cfg.embeddings, top_db=cfg.top_db, version=version
    )
    rows = []
    for wav, _ in tqdm(items, desc=f"RAVDESS {cfg.embeddings}", disable=not progress, leave=False):
        path = store / f"{wav.stem}.npy"
        if not path.exists():
            write_clip(store, wav.stem, embed(read_wav(wav), cfg.top_db), "float32")
        rows.append(np.load(path))
    actors = np.array([c["actor"] for _, c in items])
    features = per_speaker_standardised(np.stack(rows), actors, cfg.speaker_norm)

    def row_inputs(idx: list[int]) -> Inputs:
        return ({"audio": torch.from_numpy(features[idx])},
                {"audio": torch.full((len(idx),), features.shape[1], dtype=torch.int64)}, {})

    return _actor_splits(root, items, cfg, row_inputs)


def per_speaker_standardised(x: np.ndarray, speakers: np.ndarray, mode: str) -> np.ndarray:
    """clips x ... embeddings, each speaker's clips mapped by `RowSpeakerMap` fitted on their own."""
    out = np.asarray(x, np.float32).copy()
    if mode == "none":
        return out
    for speaker in np.unique(speakers):
        mine = speakers == speaker
        out[mine] = RowSpeakerMap.fit(out[mine], mode)(out[mine])
    return out


@dataclass(frozen=True)
class RowSpeakerMap:
    """One speaker's map of embedding rows: x -> (x - mean) * scale, per element, with the mean (and,
    for "meanvar", 1 / std) over that speaker's clips. What stays is how a clip differs from the
    speaker's usual; `predict` fits one on a new speaker's reference clips."""

    shift: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, rows: np.ndarray, mode: str) -> RowSpeakerMap:
        """rows: clips x ... of one speaker."""
        x = np.asarray(rows, np.float32)
        shift = x.mean(axis=0)
        # a constant element (or a speaker with one clip) maps to 0 rather than dividing by 0
        scale = 1.0 / np.maximum(x.std(axis=0), 1e-6) if mode == "meanvar" else np.ones_like(shift)
        return cls(shift, scale)

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        return ((np.asarray(rows, np.float32) - self.shift) * self.scale).astype(np.float32)


def embedding_rows(path: Path, cfg: RavdessConfig) -> np.ndarray:
    """One clip's rows as `-D embeddings=NAME` makes them (before speaker normalisation)."""
    file = Path(path).resolve()
    return _embedding_rows(str(file), file.stat().st_mtime_ns, cfg.embeddings, cfg.top_db).copy()


# the members of an ensemble each map the same clip and the same speaker's reference clips: the
# encoder runs once per file (a changed file has another mtime, so it is computed again)
@functools.lru_cache(maxsize=1024)
def _embedding_rows(path: str, mtime_ns: int, embeddings: str, top_db: float) -> np.ndarray:
    del mtime_ns  # part of the key only
    embed, _ = clip_embedder(embeddings)
    return embed(read_wav(Path(path)), top_db)


@register_source(
    "ravdess", matches=lambda path: path.is_dir() and is_ravdess_dir(path), options=True, order=30
)
def _ravdess_source(request: SourceRequest) -> DatasetSplits:
    """A RAVDESS folder; the data options are a `RavdessConfig` (e.g. n_mels=80, n_fft=400)."""
    assert request.path is not None
    return load_ravdess(request.path, data_config(RavdessConfig, request.options, request.source))


def ravdess_frontend(cfg: RavdessConfig) -> dict:
    """How a RAVDESS run's audio is made (`emofuse.data.frontend`): fixed windows of the one log-mel."""
    from emofuse.data.frontend import frontend_record

    return frontend_record(
        "ravdess",
        segments="windows",
        logmel=logmel_config(cfg).describe(),
        raw_shapes={"audio": [cfg.n_mels, window_steps(cfg)]},
        ravdess=dataclasses.asdict(cfg),
    )


def speaker_normalised(files: list[str], actors: list[int], mode: str, store: Path) -> list[str]:
    """Copies of the clips normalised per actor (written once, then reused).

    "mean": the mean log-mel of each band over all the actor's patches, less that mean's average
    over bands, is subtracted from every patch of theirs. What stays is how each clip differs from
    its speaker's usual voice, and the speaker's overall level (loudness).
    "meanvar": each band is standardised over the actor's patches (z = (x - mean) / std), then
    mapped to -50 + 20 z dB, so how loud and how varied a clip is are measured against the actor's own.
    """
    out = [str(store / "audio" / Path(f).name) for f in files]
    todo = sorted({a for a, o in zip(actors, out) if not Path(o).exists()})
    for actor in todo:
        mine = [i for i, a in enumerate(actors) if a == actor]
        clips = [np.load(files[i]).astype(np.float32) for i in mine]  # windows x n_mels x steps
        normalise = SpeakerMap.fit(clips, mode)
        for i, clip in zip(mine, clips):
            write_clip(Path(out[i]).parent, Path(out[i]).stem, normalise(clip), RAW_DTYPES["raw_audio"])
    return out


@dataclass(frozen=True)
class SpeakerMap:
    """One speaker's normalisation: per band, x -> (x - shift) * scale + offset (see `speaker_normalised`).

    Fitted on all of a speaker's patches at once, so every clip of theirs gets the same map; `predict`
    fits one on a new speaker's reference clips.
    """

    shift: np.ndarray  # n_mels
    scale: np.ndarray  # n_mels
    offset: float

    @classmethod
    def fit(cls, patches: list[np.ndarray], mode: str) -> SpeakerMap:
        """patches: each words x n_mels x steps (dB), all with the same n_mels."""
        if (
            mode not in SPEAKER_NORMS or mode == "none"
        ):  # a bug, not the user's: callers pass a checked speaker_norm
            raise ValueError(f"speaker normalisation mode must be mean or meanvar, not {mode!r}")
        frames = np.concatenate([np.asarray(p, np.float32).transpose(1, 0, 2).reshape(p.shape[1], -1)
                                 for p in patches], axis=1)
        band_mean = frames.mean(axis=1)
        if mode == "meanvar":
            scale = NORMALISED_SCALE_DB / np.maximum(
                frames.std(axis=1), 1e-3
            )  # a constant band: no 0 division
            return cls(band_mean, scale, NORMALISED_CENTER_DB)
        return cls(band_mean - band_mean.mean(), np.ones_like(band_mean), 0.0)

    def __call__(self, patches: np.ndarray) -> np.ndarray:
        """words x n_mels x steps -> the same, normalised (float32)."""
        x = np.asarray(patches, np.float32)
        return (x - self.shift[None, :, None]) * self.scale[None, :, None] + self.offset


def read_wav(path: Path) -> np.ndarray:
    """Mono float32 at 16 kHz, through the one audio front end (`emofuse.audio_frontend`)."""
    from emofuse.audio_frontend import read_audio

    try:
        return read_audio(path, SAMPLE_RATE)
    except ValueError as err:
        raise DataFormatError(
            str(err) if str(path) in str(err) else f"{path}: unreadable audio ({err})"
        ) from None


def window_steps(cfg: RavdessConfig) -> int:
    return int(round(cfg.window * 1000 / cfg.hop_ms))


def logmel_config(cfg: RavdessConfig) -> LogMelConfig:
    """The front end's log-mel config for RAVDESS's options."""
    return LogMelConfig(n_mels=cfg.n_mels, n_fft=cfg.n_fft, win_ms=cfg.win_ms, hop_ms=cfg.hop_ms,
                        sample_rate=SAMPLE_RATE)


def log_mel(audio: np.ndarray, cfg: RavdessConfig) -> np.ndarray:
    """n_mels x frames log-mel (dB, floor -100) at `hop_ms` hops: the one front end's map."""
    return log_mel_db(audio, logmel_config(cfg))


def window_patches(audio: np.ndarray, cfg: RavdessConfig) -> np.ndarray:
    """windows x n_mels x steps: the speech (silence trimmed) cut into fixed windows.

    The last partial window is kept when at least half full (padded with the clip's quietest
    level); a clip shorter than one window still gives one.
    """
    mel = log_mel(audio, cfg)
    energy = mel.max(axis=0)
    voiced = np.flatnonzero(energy >= energy.max() - cfg.top_db)
    if voiced.size:
        mel = mel[:, voiced[0] : voiced[-1] + 1]
    steps = window_steps(cfg)
    n = max(1, min(cfg.max_windows, int(np.floor(mel.shape[1] / steps + 0.5))))
    floor = float(mel.min())
    padded = np.full((cfg.n_mels, n * steps), floor, dtype=np.float32)
    take = min(mel.shape[1], n * steps)
    padded[:, :take] = mel[:, :take]
    return padded.reshape(cfg.n_mels, n, steps).transpose(1, 0, 2)

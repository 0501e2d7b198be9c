"""Predict from raw clips with a trained run: `Predictor(run_dir).predict(path) -> dict`.

A `Predictor` opens a run folder once (model, scaler and config, through `load_run`, as
`evaluate` does), works out how the run's training data was extracted (`FeatureLayout`), and
keeps one `ClipExtractor` with that layout, so many clips pay for the models' loading once.

Each prediction is a JSON-serialisable dict: the score with its 2-, 3- and 7-class labels (or
the class and its probabilities for a classifier), the words with their times and the path that
gave them (forced alignment or speech recognition), per-modality contributions (the prediction
with each modality removed, as `emofuse robustness` removes it: zeroed standardised features,
masked tokens for an in-model text encoder, and for a raw-input encoder zero word vectors) and
the seconds spent in each stage. `predict_record` takes the per-clip arrays of an MMSA row
(`ClipFeatures.record()`), for callers that extract elsewhere.

The layout rule: a run trained on `emofuse extract` output reads that extraction's config from
the report beside its pickle (text model, landmarks, audio extractors; aligned or unaligned from
the pickle's name); any other run gets `emofuse extract`'s defaults, and a run whose feature
sizes differ (MMSA's 768-d BERT text, 5-d COVAREP audio, ...) is refused with a `RunMismatch`.
Raw-input runs get the per-word face crops and log-mel patches, resized to the sizes the run was
trained on; for a RAVDESS run the log-mel is also put on RAVDESS's dB scale.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import DataFormatError, MultimodalDataset, modality_code
from emofuse.data.ravdess import RowSpeakerMap, SpeakerMap
from emofuse.data.raw import RAW_DTYPES, RAW_KEY_OF
from emofuse.errors import UserError
from emofuse.evaluation.evaluate import LoadedRun, load_run
from emofuse.evaluation.robustness import Corruption, TokenCorruption
from emofuse.features.clip import ClipExtractor, ClipFeatures, ExtractConfig
from emofuse.features.registry import ClipError, NoVideoTrack
from emofuse.metrics.regression import sentiment_classes
from emofuse.models.raw_encoders import WithRawEncoders

SEVEN_CLASSES = ("strongly negative", "negative", "weakly negative", "neutral", "weakly positive", "positive",
                 "strongly positive")
THREE_CLASSES = ("negative", "neutral", "positive")


class RunMismatch(UserError):
    """The run cannot read what `emofuse extract` gives (another feature set or sizes)."""


# --------------------------------------------------------------------------- the run's layout
@dataclass(frozen=True)
class FeatureLayout:
    """How clips must be extracted so that a run can read them.

    view: 'aligned' (one row per word) or 'unaligned' (frame-rate audio and video).
    raw_shapes: modality -> per-word item shape a raw encoder was trained on.
    segments: 'words' (a raw audio step per word) or 'windows' (RAVDESS's fixed windows of the
        speech, silence trimmed: `ravdess` holds their config).
    speaker_norm: the run's raw audio was normalised per speaker ("mean" or "meanvar"; "none").
    from_extract: the run's data is an `emofuse extract` output.
    from_run: the layout was read from the run folder (False: a run made before runs recorded
        it, whose layout is worked out from its training data's path).
    """

    config: ExtractConfig
    view: str = "aligned"
    raw_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    from_extract: bool = False
    source: str = ""
    # the run's RAVDESS log-mel was normalised per speaker (mean | meanvar): a new clip needs
    # reference clips of its speaker (`Predictor(speaker_reference=...)`) for the same map
    speaker_norm: str = "none"
    segments: str = "words"
    ravdess: dict[str, Any] | None = None
    from_run: bool = False
    # RAVDESS -D embeddings=NAME: the audio features are a frozen encoder's rows of the whole clip,
    # standardised per speaker (speaker_norm), computed here as the loader computed them
    embeddings: str = "none"


def _extract_config(values: dict[str, Any], base: ExtractConfig) -> ExtractConfig:
    known = {f.name for f in dataclasses.fields(ExtractConfig)}
    return dataclasses.replace(
        base, **{k: tuple(v) if k == "audio" else v for k, v in values.items() if k in known}
    )


def _extract_config_of(report: Path, base: ExtractConfig) -> ExtractConfig:
    return _extract_config(json.loads(report.read_text()).get("config", {}), base)


def feature_layout(run: LoadedRun) -> FeatureLayout:
    """The extraction that gives `run` the features it was trained on: the front-end record in the
    run folder (`emofuse.data.frontend`), or for an older run one worked out from its data's path."""
    if run.frontend:
        return _layout_of_record(run, run.frontend)
    return _layout_of_data_path(run)


def _layout_of_record(run: LoadedRun, record: dict[str, Any]) -> FeatureLayout:
    config = run.config
    base = ExtractConfig(text_model=config.text_model, max_words=config.max_words)
    try:
        if record.get("extract"):
            base = _extract_config(record["extract"], base)
        shapes = {m: tuple(int(x) for x in s) for m, s in (record.get("raw_shapes") or {}).items()}
    except (TypeError, ValueError) as err:
        raise RunMismatch(f"{run.run_dir}/config.json: an unreadable front-end record ({err})") from None
    ravdess = record.get("ravdess") or None
    # a run that does not read audio computes no rows (a RAVDESS run on its sentences alone)
    embeddings = str((ravdess or {}).get("embeddings", "none")) if "audio" in run.spec.modalities else "none"
    normalised = "audio" in run.raw_modalities or embeddings != "none"
    return FeatureLayout(
        base,
        record.get("view", "aligned"),
        _raw_shapes(run, base, shapes),
        record.get("source") == "extract",
        str(config.data),
        (ravdess or {}).get("speaker_norm", "none") if normalised else "none",
        record.get("segments", "words"),
        ravdess,
        from_run=True,
        embeddings=embeddings,
    )


def _raw_shapes(
    run: LoadedRun, base: ExtractConfig, shapes: dict[str, tuple[int, ...]]
) -> dict[str, tuple[int, ...]]:
    return {m: shapes.get(m, base.raw_shapes[m]) for m in run.raw_modalities}


def _layout_of_data_path(run: LoadedRun) -> FeatureLayout:
    """A run made before run folders recorded their front end: read it off the training data."""
    config = run.config
    base = ExtractConfig(text_model=config.text_model, max_words=config.max_words)
    source = str(config.data)
    path = Path(source).expanduser()
    view, from_extract = "aligned", False
    if path.suffix == ".pkl":
        stem = path.stem
        if stem.endswith("_unaligned"):
            view, stem = "unaligned", stem[: -len("_unaligned")]
        report = path.with_name(f"{stem}.report.json")
        if report.is_file():
            try:
                base = _extract_config_of(report, base)
                from_extract = True
            except (ValueError, TypeError, OSError) as err:
                raise RunMismatch(f"{report}: not a readable `emofuse extract` report ({err})") from None
    options = dict(getattr(config, "data_options", None) or {})
    if source == "synthetic-raw":
        from emofuse.data.sources import data_config as _data_config
        from emofuse.data.synthetic_raw import SyntheticRawConfig

        syn = _data_config(SyntheticRawConfig, options, source)
        shapes = {"vision": (syn.frames, syn.size, syn.size), "audio": (syn.n_mels, syn.mel_steps)}
        return FeatureLayout(base, view, _raw_shapes(run, base, shapes), from_extract, source)
    if path.is_dir() and _is_ravdess(path):
        from emofuse.data.ravdess import RavdessConfig, window_steps
        from emofuse.data.sources import data_config as _data_config

        rav = _data_config(RavdessConfig, options, source)
        shapes = {"audio": (rav.n_mels, window_steps(rav))}
        return FeatureLayout(base, view, _raw_shapes(run, base, shapes), from_extract, source,
                             rav.speaker_norm if "audio" in run.raw_modalities else "none", "windows",
                             dataclasses.asdict(rav))
    return FeatureLayout(base, view, _raw_shapes(run, base, {}), from_extract, source)


def extraction_config(run: LoadedRun, layout: FeatureLayout) -> ExtractConfig:
    """The extraction a run's predictions need: its layout's, without the stages it does not read."""
    needs_video = "vision" in run.spec.modalities
    # word vectors only for a run that reads pre-extracted text (an in-model text encoder reads
    # the words themselves): otherwise the text model is never loaded (about 8 s per process)
    needs_text = "text" in run.spec.modalities and run.tokenizer is None
    # a run without vision needs no face stage (nor a face): the video stream is not decoded
    return dataclasses.replace(layout.config, require_video=needs_video, video=needs_video, text=needs_text)


def _is_ravdess(path: Path) -> bool:
    from emofuse.data.ravdess import is_ravdess_dir

    return is_ravdess_dir(path)


# --------------------------------------------------------------------------- helpers
class InMemoryRaw:
    """Raw per-word inputs held in memory, with `LazyRawArray`'s interface (load, views)."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    def __getitem__(self, idx: object) -> InMemoryRaw:
        return InMemoryRaw(self.array[np.atleast_1d(np.arange(len(self.array))[idx])])  # type: ignore[index]

    def load(self, idx: Sequence[int] | np.ndarray, words: int) -> np.ndarray:
        out = np.zeros((len(idx), words, *self.array.shape[2:]), dtype=self.array.dtype)
        n = min(words, self.array.shape[1])
        out[:, :n] = self.array[np.asarray(idx), :n]
        return out


def run_label(run_dir: str | os.PathLike[str]) -> str:
    """A run as people and clients see it: its folder's name, with its parent's for a seed_N folder
    (`fusion_matched_TAV/seed_1`), never the path above it on this machine."""
    parts = Path(os.path.abspath(os.fspath(run_dir))).parts[1:]  # without the root
    if not parts:
        return "run"
    if len(parts) >= 2 and re.fullmatch(r"seed_\d+", parts[-1]):
        return f"{parts[-2]}/{parts[-1]}"
    return parts[-1]


def resize_words(array: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """W x *item -> W x *shape by (tri/bi)linear interpolation, keeping the dtype."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array
    if len(shape) != array.ndim - 1:
        raise RunMismatch(f"raw inputs of shape {array.shape[1:]} cannot become the run's {shape}")
    x = torch.from_numpy(np.asarray(array, dtype=np.float32)).unsqueeze(1)
    mode = "trilinear" if len(shape) == 3 else "bilinear"
    y = (
        torch.nn.functional.interpolate(x, size=tuple(shape), mode=mode, align_corners=False)
        .squeeze(1)
        .numpy()
    )
    if array.dtype == np.uint8:
        y = np.clip(np.round(y), 0, 255)
    return y.astype(array.dtype)


def sentiment_labels(score: float) -> dict[str, Any]:
    """MMSA's class conventions: 2 (has-0: >= 0 is non-negative), 3 and 7 (round of the clipped score)."""
    c3 = int(sentiment_classes(score, 3))  # class ids: -1..1 -> 0..2
    c7 = int(sentiment_classes(score, 7))  # -3..3 -> 0..6
    return {
        "2": "non-negative" if sentiment_classes(score, 2) else "negative",
        "3": THREE_CLASSES[c3],
        "7": SEVEN_CLASSES[c7],
        "7_value": c7 - 3,
    }


def _find(model: torch.nn.Module, kind: type) -> Any:
    return next((m for m in model.modules() if isinstance(m, kind)), None)


@contextmanager
def zero_word_vectors(
    model: torch.nn.Module, modality: str, rows: torch.Tensor | None = None
) -> Iterator[None]:
    """While active, the raw encoder of `modality` outputs zeros (at flat word `rows`, or everywhere).

    A raw encoder's output is what fills the modality's slot, so zero vectors remove that
    modality (or those words) the way zeroed features remove a pre-extracted one.
    """
    wrapper = _find(model, WithRawEncoders)
    if wrapper is None or modality not in wrapper.encoders:
        yield
        return

    def hook(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        if rows is None:
            return torch.zeros_like(output)
        out = output.clone()
        out[rows.to(out.device)] = 0.0
        return out

    handle = wrapper.encoders[modality].register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


# --------------------------------------------------------------------------- the predictor
@dataclass
class Outcome:
    """One run's prediction for a clip before rounding, for an ensemble to average.

    pred: the score (0-d) or the class probabilities; without: modality -> the prediction with
    that modality removed; result: the prediction dict that `Predictor.predict_record` returns.
    """

    result: dict[str, Any]
    pred: np.ndarray
    without: dict[str, np.ndarray]


def predict_each(predict: Callable[[str | os.PathLike[str], str | None], dict[str, Any]],
                 paths: Sequence[str | os.PathLike[str]],
                 transcripts: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
    """predict(path, transcript) for each clip; a clip that fails gives {'clip', 'error': {'reason',
    'message'}} instead. A `RunMismatch` is the run's problem, not a clip's: it is raised."""
    transcripts = list(transcripts) if transcripts is not None else [None] * len(paths)
    if len(transcripts) != len(paths):
        raise ValueError(
            f"{len(paths)} clips but {len(transcripts)} transcripts"
        )  # predict checks --transcript first
    out = []
    for path, text in zip(paths, transcripts, strict=True):
        try:
            out.append(predict(path, text))
        except ClipError as err:
            out.append({"clip": str(path), "error": {"reason": err.reason, "message": str(err)}})
        except RunMismatch:
            raise
        except DataFormatError as err:
            out.append({"clip": str(path), "error": {"reason": "bad_features", "message": str(err)}})
    return out


class Predictor:
    """A run opened once, mapping clips (or feature records) to prediction dicts.

    cache_dir: the extraction stage cache (None: none; clips are then always extracted afresh).
    speaker_reference: clips of the speaker about to be predicted, for a run trained with RAVDESS's
    speaker normalisation: their log-mel fits the speaker's map, as all of an actor's clips did in
    training. Without them such a run warns and predicts on unnormalised patches.
    run, extractor: the run already loaded and an extractor to use (an ensemble loads its runs first
    to see their layouts, and shares one extractor among the runs of one layout); the extractor
    stays its owner's to close.
    """

    def __init__(self, run_dir: str | os.PathLike[str], device: str = "cpu",
                 cache_dir: str | os.PathLike[str] | None = None,
                 speaker_reference: Sequence[str | os.PathLike[str]] = (), *,
                 run: LoadedRun | None = None, extractor: ClipExtractor | None = None) -> None:
        started = time.perf_counter()
        self.run_dir = Path(run_dir)
        self.run = run if run is not None else load_run(self.run_dir, device)
        self.device = next(self.run.model.parameters()).device
        self.layout = feature_layout(self.run)
        self.modalities = self.run.spec.modalities
        self.needs_video = "vision" in self.modalities
        self._owns_extractor = extractor is None
        self.extractor = extractor or ClipExtractor(extraction_config(self.run, self.layout), cache_dir)
        self.speaker_map: SpeakerMap | None = None
        self.row_map: RowSpeakerMap | None = None
        if speaker_reference:
            self.fit_speaker(speaker_reference)
        elif self.layout.speaker_norm != "none" and self.layout.embeddings != "none":
            # unnormalised rows are on another scale than anything the head saw: refuse, not guess
            raise RunMismatch(
                f"{self.run_dir}: the run reads {self.layout.embeddings} embeddings standardised per "
                f"speaker (speaker_norm={self.layout.speaker_norm}), so it needs clips of the speaker to "
                "predict: give --speaker-ref with 2 or more of their clips (the clips to predict may be "
                "among them)"
            )
        elif self.layout.speaker_norm != "none":
            warnings.warn(
                f"{self.layout.source}: the run was trained with "
                f"speaker_norm={self.layout.speaker_norm} (each actor's "
                "log-mel bands normalised using all of their clips); without reference clips of the speaker "
                "(--speaker-ref) a new clip is predicted unnormalised, so expect lower accuracy",
                stacklevel=2,
            )
        self.load_seconds = time.perf_counter() - started

    def fit_speaker(self, clips: Sequence[str | os.PathLike[str]]) -> None:
        """Fit the speaker map on reference clips, extracted as the clips to predict are."""
        # refused before any extraction: each reference costs a speech recogniser pass
        if self.layout.speaker_norm == "none":
            raise RunMismatch(
                f"{self.run_dir}: the run was trained without speaker normalisation, so speaker "
                "reference clips have nothing to do; leave them out"
            )
        if self.layout.embeddings != "none":
            if len(clips) < 2 and self.layout.speaker_norm == "meanvar":
                raise RunMismatch(
                    f"{self.run_dir}: one speaker reference clip gives no spread to standardise by; "
                    "give 2 or more --speaker-ref clips of the speaker"
                )
            rows = np.stack([self._embedding_rows(path) for path in clips])
            self.row_map = RowSpeakerMap.fit(rows, self.layout.speaker_norm)
            return
        patches = []
        for path in clips:
            patches.append(self.reference_patches(path))
        self.speaker_map = SpeakerMap.fit(patches, self.layout.speaker_norm)

    def reference_patches(self, path: str | os.PathLike[str]) -> np.ndarray:
        """A speaker reference clip's raw audio steps, made as the clips to predict are."""
        if self.layout.segments == "windows":  # no words are needed: skip speech recognition
            return self._windows(path)
        logmel = self.extract(path).word_logmel
        if logmel is None or len(logmel) == 0:
            raise DataFormatError(
                f"{path}: a speaker reference clip gave no speech (no word log-mel patches)"
            )
        return resize_words(np.asarray(logmel), self.layout.raw_shapes["audio"])

    def raw_audio(self, features: ClipFeatures) -> np.ndarray:
        """The clip's raw audio steps as the run was trained on them: a log-mel patch per word, or
        for a RAVDESS run the fixed windows of the clip's speech, both from the one front end
        (`emofuse.audio_frontend`) and at the run's patch size."""
        if self.layout.segments == "windows":
            return self._windows(features.path)
        return resize_words(np.asarray(features.word_logmel), self.layout.raw_shapes["audio"])

    def _embedding_rows(self, path: str | os.PathLike[str]) -> np.ndarray:
        from emofuse.data.ravdess import RavdessConfig, embedding_rows

        return embedding_rows(Path(path), RavdessConfig(**(self.layout.ravdess or {})))

    def with_embedding_rows(self, record: dict[str, Any], path: str | os.PathLike[str]) -> dict[str, Any]:
        """The record with its audio features replaced by the clip's embedding rows, mapped by the
        speaker's reference clips as the loader mapped each actor's (a run without embeddings: as is)."""
        if self.layout.embeddings == "none":
            return record
        rows = self._embedding_rows(path)
        if self.row_map is not None:
            rows = self.row_map(rows)
        view = dict(record.get(self.layout.view) or {})
        view["audio"] = rows
        return {**record, self.layout.view: view}

    def _windows(self, path: str | os.PathLike[str]) -> np.ndarray:
        from emofuse.data.ravdess import RavdessConfig, read_wav, window_patches

        config = RavdessConfig(**(self.layout.ravdess or {}))
        # through float16, as the loader stores its patches, so a training clip gives its very inputs
        patches = window_patches(read_wav(Path(path)), config).astype(RAW_DTYPES["raw_audio"])
        return resize_words(patches, self.layout.raw_shapes["audio"])

    def close(self) -> None:
        if self._owns_extractor:
            self.extractor.close()

    def __enter__(self) -> Predictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_classifier(self) -> bool:
        return self.run.spec.task == "classification"

    @property
    def class_names(self) -> list[str]:
        return self.run.class_names or [str(i) for i in range(self.run.spec.num_classes)]

    def describe(self) -> dict[str, Any]:
        # the run's own name, never the server's path to it (serve returns this to clients)
        return {
            "run": run_label(self.run_dir),
            "model": self.run.config.model,
            "modalities": modality_code(self.modalities),
            "task": self.run.spec.task,
            "features": self.layout.view,
            "raw_encoders": {
                m: n
                for m, n in (
                    ("vision", self.run.config.video_encoder),
                    ("audio", self.run.config.audio_encoder),
                )
                if n
            },
        }

    # ------------------------------------------------------------------ clips
    def extract(self, path: str | os.PathLike[str], transcript: str | None = None) -> ClipFeatures:
        """The clip's features in the run's layout; a ClipError names the file and the problem."""
        try:
            return self.extractor.extract(path, transcript)
        except NoVideoTrack as err:
            raise NoVideoTrack(
                err.path,
                f"{err.problem}; the run {self.run_dir} reads vision "
                f"({modality_code(self.modalities)}), so it needs a video: use a run "
                "trained without V for audio files",
            ) from None

    def predict(self, path: str | os.PathLike[str], transcript: str | None = None) -> dict[str, Any]:
        """One clip -> the prediction dict (see the module docstring)."""
        features = self.extract(path, transcript)
        result = self.predict_features(features)
        return result

    def predict_many(self, paths: Sequence[str | os.PathLike[str]],
                     transcripts: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
        """Each clip's dict, or its error (`predict_each`)."""
        return predict_each(self.predict, paths, transcripts)

    def raw_inputs(self, features: ClipFeatures) -> dict[str, np.ndarray | None]:
        """The clip's raw inputs as the model reads them (a RAVDESS run's audio is its windows)."""
        return {
            "vision": features.word_crops,
            "audio": self.raw_audio(features) if "audio" in self.run.raw_modalities else features.word_logmel,
        }

    def predict_features(self, features: ClipFeatures) -> dict[str, Any]:
        return self.score_features(features).result

    def score_features(self, features: ClipFeatures) -> Outcome:
        record = self.with_embedding_rows(features.record(), features.path)
        outcome = self.score_record(record, self.raw_inputs(features), clip=features.path)
        result = outcome.result
        result["duration"] = round(float(features.duration), 3)
        result["face_fraction"] = features.face_fraction
        timings = {k: round(v, 4) for k, v in features.timings.items()}
        timings["model"] = result["timings"]["model"]
        timings["total"] = round(sum(v for k, v in timings.items()), 4)
        result["timings"] = timings
        return outcome

    # ------------------------------------------------------------------ records
    def dataset(self, record: dict[str, Any], raw: dict[str, np.ndarray | None] | None = None,
                clip: str = "<record>") -> MultimodalDataset:
        """A one-clip dataset from an MMSA row's arrays, prepared (selected, fitted, scaled) for the run."""
        view = record.get(self.layout.view) or {}
        features, lengths, extras = {}, {}, {}
        n_words = len(record.get("words") or []) or len(view.get("text", []))
        for m in self.modalities:
            if m in self.run.raw_modalities:
                array = (raw or {}).get(m)
                if array is None or len(array) == 0:
                    what = "face crops (a video)" if m == "vision" else "log-mel patches"
                    raise DataFormatError(
                        f"{clip}: the run reads raw {m} through its encoder and the clip gives no "
                        f"per-word {what}"
                    )
                array = resize_words(np.asarray(array), self.layout.raw_shapes[m])
                if m == "audio" and self.speaker_map is not None:
                    array = self.speaker_map(array).astype(array.dtype)
                extras[RAW_KEY_OF[m]] = InMemoryRaw(array[None])
                # a placeholder the encoder overwrites, as wide as the training data's slot
                # (the scaler checks it)
                features[m] = torch.zeros(1, len(array), self._slot_width(m))
                lengths[m] = torch.tensor([len(array)])
                continue
            if m == "text" and self.run.tokenizer is not None:
                count = max(n_words, 1)
                features[m] = torch.zeros(1, count, 1)  # the encoder reads the raw text
                lengths[m] = torch.tensor([count])
                continue
            if m not in view:
                raise DataFormatError(f"{clip}: the run needs {m} features and the clip gives none")
            x = np.asarray(view[m], dtype=np.float32)
            if x.ndim != 2 or len(x) == 0:
                raise DataFormatError(
                    f"{clip}: {m} features must be a non-empty steps x D array, got {x.shape}"
                )
            self._check_dims(m, x.shape[1])
            features[m] = torch.from_numpy(x).unsqueeze(0)
            lengths[m] = torch.tensor([len(x)])
        if "vision" in self.modalities and len(record.get("vision_missing", [])):
            # words without a face: missing vision, zeroed after scaling as in training (data.normalize)
            extras["vision_missing"] = np.asarray(record["vision_missing"], dtype=bool)[None]
        labels = torch.zeros(1, dtype=torch.long if self.is_classifier else torch.float32)
        data = MultimodalDataset(features, lengths, labels, [clip], [str(record.get("raw_text", ""))],
                                 source=clip, extras=extras)
        return self.run.prepare(data)

    def _slot_width(self, m: str) -> int:
        mean = self.run.scaler.mean.get(m)
        return int(mean.shape[0]) if mean is not None else 1

    def _check_dims(self, m: str, dim: int) -> None:
        want = self.run.spec.dims[m]
        if dim == want:
            return
        made = (
            f"its data {self.layout.source} was extracted with another config"
            if self.layout.from_extract
            else f"it was trained on {self.layout.source}, another feature set (e.g. MMSA's 768-d BERT text, "
            "5-d COVAREP audio, 20-d Facet vision)"
        )
        raise RunMismatch(
            f"{self.run_dir}: the run reads {want}-d {m} features and `emofuse extract` gives "
            f"{dim}-d; {made}. "
            "Predict from clips needs a run trained on `emofuse extract` output (or raw-input encoders)"
        )

    def forward(self, data: MultimodalDataset) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Predictions (N, or N x C probabilities) and the model's extras (attention, matching)."""
        batch = data.make_batch(torch.arange(len(data))).to(self.device)
        self.run.model.eval()
        with torch.inference_mode():
            out = self.run.model(batch)
        pred = out.prediction.float()
        if self.is_classifier:
            pred = torch.softmax(pred, dim=-1)
        return pred.cpu().numpy(), {k: v.float().cpu().numpy() for k, v in out.extras.items()}

    def without(self, data: MultimodalDataset, modality: str) -> np.ndarray:
        """The prediction with `modality` removed (as `emofuse robustness` removes it)."""
        if modality in self.run.raw_modalities:
            with zero_word_vectors(self.run.model, modality):
                return self.forward(data)[0]
        if modality == "text" and self.run.tokenizer is not None:
            return self.forward(
                TokenCorruption.for_tokenizer(self.run.tokenizer, 0.0, missing=True).apply(data)
            )[0]
        return self.forward(Corruption(modality, 0.0, missing=True).apply(data))[0]

    def summarise(self, pred: np.ndarray) -> dict[str, Any]:
        if self.is_classifier:
            names = self.class_names
            k = int(np.argmax(pred))
            return {"class": names[k], "class_index": k, "probability": round(float(pred[k]), 4),
                    "probabilities": {n: round(float(p), 4) for n, p in zip(names, pred, strict=True)}}
        score = float(pred)
        return {"score": round(score, 4), "labels": sentiment_labels(score)}

    def contributions(self, pred: np.ndarray, without: dict[str, np.ndarray]) -> dict[str, Any]:
        """Per modality: the prediction without it, and how far the prediction moved (for a classifier,
        the predicted class's probability)."""
        contributions = {}
        k = int(np.argmax(pred)) if self.is_classifier else 0
        for m, alone in without.items():
            if self.is_classifier:
                rest = self.summarise(alone)
                contributions[m] = {"class_without": rest["class"],
                                    "probability_without": round(float(alone[k]), 4),
                                    "contribution": round(float(pred[k] - alone[k]), 4)}
            else:
                contributions[m] = {"score_without": round(float(alone), 4),
                                    "contribution": round(float(pred - alone), 4)}
        return contributions

    def predict_record(self, record: dict[str, Any], raw: dict[str, np.ndarray | None] | None = None,
                       clip: str = "<record>") -> dict[str, Any]:
        """An MMSA row's arrays (`ClipFeatures.record()`; raw crops/log-mel for raw encoders) -> dict."""
        return self.score_record(record, raw, clip).result

    def score_record(self, record: dict[str, Any], raw: dict[str, np.ndarray | None] | None = None,
                     clip: str = "<record>") -> Outcome:
        """`predict_record`'s dict with the unrounded prediction and per-modality removals beside it."""
        started = time.perf_counter()
        data = self.dataset(record, raw, clip)
        pred = self.forward(data)[0][0]
        without = {m: self.without(data, m)[0] for m in self.modalities}
        summary = self.summarise(pred)
        contributions = self.contributions(pred, without)
        words = record.get("words") or []
        starts, ends = record.get("starts", []), record.get("ends", [])
        notes = []
        missing = np.asarray(record.get("vision_missing", []), dtype=bool)
        faceless = [str(w) for w, gone in zip(words, missing, strict=False) if gone]
        if "vision" in self.modalities and faceless:
            notes.append(
                f"no face was seen during {len(faceless)} of {len(words)} words; their vision input is "
                "marked missing (as `emofuse robustness` removes a modality)"
            )
        result = {
            "clip": clip,
            "notes": notes,
            "vision_missing_words": faceless,
            **self.describe(),
            **summary,
            "text": str(record.get("raw_text", "")),
            "word_source": record.get("word_source", ""),
            "words": [{"word": str(w), "start": round(float(s), 3), "end": round(float(e), 3)}
                      for w, s, e in zip(words, starts, ends, strict=False)],
            "contributions": contributions,
            "timings": {"model": round(time.perf_counter() - started, 4)},
        }
        return Outcome(result, pred, without)

"""Re-open a finished run and score it, on its own data or on another dataset."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

import emofuse.features.sources  # noqa: F401  (registers the data sources that need the features layer)
from emofuse.data import loading
from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.loading import TextOptions, fit_lengths
from emofuse.data.normalize import FeatureScaler
from emofuse.data.raw import RAW_KEY_OF
from emofuse.evaluation.ensemble import IncompatibleRuns, average, check_compatible, probabilities
from emofuse.features.tokens import tokenize_dataset
from emofuse.models.base import ModelSpec, MultimodalModel
from emofuse.models.factory import build_model, text_encoder_config
from emofuse.models.fusion_matched import MATCHING_AIDS_BEFORE_OPTIONS
from emofuse.models.text_encoder import load_tokenizer_and_encoder
from emofuse.runtime import resolve_device
from emofuse.training.checkpoint import CheckpointError, load_checkpoint
from emofuse.training.config import TrainConfig
from emofuse.training.scoring import predict, score


def text_options(config: TrainConfig) -> TextOptions:
    """How a run's raw-text sources are read: features, or raw text for its own encoder."""
    return TextOptions(None if config.text_encoder else config.text_model, config.max_words)


def load_data(source: str, config: TrainConfig) -> DatasetSplits:
    """`source` read the way `config` was trained on: text features, classes, label kind.

    Every command that reads a run's data comes here (train, compare, ablate, tune, evaluate,
    robustness); `loading.load_splits` is looked up when called, so one patch of it reaches all.
    """
    return loading.load_splits(
        source,
        text_options(config),
        config.classes,
        labels=config.labels,
        clip_labels=config.clip_labels,
        data_options=config.data_options,
    )


@dataclass
class LoadedRun:
    run_dir: Path
    config: TrainConfig
    model: MultimodalModel
    scaler: FeatureScaler
    class_names: list[str]
    tokenizer: Any = None  # set when the model carries its own text encoder
    # how the training inputs were made from media (emofuse.data.frontend); {} for older runs
    frontend: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    @property
    def raw_modalities(self) -> tuple[str, ...]:
        """Modalities the model reads through raw-input encoders (face crops, log-mel)."""
        return tuple(
            m
            for m, name in (("vision", self.config.video_encoder), ("audio", self.config.audio_encoder))
            if name
        )

    def prepare(self, data: MultimodalDataset) -> MultimodalDataset:
        """Select the run's modalities, fit lengths to the model, apply training statistics."""
        if self.tokenizer is not None:
            # first: the encoder reads the raw text, so data without text features (RAVDESS gives
            # only its sentences) gets the text slot as training gave it
            data = tokenize_dataset(data, self.tokenizer, text_encoder_config(self.config))
        missing = [m for m in self.spec.modalities if m not in data.features]
        if missing:
            raise DataFormatError(
                f"{data.source}: the model needs modalities {list(self.spec.modalities)}, "
                f"the data lacks {missing}"
            )
        for m in self.spec.modalities:
            if m == "text" and self.tokenizer is not None:
                continue  # the encoder reads the raw text; the text features are a placeholder
            if m in self.raw_modalities:
                if RAW_KEY_OF[m] not in data.extras:
                    raise DataFormatError(
                        f"{data.source}: the model reads raw {m} inputs and the data has none"
                    )
                continue  # a raw encoder fills this slot from the per-word raw inputs
            if data.features[m].shape[-1] != self.spec.dims[m]:
                raise DataFormatError(
                    f"{data.source}: {m} features have {data.features[m].shape[-1]} dimensions, the "
                    f"model was trained on {self.spec.dims[m]} (use the same feature extractor)"
                )
        selected = data.select_modalities(self.spec.modalities)
        return self.scaler.transform(fit_lengths(selected, self.spec.max_lengths))


def load_run(run_dir: Path, device: str = "cpu") -> LoadedRun:
    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{run_dir}: not a run folder (no config.json)")
    config = TrainConfig.load(config_path)
    saved = json.loads(config_path.read_text())
    class_names = saved.get("data", {}).get("class_names", [])
    frontend = saved.get("frontend") or {}
    best = run_dir / "best.pt"
    ckpt = load_checkpoint(best, device)
    config = _config_of_checkpoint(config, ckpt, best)
    spec = ModelSpec.from_dict(ckpt["spec"])
    tokenizer = encoder = None
    if config.text_encoder:
        tokenizer, encoder = load_tokenizer_and_encoder(config.text_encoder)
    model = build_model(config, spec, encoder)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as err:  # shapes or names that do not fit: not this model's weights
        older = _with_matching_aids(config, spec, encoder, ckpt["model"])
        if older is None:
            first = str(err).strip().splitlines()[0]
            raise CheckpointError(
                f"{best}: the weights do not fit a {config.model} model ({first})"
            ) from None
        config, model = older
        print(
            f"emofuse: {run_dir} was trained when fusion_matched always used its matching aids; loaded with "
            f"{', '.join(f'{k}={v}' for k, v in MATCHING_AIDS_BEFORE_OPTIONS.items())}",
            file=sys.stderr,
        )
    model.to(resolve_device(device)).eval()
    return LoadedRun(
        run_dir,
        config,
        model,
        FeatureScaler.from_state_dict(ckpt["scaler"]),
        class_names,
        tokenizer,
        frontend,
    )


def _with_matching_aids(config: TrainConfig, spec: ModelSpec, encoder: Any, state: dict[str, Any]) -> Any:
    """(config, model) for a fusion_matched run saved before its matching aids became options, or None."""
    if config.model != "fusion_matched" or set(MATCHING_AIDS_BEFORE_OPTIONS) & set(config.model_options):
        return None
    older = dataclasses.replace(
        config, model_options={**config.model_options, **MATCHING_AIDS_BEFORE_OPTIONS}
    )
    model = build_model(older, spec, encoder)
    try:
        model.load_state_dict(state)
    except RuntimeError:
        return None
    return older, model


def _config_of_checkpoint(config: TrainConfig, ckpt: dict[str, Any], path: Path) -> TrainConfig:
    """The run's config with the network as the checkpoint records it.

    config.json can be edited, or overwritten by another run in the same folder; the weights
    only fit the model they were saved from, so the checkpoint's own record wins.
    """
    own: dict[str, Any] = {}
    if ckpt.get("model_name"):
        own["model"] = ckpt["model_name"]
    if isinstance(ckpt.get("model_options"), dict):
        own["model_options"] = ckpt["model_options"]
    if "text_encoder" in ckpt:  # recorded since text-encoder runs exist; None = no encoder
        enc = ckpt["text_encoder"] or {}
        own["text_encoder"] = enc.get("name", "")
        for key, field in (
            ("finetune", "text_finetune"),
            ("max_words", "max_words"),
            ("max_tokens", "max_tokens"),
            ("normalize", "text_normalize"),
        ):
            if key in enc:
                own[field] = enc[key]
        if enc and "normalize" not in enc:
            own["text_normalize"] = "none"  # saved before the option existed: text read as written
    differs = sorted(k for k, v in own.items() if getattr(config, k) != v)
    if not differs:
        return config
    print(
        f"emofuse: {path.parent / 'config.json'} disagrees with {path.name} on {', '.join(differs)}; "
        f"using {path.name}'s ({own.get('model', config.model)})",
        file=sys.stderr,
    )
    return dataclasses.replace(config, **own)


def evaluate_run(
    run_dir: Path, data: str | None = None, splits: tuple[str, ...] = ("test",), device: str = "cpu"
) -> dict[str, Any]:
    """Metrics of a run's best checkpoint on `splits` of its own data or of `data`."""
    run = load_run(run_dir, device)
    report, _ = _score_run(run, data, splits, device, load_data)
    return report


Scored = dict[str, tuple[np.ndarray, MultimodalDataset]]  # split -> (predictions, the prepared data)


def _score_run(
    run: LoadedRun,
    data: str | None,
    splits: tuple[str, ...],
    device: str,
    read: Callable[[str, TrainConfig], DatasetSplits],
) -> tuple[dict[str, Any], Scored]:
    """A loaded run's report on `splits` and, per split, its predictions and the data they are of."""
    source = data or run.config.data
    loaded: DatasetSplits = read(source, run.config)
    if loaded.task != run.spec.task:
        raise DataFormatError(
            f"{source}: {loaded.task} labels, but the run was trained for {run.spec.task}"
        )
    report: dict[str, Any] = {"run": str(run.run_dir), "data": source}
    scored: Scored = {}
    for split in splits:
        prepared = run.prepare(loaded[split])
        preds = predict(run.model, prepared, 64, resolve_device(device))
        report[split] = score(preds, prepared, run.class_names or loaded.class_names)
        report[split]["n"] = len(prepared)
        scored[split] = (preds, prepared)
    return report, scored


def evaluate_runs(
    run_dirs: Sequence[Path],
    data: str | None = None,
    splits: tuple[str, ...] = ("test",),
    device: str = "cpu",
) -> dict[str, Any]:
    """Each run's report (as `evaluate_run` gives it) and the ensemble's: the same metrics of the mean
    of the runs' class probabilities (classifiers) or scores (regression), clip by clip.

    The runs must be compatible (`ensemble.check_compatible`) and score the same clips in the same
    order with the same labels: on `data`, or each on its own training data when that is one dataset.
    """
    runs = [load_run(d, device) for d in run_dirs]
    check_compatible(runs)
    cache: dict[str, DatasetSplits] = {}

    def read(source: str, config: TrainConfig) -> DatasetSplits:
        # seeds of one recipe read their data the same way: once, not once per seed
        key = json.dumps([source, repr(text_options(config)), config.classes, config.labels,
                          config.clip_labels, config.data_options], sort_keys=True, default=str)
        if key not in cache:
            cache[key] = load_data(source, config)
        return cache[key]

    members, outputs = [], []
    for run in runs:
        report, scored = _score_run(run, data, splits, device, read)
        members.append(report)
        outputs.append(scored)
    task = runs[0].spec.task
    ensemble: dict[str, Any] = {"runs": [str(r.run_dir) for r in runs]}
    for split in splits:
        reference = outputs[0][split][1]
        for run, scored in zip(runs[1:], outputs[1:], strict=True):
            _check_same_clips(runs[0], reference, run, scored[split][1], split)
        preds = [scored[split][0] for scored in outputs]
        if task == "classification":
            preds = [probabilities(p) for p in preds]
        names = runs[0].class_names or read(data or runs[0].config.data, runs[0].config).class_names
        ensemble[split] = score(average(preds, task), reference, names)
        ensemble[split]["n"] = len(reference)
    return {"data": members[0]["data"], "members": members, "ensemble": ensemble}


def _check_same_clips(
    first: LoadedRun, a: MultimodalDataset, run: LoadedRun, b: MultimodalDataset, split: str
) -> None:
    """Averaging row by row needs the same clips in the same order, with the same labels."""
    if list(a.ids) != list(b.ids):
        raise IncompatibleRuns(
            f"runs {first.run_dir} and {run.run_dir} cannot be averaged: their {split} splits hold "
            f"different clips ({len(a)} and {len(b)}; {first.config.data} and {run.config.data}); "
            "give --data to score both on one dataset"
        )
    if not torch.equal(a.labels, b.labels):
        raise IncompatibleRuns(
            f"runs {first.run_dir} and {run.run_dir} cannot be averaged: they label the {split} clips "
            "differently (their label settings differ)"
        )


def predictions_for(run: LoadedRun, data: MultimodalDataset, device: str = "cpu") -> np.ndarray:
    return predict(run.model, run.prepare(data), 64, resolve_device(device))

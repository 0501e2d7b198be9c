"""Re-open a finished run and score it, on its own data or on another dataset."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.loading import TextOptions, fit_lengths, load_splits
from emofuse.data.normalize import FeatureScaler
from emofuse.evaluation.predict import predict, score
from emofuse.models.base import ModelSpec, MultimodalModel
from emofuse.models.text_encoder import load_tokenizer_and_encoder, tokenize_dataset
from emofuse.training.checkpoint import CheckpointError, load_checkpoint
from emofuse.training.config import TrainConfig
from emofuse.training.trainer import build_model, resolve_device, text_encoder_config


def text_options(config: TrainConfig) -> TextOptions:
    """How a run's raw-text sources are read: features, or raw text for its own encoder."""
    return TextOptions(None if config.text_encoder else config.text_model, config.max_words)


@dataclass
class LoadedRun:
    run_dir: Path
    config: TrainConfig
    model: MultimodalModel
    scaler: FeatureScaler
    class_names: list[str]
    tokenizer: Any = None  # set when the model carries its own text encoder

    @property
    def spec(self) -> ModelSpec:
        return self.model.spec

    def prepare(self, data: MultimodalDataset) -> MultimodalDataset:
        """Select the run's modalities, fit lengths to the model, apply training statistics."""
        missing = [m for m in self.spec.modalities if m not in data.features]
        if missing:
            raise DataFormatError(
                f"{data.source}: the model needs modalities {list(self.spec.modalities)}, "
                f"the data lacks {missing}"
            )
        if self.tokenizer is not None:
            data = tokenize_dataset(data, self.tokenizer, text_encoder_config(self.config))
        for m in self.spec.modalities:
            if m == "text" and self.tokenizer is not None:
                continue  # the encoder reads the raw text; the text features are a placeholder
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
    class_names = json.loads(config_path.read_text()).get("data", {}).get("class_names", [])
    ckpt = load_checkpoint(run_dir / "best.pt", device)
    spec = ModelSpec.from_dict(ckpt["spec"])
    tokenizer = encoder = None
    if config.text_encoder:
        tokenizer, encoder = load_tokenizer_and_encoder(config.text_encoder)
    model = build_model(config, spec, encoder)
    model.load_state_dict(ckpt["model"])
    model.to(resolve_device(device)).eval()
    return LoadedRun(run_dir, config, model, FeatureScaler.from_state_dict(ckpt["scaler"]), class_names, tokenizer)


def evaluate_run(
    run_dir: Path, data: str | None = None, splits: tuple[str, ...] = ("test",), device: str = "cpu"
) -> dict[str, Any]:
    """Metrics of a run's best checkpoint on `splits` of its own data or of `data`."""
    run = load_run(run_dir, device)
    source = data or run.config.data
    loaded: DatasetSplits = load_splits(source, text_options(run.config), run.config.classes)
    if loaded.task != run.spec.task:
        raise DataFormatError(
            f"{source}: {loaded.task} labels, but the run was trained for {run.spec.task}"
        )
    report: dict[str, Any] = {"run": str(run_dir), "data": source}
    for split in splits:
        prepared = run.prepare(loaded[split])
        preds = predict(run.model, prepared, 64, resolve_device(device))
        report[split] = score(preds, prepared, run.class_names or loaded.class_names)
        report[split]["n"] = len(prepared)
    return report


def predictions_for(run: LoadedRun, data: MultimodalDataset, device: str = "cpu") -> np.ndarray:
    return predict(run.model, run.prepare(data), 64, resolve_device(device))

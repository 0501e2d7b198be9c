"""One trainer for every model.

A run folder holds everything about a run:
    config.json       resolved TrainConfig + ModelSpec + model config + data description
    log.csv           one row per epoch (train loss, valid loss, seconds)
    best.pt           weights with the lowest validation loss (the ones that are tested)
    last.pt           full training state after the last finished epoch (for --resume)
    metrics.json      valid and test metrics of best.pt
    predictions.csv   split, id, label, prediction for valid and test

The trainer only looks at train and valid while training; test is scored once, after the
checkpoint has been chosen on validation loss.
"""

from __future__ import annotations

import csv
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from emofuse.data.dataset import DatasetSplits, MultimodalDataset, parse_modalities
from emofuse.data.normalize import FeatureScaler
from emofuse.evaluation.predict import point_predictions, predict, score
from emofuse.metrics import plot_confusion_matrix
from emofuse.models.base import ModelSpec, MultimodalModel
from emofuse.models.registry import create_model
from emofuse.models.text_encoder import (
    TextEncoder,
    TextEncoderConfig,
    WithTextEncoder,
    load_tokenizer_and_encoder,
    text_model_spec,
    tokenize_splits,
)
from emofuse.training.checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    save_checkpoint,
)
from emofuse.training.config import TrainConfig

LOG_FIELDS = ["epoch", "train_loss", "valid_loss", "best_valid_loss", "seconds"]


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]  # {"valid": {...}, "test": {...}}
    best_epoch: int
    epochs_run: int


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def model_spec_for(splits: DatasetSplits, modalities: tuple[str, ...]) -> ModelSpec:
    train = splits.train
    return ModelSpec(
        modalities=modalities,
        dims={m: train.dims()[m] for m in modalities},
        max_lengths={m: train.max_lengths()[m] for m in modalities},
        task=splits.task,
        num_classes=splits.num_classes if splits.task == "classification" else 1,
    )


def text_encoder_config(config: TrainConfig) -> TextEncoderConfig:
    return TextEncoderConfig(config.text_encoder, config.text_finetune, config.max_words, config.max_tokens)


def build_model(config: TrainConfig, spec: ModelSpec, encoder: torch.nn.Module | None = None) -> MultimodalModel:
    """The registered model, wrapped with a text encoder when the config asks for one.

    `spec` describes the data; with an encoder, the wrapped model sees the encoder's width as
    its text dimension.
    """
    if not config.text_encoder:
        return create_model(config.model, spec, **config.model_options)
    if "text" not in spec.modalities:
        raise ValueError("--text-encoder needs the text modality in --modalities")
    text = TextEncoder(text_encoder_config(config), encoder)
    inner = create_model(config.model, text_model_spec(spec, text.dim), **config.model_options)
    inner.model_name = config.model
    return WithTextEncoder(inner, text)


def make_loss(config: TrainConfig, splits: DatasetSplits) -> nn.Module:
    if splits.task == "regression":
        return nn.L1Loss()  # the paper's (and MMSA's) loss for MOSI scores
    weight = None
    if config.class_weights:
        counts = torch.bincount(splits.train.labels, minlength=splits.num_classes).float()
        weight = counts.sum() / (counts.clamp_min(1) * len(counts))
    return nn.CrossEntropyLoss(weight=weight)


def make_optimizer(config: TrainConfig, model: MultimodalModel) -> torch.optim.Optimizer:
    # a model may ask for its own parameter groups (LMF's factors, a text encoder's layers)
    if isinstance(model, WithTextEncoder):
        groups = model.parameter_groups(config.lr, config.text_lr, config.layer_decay)
    elif hasattr(model, "parameter_groups"):
        groups = model.parameter_groups(config.lr)
    else:
        groups = model.parameters()
    # AdamW: the decoupled decay transformer fine-tuning expects (equal to Adam at decay 0)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay)


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then linear decay for the text encoder's groups; constant elsewhere."""
    total = max(1, config.epochs * steps_per_epoch)
    warm = max(1, int(config.warmup * total))

    def encoder_factor(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    lambdas = [encoder_factor if g.get("text_encoder") else (lambda step: 1.0) for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class Trainer:
    def __init__(
        self, config: TrainConfig, splits: DatasetSplits, run_dir: Path, progress: bool = True
    ) -> None:
        self.config = config
        self.modalities = parse_modalities(config.modalities)
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.device = resolve_device(config.device)
        if config.threads:
            torch.set_num_threads(config.threads)
        encoder = None
        if config.text_encoder:
            tokenizer, encoder = load_tokenizer_and_encoder(config.text_encoder)
            splits = tokenize_splits(splits, tokenizer, text_encoder_config(config))
        selected = splits.select_modalities(self.modalities)
        self.scaler = FeatureScaler.fit(selected.train)
        self.splits = self.scaler.transform_splits(selected)
        seed_everything(config.seed)
        self.model = build_model(config, model_spec_for(self.splits, self.modalities), encoder).to(self.device)
        self.spec = self.model.spec
        self.loss_fn = make_loss(config, self.splits).to(self.device)
        self.optimizer = make_optimizer(config, self.model)
        steps = -(-len(self.splits.train) // config.batch_size)
        self.scheduler = make_scheduler(config, self.optimizer, steps)

    # ------------------------------------------------------------------ files
    def _write_config(self) -> None:
        payload = {
            "train": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "model_config": self.model.config_dict(),
            "data": {
                "name": self.splits.name,
                "description": self.splits.describe(),
                "class_names": self.splits.class_names,
            },
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }
        atomic_write_text(self.run_dir / "config.json", json.dumps(payload, indent=2) + "\n")

    def _append_log(self, row: dict[str, Any]) -> None:
        path = self.run_dir / "log.csv"
        new = not path.exists()
        with path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    def _rewrite_log(self, history: list[dict[str, Any]]) -> None:
        # on resume, the log is rebuilt from the checkpoint so a crash between writing the
        # log and the checkpoint cannot leave duplicate or phantom epochs
        lines = [",".join(LOG_FIELDS)] + [",".join(str(r[k]) for k in LOG_FIELDS) for r in history]
        atomic_write_text(self.run_dir / "log.csv", "\n".join(lines) + "\n")

    # ------------------------------------------------------------------ epochs
    def _train_epoch(self, epoch: int) -> float:
        self.model.train()
        # a fresh generator per epoch: the shuffle order depends on (seed, epoch) only, so a
        # resumed run sees exactly the batches an uninterrupted one would
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        total, count = 0.0, 0
        for batch in self.splits.train.batches(self.config.batch_size, shuffle=True, generator=gen):
            batch = batch.to(self.device)
            out = self.model(batch)
            loss = self.loss_fn(out.prediction, batch.labels)
            full = loss + out.aux_loss if out.aux_loss is not None else loss
            self.optimizer.zero_grad(set_to_none=True)
            full.backward()
            if self.config.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            total += float(loss.detach()) * len(batch)
            count += len(batch)
        return total / count

    def _valid_loss(self) -> float:
        preds = torch.from_numpy(predict(self.model, self.splits.valid, 2 * self.config.batch_size, self.device))
        return float(self.loss_fn(preds.to(self.device), self.splits.valid.labels.to(self.device)))

    # ------------------------------------------------------------------ main
    def fit(self, resume: bool = False) -> RunResult:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        last_path = self.run_dir / "last.pt"
        state = self._initial_state()
        if resume and last_path.exists():
            state = self._restore(last_path)
            self._rewrite_log(state["history"])
        elif (self.run_dir / "log.csv").exists():
            (self.run_dir / "log.csv").unlink()  # a fresh run in a used folder starts a new log
        self._write_config()

        cfg = self.config
        bar = tqdm(
            range(state["epoch"] + 1, cfg.epochs + 1),
            desc=f"{cfg.model} {cfg.modalities} seed {cfg.seed}",
            disable=not self.progress,
            leave=False,
        )
        for epoch in bar:
            if state["finished"]:
                break
            start = time.perf_counter()
            train_loss = self._train_epoch(epoch)
            valid_loss = self._valid_loss()
            if not math.isfinite(train_loss) or not math.isfinite(valid_loss):
                raise FloatingPointError(
                    f"training diverged at epoch {epoch} (train loss {train_loss}, valid loss "
                    f"{valid_loss}); lower --lr (now {cfg.lr}) or check the data for extreme values"
                )
            if valid_loss < state["best_valid_loss"]:
                state.update(best_valid_loss=valid_loss, best_epoch=epoch, bad_epochs=0)
                save_checkpoint(self._model_payload(epoch), self.run_dir / "best.pt")
            else:
                state["bad_epochs"] += 1
            row = {
                "epoch": epoch,
                "train_loss": round(train_loss, 6),
                "valid_loss": round(valid_loss, 6),
                "best_valid_loss": round(state["best_valid_loss"], 6),
                "seconds": round(time.perf_counter() - start, 3),
            }
            state["history"].append(row)
            state["epoch"] = epoch
            state["finished"] = bool(cfg.patience and state["bad_epochs"] >= cfg.patience) or epoch == cfg.epochs
            save_checkpoint(self._training_payload(state), last_path)
            self._append_log(row)
            bar.set_postfix(train=f"{train_loss:.3f}", valid=f"{valid_loss:.3f}", best=state["best_epoch"])
        bar.close()
        return self._finish(state)

    def _initial_state(self) -> dict[str, Any]:
        return {
            "epoch": 0,
            "best_valid_loss": math.inf,
            "best_epoch": 0,
            "bad_epochs": 0,
            "history": [],
            "finished": False,
        }

    def _model_payload(self, epoch: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "model_name": self.config.model,
            "spec": self.spec.to_dict(),
            "model_options": self.config.model_options,
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
        }

    def _training_payload(self, state: dict[str, Any]) -> dict[str, Any]:
        return {
            **self._model_payload(state["epoch"]),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": state,
            "train_config": self.config.to_dict(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def _restore(self, path: Path) -> dict[str, Any]:
        ckpt = load_checkpoint(path, self.device)
        saved = ckpt.get("train_config", {})
        # only these may differ between the interrupted and the resumed run
        free = {"epochs", "device", "threads", "patience"}
        changed = {k for k in saved if k not in free and saved[k] != self.config.to_dict().get(k)}
        if changed:
            raise CheckpointError(
                f"{path}: cannot resume, the run was started with different settings "
                f"({', '.join(sorted(changed))}); use a new --out folder"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scheduler" in ckpt:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        if ckpt.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        state = ckpt["state"]
        # more epochs asked for than the interrupted run had: carry on
        if state["finished"] and state["epoch"] < self.config.epochs and not (
            self.config.patience and state["bad_epochs"] >= self.config.patience
        ):
            state["finished"] = False
        return state

    def _finish(self, state: dict[str, Any]) -> RunResult:
        best = load_checkpoint(self.run_dir / "best.pt", self.device)
        self.model.load_state_dict(best["model"])
        metrics: dict[str, Any] = {"best_epoch": state["best_epoch"], "epochs_run": state["epoch"]}
        rows = []
        for split in ("valid", "test"):
            data: MultimodalDataset = self.splits[split]
            preds = predict(self.model, data, 2 * self.config.batch_size, self.device)
            metrics[split] = score(preds, data, self.splits.class_names)
            for i, (sid, label, pred) in enumerate(zip(data.ids, data.labels.tolist(), point_predictions(preds))):
                rows.append({"split": split, "index": i, "id": sid, "label": label, "prediction": float(pred)})
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(metrics, indent=2, default=_json_default) + "\n")
        if self.splits.task == "classification":
            names = self.splits.class_names or [str(i) for i in range(self.splits.num_classes)]
            plot_confusion_matrix(metrics["test"]["confusion_matrix"], names, self.run_dir / "confusion_test.png",
                                  title=f"{self.config.model} {self.config.modalities}: test")
        write_predictions(self.run_dir / "predictions.csv", rows)
        return RunResult(self.run_dir, metrics, state["best_epoch"], state["epoch"])


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    header = ["split", "index", "id", "label", "prediction"]
    lines = [",".join(header)]
    for r in rows:
        lines.append(",".join(_csv_cell(r[k]) for k in header))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_cell(value: Any) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return f'"{text}"' if "," in text or '"' in text else text


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def train_run(
    config: TrainConfig, splits: DatasetSplits, run_dir: Path, resume: bool = False, progress: bool = True
) -> RunResult:
    return Trainer(config, splits, run_dir, progress).fit(resume=resume)

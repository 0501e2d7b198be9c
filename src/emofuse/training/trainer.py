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

--resume continues from last.pt and ends with the weights, metrics and predictions an
uninterrupted run would have (bit for bit on CPU with a fixed --threads), wherever the process
was killed: the shuffle order depends on (seed, epoch) only, and last.pt carries the optimiser,
scheduler, early-stopping counters and every RNG state. Temp files of a killed write are
removed. A missing or stale best.pt is rewritten from last.pt when last.pt holds the best epoch,
and otherwise the run retrains from epoch 1 (deterministic, so it ends the same). Only
--epochs, --patience, --device and --threads may change on resume, and --epochs not on a run
whose text encoder follows a warm-up/decay schedule: that schedule spans the run's total steps
(stored in last.pt), so a new --epochs is refused rather than silently re-planned.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import random
import sys
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
from emofuse.errors import UserError
from emofuse.evaluation.predict import point_predictions, predict, score
from emofuse.metrics import plot_confusion_matrix
from emofuse.models.base import ModelSpec, MultimodalModel
from emofuse.models.raw_encoders import RawEncoderConfig, WithRawEncoders, check_raw_inputs, raw_model_spec
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
    remove_stale_temp_files,
    save_checkpoint,
)
from emofuse.training.config import TrainConfig

LOG_FIELDS = ["epoch", "train_loss", "valid_loss", "best_valid_loss", "seconds"]
# settings that may change between an interrupted run and its --resume: none of them alters
# the weights an epoch produces (threads can move the last float bit on some CPUs); `epochs`
# is checked separately because it lays out the text encoder's learning-rate schedule
RESUME_FREE = {"epochs", "device", "threads", "patience"}


class TrainingDiverged(UserError):
    """The loss became inf/NaN: a setting to change (--lr), not a bug."""


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
        raise UserError(f"device {name!r} requested but CUDA is not available on this machine")
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
    raw = raw_encoder_config(config, spec)
    inner_spec = raw_model_spec(spec, raw) if raw.encoders else spec
    if not config.text_encoder:
        model = create_model(config.model, inner_spec, **config.model_options)
        return WithRawEncoders(model, raw) if raw.encoders else model
    if "text" not in spec.modalities:
        raise UserError("--text-encoder needs the text modality in --modalities")
    text = TextEncoder(text_encoder_config(config), encoder)
    inner = create_model(config.model, text_model_spec(inner_spec, text.dim), **config.model_options)
    inner.model_name = config.model
    # the raw encoders sit inside the text wrapper, so its optimiser groups stay outermost
    return WithTextEncoder(WithRawEncoders(inner, raw) if raw.encoders else inner, text)


def raw_encoder_config(config: TrainConfig, spec: ModelSpec) -> RawEncoderConfig:
    """Which raw-input encoders the run uses, for the modalities it reads."""
    names = {"vision": config.video_encoder, "audio": config.audio_encoder}
    for m, name in names.items():
        if name and m not in spec.modalities:
            flag = "--video-encoder" if m == "vision" else "--audio-encoder"
            raise UserError(f"{flag} {name} needs the {m} modality in --modalities")
    encoders = {m: name for m, name in names.items() if name}
    try:
        return RawEncoderConfig(encoders, config.encoder_dim, {m: config.encoder_options.get(m, {}) for m in encoders})
    except ValueError as err:
        raise UserError(str(err)) from None


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


def schedule_steps(config: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(total, warm-up) optimizer steps of the text encoder's schedule: it spans all --epochs."""
    total = max(1, config.epochs * steps_per_epoch)
    return total, max(1, int(config.warmup * total))


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up then linear decay for the text encoder's groups; constant elsewhere."""
    total, warm = schedule_steps(config, steps_per_epoch)

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
        check_raw_inputs(raw_encoder_config(config, model_spec_for(self.splits, self.modalities)), self.splits.train)
        seed_everything(config.seed)
        self.model = build_model(config, model_spec_for(self.splits, self.modalities), encoder).to(self.device)
        self.spec = self.model.spec
        self.loss_fn = make_loss(config, self.splits).to(self.device)
        self.optimizer = make_optimizer(config, self.model)
        self.steps_per_epoch = -(-len(self.splits.train) // config.batch_size)
        self.scheduler = make_scheduler(config, self.optimizer, self.steps_per_epoch)
        # only the text encoder's groups follow a schedule; the others keep a constant lr
        self.scheduled = any(g.get("text_encoder") for g in self.optimizer.param_groups)

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
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise UserError(f"{self.run_dir}: cannot hold a run, a file is in the way") from None
        # temp files of a writer killed mid-write (SIGKILL runs no cleanup)
        remove_stale_temp_files(self.run_dir)
        last_path = self.run_dir / "last.pt"
        state = self._initial_state()
        ckpt = self._resumable(last_path) if resume and last_path.exists() else None
        if ckpt is not None:
            state = self._restore(ckpt)
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
                raise TrainingDiverged(
                    f"training diverged at epoch {epoch} (train loss {train_loss}, valid loss "
                    f"{valid_loss}); lower --lr (now {cfg.lr}) or check the data for extreme values"
                )
            improved = valid_loss < state["best_valid_loss"]
            if improved:
                state.update(best_valid_loss=valid_loss, best_epoch=epoch, bad_epochs=0)
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
            # last.pt before best.pt: a kill between the two leaves last.pt naming this epoch as
            # the best, and its weights are these, so --resume can rewrite best.pt from it
            save_checkpoint(self._training_payload(state), last_path)
            if improved:
                save_checkpoint(self._model_payload(epoch), self.run_dir / "best.pt")
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
        # enough to rebuild the network without config.json (`evaluate` trusts these)
        return {
            "model": self.model.state_dict(),
            "model_name": self.config.model,
            "spec": self.spec.to_dict(),
            "model_options": self.config.model_options,
            "text_encoder": dataclasses.asdict(text_encoder_config(self.config)) if self.config.text_encoder else None,
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
            "schedule": self._schedule(),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_rng": np.random.get_state(),
            "python_rng": random.getstate(),
        }

    def _schedule(self) -> dict[str, Any]:
        total, warm = schedule_steps(self.config, self.steps_per_epoch)
        return {"total_steps": total, "warmup_steps": warm, "steps_per_epoch": self.steps_per_epoch,
                "epochs": self.config.epochs, "scheduled": self.scheduled}

    def _resumable(self, path: Path) -> dict[str, Any] | None:
        """last.pt checked against this run's settings, or None when training must start over.

        Starting over happens in one case only: best.pt is gone (or is from another epoch) and
        last.pt holds different weights, so the selected epoch exists nowhere. Training is
        deterministic, so a fresh start reproduces it.
        """
        ckpt = load_checkpoint(path, self.device)
        saved = ckpt.get("train_config", {})
        now = self.config.to_dict()
        changed = {k for k in saved if k not in RESUME_FREE and saved[k] != now.get(k)}
        if changed:
            raise CheckpointError(
                f"{path}: cannot resume, the run was started with different settings "
                f"({', '.join(sorted(changed))}); use a new --out folder"
            )
        self._check_schedule(path, ckpt, saved)
        state = ckpt["state"]
        if state["best_epoch"] == 0:
            return ckpt  # no epoch has finished: there is no best yet
        best_path = self.run_dir / "best.pt"
        # a corrupt best.pt stops here, before more epochs are trained, with advice to delete it
        best_epoch = load_checkpoint(best_path, "cpu").get("epoch") if best_path.exists() else None
        if best_epoch == state["best_epoch"]:
            return ckpt
        if state["best_epoch"] == state["epoch"]:
            # the best epoch is the last finished one: its weights are in last.pt
            payload = {k: ckpt[k] for k in self._model_payload(0) if k in ckpt}
            save_checkpoint({**payload, "epoch": state["epoch"]}, best_path)
            return ckpt
        found = "missing" if best_epoch is None else f"from epoch {best_epoch}"
        print(
            f"emofuse: {best_path} is {found}, and the best epoch ({state['best_epoch']}) is not in "
            f"last.pt (epoch {state['epoch']}): retraining {self.run_dir} from epoch 1 to recover it",
            file=sys.stderr,
        )
        return None

    def _check_schedule(self, path: Path, ckpt: dict[str, Any], saved: dict[str, Any]) -> None:
        """Refuse a resume that would silently re-plan the text encoder's lr schedule."""
        if not self.scheduled:
            return  # constant learning rates: --epochs only moves the finish line
        before = ckpt.get("schedule") or {"total_steps": saved.get("epochs", 0) * self.steps_per_epoch,
                                          "epochs": saved.get("epochs")}
        total, _ = schedule_steps(self.config, self.steps_per_epoch)
        if before["total_steps"] != total:
            raise CheckpointError(
                f"{path}: cannot resume with --epochs {self.config.epochs}: the text encoder's learning "
                f"rate warms up and decays over the run's {before['total_steps']} steps "
                f"({before.get('epochs')} epochs), and {total} steps would change it mid-run; resume with "
                f"--epochs {before.get('epochs')}, or train longer in a new --out folder"
            )

    def _restore(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scheduler" in ckpt:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        torch.set_rng_state(ckpt["torch_rng"].cpu())
        if ckpt.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        if "numpy_rng" in ckpt:
            np.random.set_state(ckpt["numpy_rng"])
        if "python_rng" in ckpt:
            random.setstate(ckpt["python_rng"])
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

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
(stored in last.pt), so a new --epochs is refused rather than silently re-planned. The speed
options (config.SPEED_FIELDS) may change too.

Under torchrun the run is shared by several processes (emofuse.training.distributed): rank 0
evaluates and writes the run folder, every process trains on its part of each global batch,
and last.pt keeps each process's RNG state, so a resumed run with the same number of processes
still ends as the uninterrupted one would.

Speed options (TrainConfig, all off by default): torch.compile, bf16 autocast on CUDA, a fused
or foreach AdamW, length-bucketed batches, a larger evaluation batch, and on CUDA the dataset
kept on the GPU when it fits (else a pinned-memory DataLoader with workers).
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from emofuse.data.dataset import RAW_EXTRAS, Batch, DatasetSplits, MultimodalDataset, parse_modalities
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
from emofuse.training import distributed
from emofuse.training.checkpoint import (
    CheckpointError,
    atomic_write_text,
    load_checkpoint,
    remove_stale_temp_files,
    save_checkpoint,
)
from emofuse.training.config import SPEED_FIELDS, TrainConfig
from emofuse.training.mixup import Mixup, mixed_loss

LOG_FIELDS = ["epoch", "train_loss", "valid_loss", "best_valid_loss", "seconds"]
# settings that may change between an interrupted run and its --resume: none of them alters
# the weights an epoch produces (threads can move the last float bit on some CPUs); `epochs`
# is checked separately because it lays out the text encoder's learning-rate schedule
RESUME_FREE = {"epochs", "device", "threads", "patience", *SPEED_FIELDS}
# what keeping a dataset on the GPU may take of the free memory: the rest is the model's
DEVICE_DATA_SHARE = 0.25
# called after each finished epoch with (epoch, log row); raising stops the run there (its
# finished epochs stay resumable), e.g. optuna.TrialPruned
EpochCallback = Callable[[int, dict[str, Any]], None]


class TrainingDiverged(UserError):
    """The loss became inf/NaN: a setting to change (--lr), not a bug."""


@dataclass
class RunResult:
    run_dir: Path
    metrics: dict[str, Any]  # {"valid": {...}, "test": {...}}
    best_epoch: int
    epochs_run: int
    best_valid_loss: float = math.nan


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


def make_optimizer(config: TrainConfig, model: MultimodalModel, device: torch.device | None = None) -> torch.optim.Optimizer:
    # a model may ask for its own parameter groups (LMF's factors, a text encoder's layers)
    if isinstance(model, WithTextEncoder):
        groups = model.parameter_groups(config.lr, config.text_lr, config.layer_decay)
    elif hasattr(model, "parameter_groups"):
        groups = model.parameter_groups(config.lr)
    else:
        groups = model.parameters()
    # AdamW: the decoupled decay transformer fine-tuning expects (equal to Adam at decay 0)
    return torch.optim.AdamW(groups, lr=config.lr, weight_decay=config.weight_decay, **adam_kind(config, device))


def adam_kind(config: TrainConfig, device: torch.device | None) -> dict[str, bool]:
    """AdamW's implementation keyword: one fused kernel, one multi-tensor (foreach) op per
    step, or torch's default choice. Fused needs float parameters on a device torch has a
    kernel for (CUDA, CPU); where it has none, foreach is used, with a warning."""
    if config.adam == "foreach":
        return {"foreach": True}
    if config.adam == "fused":
        if device is not None and device.type not in ("cuda", "cpu"):
            warnings.warn(f"--adam fused: no fused AdamW on {device.type}; using foreach", stacklevel=3)
            return {"foreach": True}
        return {"fused": True}
    return {}


def schedule_steps(config: TrainConfig, steps_per_epoch: int) -> tuple[int, int]:
    """(total, warm-up) optimizer steps of the lr schedules: they span all --epochs."""
    total = max(1, config.epochs * steps_per_epoch)
    return total, max(1, int(config.warmup * total))


def make_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int) -> torch.optim.lr_scheduler.LambdaLR:
    """The text encoder's groups: linear warm-up, then linear decay. The model's groups: constant,
    or with --lr-schedule cosine a linear warm-up, then a cosine decay to zero."""
    total, warm = schedule_steps(config, steps_per_epoch)

    def encoder_factor(step: int) -> float:
        return (step + 1) / warm if step < warm else max(0.0, (total - step) / max(1, total - warm))

    def cosine_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    def model_factor(step: int) -> float:
        return 1.0

    other = cosine_factor if config.lr_schedule == "cosine" else model_factor
    lambdas = [encoder_factor if g.get("text_encoder") else other for g in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)


class Trainer:
    """Trains one run into `run_dir`.

    callbacks: called after every finished epoch (see EpochCallback). score_test=False: the
    test split is never read (a tuning trial); it is replaced by the validation split before
    anything touches it, and metrics.json and predictions.csv hold validation only.
    """

    def __init__(
        self,
        config: TrainConfig,
        splits: DatasetSplits,
        run_dir: Path,
        progress: bool = True,
        callbacks: Sequence[EpochCallback] = (),
        score_test: bool = True,
    ) -> None:
        self.config = config
        self.modalities = parse_modalities(config.modalities)
        self.run_dir = Path(run_dir)
        self.callbacks = list(callbacks)
        self.score_test = score_test
        if not score_test:
            # the shared split-wide steps (tokenising, scaling) then run on train and valid only
            splits = dataclasses.replace(splits, test=splits.valid)
        self.dist = distributed.context()
        distributed.check_batch_size(config.batch_size, self.dist)
        self.progress = progress and self.dist.is_main
        self.device = distributed.device_for(resolve_device(config.device), self.dist)
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
        self.optimizer = make_optimizer(config, self.model, self.device)
        self.steps_per_epoch = -(-len(self.splits.train) // config.batch_size)
        self.scheduler = make_scheduler(config, self.optimizer, self.steps_per_epoch)
        # the text encoder's groups always follow a schedule; the others only with --lr-schedule cosine
        self.scheduled = config.lr_schedule != "constant" or any(g.get("text_encoder") for g in self.optimizer.param_groups)
        self.amp = self._amp_dtype()
        self.compiled = False  # set by _wrap when torch.compile accepted the model
        self.train_model = self._wrap(self.model)  # DDP and/or compiled; self.model stays plain
        self.train_data = self._placed(self.splits.train)
        self.valid_data = self._placed(self.splits.valid)
        self.eval_batch_size = config.eval_batch_size or 2 * config.batch_size

    # ------------------------------------------------------------------ speed / processes
    def _amp_dtype(self) -> torch.dtype | None:
        if not self.config.amp:
            return None
        if self.device.type != "cuda":
            warnings.warn(f"--amp {self.config.amp} applies on CUDA only; this run is on {self.device.type} "
                          "and trains in float32", stacklevel=3)
            return None
        return torch.bfloat16

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp)

    def _wrap(self, model: nn.Module) -> nn.Module:
        if self.dist.active:
            from torch.nn.parallel import DistributedDataParallel

            if self.device.type == "cuda":
                model = nn.SyncBatchNorm.convert_sync_batchnorm(model)  # batch statistics over all GPUs
            model = DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=self._has_unused_parameters(model),
            )
        if self.config.compile:
            try:
                model = torch.compile(model, backend=self.config.compile)
                self.compiled = True
            except Exception as err:  # an unknown backend, a torch without dynamo
                warnings.warn(f"--compile {self.config.compile}: {err}; training in eager mode", stacklevel=3)
        return model

    def _has_unused_parameters(self, model: nn.Module) -> bool:
        """Whether a training step leaves some trainable parameter without a gradient.

        DDP then has to search the graph every step (find_unused_parameters), else it waits for
        those gradients forever. One probe step on the first batch answers it; the RNG and the
        buffers (BatchNorm statistics) are put back, so the run is unchanged.
        """
        rng, buffers = _rng_state(), {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        batch = self.splits.train.make_batch(torch.arange(min(len(self.splits.train), self.config.batch_size)))
        out = model(batch.to(self.device))
        full = self.loss_fn(out.prediction.float(), batch.labels.to(self.device))
        (full + out.aux_loss.float() if out.aux_loss is not None else full).backward()
        unused = any(p.requires_grad and p.grad is None for p in model.parameters())
        model.zero_grad(set_to_none=True)
        model.load_state_dict(buffers)
        _set_rng_state(rng)
        return unused

    def _forward(self, batch: Batch) -> Any:
        """The training forward; a model torch.compile cannot handle falls back to eager once."""
        try:
            with self._autocast():
                return self.train_model(batch)
        except Exception as err:
            if not self.compiled:
                raise
            warnings.warn(f"--compile {self.config.compile} failed on {self.config.model} "
                          f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                          "training in eager mode", stacklevel=2)
            self.compiled = False
            self.train_model = getattr(self.train_model, "_orig_mod", self.train_model)
            with self._autocast():
                return self.train_model(batch)

    def _placed(self, data: MultimodalDataset) -> MultimodalDataset:
        """The split on the GPU when it fits (indexing it there feeds batches without copies)."""
        if self.device.type != "cuda" or self.config.data_on_device == "never":
            return data
        if any(k in data.extras for k in RAW_EXTRAS):
            return data  # raw inputs are read from disk batch by batch
        size = sum(t.numel() * t.element_size() for t in [*data.features.values(), *data.lengths.values(), data.labels])
        free, _ = torch.cuda.mem_get_info(self.device)
        if size > DEVICE_DATA_SHARE * free:
            return data
        return MultimodalDataset(
            features={m: x.to(self.device) for m, x in data.features.items()},
            lengths={m: v.to(self.device) for m, v in data.lengths.items()},
            labels=data.labels.to(self.device), ids=data.ids, raw_text=data.raw_text, source=data.source,
            extras=data.extras,
        )

    def _loader_workers(self, data: MultimodalDataset) -> int:
        if self.config.loader_workers >= 0:
            return self.config.loader_workers
        on_host = data.labels.device.type == "cpu"
        return min(4, os.cpu_count() or 1) if self.device.type == "cuda" and on_host else 0

    def _batches(self, data: MultimodalDataset, chunks: list[torch.Tensor]) -> Iterator[Batch]:
        """Batches of `chunks` on the device: made here, or by DataLoader workers into pinned memory."""
        workers = self._loader_workers(data)
        if workers == 0:
            for idx in chunks:
                yield data.make_batch(idx).to(self.device)
            return
        loader = torch.utils.data.DataLoader(
            _Indices(len(data)), batch_sampler=[idx.tolist() for idx in chunks], collate_fn=_MakeBatch(data),
            num_workers=workers, pin_memory=self.device.type == "cuda",
            # its own generator: the workers' base seed would otherwise be drawn from the global
            # RNG and shift every dropout mask after it
            generator=torch.Generator().manual_seed(0),
        )
        for batch in loader:
            yield batch.to(self.device)

    # ------------------------------------------------------------------ files
    def _write_config(self) -> None:
        payload = {
            "train": self.config.to_dict(),
            "spec": self.spec.to_dict(),
            "model_config": self.model.config_dict(),
            "data": {
                "name": self.splits.name,
                "description": self.splits.describe() if self.score_test else _describe_without_test(self.splits),
                "class_names": self.splits.class_names,
            },
            # what predicting needs to make this run's inputs from a clip (emofuse.data.frontend)
            "frontend": self.splits.frontend,
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
        # resumed run sees exactly the batches an uninterrupted one would (every process too)
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        bucket = True if self.config.bucket else None  # None: the data's default (a text encoder's tokens)
        chunks = self.train_data.batch_indices(self.config.batch_size, shuffle=True, generator=gen, bucket=bucket)
        parts = [distributed.shard(idx, self.dist) for idx in chunks]
        # summed on the device: a float() per step would wait for the GPU every step
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        # its draws are seeded per (seed, epoch) as the shuffle is, so a resume mixes the same way
        mixup = Mixup(self.config.mixup, self.config.seed * 100_003 + epoch) if self.config.mixup else None
        for (_, weight), batch in zip(parts, self._batches(self.train_data, [idx for idx, _ in parts])):
            if mixup is not None:
                batch, partner, lam = mixup(batch)
            out = self._forward(batch)
            if mixup is None:
                loss = self.loss_fn(out.prediction.float(), batch.labels)
            else:
                loss = mixed_loss(self.loss_fn, out.prediction.float(), batch.labels, partner, lam)
            full = loss + out.aux_loss.float() if out.aux_loss is not None else loss
            if self.dist.active:
                full = full * weight  # this process's share of the global batch (distributed.shard)
            self.optimizer.zero_grad(set_to_none=True)
            full.backward()
            if self.config.grad_clip:
                nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            if weight:
                total += loss.detach().double() * len(batch)
                count += len(batch)
        total_all, count_all = distributed.all_sum([float(total), float(count)], self.dist, self.device)
        return total_all / count_all

    def _valid_loss(self) -> float:
        """The validation loss, computed by rank 0 and sent to every process (one decision)."""
        value = math.nan
        if self.dist.is_main:
            with self._autocast():
                raw = predict(self.model, self.valid_data, self.eval_batch_size, self.device)
            preds = torch.from_numpy(raw).to(self.device)
            value = float(self.loss_fn(preds, self.valid_data.labels.to(self.device)))
        return distributed.broadcast(value, self.dist)

    # ------------------------------------------------------------------ main
    def fit(self, resume: bool = False) -> RunResult:
        main = self.dist.is_main  # only rank 0 touches the run folder
        last_path = self.run_dir / "last.pt"
        ckpt = None
        if main:
            try:
                self.run_dir.mkdir(parents=True, exist_ok=True)
            except (FileExistsError, NotADirectoryError):
                raise UserError(f"{self.run_dir}: cannot hold a run, a file is in the way") from None
            # temp files of a writer killed mid-write (SIGKILL runs no cleanup)
            remove_stale_temp_files(self.run_dir)
            ckpt = self._resumable(last_path) if resume and last_path.exists() else None
        # the other processes get rank 0's checkpoint: their nodes need not see the run folder
        ckpt = distributed.broadcast(ckpt, self.dist) if resume else None
        state = self._initial_state()
        if ckpt is not None:
            state = self._restore(ckpt)
            if main:
                self._rewrite_log(state["history"])
        elif main and (self.run_dir / "log.csv").exists():
            (self.run_dir / "log.csv").unlink()  # a fresh run in a used folder starts a new log
        if main:
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
            # every process's RNG state, so each one resumes its own dropout stream
            rngs = distributed.gather(_rng_state(), self.dist)
            if main:
                # last.pt before best.pt: a kill between the two leaves last.pt naming this epoch
                # as the best, and its weights are these, so --resume can rewrite best.pt from it
                save_checkpoint(self._training_payload(state, rngs), last_path)
                if improved:
                    save_checkpoint(self._model_payload(epoch), self.run_dir / "best.pt")
                self._append_log(row)
            bar.set_postfix(train=f"{train_loss:.3f}", valid=f"{valid_loss:.3f}", best=state["best_epoch"])
            for callback in self.callbacks:
                callback(epoch, row)
        bar.close()
        result = self._finish(state) if main else None
        # every process returns the run's result (the CLI's summary needs it on each)
        return distributed.broadcast(result, self.dist)

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

    def _training_payload(self, state: dict[str, Any], rngs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **self._model_payload(state["epoch"]),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": state,
            "train_config": self.config.to_dict(),
            "schedule": self._schedule(),
            **rngs[0],
            # one RNG state per process of a torchrun run (rank order); rank 0's is also above
            "process_rngs": rngs if len(rngs) > 1 else [],
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
        # on CPU when it goes to other processes: a GPU tensor would land on rank 0's GPU there
        ckpt = load_checkpoint(path, "cpu" if self.dist.active else self.device)
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
        """Refuse a resume that would silently re-plan an lr schedule (the text encoder's, or --lr-schedule)."""
        if not self.scheduled:
            return  # constant learning rates: --epochs only moves the finish line
        before = ckpt.get("schedule") or {"total_steps": saved.get("epochs", 0) * self.steps_per_epoch,
                                          "epochs": saved.get("epochs")}
        total, _ = schedule_steps(self.config, self.steps_per_epoch)
        if before["total_steps"] != total:
            raise CheckpointError(
                f"{path}: cannot resume with --epochs {self.config.epochs}: the learning "
                f"rate warms up and decays over the run's {before['total_steps']} steps "
                f"({before.get('epochs')} epochs), and {total} steps would change it mid-run; resume with "
                f"--epochs {before.get('epochs')}, or train longer in a new --out folder"
            )

    def _restore(self, ckpt: dict[str, Any]) -> dict[str, Any]:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scheduler" in ckpt:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        rngs = ckpt.get("process_rngs") or [ckpt]
        if len(rngs) != self.dist.world and self.dist.world > 1 and self.dist.is_main:
            print(f"emofuse: {self.run_dir} was trained by {len(rngs)} process(es) and resumes with "
                  f"{self.dist.world}: the result will differ slightly from an uninterrupted run", file=sys.stderr)
        _set_rng_state(rngs[self.dist.rank] if self.dist.rank < len(rngs) else rngs[0])
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
        for split in ("valid", "test") if self.score_test else ("valid",):
            data: MultimodalDataset = self.splits[split]
            with self._autocast():
                preds = predict(self.model, data, self.eval_batch_size, self.device)
            metrics[split] = score(preds, data, self.splits.class_names)
            for i, (sid, label, pred) in enumerate(zip(data.ids, data.labels.tolist(), point_predictions(preds))):
                rows.append({"split": split, "index": i, "id": sid, "label": label, "prediction": float(pred)})
        atomic_write_text(self.run_dir / "metrics.json", json.dumps(metrics, indent=2, default=_json_default) + "\n")
        if self.splits.task == "classification" and self.score_test:
            names = self.splits.class_names or [str(i) for i in range(self.splits.num_classes)]
            plot_confusion_matrix(metrics["test"]["confusion_matrix"], names, self.run_dir / "confusion_test.png",
                                  title=f"{self.config.model} {self.config.modalities}: test")
        write_predictions(self.run_dir / "predictions.csv", rows)
        return RunResult(self.run_dir, metrics, state["best_epoch"], state["epoch"], state["best_valid_loss"])


def _rng_state() -> dict[str, Any]:
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }


def _set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch_rng"].cpu())
    if rng.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda_rng"])
    if "numpy_rng" in rng:
        np.random.set_state(rng["numpy_rng"])
    if "python_rng" in rng:
        random.setstate(rng["python_rng"])


def _describe_without_test(splits: DatasetSplits) -> str:
    """DatasetSplits.describe() for a run that never reads its test split."""
    d = splits.train
    parts = [f"{m}: L={d.features[m].shape[1]} D={d.features[m].shape[2]}" for m in d.modalities]
    return (f"{splits.name} ({splits.task}, {len(splits.train)}/{len(splits.valid)} train/valid, test not read; "
            f"{'; '.join(parts)})")


class _Indices(torch.utils.data.Dataset):
    """The DataLoader's dataset: positions only; `_MakeBatch` turns a batch of them into a Batch."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class _MakeBatch:
    def __init__(self, data: MultimodalDataset) -> None:
        self.data = data

    def __call__(self, indices: list[int]) -> Batch:
        return self.data.make_batch(torch.tensor(indices, dtype=torch.long))


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
    config: TrainConfig,
    splits: DatasetSplits,
    run_dir: Path,
    resume: bool = False,
    progress: bool = True,
    callbacks: Sequence[EpochCallback] = (),
    score_test: bool = True,
) -> RunResult:
    return Trainer(config, splits, run_dir, progress, callbacks, score_test).fit(resume=resume)

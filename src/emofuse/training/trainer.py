"""One trainer for every model.

A run folder holds everything about a run:
    config.json       resolved TrainConfig + ModelSpec + model config + data description
    log.csv           one row per epoch (train loss, valid loss, seconds)
    best.pt           weights with the lowest validation loss (the ones that are tested)
    last.pt           full training state after the last finished epoch (for --resume)
    metrics.json      valid and test metrics of best.pt
    predictions.csv   split, id, label, prediction for valid and test
The checkpoints are emofuse.training.resume's, the other files emofuse.training.artifacts', and
the data is made ready by emofuse.training.prepare.

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
import math
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from tqdm.auto import tqdm

from emofuse.data.dataset import Batch, DatasetSplits, MultimodalDataset, parse_modalities
from emofuse.errors import UserError
from emofuse.models.factory import build_model, model_spec_for
from emofuse.runtime import resolve_device, seed_everything
from emofuse.training import artifacts, distributed
from emofuse.training.checkpoint import load_checkpoint
from emofuse.training.config import TrainConfig
from emofuse.training.mixup import Mixup, mixed_loss
from emofuse.training.optim import make_loss, make_optimizer, make_scheduler
from emofuse.training.prepare import device_batches, loader_workers, placed_on_device, prepare_data
from emofuse.training.resume import Checkpoints, initial_state, record_epoch, rng_state, set_rng_state
from emofuse.training.scoring import point_predictions, predict, score

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
        self.dist = distributed.context()
        distributed.check_batch_size(config.batch_size, self.dist)
        self.progress = progress and self.dist.is_main
        self.device = distributed.device_for(resolve_device(config.device), self.dist)
        if config.threads:
            torch.set_num_threads(config.threads)
        data = prepare_data(config, splits, self.modalities, score_test)
        self.scaler, self.splits = data.scaler, data.splits
        seed_everything(config.seed)
        self.model = build_model(config, model_spec_for(self.splits, self.modalities), data.encoder).to(
            self.device
        )
        self.spec = self.model.spec
        self.loss_fn = make_loss(config, self.splits).to(self.device)
        self.optimizer = make_optimizer(config, self.model, self.device)
        self.steps_per_epoch = -(-len(self.splits.train) // config.batch_size)
        self.scheduler = make_scheduler(config, self.optimizer, self.steps_per_epoch)
        # the text encoder's groups always follow a schedule; the others only with --lr-schedule cosine
        self.scheduled = config.lr_schedule != "constant" or any(
            g.get("text_encoder") for g in self.optimizer.param_groups
        )
        self.checkpoints = Checkpoints(
            self.run_dir,
            config,
            self.model,
            self.scaler,
            self.optimizer,
            self.scheduler,
            self.steps_per_epoch,
            self.scheduled,
        )
        self.amp = self._amp_dtype()
        self.compiled = False  # set by _wrap when torch.compile accepted the model
        self.train_model = self._wrap(self.model)  # DDP and/or compiled; self.model stays plain
        self.train_data = placed_on_device(self.splits.train, self.device, config)
        self.valid_data = placed_on_device(self.splits.valid, self.device, config)
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
                # an nn.Module compiles to an nn.Module (OptimizedModule); torch types it as any callable
                model = cast(nn.Module, torch.compile(model, backend=self.config.compile))
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
        rng, buffers = rng_state(), {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        batch = self.splits.train.make_batch(
            torch.arange(min(len(self.splits.train), self.config.batch_size))
        )
        out = model(batch.to(self.device))
        full = self.loss_fn(out.prediction.float(), batch.labels.to(self.device))
        (full + out.aux_loss.float() if out.aux_loss is not None else full).backward()
        unused = any(p.requires_grad and p.grad is None for p in model.parameters())
        model.zero_grad(set_to_none=True)
        model.load_state_dict(buffers)
        set_rng_state(rng)
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

    # ------------------------------------------------------------------ epochs
    def _train_epoch(self, epoch: int) -> float:
        self.model.train()
        # a fresh generator per epoch: the shuffle order depends on (seed, epoch) only, so a
        # resumed run sees exactly the batches an uninterrupted one would (every process too)
        gen = torch.Generator().manual_seed(self.config.seed * 100_003 + epoch)
        bucket = True if self.config.bucket else None  # None: the data's default (a text encoder's tokens)
        chunks = self.train_data.batch_indices(
            self.config.batch_size, shuffle=True, generator=gen, bucket=bucket
        )
        parts = [distributed.shard(idx, self.dist) for idx in chunks]
        # summed on the device: a float() per step would wait for the GPU every step
        total = torch.zeros((), dtype=torch.float64, device=self.device)
        count = 0
        # its draws are seeded per (seed, epoch) as the shuffle is, so a resume mixes the same way
        mixup = Mixup(self.config.mixup, self.config.seed * 100_003 + epoch) if self.config.mixup else None
        workers = loader_workers(self.train_data, self.device, self.config)
        batches = device_batches(self.train_data, [idx for idx, _ in parts], self.device, workers)
        for (_, weight), batch in zip(parts, batches):
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
        state = self._start(resume)
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
            row = self._end_epoch(state, epoch, train_loss, valid_loss, start)
            bar.set_postfix(train=f"{train_loss:.3f}", valid=f"{valid_loss:.3f}", best=state["best_epoch"])
            for callback in self.callbacks:
                callback(epoch, row)
        bar.close()
        result = self._finish(state) if self.dist.is_main else None
        # every process returns the run's result (the CLI's summary needs it on each)
        return distributed.broadcast(result, self.dist)

    def _start(self, resume: bool) -> dict[str, Any]:
        """The state training goes on from: last.pt's on --resume when it can be used, else a
        fresh one. Only rank 0 touches the run folder; the other processes get its checkpoint
        (their nodes need not see the run folder)."""
        main = self.dist.is_main
        ckpt = None
        if main:
            artifacts.open_run_dir(self.run_dir)
            if resume:
                # on CPU when it goes to other processes: a GPU tensor would land on rank 0's GPU there
                ckpt = self.checkpoints.resumable("cpu" if self.dist.active else self.device)
        ckpt = distributed.broadcast(ckpt, self.dist) if resume else None
        state = initial_state()
        if ckpt is not None:
            state = self.checkpoints.restore(ckpt, self.dist)
            if main:
                artifacts.rewrite_log(self.run_dir, state["history"])
        elif main:
            artifacts.remove_log(self.run_dir)
        if main:
            artifacts.write_config(self.run_dir, self.config, self.model, self.splits, self.score_test)
        return state

    def _end_epoch(self, state: dict[str, Any], epoch: int, train_loss: float, valid_loss: float,
                   start: float) -> dict[str, Any]:
        """Record a finished epoch in the early-stopping state, last.pt (and best.pt) and log.csv."""
        if not math.isfinite(train_loss) or not math.isfinite(valid_loss):
            raise TrainingDiverged(
                f"training diverged at epoch {epoch} (train loss {train_loss}, valid loss "
                f"{valid_loss}); lower --lr (now {self.config.lr}) or check the data for extreme values"
            )
        row, improved = record_epoch(
            state, self.config, epoch, train_loss, valid_loss, time.perf_counter() - start
        )
        # every process's RNG state, so each one resumes its own dropout stream
        rngs = distributed.gather(rng_state(), self.dist)
        if self.dist.is_main:
            self.checkpoints.save(state, rngs, improved)
            artifacts.append_log(self.run_dir, row)
        return row

    def _finish(self, state: dict[str, Any]) -> RunResult:
        """Score best.pt on valid (and test) and write metrics.json, predictions.csv and the plot."""
        best = load_checkpoint(self.run_dir / "best.pt", self.device)
        self.model.load_state_dict(best["model"])
        metrics: dict[str, Any] = {"best_epoch": state["best_epoch"], "epochs_run": state["epoch"]}
        rows = []
        for split in ("valid", "test") if self.score_test else ("valid",):
            data: MultimodalDataset = self.splits[split]
            with self._autocast():
                preds = predict(self.model, data, self.eval_batch_size, self.device)
            metrics[split] = score(preds, data, self.splits.class_names)
            rows += artifacts.prediction_rows(split, data, point_predictions(preds))
        artifacts.write_results(self.run_dir, metrics, rows, self.splits,
                                title=f"{self.config.model} {self.config.modalities}: test")
        return RunResult(self.run_dir, metrics, state["best_epoch"], state["epoch"], state["best_valid_loss"])


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

"""What a run's checkpoints hold, and how --resume picks a run up from last.pt.

    best.pt   weights with the lowest validation loss (the ones that are tested); enough to
              rebuild the network without config.json (`evaluate` trusts these)
    last.pt   full training state after the last finished epoch: best.pt's entries, the
              optimiser, the scheduler, the early-stopping state, the lr schedule's plan and
              every process's RNG state

A resumed run ends with the weights an uninterrupted one would have. Only the RESUME_FREE
settings may change, and --epochs not when a learning-rate schedule spans the run's steps. A
missing or stale best.pt is rewritten from last.pt when last.pt holds the best epoch; otherwise
training starts over (deterministic, so it ends the same).
"""

from __future__ import annotations

import dataclasses
import math
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.normalize import FeatureScaler
from emofuse.models.base import MultimodalModel
from emofuse.models.factory import text_encoder_config
from emofuse.training.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from emofuse.training.config import SPEED_FIELDS, TrainConfig
from emofuse.training.distributed import DistContext
from emofuse.training.optim import schedule_steps

# settings that may change between an interrupted run and its --resume: none of them alters
# the weights an epoch produces (threads can move the last float bit on some CPUs); `epochs`
# is checked separately because it lays out the text encoder's learning-rate schedule
RESUME_FREE = {"epochs", "device", "threads", "patience", *SPEED_FIELDS}


def initial_state() -> dict[str, Any]:
    """The early-stopping state of a run that has finished no epoch (last.pt's "state")."""
    return {
        "epoch": 0,
        "best_valid_loss": math.inf,
        "best_epoch": 0,
        "bad_epochs": 0,
        "history": [],
        "finished": False,
    }


def record_epoch(state: dict[str, Any], config: TrainConfig, epoch: int, train_loss: float, valid_loss: float,
                 seconds: float) -> tuple[dict[str, Any], bool]:
    """Add a finished epoch to the early-stopping state; returns its log row and whether it is
    the best so far."""
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
        "seconds": round(seconds, 3),
    }
    state["history"].append(row)
    state["epoch"] = epoch
    state["finished"] = (
        bool(config.patience and state["bad_epochs"] >= config.patience) or epoch == config.epochs
    )
    return row, improved


@dataclass
class Checkpoints:
    """A run's best.pt and last.pt: what goes into them, and what a resume takes back out.

    `steps_per_epoch` and `scheduled` (whether any learning rate follows a schedule) describe
    the lr schedule that --epochs must not re-plan.
    """

    run_dir: Path
    config: TrainConfig
    model: MultimodalModel
    scaler: FeatureScaler
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    steps_per_epoch: int
    scheduled: bool

    @property
    def last_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def best_path(self) -> Path:
        return self.run_dir / "best.pt"

    # ------------------------------------------------------------------ writing
    def save(self, state: dict[str, Any], rngs: list[dict[str, Any]], improved: bool) -> None:
        """last.pt for the epoch `state` ends with, and best.pt when that epoch improved."""
        # last.pt before best.pt: a kill between the two leaves last.pt naming this epoch
        # as the best, and its weights are these, so --resume can rewrite best.pt from it
        save_checkpoint(self.training_payload(state, rngs), self.last_path)
        if improved:
            save_checkpoint(self.model_payload(state["epoch"]), self.best_path)

    def model_payload(self, epoch: int) -> dict[str, Any]:
        # enough to rebuild the network without config.json (`evaluate` trusts these)
        return {
            "model": self.model.state_dict(),
            "model_name": self.config.model,
            "spec": self.model.spec.to_dict(),
            "model_options": self.config.model_options,
            "text_encoder": dataclasses.asdict(text_encoder_config(self.config))
            if self.config.text_encoder
            else None,
            "scaler": self.scaler.state_dict(),
            "epoch": epoch,
        }

    def training_payload(self, state: dict[str, Any], rngs: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            **self.model_payload(state["epoch"]),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "state": state,
            "train_config": self.config.to_dict(),
            "schedule": self.schedule(),
            **rngs[0],
            # one RNG state per process of a torchrun run (rank order); rank 0's is also above
            "process_rngs": rngs if len(rngs) > 1 else [],
        }

    def schedule(self) -> dict[str, Any]:
        total, warm = schedule_steps(self.config, self.steps_per_epoch)
        return {"total_steps": total, "warmup_steps": warm, "steps_per_epoch": self.steps_per_epoch,
                "epochs": self.config.epochs, "scheduled": self.scheduled}

    # ------------------------------------------------------------------ resuming
    def resumable(self, map_location: str | torch.device) -> dict[str, Any] | None:
        """last.pt checked against this run's settings, or None when training must start over.

        Starting over happens when there is no last.pt, and in one case besides: best.pt is
        gone (or is from another epoch) and last.pt holds different weights, so the selected
        epoch exists nowhere. Training is deterministic, so a fresh start reproduces it.
        """
        path = self.last_path
        if not path.exists():
            return None
        ckpt = load_checkpoint(path, map_location)
        saved = ckpt.get("train_config", {})
        now = self.config.to_dict()
        changed = {k for k in saved if k not in RESUME_FREE and saved[k] != now.get(k)}
        if changed:
            raise CheckpointError(
                f"{path}: cannot resume, the run was started with different settings "
                f"({', '.join(sorted(changed))}); use a new --out folder"
            )
        self.check_schedule(path, ckpt, saved)
        state = ckpt["state"]
        if state["best_epoch"] == 0:
            return ckpt  # no epoch has finished: there is no best yet
        best_path = self.best_path
        # a corrupt best.pt stops here, before more epochs are trained, with advice to delete it
        best_epoch = load_checkpoint(best_path, "cpu").get("epoch") if best_path.exists() else None
        if best_epoch == state["best_epoch"]:
            return ckpt
        if state["best_epoch"] == state["epoch"]:
            # the best epoch is the last finished one: its weights are in last.pt
            payload = {k: ckpt[k] for k in self.model_payload(0) if k in ckpt}
            save_checkpoint({**payload, "epoch": state["epoch"]}, best_path)
            return ckpt
        found = "missing" if best_epoch is None else f"from epoch {best_epoch}"
        print(
            f"emofuse: {best_path} is {found}, and the best epoch ({state['best_epoch']}) is not in "
            f"last.pt (epoch {state['epoch']}): retraining {self.run_dir} from epoch 1 to recover it",
            file=sys.stderr,
        )
        return None

    def check_schedule(self, path: Path, ckpt: dict[str, Any], saved: dict[str, Any]) -> None:
        """Refuse a resume that would silently re-plan an lr schedule (the text encoder's, or
        --lr-schedule)."""
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

    def restore(self, ckpt: dict[str, Any], dist: DistContext) -> dict[str, Any]:
        """Load last.pt's weights, optimiser, scheduler and this process's RNG state; returns
        the early-stopping state to go on from."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if "scheduler" in ckpt:
            self.scheduler.load_state_dict(ckpt["scheduler"])
        rngs = ckpt.get("process_rngs") or [ckpt]
        if len(rngs) != dist.world and dist.world > 1 and dist.is_main:
            print(f"emofuse: {self.run_dir} was trained by {len(rngs)} process(es) and resumes with "
                  f"{dist.world}: the result will differ slightly from an uninterrupted run", file=sys.stderr)
        set_rng_state(rngs[dist.rank] if dist.rank < len(rngs) else rngs[0])
        state = ckpt["state"]
        # more epochs asked for than the interrupted run had: carry on
        if state["finished"] and state["epoch"] < self.config.epochs and not (
            self.config.patience and state["bad_epochs"] >= self.config.patience
        ):
            state["finished"] = False
        return state


def rng_state() -> dict[str, Any]:
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": np.random.get_state(),
        "python_rng": random.getstate(),
    }


def set_rng_state(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch_rng"].cpu())
    if rng.get("cuda_rng") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda_rng"])
    if "numpy_rng" in rng:
        np.random.set_state(rng["numpy_rng"])
    if "python_rng" in rng:
        random.setstate(rng["python_rng"])

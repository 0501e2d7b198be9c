"""How a run fits its weights: the loss, the AdamW optimiser and its learning-rate schedules."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable
from typing import Any, TypedDict

import torch
from torch import nn

from emofuse.data.dataset import DatasetSplits
from emofuse.models.base import MultimodalModel, OwnParameterGroups
from emofuse.models.text_encoder import WithTextEncoder
from emofuse.training.config import TrainConfig


def make_loss(config: TrainConfig, splits: DatasetSplits) -> nn.Module:
    if splits.task == "regression":
        return nn.L1Loss()  # the paper's (and MMSA's) loss for MOSI scores
    weight = None
    if config.class_weights:
        counts = torch.bincount(splits.train.labels, minlength=splits.num_classes).float()
        weight = counts.sum() / (counts.clamp_min(1) * len(counts))
    return nn.CrossEntropyLoss(weight=weight, label_smoothing=config.label_smoothing)


def make_optimizer(
    config: TrainConfig, model: MultimodalModel, device: torch.device | None = None
) -> torch.optim.Optimizer:
    # a model may ask for its own parameter groups (LMF's factors, a text encoder's layers)
    groups: list[dict[str, Any]] | Iterable[nn.Parameter]
    if isinstance(model, WithTextEncoder):
        groups = model.parameter_groups(config.lr, config.text_lr, config.layer_decay)
    elif isinstance(model, OwnParameterGroups):
        groups = model.parameter_groups(config.lr)
    else:
        groups = model.parameters()
    # AdamW: the decoupled decay transformer fine-tuning expects (equal to Adam at decay 0)
    return torch.optim.AdamW(
        groups, lr=config.lr, weight_decay=config.weight_decay, **adam_kind(config, device)
    )


class AdamKind(TypedDict, total=False):
    """AdamW's implementation keyword (none: torch's default choice)."""

    foreach: bool
    fused: bool


def adam_kind(config: TrainConfig, device: torch.device | None) -> AdamKind:
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


def make_scheduler(
    config: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
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
    lambdas: list[Callable[[int], float]] = [
        encoder_factor if g.get("text_encoder") else other for g in optimizer.param_groups
    ]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)

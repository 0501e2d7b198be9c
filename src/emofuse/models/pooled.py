"""Pooled early fusion: each modality's words pooled over time, concatenated, one linear layer.

The simplest model that reads every modality: per modality the masked mean and the masked max of
its word vectors over the clip, concatenated across modalities, dropout, then a linear output (or
an MLP with `hidden > 0`). It has no recurrence and no interaction between steps, so it shows what
a clip's bag of words/frames alone gives, a floor for the sequence models.

It is also the natural head for a raw-input encoder that already does the per-word work: with
`--audio-encoder spectro_cnn` on RAVDESS, the CNN sees each window and this head only pools, where
a BiLSTM head on 2-4 windows a clip added parameters without adding evidence (see the README's
RAVDESS figures).

Training recipe: emofuse's defaults (lr 1e-3, batch 32, weight decay 0, clip 1.0); the model has
no published reference setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emofuse.data.dataset import Batch
from emofuse.errors import OptionError
from emofuse.models.base import (
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    build_config,
    check_batch,
    masked_mean,
    mlp_head,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model


@dataclass
class PooledConfig:
    hidden: int = 0  # 0: one linear layer on the pooled vector; > 0: an MLP with this width
    dropout: float = 0.2

    def __post_init__(self) -> None:
        if self.hidden < 0 or not 0.0 <= self.dropout < 1.0:
            raise OptionError(f"hidden must be >= 0 and dropout in [0, 1), not {self.hidden}, {self.dropout}")


class Pooled(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: PooledConfig) -> None:
        super().__init__(spec, config)
        width = sum(2 * spec.dims[m] for m in spec.modalities)
        if config.hidden:
            self.head: nn.Module = mlp_head(width, config.hidden, spec.output_size, config.dropout)
        else:
            self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, spec.output_size))

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        parts = []
        for m in self.spec.modalities:
            x, mask = batch.features[m], batch.masks[m]
            # a clip with no real step of this modality pools to zeros, not to the padding's max
            peak = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
            peak = torch.where(mask.any(dim=1, keepdim=True), peak, torch.zeros_like(peak))
            parts += [masked_mean(x, mask), peak]
        return ModelOutput(squeeze_regression(self.head(torch.cat(parts, dim=-1)), self.spec))


@register_model("pooled", recipe=Recipe(source="emofuse default (no published setting)"))
def pooled(spec: ModelSpec, **options: object) -> Pooled:
    return Pooled(spec, build_config(PooledConfig, options))

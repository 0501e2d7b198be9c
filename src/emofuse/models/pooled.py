"""Pooled early fusion: each modality's words pooled over time, concatenated, one linear layer.

The simplest model that reads every modality: per modality the masked mean and the masked max of
its word vectors over the clip, concatenated across modalities, dropout, then a linear output (or
an MLP with `hidden > 0`). It has no recurrence and no interaction between steps, so it shows what
a clip's bag of words/frames alone gives, a floor for the sequence models.

It is also the natural head for a raw-input encoder that already does the per-word work: with
`--audio-encoder spectro_cnn` on RAVDESS, the CNN sees each window and this head only pools, where
a BiLSTM head on 2-4 windows a clip added parameters without adding evidence (see the README's
RAVDESS figures).

`pool` chooses how a modality's steps become one vector: "meanmax" (the masked mean and max,
above), "weighted" (a learned weight per step position, softmax over the clip's real steps: with
one row per encoder layer, as `-D embeddings=whisper_base` gives on RAVDESS, this is SUPERB's
learned weighted sum of layers) or "attention" (a learned score per step from its content, softmax
over the real steps). On RAVDESS's validation actors with Whisper layer rows, "weighted" scored
76.1 ± 0.8 % over 5 seeds, "attention" 73.4 ± 0.6 and "meanmax" 74.7 ± 1.0 (README).

Training recipe: emofuse's defaults (lr 1e-3, batch 32, weight decay 0, clip 1.0); the model has
no published reference setting.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emofuse.data.dataset import Batch
from emofuse.errors import OptionError, UserError
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
    pool: str = "meanmax"  # meanmax | weighted | attention (see the module's docstring)
    max_steps: int = 64  # "weighted": the step positions that get a weight of their own

    def __post_init__(self) -> None:
        if self.hidden < 0 or not 0.0 <= self.dropout < 1.0:
            raise OptionError(f"hidden must be >= 0 and dropout in [0, 1), not {self.hidden}, {self.dropout}")
        if self.pool not in POOLS:
            raise OptionError(f"pool must be one of {', '.join(POOLS)}, not {self.pool!r}")
        if self.max_steps < 1:
            raise OptionError(f"max_steps must be >= 1, not {self.max_steps}")


POOLS = ("meanmax", "weighted", "attention")


class Pooled(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: PooledConfig) -> None:
        super().__init__(spec, config)
        per_step = 2 if config.pool == "meanmax" else 1
        width = sum(per_step * spec.dims[m] for m in spec.modalities)
        # zeros: every position starts with the same weight, i.e. the plain mean
        self.step_weights = nn.ParameterDict(
            {m: nn.Parameter(torch.zeros(config.max_steps)) for m in spec.modalities}
        ) if config.pool == "weighted" else None
        self.step_scores = nn.ModuleDict(
            {m: nn.Linear(spec.dims[m], 1) for m in spec.modalities}
        ) if config.pool == "attention" else None
        if config.hidden:
            self.head: nn.Module = mlp_head(width, config.hidden, spec.output_size, config.dropout)
        else:
            self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(width, spec.output_size))

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        parts = []
        for m in self.spec.modalities:
            x, mask = batch.features[m], batch.masks[m]
            if self.config.pool != "meanmax":
                parts.append(self._softmax_pool(m, x, mask))
                continue
            # a clip with no real step of this modality pools to zeros, not to the padding's max
            peak = x.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
            peak = torch.where(mask.any(dim=1, keepdim=True), peak, torch.zeros_like(peak))
            parts += [masked_mean(x, mask), peak]
        return ModelOutput(squeeze_regression(self.head(torch.cat(parts, dim=-1)), self.spec))

    def _softmax_pool(self, m: str, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The steps' sum weighted by a softmax over the real ones (a clip without any pools to zeros)."""
        if self.step_weights is not None:
            if x.shape[1] > self.config.max_steps:
                raise UserError(
                    f"pooled -o pool=weighted: {m} has {x.shape[1]} steps but max_steps is "
                    f"{self.config.max_steps}; set -o max_steps={x.shape[1]} or more"
                )
            scores = self.step_weights[m][: x.shape[1]].expand(x.shape[0], -1)
        else:
            assert self.step_scores is not None
            scores = self.step_scores[m](x).squeeze(-1)
        weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
        weights = torch.nan_to_num(weights)  # an all-padding row: softmax of -inf everywhere
        return (weights.unsqueeze(-1) * x).sum(dim=1)


@register_model("pooled", recipe=Recipe(source="emofuse default (no published setting)"))
def pooled(spec: ModelSpec, **options: object) -> Pooled:
    return Pooled(spec, build_config(PooledConfig, options))

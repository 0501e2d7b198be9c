"""Early-fusion LSTM: concatenate the modalities at every step, one LSTM, MLP head.

The standard early-fusion baseline (MMSA's EF_LSTM). On unaligned data the modalities have
different lengths; each is resampled onto the first modality's real steps by averaging the
frames that fall in each step (`align_to_mask`), which is what word-level alignment would do.

Training recipe (what `emofuse compare` trains it with by default): MMSA 2.2.1's MOSI setting
for its EF_LSTM, lr 1e-3, batch 32, weight decay 5e-3, no gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from emofuse.data.dataset import Batch
from emofuse.models.base import (
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    SequenceEncoder,
    align_to_mask,
    build_config,
    check_batch,
    masked_mean,
    mlp_head,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model


@dataclass
class EFLSTMConfig:
    hidden: int = 64
    dropout: float = 0.2


class EFLSTM(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: EFLSTMConfig) -> None:
        super().__init__(spec, config)
        in_dim = sum(spec.dims[m] for m in spec.modalities)
        self.encoder = SequenceEncoder(in_dim, config.hidden, config.hidden, config.dropout)
        self.head = mlp_head(config.hidden, config.hidden, spec.output_size, config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        pivot = self.spec.modalities[0]
        mask = batch.masks[pivot]
        parts = [align_to_mask(batch.features[m], batch.masks[m], mask) for m in self.spec.modalities]
        h = self.encoder(torch.cat(parts, dim=-1), mask)
        return ModelOutput(squeeze_regression(self.head(masked_mean(h, mask)), self.spec))


@register_model(
    "ef_lstm",
    recipe=Recipe(
        lr=1e-3,
        batch_size=32,
        weight_decay=5e-3,
        grad_clip=0.0,
        source="MMSA 2.2.1 MOSI EF_LSTM: lr 1e-3, batch 32, weight decay 5e-3",
    ),
)
def ef_lstm(spec: ModelSpec, **options: object) -> EFLSTM:
    return EFLSTM(spec, build_config(EFLSTMConfig, options))

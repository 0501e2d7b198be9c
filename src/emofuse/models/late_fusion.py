"""Late fusion: one independent model per modality, predictions averaged with learned weights.

The textbook decision-level baseline: it can use each modality's own evidence but, by
construction, no interaction between modalities (the paper's argument against it).

Training recipe (what `emofuse compare` trains it with by default): MMSA 2.2.1's MOSI setting
for its late-fusion baseline LF_DNN, lr 1e-3, batch 128, weight decay 1e-2, no gradient clipping.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emofuse.data.dataset import Batch
from emofuse.models.base import (
    AttentionPool,
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    SequenceEncoder,
    build_config,
    check_batch,
    mlp_head,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model


@dataclass
class LateFusionConfig:
    hidden: int = 64
    dropout: float = 0.2


class LateFusion(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: LateFusionConfig) -> None:
        super().__init__(spec, config)
        h = config.hidden
        self.encoders = nn.ModuleDict(
            {m: SequenceEncoder(spec.dims[m], h, h, config.dropout) for m in spec.modalities}
        )
        self.pools = nn.ModuleDict({m: AttentionPool(h) for m in spec.modalities})
        self.heads = nn.ModuleDict(
            {m: mlp_head(h, h, spec.output_size, config.dropout) for m in spec.modalities}
        )
        # softmax-normalised decision weights: the fused output stays a convex combination
        self.decision_logits = nn.Parameter(torch.zeros(len(spec.modalities)))

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        outs = []
        for m in self.spec.modalities:
            x, mask = batch.features[m], batch.masks[m]
            outs.append(self.heads[m](self.pools[m](self.encoders[m](x, mask), mask)))
        weights = torch.softmax(self.decision_logits, 0)
        fused = torch.einsum("m,mbo->bo", weights, torch.stack(outs))
        return ModelOutput(squeeze_regression(fused, self.spec))


@register_model(
    "late_fusion",
    recipe=Recipe(
        lr=1e-3,
        batch_size=128,
        weight_decay=1e-2,
        grad_clip=0.0,
        source="MMSA 2.2.1 MOSI LF_DNN: lr 1e-3, batch 128, weight decay 1e-2",
    ),
)
def late_fusion(spec: ModelSpec, **options: object) -> LateFusion:
    return LateFusion(spec, build_config(LateFusionConfig, options))

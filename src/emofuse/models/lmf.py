"""Low-rank Multimodal Fusion (Liu et al., ACL 2018).

The unimodal vectors come from TFN's subnetworks. Instead of building TFN's outer product z
and a dense weight over it, LMF factorises that weight: each modality has factors
W_m of shape (rank, d_m + 1, out) and

    f_m = [1; h_m] . W_m                       (rank x B x out)
    fusion = prod_m f_m                        (elementwise over modalities)
    out = sum_r w_r * fusion_r + bias          (fusion_weights 1 x rank, fusion_bias 1 x out)

which equals the contraction of z with the rank-`rank` tensor sum_r w_r (x)_m W_m^(r)
(tests check that against tensor_fusion).

Defaults are MMSA 2.2.1's MOSI configuration (hidden text 128 / audio 16 / vision 128,
text_out = text_hidden // 2 = 64, dropouts 0.3, rank 3; batch 64, lr 1e-3, factor lr 1e-3,
weight decay 5e-3).

Learning rates: `parameter_groups(lr)` returns two optimizer groups, the subnetworks at
`lr` and the fusion parameters (factors, fusion_weights, fusion_bias) at
`lr * factor_lr_scale`; emofuse's trainer uses it when a model has it. MMSA's (and the
original code's) optimizer listed `params[:3] + params[5:]`, leaving fusion_weights and
fusion_bias out so they never trained; here every parameter is in a group.

Other departures: the subnet inputs are time-means over real steps only (see tfn.py), and
the modalities fused are whichever the spec has (any subset).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

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
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model
from emofuse.models.tfn import UnimodalSubnets, with_one


@dataclass
class LMFConfig:
    text_hidden: int = 128
    audio_hidden: int = 16
    vision_hidden: int = 128
    text_out: int = 64
    rank: int = 3
    text_dropout: float = 0.3
    audio_dropout: float = 0.3
    vision_dropout: float = 0.3
    # the fusion parameters' learning rate, as a multiple of the trainer's lr
    factor_lr_scale: float = 1.0


class LMF(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: LMFConfig) -> None:
        super().__init__(spec, config)
        c = config
        if c.rank < 1:
            raise OptionError(f"LMF rank must be >= 1, got {c.rank}")
        self.subnets = UnimodalSubnets(
            spec,
            hidden={"text": c.text_hidden, "audio": c.audio_hidden, "vision": c.vision_hidden},
            text_out=c.text_out,
            dropouts={"text": c.text_dropout, "audio": c.audio_dropout, "vision": c.vision_dropout},
        )
        out = spec.output_size
        self.factors = nn.ParameterDict(
            {
                m: nn.Parameter(torch.empty(c.rank, self.subnets.out_dims[m] + 1, out))
                for m in spec.modalities
            }
        )
        self.fusion_weights = nn.Parameter(torch.empty(1, c.rank))
        self.fusion_bias = nn.Parameter(torch.zeros(1, out))
        for p in self.factors.values():
            nn.init.xavier_normal_(p)
        nn.init.xavier_normal_(self.fusion_weights)

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The unimodal vectors {modality: B x d_m}."""
        return self.subnets(batch)

    def fuse(self, hs: dict[str, torch.Tensor]) -> torch.Tensor:
        """prod_m ([1; h_m] . W_m): B x rank x out, before the rank-weighted sum."""
        fused = None
        for m in self.spec.modalities:
            f = torch.einsum("bi,rio->bro", with_one(hs[m]), self.factors[m])
            fused = f if fused is None else fused * f
        assert fused is not None
        return fused

    def head(self, fused: torch.Tensor) -> torch.Tensor:
        return torch.einsum("r,bro->bo", self.fusion_weights[0], fused) + self.fusion_bias

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        out = self.head(self.fuse(self.encode(batch)))
        return ModelOutput(squeeze_regression(out, self.spec))

    def fusion_parameters(self) -> list[nn.Parameter]:
        return [*self.factors.values(), self.fusion_weights, self.fusion_bias]

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]:
        """Optimizer groups: subnetworks at `lr`, fusion (factors, weights, bias) at lr * scale."""
        fusion_ids = {id(p) for p in self.fusion_parameters()}
        others = [p for p in self.parameters() if id(p) not in fusion_ids]
        return [
            {"params": others, "lr": lr},
            {"params": self.fusion_parameters(), "lr": lr * self.config.factor_lr_scale},
        ]


@register_model(
    "lmf",
    recipe=Recipe(
        lr=1e-3,
        batch_size=64,
        weight_decay=5e-3,
        grad_clip=0.0,
        source="MMSA 2.2.1 MOSI: lr 1e-3 (factor lr 1e-3), batch 64, weight decay 5e-3",
    ),
)
def lmf(spec: ModelSpec, **options: object) -> LMF:
    return LMF(spec, build_config(LMFConfig, options))

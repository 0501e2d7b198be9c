"""Tensor Fusion Network (Zadeh et al., EMNLP 2017).

Each modality is reduced to one vector by its own subnetwork: audio and vision by a
BatchNorm -> Dropout -> 3 x (Linear + ReLU) net applied to the clip's time-mean, text by an
LSTM whose state at the last word goes through a Linear layer. The vectors, each with a 1
appended, are fused by their outer product

    z = flatten([1; h_t] (x) [1; h_a] (x) [1; h_v])

so z holds every unimodal term (h_t, h_a, h_v themselves), every bimodal and the trimodal
products. Two Linear + ReLU layers and an output layer read z.

Defaults are MMSA 2.2.1's MOSI configuration (hidden text 128 / audio 32 / vision 128,
text_out 32, post-fusion 64, dropouts 0.3 / 0.3 / 0.3 / 0.5; batch 32, lr 1e-3).

Departures from MMSA's version, on purpose:
- the time-mean of audio/vision counts real steps only (MMSA averages padding in) and the
  text state is read at each clip's last real word, so a prediction does not depend on the
  padding its batch happens to have;
- the regression output is linear by default. MMSA squashes it with sigmoid * 6 - 3 to the
  MOSI label range; set `output_range=3.0` for that (out = sigmoid * 2r - r);
- the product runs over the modalities present (any subset), in the spec's order
  text, audio, vision rather than MMSA's audio, video, text (a permutation of z's entries);
- the text dropout is applied to the LSTM state (MMSA's TextSubNet silently sets it to 0
  for a one-layer LSTM).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from emofuse.data.dataset import Batch
from emofuse.models.base import (
    FastDropout,
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    build_config,
    check_batch,
    last_step,
    lstm_outputs,
    masked_mean,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model


# ---------------------------------------------------------------------------- blocks
class SubNet(nn.Module):
    """TFN's audio/vision subnetwork: BatchNorm -> Dropout -> 3 x (Linear + ReLU)."""

    def __init__(self, in_dim: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(in_dim)
        self.drop = nn.Dropout(dropout)
        self.layers = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            # batch statistics of one sample are undefined; a last batch of one clip is
            # normalised with the running statistics instead of crashing the epoch
            n = self.norm
            normed = F.batch_norm(
                x, n.running_mean, n.running_var, n.weight, n.bias, False, 0.0, n.eps
            )
        else:
            normed = self.norm(x)
        return self.layers(self.drop(normed))


class TextSubNet(nn.Module):
    """TFN's text subnetwork: LSTM -> state at the last real word -> Dropout -> Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float) -> None:
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, batch_first=True)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden, out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # unidirectional, so the state at the last real step never sees the padding after it;
        # steps after the batch's longest clip are never read, so they are not run
        steps = max(int(mask.sum(1).max()), 1)
        states = lstm_outputs(self.rnn, x[:, :steps])
        return self.out(self.drop(last_step(states, mask[:, :steps])))


class UnimodalSubnets(nn.Module):
    """One vector per modality, as TFN and LMF compute them: {modality: B x d_m}."""

    def __init__(
        self,
        spec: ModelSpec,
        hidden: dict[str, int],
        text_out: int,
        dropouts: dict[str, float],
    ) -> None:
        super().__init__()
        self.modalities = spec.modalities
        nets: dict[str, nn.Module] = {}
        self.out_dims: dict[str, int] = {}
        for m in spec.modalities:
            if m == "text":
                nets[m] = TextSubNet(spec.dims[m], hidden[m], text_out, dropouts[m])
                self.out_dims[m] = text_out
            else:
                nets[m] = SubNet(spec.dims[m], hidden[m], dropouts[m])
                self.out_dims[m] = hidden[m]
        self.nets = nn.ModuleDict(nets)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        hs = {}
        for m in self.modalities:
            x, mask = batch.features[m], batch.masks[m]
            if m == "text":
                hs[m] = self.nets[m](x, mask)
            else:
                hs[m] = self.nets[m](masked_mean(x, mask))
        return hs


def with_one(h: torch.Tensor) -> torch.Tensor:
    """[1; h]: the constant that keeps lower-order terms in a multiplicative fusion."""
    return torch.cat([torch.ones_like(h[:, :1]), h], dim=1)


def tensor_fusion(hs: list[torch.Tensor]) -> torch.Tensor:
    """flatten([1; h_1] (x) [1; h_2] (x) ...): B x prod(d_i + 1), first factor slowest."""
    z = with_one(hs[0])
    for h in hs[1:]:
        # a batched (B x n x 1) @ (B x 1 x m) product: its backward is two matrix-vector
        # products, where einsum's broadcast multiply-and-sum took about 4x as long (TFN's z is
        # 140k wide per clip)
        z = torch.bmm(z.unsqueeze(2), with_one(h).unsqueeze(1)).flatten(1)
    return z


# ---------------------------------------------------------------------------- model
@dataclass
class TFNConfig:
    text_hidden: int = 128
    audio_hidden: int = 32
    vision_hidden: int = 128
    text_out: int = 32
    post_fusion_dim: int = 64
    text_dropout: float = 0.3
    audio_dropout: float = 0.3
    vision_dropout: float = 0.3
    post_fusion_dropout: float = 0.5
    # None: linear regression output; r: sigmoid * 2r - r (MMSA uses r = 3 on MOSI)
    output_range: float | None = None


class TFN(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: TFNConfig) -> None:
        super().__init__(spec, config)
        c = config
        self.subnets = UnimodalSubnets(
            spec,
            hidden={"text": c.text_hidden, "audio": c.audio_hidden, "vision": c.vision_hidden},
            text_out=c.text_out,
            dropouts={"text": c.text_dropout, "audio": c.audio_dropout, "vision": c.vision_dropout},
        )
        fused_dim = 1
        for m in spec.modalities:
            fused_dim *= self.subnets.out_dims[m] + 1
        self.post_fusion = nn.Sequential(
            # z is B x 140k at MMSA's sizes: a uniform-draw mask is much cheaper than bernoulli_
            FastDropout(c.post_fusion_dropout),
            nn.Linear(fused_dim, c.post_fusion_dim),
            nn.ReLU(),
            nn.Linear(c.post_fusion_dim, c.post_fusion_dim),
            nn.ReLU(),
            nn.Linear(c.post_fusion_dim, spec.output_size),
        )

    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        """The unimodal vectors {modality: B x d_m} that the fusion multiplies."""
        return self.subnets(batch)

    def fuse(self, hs: dict[str, torch.Tensor]) -> torch.Tensor:
        """z = flatten of the outer product of [1; h_m] over the spec's modalities, in order."""
        return tensor_fusion([hs[m] for m in self.spec.modalities])

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        out = self.post_fusion(self.fuse(self.encode(batch)))
        r = self.config.output_range
        if self.spec.task == "regression" and r is not None:
            out = torch.sigmoid(out) * (2 * r) - r
        return ModelOutput(squeeze_regression(out, self.spec))


@register_model(
    "tfn",
    recipe=Recipe(
        lr=1e-3,
        batch_size=32,
        grad_clip=0.0,
        source="MMSA 2.2.1 MOSI: lr 1e-3, batch 32, no clipping, early stop 8",
    ),
)
def tfn(spec: ModelSpec, **options: object) -> TFN:
    return TFN(spec, build_config(TFNConfig, options))

"""`harris3d_cnn`: a small 3D CNN over each word's face frames, gated by Harris attention (Fig. 1).

N x F x H x W grey frames in [0, 1] (one stack per word span) -> N x out_dim. The attention
volume of `harris.py` (>= 1, the input's shape, computed without gradient) multiplies the input
and the (pooled) output of every conv block. A volume has one channel and the frame size; each
gated layer has C channels and a smaller size, so per layer an adaptive average pool resizes the
volume and a 1x1x1 convolution (`ChannelGate`) maps its 1 channel to C (the paper's "convolution
that adjusts the channels of the weight map"). These start at weight 1, bias 0: every channel is
first gated by the raw attention volume, and training can then re-weight or flatten it per channel.

GroupNorm rather than BatchNorm: each span is normalised on its own, so one span's features do
not depend on the other spans of its batch (nor on how many words a batch has).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from emofuse.errors import OptionError
from emofuse.models.base import build_config
from emofuse.models.encoders.harris import HarrisConfig, HarrisResult, harris_analysis
from emofuse.models.encoders.registry import register_encoder

ATTENTION_MODES = ("harris3d", "harris2d", "none")


@dataclass
class Harris3DCNNConfig:
    channels: tuple[int, ...] = (16, 32, 64)  # one conv block per entry
    attention: str = "harris3d"  # "harris3d", "harris2d" or "none" (no gating: the ablation baseline)
    groups: int = 4  # GroupNorm groups (capped at a block's channels)
    dropout: float = 0.1  # before the output projection
    harris: HarrisConfig = field(default_factory=HarrisConfig)  # or a dict of HarrisConfig options

    def __post_init__(self) -> None:
        if isinstance(self.harris, dict):
            self.harris = build_config(HarrisConfig, self.harris)
        if not isinstance(self.harris, HarrisConfig):
            raise OptionError(
                f"harris must be a HarrisConfig or a dict of its options, not {type(self.harris).__name__}"
            )
        self.channels = tuple(int(c) for c in self.channels)
        if not self.channels or min(self.channels) < 1:
            raise OptionError(f"channels must be a non-empty list of positive sizes, not {self.channels}")
        if self.attention not in ATTENTION_MODES:
            raise OptionError(f"attention must be one of {ATTENTION_MODES}, not {self.attention!r}")
        if self.groups < 1 or not 0.0 <= self.dropout < 1.0:
            raise OptionError(f"need groups >= 1 and 0 <= dropout < 1, got {self.groups}, {self.dropout}")


class ChannelGate(nn.Module):
    """A 1x1x1 convolution from the 1-channel attention volume to C channels: A * w_c + b_c.

    Written as a broadcast rather than nn.Conv3d(1, C, 1): same maths and parameters, but CPU
    conv3d with one input channel is several times slower than this multiply-add.
    Starts at w = 1, b = 0, so every channel is first gated by the raw attention volume.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, attention: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1, 1)
        return torch.addcmul(self.bias.view(shape), attention, self.weight.view(shape))


def _pool(x: torch.Tensor) -> torch.Tensor:
    """Halve time, height and width, leaving an axis of size 1 alone (one-frame spans work)."""
    kernel = tuple(2 if s >= 2 else 1 for s in x.shape[2:])
    return F.max_pool3d(x, kernel)


class Harris3DCNN(nn.Module):
    """Frames N x F x H x W in [0, 1] -> N x out_dim; attention gates input and every block."""

    def __init__(self, out_dim: int, config: Harris3DCNNConfig) -> None:
        super().__init__()
        if out_dim < 1:
            raise ValueError(f"out_dim must be positive, got {out_dim}")
        self.config = config
        self.out_dim = out_dim
        blocks = []
        c_in = 1
        for c in config.channels:
            blocks.append(
                nn.Sequential(
                    nn.Conv3d(c_in, c, kernel_size=3, padding=1, bias=False),
                    nn.GroupNorm(min(config.groups, c), c),
                    nn.ReLU(inplace=True),
                )
            )
            c_in = c
        self.blocks = nn.ModuleList(blocks)
        gated = config.attention != "none"
        # "none" holds no gate parameters at all, so the baseline has nothing that could learn
        self.input_gate = ChannelGate(1) if gated else None
        self.gates = nn.ModuleList(ChannelGate(c) for c in config.channels) if gated else None
        self.dropout = nn.Dropout(config.dropout)
        # mean and max over space-time: a brief, local event (a patch that starts to move) is a
        # few percent of the volume and all but vanishes in a mean; the max keeps it
        self.out = nn.Linear(2 * c_in, out_dim)

    def _check(self, frames: torch.Tensor) -> None:
        if not isinstance(frames, torch.Tensor) or frames.dim() != 4 or not frames.is_floating_point():
            shape = tuple(frames.shape) if isinstance(frames, torch.Tensor) else type(frames).__name__
            raise ValueError(f"harris3d_cnn needs float N x F x H x W frames in [0, 1], got {shape}")

    def explain(self, frames: torch.Tensor) -> HarrisResult | None:
        """Response, key points and attention volume the encoder uses for `frames` (None: no attention)."""
        self._check(frames)
        if self.config.attention == "none":
            return None
        return harris_analysis(frames, self.config.attention, self.config.harris)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        self._check(frames)
        x = frames.unsqueeze(1)  # N x 1 x F x H x W
        attention = None
        if self.config.attention != "none":
            with torch.no_grad():
                attention = harris_analysis(frames, self.config.attention, self.config.harris).attention
            attention = attention.unsqueeze(1).to(x.dtype)
            assert self.input_gate is not None  # made with the attention: config.attention != "none"
            x = x * self.input_gate(attention)
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.blocks) - 1:
                x = _pool(x)
            # gate after pooling: the same feature maps reach the next block, at an eighth of the
            # cost of gating the full-size block output (which dominated the encoder's time)
            if attention is not None:
                assert self.gates is not None  # made with the attention
                x = x * self.gates[i](F.adaptive_avg_pool3d(attention, (x.shape[2], x.shape[3], x.shape[4])))
        pooled = torch.cat([x.mean(dim=(2, 3, 4)), x.amax(dim=(2, 3, 4))], dim=1)
        return self.out(self.dropout(pooled))


def _create_harris3d_cnn(out_dim: int, **options: Any) -> Harris3DCNN:
    return Harris3DCNN(out_dim, build_config(Harris3DCNNConfig, options))


@register_encoder("harris3d_cnn", modality="vision")
def harris3d_cnn(out_dim: int, **options: Any) -> nn.Module:
    """3D CNN over word-span face frames with Harris-2D/3D attention gating (paper Fig. 1)."""
    return _create_harris3d_cnn(out_dim, **options)

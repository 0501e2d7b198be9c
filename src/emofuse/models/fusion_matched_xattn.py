"""fusion_matched_xattn: the fusion-matched network plus cross-modal attention (an extension).

Not the paper's model (that is `fusion_matched`, fusion_matched.py, eqs 8-16 as written). It
keeps everything of it (encoders, eqs 8-12, the exact eq 14 attention and the pooled P'
profiles) and is where emofuse's additions live. By default it turns on the three matching aids
that `fusion_matched` leaves off (FusionMatchedXAttnConfig): a relative-time code appended to
every E (time_code=32, so it enters M), W1 and W2 started at a same-time prior
(same_time_prior=0.5), and a per-step linear skip in the encoders (encoder_skip=true). And it
adds what the paper does not have: the matching matrices also act as cross-modal attention.
For each pivot step j, a softmax over x's steps of M_xy[:, j] pulls x's encoder features onto j
(context_x[j]). Each pivot step becomes one token

    [E_y[j]; context_x[j]; E_y[j] * U_x context_x[j]; (the same for z); profiles of P'[j]]

(LayerNorm, Linear, ReLU), and the tokens are pooled by learned attention and by a
length-normalised sum, then an MLP gives the output. The element-wise product lets a token
carry the product of a word's cue and the audio at the same moment, which the two scalar
profiles per step of the faithful model cannot; on the synthetic data, whose interaction is
exactly such a per-step product, that is what separates the two (README, `emofuse demo`).

Unimodal subsets: the pivot's encoder features alone make the tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from emofuse.data.dataset import Batch
from emofuse.errors import OptionError
from emofuse.models.base import (
    AttentionPool,
    ModelOutput,
    ModelSpec,
    build_config,
    check_batch,
    masked_softmax,
    mlp_head,
    squeeze_regression,
)
from emofuse.models.fusion_matched import FusionMatched, FusionMatchedConfig
from emofuse.models.registry import Recipe, register_model


@dataclass
class FusionMatchedXAttnConfig(FusionMatchedConfig):
    """The faithful model's options, with emofuse's three matching aids on by default.

    `fusion_matched` leaves them off (eqs 8-16 on the encoders' outputs alone); this extension
    was developed with them and keeps them: a 32-wide relative-time code on every E, W1 and W2
    started at 0.5 x identity on that code's block, and a per-step linear skip in each encoder.
    Each can still be turned off, e.g. `-o time_code=0 -o same_time_prior=0`, `-o encoder_skip=false`.
    """

    time_code: int = 32
    same_time_prior: float = 0.5
    encoder_skip: bool = True


class FusionMatchedXAttn(FusionMatched):
    def build_head(self) -> None:
        if self.config.unimodal:
            raise OptionError(
                "fusion_matched_xattn's tokens already carry each step's own features: unimodal "
                "is an option of fusion_matched only"
            )
        d = self.config.hidden
        # per other modality: its context and its element-wise product with the pivot's
        # features (a per-step bilinear match that carries the feature values themselves)
        self.context_proj = nn.ModuleDict({m: nn.Linear(d, d) for m in self.others})
        n_profiles = 2 if self.others else 0
        token_in = d + 2 * d * len(self.others) + n_profiles
        # LayerNorm: matching scores and encoder features live on different scales
        self.token = nn.Sequential(
            nn.LayerNorm(token_in), nn.Linear(token_in, d), nn.ReLU(), nn.Dropout(self.config.dropout)
        )
        self.pool = AttentionPool(d)
        self.head = mlp_head(2 * d, d, self.spec.output_size, self.config.dropout)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        enc = self.encode(batch)
        y, mask_y = self.pivot, batch.masks[self.pivot]
        d = self.config.hidden
        extras: dict[str, torch.Tensor] = {}
        parts = [enc[y][..., :d]]
        if self.others:
            weighted, matrices = self.weighted_matches(enc, batch, extras)
            for m in self.others:
                mask_x = batch.masks[m]
                key_mask = mask_x.unsqueeze(1).expand(-1, matrices[m].shape[2], -1)
                attn = masked_softmax(matrices[m].transpose(1, 2), key_mask)  # B x t_y x t_x
                context = torch.einsum("bji,bid->bjd", attn, enc[m][..., :d])
                parts += [context, enc[y][..., :d] * self.context_proj[m](context)]
            parts.append(self.profiles(weighted, batch, extras))
        tokens = self.token(torch.cat(parts, dim=-1)) * mask_y.unsqueeze(-1).to(enc[y].dtype)
        # attention pooling finds the decisive steps; the length-normalised sum keeps "how
        # many" information that a weighted mean would lose
        summed = tokens.sum(1) / self.pivot_len
        pooled = torch.cat([self.pool(tokens, mask_y), summed], dim=-1)
        return ModelOutput(squeeze_regression(self.head(pooled), self.spec), extras=extras)


@register_model(
    "fusion_matched_xattn",
    recipe=Recipe(lr=1e-3, batch_size=32, grad_clip=1.0, source="emofuse (as fusion_matched)"),
)
def fusion_matched_xattn(spec: ModelSpec, **options: object) -> FusionMatchedXAttn:
    return FusionMatchedXAttn(spec, build_config(FusionMatchedXAttnConfig, options))

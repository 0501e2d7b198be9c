"""The fusion-matched network of Xiang et al. (paper eqs 8-16).

Per modality an intra-modal encoder gives E_m (t_m x d). With Y the pivot modality:

    M_xy = E_x W1 E_y^T                      (t_x x t_y, eq 8; eq 9 likewise for z)
    R_x  = tanh(W_x M_xy^T + b_x)            (eq 10: W_x reads a whole row of M, length t_y)
    a_x  = softmax(w_x R_x)                  (eq 11: attention over x's time steps)
    M'_xy[i, j] = a_x[i] M_xy[i, j]          (eq 12: broadcast)
    P[i, j, k] = M'_xy[i, j] + M'_zy[k, j]   (eq 13: the three-way tensor)
    a_P = softmax(w tanh(W P + b)) over k    (eqs 14-15)
    P'[i, j, k] = a_P[k] P[i, j, k]          (eq 16)

Choices the paper leaves open, made here and documented:
- Eq 10's W_x has a fixed input size t_y, so the pivot's padded length is part of the model
  (ModelSpec.max_lengths), as in the paper's fixed-length MOSI setup.
- Eq 14 projects P along its (i, j) slice for every k; P is a broadcast sum, so the slice
  averaged over i is mean_i M'_xy[i, :] + M'_zy[k, :], which keeps memory linear.
- How P' reaches the output is not said. P' is pooled over its non-pivot axes into two
  profiles along the pivot's time (sum and max). Both follow from the broadcast-sum algebra
  without building the t_x x t_y x t_z tensor: memory is O(t_x t_y + t_y t_z).
  `head="paper"` feeds only these profiles to an MLP. `head="matched"` (default) also lets the
  matching matrices act as cross-modal attention (softmax over x's steps of M_xy[:, j] pulls x's
  features onto the pivot's step j), builds one token per pivot step from
  [E_y[j]; context_x[j]; E_y[j] * U context_x[j]; (same for z); profiles[j]] and pools the
  tokens. A fused token can then carry the product of a word's cue and the audio at the same
  moment, which a pooled scalar profile cannot.
- The intra-modal encoders add a per-step projection of their input to the BiLSTM output:
  matching needs each step's own features, not only a recurrent summary smeared over time
  (without it the network did not learn the synthetic data's time-aligned interaction).
- The coupling matrices start as a same-time prior (identity on the time-code block), the
  word-alignment assumption of the paper's Section 1, which training may then move away from.
- Encoder outputs get a relative-time code (step / length), so that matching can find the same
  moment in sequences of different frame rates (unaligned data).
- Bimodal subsets use one matching matrix (P = M'_xy); unimodal ones the encoder alone.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from emofuse.data.dataset import MODALITIES, Batch
from emofuse.models.base import (
    AttentionPool,
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    SequenceEncoder,
    build_config,
    check_batch,
    masked_softmax,
    mlp_head,
    relative_time_encoding,
    squeeze_regression,
)
from emofuse.models.registry import register_model

NEG_INF = float("-inf")


@dataclass
class FusionMatchedConfig:
    hidden: int = 64  # encoder width d
    time_code: int = 32  # size of the relative-time code appended to each encoder output
    time_prior: float = 0.5  # initial weight of same-time matching in W (see coupling init)
    attention_hidden: int = 32  # rows of W_x in eq 10 and of W in eq 14
    dropout: float = 0.2
    pivot: str = "text"  # the modality Y shared by both matching pairs
    head: str = "matched"  # "matched" or "paper" (profiles of P' only)

    def __post_init__(self) -> None:
        if self.pivot not in MODALITIES:
            raise ValueError(f"pivot must be one of {MODALITIES}, not {self.pivot!r}")
        if self.head not in ("matched", "paper"):
            raise ValueError(f"head must be 'matched' or 'paper', not {self.head!r}")


# ------------------------------------------------------------------ P' pooling (eqs 13-16)
def pool_three_way(
    a_xy: torch.Tensor,
    a_zy: torch.Tensor,
    alpha_z: torch.Tensor,
    mask_x: torch.Tensor,
    mask_z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and max of P'[i, j, k] = alpha_z[k] (A[i, j] + B[k, j]) over (i, k), per pivot step j.

    A = M'_xy (B x t_x x t_y), B = M'_zy (B x t_z x t_y), alpha_z (B x t_z, sums to 1 over
    real k). Without materialising P':
      mean_i sum_k P'[i, j, k] = mean_i A[i, j] + sum_k alpha_z[k] B[k, j]   (sum_k alpha = 1)
      max_{i,k} P'[i, j, k]    = max_k alpha_z[k] (max_i A[i, j] + B[k, j])   (alpha >= 0)
    The first is the "sum over the z axis, mean over the x axis" profile: P' already carries the
    attention weights along z, so summing over z is the attention-weighted read-out.
    """
    n_x = mask_x.sum(1, keepdim=True).clamp_min(1).to(a_xy.dtype)  # B x 1
    mean_a = a_xy.sum(1) / n_x  # B x t_y (A is zero on padded i)
    mean_profile = mean_a + torch.einsum("bk,bkj->bj", alpha_z, a_zy)
    max_a = a_xy.masked_fill(~mask_x.unsqueeze(-1), NEG_INF).amax(1)  # B x t_y
    scaled = alpha_z.unsqueeze(-1) * (max_a.unsqueeze(1) + a_zy)  # B x t_z x t_y
    max_profile = scaled.masked_fill(~mask_z.unsqueeze(-1), NEG_INF).amax(1)
    return mean_profile, max_profile


def pool_three_way_materialised(
    a_xy: torch.Tensor,
    a_zy: torch.Tensor,
    alpha_z: torch.Tensor,
    mask_x: torch.Tensor,
    mask_z: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference for tests: builds P' (B x t_x x t_y x t_z) literally, as eqs 13 and 16 write it."""
    p = a_xy.unsqueeze(-1) + a_zy.transpose(1, 2).unsqueeze(1)  # P[i, j, k]
    p_prime = alpha_z[:, None, None, :] * p
    valid = mask_x[:, :, None, None] & mask_z[:, None, None, :]
    n_x = mask_x.sum(1).clamp_min(1).to(p.dtype)[:, None]
    mean_profile = (p_prime * valid).sum((1, 3)) / n_x
    max_profile = p_prime.masked_fill(~valid, NEG_INF).amax((1, 3))
    return mean_profile, max_profile


class TemporalAttention(nn.Module):
    """Eqs 10-11 (and 14-15): attention over the rows of a matrix whose columns are the pivot's
    time steps. W reads a whole row, so its input size is the pivot's padded length."""

    def __init__(self, pivot_len: int, hidden: int) -> None:
        super().__init__()
        self.pivot_len = pivot_len
        self.proj = nn.Linear(pivot_len, hidden)  # W_x, b_x
        self.score = nn.Linear(hidden, 1, bias=False)  # w_x

    def forward(self, rows: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
        width = rows.shape[-1]
        if width > self.pivot_len:
            raise ValueError(
                f"pivot sequence of length {width} exceeds the model's {self.pivot_len}; "
                "pad or truncate the data to the training length"
            )
        rows = F.pad(rows, (0, self.pivot_len - width))
        r = torch.tanh(self.proj(rows))
        return masked_softmax(self.score(r).squeeze(-1), row_mask)


class FusionMatched(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: FusionMatchedConfig) -> None:
        super().__init__(spec, config)
        mods = spec.modalities
        self.pivot = config.pivot if config.pivot in mods else _default_pivot(mods)
        self.others = tuple(m for m in mods if m != self.pivot)
        d = config.hidden
        width = d + config.time_code
        self.encoders = nn.ModuleDict(
            {m: SequenceEncoder(spec.dims[m], d, d, config.dropout, local=True) for m in mods}
        )
        pivot_len = spec.max_lengths[self.pivot]
        # eq 8-9: one coupling matrix per (other, pivot) pair. Initialised as a prior that
        # words match the frames spoken at the same time: identity on the time-code block
        # (so M starts peaked on equal relative times), small random on the feature block.
        init = 0.01 * torch.randn(width, width)
        init[d:, d:] += config.time_prior * torch.eye(config.time_code)
        self.coupling = nn.ParameterDict({m: nn.Parameter(init.clone()) for m in self.others})
        self.row_attention = nn.ModuleDict(
            {m: TemporalAttention(pivot_len, config.attention_hidden) for m in self.others}
        )
        if len(self.others) == 2:
            self.tensor_attention = TemporalAttention(pivot_len, config.attention_hidden)
        n_profiles = 2 if self.others else 0
        if config.head == "paper" and self.others:
            self.head = mlp_head(n_profiles * pivot_len, d, spec.output_size, config.dropout)
        else:
            # per other modality: its context and its element-wise product with the pivot's
            # features (a per-step bilinear match that carries the feature values themselves)
            self.context_proj = nn.ModuleDict({m: nn.Linear(d, d) for m in self.others})
            token_in = d + 2 * d * len(self.others) + n_profiles
            # LayerNorm: matching scores and encoder features live on different scales
            self.token = nn.Sequential(
                nn.LayerNorm(token_in), nn.Linear(token_in, d), nn.ReLU(), nn.Dropout(config.dropout)
            )
            self.pool = AttentionPool(d)
            self.head = mlp_head(2 * d, d, spec.output_size, config.dropout)
        self.pivot_len = pivot_len

    # -------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = {}
        for m in self.spec.modalities:
            mask = batch.masks[m]
            e = self.encoders[m](batch.features[m], mask)
            out[m] = torch.cat([e, relative_time_encoding(mask, self.config.time_code)], dim=-1)
        return out

    def match(self, e_x: torch.Tensor, e_y: torch.Tensor, m: str, mask_x, mask_y) -> torch.Tensor:
        """Eq 8: M_xy = E_x W E_y^T, zero wherever either step is padding."""
        scores = torch.einsum("bid,de,bje->bij", e_x, self.coupling[m], e_y)
        valid = mask_x.unsqueeze(-1) & mask_y.unsqueeze(1)
        return scores * valid.to(scores.dtype)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        enc = self.encode(batch)
        y, mask_y = self.pivot, batch.masks[self.pivot]
        d = self.config.hidden
        extras: dict[str, torch.Tensor] = {}

        weighted, contexts = {}, []
        for m in self.others:
            mask_x = batch.masks[m]
            mat = self.match(enc[m], enc[y], m, mask_x, mask_y)  # B x t_x x t_y
            alpha = self.row_attention[m](mat, mask_x)  # eqs 10-11
            weighted[m] = alpha.unsqueeze(-1) * mat  # eq 12
            extras[f"alpha_{m}"] = alpha
            # the matching matrix as cross-modal attention onto the pivot's steps
            key_mask = mask_x.unsqueeze(1).expand(-1, mat.shape[2], -1)
            attn = masked_softmax(mat.transpose(1, 2), key_mask)  # B x t_y x t_x
            contexts.append(torch.einsum("bji,bid->bjd", attn, enc[m][..., :d]))
            if self.config.head == "matched":
                contexts.append(enc[y][..., :d] * self.context_proj[m](contexts[-1]))

        profiles = self._profiles(weighted, batch, extras)
        if self.config.head == "paper" and profiles is not None:
            flat = F.pad(profiles, (0, 0, 0, self.pivot_len - profiles.shape[1])).flatten(1)
            return ModelOutput(squeeze_regression(self.head(flat), self.spec), extras=extras)

        parts = [enc[y][..., :d], *contexts] + ([profiles] if profiles is not None else [])
        tokens = self.token(torch.cat(parts, dim=-1)) * mask_y.unsqueeze(-1).to(enc[y].dtype)
        # attention pooling finds the decisive steps; the length-normalised sum keeps "how
        # many" information that a weighted mean would lose
        summed = tokens.sum(1) / self.pivot_len
        pooled = torch.cat([self.pool(tokens, mask_y), summed], dim=-1)
        return ModelOutput(squeeze_regression(self.head(pooled), self.spec), extras=extras)

    def _profiles(
        self, weighted: dict[str, torch.Tensor], batch: Batch, extras: dict[str, torch.Tensor]
    ) -> torch.Tensor | None:
        """Pivot-time profiles of P' (B x t_y x 2), or None for a unimodal model."""
        if not weighted:
            return None
        mask_y = batch.masks[self.pivot]
        if len(self.others) == 1:
            (m,) = self.others
            a, mask_x = weighted[m], batch.masks[m]
            mean = a.sum(1) / mask_x.sum(1, keepdim=True).clamp_min(1).to(a.dtype)
            peak = a.masked_fill(~mask_x.unsqueeze(-1), NEG_INF).amax(1)
        else:
            x, z = self.others
            a_xy, a_zy = weighted[x], weighted[z]
            mask_x, mask_z = batch.masks[x], batch.masks[z]
            # eq 14: the (i, j) slice of P for each k, averaged over i (see module docstring)
            n_x = mask_x.sum(1, keepdim=True).clamp_min(1).to(a_xy.dtype)
            slices = (a_xy.sum(1) / n_x).unsqueeze(1) + a_zy  # B x t_z x t_y
            alpha_z = self.tensor_attention(slices, mask_z)  # eq 15
            extras["alpha_tensor"] = alpha_z
            mean, peak = pool_three_way(a_xy, a_zy, alpha_z, mask_x, mask_z)  # eq 16 + pooling
        profiles = torch.stack([mean, peak], dim=-1)
        return profiles * mask_y.unsqueeze(-1).to(profiles.dtype)


def _default_pivot(modalities: tuple[str, ...]) -> str:
    # Text is the natural pivot (the paper: "the text is relatively stable, which can pull other
    # modes"); without text, vision, whose frames are closer to words in rate than audio's.
    for m in ("text", "vision", "audio"):
        if m in modalities:
            return m
    raise ValueError(f"no modality in {modalities}")


@register_model("fusion_matched")
def fusion_matched(spec: ModelSpec, **options: object) -> FusionMatched:
    return FusionMatched(spec, build_config(FusionMatchedConfig, options))

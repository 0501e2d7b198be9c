"""The fusion-matched network of Xiang et al., as the paper writes it (eqs 8-16).

Per modality an intra-modal encoder gives E_m (t_m x d). With Y the pivot modality and X, Z
the two others:

    M_xy = E_x W1 E_y^T                      (t_x x t_y, eq 8; eq 9 likewise for z)
    R_x  = tanh(W_x M_xy^T + b_x)            (eq 10: W_x reads a whole row of M, length t_y)
    a_x  = softmax(w_x R_x)                  (eq 11: attention over x's time steps)
    M'_xy[i, j] = a_x[i] M_xy[i, j]          (eq 12: broadcast)
    P[i, j, k] = M'_xy[i, j] + M'_zy[k, j]   (eq 13: the three-way tensor)
    R[k] = tanh(<W, P[:, :, k]> + b)         (eq 14: W, one t_x x t_y slice per hidden unit)
    a_P = softmax(w R) over k                (eq 15)
    P'[i, j, k] = a_P[k] P[i, j, k]          (eq 16)

This is the model registered as `fusion_matched`. `fusion_matched_xattn`
(fusion_matched_xattn.py) is the extension: it adds cross-modal attention contexts the paper does
not have and turns on the three matching aids below by default. It is a separate model so that
results under the paper's name are the paper's.

What is the paper's and what is emofuse's
-----------------------------------------
The paper's (eqs 8-16, computed exactly): the bilinear matching M = E_x W E_y^T with one
coupling matrix per (other, pivot) pair, the row attention of eqs 10-12, the three-way tensor P
of eq 13, its attention of eqs 14-15 and P' of eq 16; E is the intra-modal encoder's output and
nothing else.

emofuse's, because the paper leaves them open (each documented where it is made):
- The pivot Y (the modality in both pairs; the paper does not name it): text by default
  (`pivot`), after the paper's remark that "the text is relatively stable, which can pull other
  modes"; vision, then audio, when text is absent.
- The intra-modal encoder: the paper's E is a "single mode feature matrix" with "single-mode
  dynamic correlation information" and no architecture; here it is a BiLSTM (Linear -> BiLSTM ->
  Linear, base.SequenceEncoder), d = `hidden` wide.
- The initialisation of W1, W2 (not given): small random, N(0, 0.01^2) per entry.
- Eq 10's W_x has a fixed input size t_y, so the pivot's padded length is part of the model
  (ModelSpec.max_lengths), as in the paper's fixed-length MOSI setup; eq 14's W likewise has
  the fixed size t_x x t_y.
- Eq 14 exactly, in linear memory. P is a broadcast sum, so for each hidden unit h
      <W_h, P[:, :, k]> = <W_h, M'_xy> + sum_j (sum_i W_h[i, j]) M'_zy[k, j],
  one t_x x t_y inner product shared by every k plus a length-t_y dot product per k: the
  t_x x t_y x t_z tensor is never built (memory O(t_x t_y + t_y t_z)). `tensor_hidden_materialised`
  builds P literally and is the tests' reference.
- Padding: P is zero wherever i, j or k is a padded step (as M is), so sum_i runs over x's
  real steps only and a prediction does not depend on how much padding its batch has.
- The head that reads P' (the paper does not say how P' reaches the output). P' is pooled over
  its two non-pivot axes into two profiles along the pivot's time, mean over i of sum over k (the
  attention-weighted read-out: P' carries a_P along k) and max over (i, k), both computed without
  building P' (`pool_three_way`). The profiles, one pair per pivot step, are flattened (the
  pivot's padded length is already part of the model) and an MLP maps them to the output.
  Nothing but P' reaches the head.
- Bimodal subsets use one matching matrix (P = M'_xy, pooled the same way over i); unimodal
  ones the encoder alone (attention pooling and the mean over time, then the MLP). The paper
  runs these ablations without saying how.

Matching aids (emofuse's, not the paper's; all off in `fusion_matched`, all on by default in
`fusion_matched_xattn`; set with `-o KEY=VALUE`):
- time_code=N (int, 0 = off): append an N-wide sinusoidal code of each step's relative time
  (step / length, base.relative_time_encoding) to every E, so the code enters M (eq 8) and
  matching can find the same moment in sequences of different frame rates (unaligned data).
  E is then hidden + N wide and W1, W2 are (hidden + N) square.
- same_time_prior=w (float, 0 = off; needs time_code > 0): start W1, W2 with w times the
  identity on their time-code block, so M starts peaked on equal relative times (the paper's
  feature extraction aligns audio and video to the words, so words and frames of the same moment
  are assumed to belong together); training may move away from it.
- encoder_skip=true: each intra-modal encoder adds a per-step linear projection of its input to
  the BiLSTM's output, so matching sees each step's own features and not only a recurrent
  summary smeared over time.

Regularisers (opt-in, `-o KEY=VALUE`; none is in the paper, all are off by default):
- unimodal=true: the head also reads each modality's pooled encoding, so a modality that the
  pivot's products hide still reaches the output.
- modality_dropout=p: in training, each sample's encoding of each modality (features and, with
  time_code, the time code) is zeroed with probability p, independently per modality; a sample
  that would lose every modality keeps one chosen at random. No rescaling (as in ModDrop,
  Neverova et al. 2016): a dropped modality looks like an absent one, not like a louder copy of
  the others. A zeroed pivot zeroes every M, so the head must learn to predict from what remains
  (with unimodal=true: the other modalities' summaries) instead of leaning on products with an
  uninformative pivot.
- text_dropout=p: element dropout on the text features before their encoder (the text path
  alone), for a text that carries little and is easy to memorise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from emofuse.data.dataset import MODALITIES, Batch
from emofuse.errors import OptionError
from emofuse.models.base import (
    AttentionPool,
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    SequenceEncoder,
    build_config,
    check_batch,
    masked_mean,
    masked_softmax,
    mlp_head,
    relative_time_encoding,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model

NEG_INF = float("-inf")


# what `fusion_matched` computed before the matching aids became options (all on): runs saved
# then carry these in their weights, and `evaluate`/`predict` rebuild them with it
MATCHING_AIDS_BEFORE_OPTIONS = {"time_code": 32, "same_time_prior": 0.5, "encoder_skip": True}


@dataclass
class FusionMatchedConfig:
    hidden: int = 64  # encoder width d
    attention_hidden: int = 32  # rows of W_x in eq 10 and of W in eq 14
    dropout: float = 0.2
    pivot: str = "text"  # the modality Y shared by both matching pairs
    # also give the head each modality's own pooled encoding (attention pool + mean). The paper does
    # not say how P' reaches the output; with this the fused model contains every unimodal one, so a
    # modality that carries nothing (RAVDESS's two fixed sentences, as the pivot) cannot hide the one
    # that does. Off by default: the head then reads P' alone, as eqs 13-16 leave it.
    unimodal: bool = False
    # Opt-in regularisers, off by default (the defaults compute eqs 8-16 unchanged); see the
    # module docstring's "Regularisers". Training only: evaluation always sees every modality.
    modality_dropout: float = 0.0  # per sample, zero each modality's whole encoding with this probability
    text_dropout: float = 0.0  # element dropout on the text features before their encoder
    # Matching aids, emofuse's and not the paper's (module docstring, "Matching aids"); all off
    # here, so that `fusion_matched` computes eqs 8-16 on the encoders' outputs alone.
    # time_code: width of a sinusoidal relative-time code (step / length) appended to every
    # encoder output E, so that it enters the bilinear matching M (eq 8); 0 = off (E is the
    # encoder's `hidden` features only).
    time_code: int = 0
    # same_time_prior: W1, W2 start with this weight times the identity on their time-code block
    # (M starts peaked on equal relative times); 0 = off (small random init). Needs time_code > 0.
    same_time_prior: float = 0.0
    # encoder_skip: the intra-modal encoders add a per-step linear projection of their input to
    # the BiLSTM output (each step keeps its own features); False = the BiLSTM encoder alone.
    encoder_skip: bool = False

    def __post_init__(self) -> None:
        if self.pivot not in MODALITIES:
            raise OptionError(f"pivot must be one of {MODALITIES}, not {self.pivot!r}")
        if isinstance(self.time_code, bool) or not isinstance(self.time_code, int) or self.time_code < 0:
            raise OptionError(f"time_code must be a width >= 0 (0 = off), not {self.time_code!r}")
        if not isinstance(self.encoder_skip, bool):
            raise OptionError(f"encoder_skip must be true or false, not {self.encoder_skip!r}")
        if isinstance(self.same_time_prior, bool):
            raise OptionError(
                "same_time_prior is a weight (0 = off), e.g. -o same_time_prior=0.5, not true/false"
            )
        if self.same_time_prior < 0:
            raise OptionError(f"same_time_prior must be >= 0 (0 = off), not {self.same_time_prior}")
        if self.same_time_prior > 0 and self.time_code == 0:
            raise OptionError("same_time_prior acts on the time-code block of W: it needs time_code > 0 "
                              "(with time_code=0 give same_time_prior=0 as well)")
        for name in ("modality_dropout", "text_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise OptionError(f"{name} must lie in [0, 1), got {getattr(self, name)}")


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
    """Eqs 10-11: attention over the rows of a matrix whose columns are the pivot's time steps.
    W reads a whole row, so its input size is the pivot's padded length."""

    def __init__(self, pivot_len: int, hidden: int) -> None:
        super().__init__()
        self.pivot_len = pivot_len
        self.proj = nn.Linear(pivot_len, hidden)  # W_x, b_x
        self.score = nn.Linear(hidden, 1, bias=False)  # w_x

    def forward(self, rows: torch.Tensor, row_mask: torch.Tensor) -> torch.Tensor:
        width = rows.shape[-1]
        if (
            width > self.pivot_len
        ):  # evaluate and predict fit the data to the model's lengths first (fit_lengths)
            raise ValueError(
                f"pivot sequence of length {width} exceeds the model's {self.pivot_len}; "
                "pad or truncate the data to the training length"
            )
        rows = F.pad(rows, (0, self.pivot_len - width))
        r = torch.tanh(self.proj(rows))
        return masked_softmax(self.score(r).squeeze(-1), row_mask)


class TensorAttention(nn.Module):
    """Eqs 14-15: attention over Z's steps k, each scored from the whole slice P[:, :, k].

    W holds one t_x x t_y weight slice per hidden unit, so, like eq 10's W_x, its size is
    fixed by the padded lengths of X and of the pivot.
    """

    def __init__(self, x_len: int, pivot_len: int, hidden: int) -> None:
        super().__init__()
        self.x_len, self.pivot_len = x_len, pivot_len
        bound = 1.0 / math.sqrt(x_len * pivot_len)  # nn.Linear's init for x_len * pivot_len inputs
        self.weight = nn.Parameter(torch.empty(hidden, x_len, pivot_len).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(hidden).uniform_(-bound, bound))
        self.score = nn.Linear(hidden, 1, bias=False)  # w

    def forward(
        self, a_xy: torch.Tensor, a_zy: torch.Tensor, mask_x: torch.Tensor, mask_z: torch.Tensor
    ) -> torch.Tensor:
        t_x, t_y = a_xy.shape[1], a_xy.shape[2]
        if t_x > self.x_len or t_y > self.pivot_len:  # as above: a caller that skipped fit_lengths
            raise ValueError(
                f"sequences of length {t_x} x {t_y} exceed the model's {self.x_len} x {self.pivot_len}; "
                "pad or truncate the data to the training length"
            )
        weight = self.weight[:, :t_x, :t_y]  # padded steps of the model's size carry zeros in P
        r = tensor_hidden(a_xy, a_zy, weight, self.bias, mask_x)
        return masked_softmax(self.score(r).squeeze(-1), mask_z)


def tensor_hidden(
    a_xy: torch.Tensor, a_zy: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, mask_x: torch.Tensor
) -> torch.Tensor:
    """Eq 14 without P: R[b, k, h] = tanh(<W_h, P[b, :, :, k]> + b_h), B x t_z x hidden.

    P[i, j, k] = A[i, j] + B[k, j] on real steps and 0 elsewhere (A = M'_xy, B = M'_zy, both
    zero on padded steps), so <W_h, P[:, :, k]> = <W_h, A> + sum_j (sum_{real i} W_h[i, j]) B[k, j].
    """
    shared = torch.einsum("hij,bij->bh", weight, a_xy)  # <W_h, A>, the same for every k
    column_sums = torch.einsum("hij,bi->bhj", weight, mask_x.to(weight.dtype))  # sum over real i
    per_k = torch.einsum("bhj,bkj->bkh", column_sums, a_zy)
    return torch.tanh(shared.unsqueeze(1) + per_k + bias)


def tensor_hidden_materialised(
    a_xy: torch.Tensor,
    a_zy: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    mask_x: torch.Tensor,
    mask_z: torch.Tensor,
) -> torch.Tensor:
    """Reference for tests: builds P (B x t_x x t_y x t_z) and applies eq 14 to each slice."""
    p = a_xy.unsqueeze(-1) + a_zy.transpose(1, 2).unsqueeze(1)
    p = p * (mask_x[:, :, None, None] & mask_z[:, None, None, :]).to(p.dtype)
    return torch.tanh(torch.einsum("hij,bijk->bkh", weight, p) + bias)


class FusionMatched(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: FusionMatchedConfig) -> None:
        super().__init__(spec, config)
        mods = spec.modalities
        self.pivot = config.pivot if config.pivot in mods else _default_pivot(mods)
        self.others = tuple(m for m in mods if m != self.pivot)
        d = config.hidden
        width = d + config.time_code
        # encoder_skip (emofuse's, off by default): a per-step linear skip around the BiLSTM
        self.encoders = nn.ModuleDict(
            {m: SequenceEncoder(spec.dims[m], d, d, config.dropout, local=config.encoder_skip) for m in mods}
        )
        self.text_dropout = nn.Dropout(config.text_dropout)
        self.pivot_len = spec.max_lengths[self.pivot]
        # eqs 8-9: one coupling matrix per (other, pivot) pair, (d + time_code) square. The paper
        # gives no initialisation: small random. With same_time_prior (emofuse's, off by default)
        # the time-code block starts as that weight times the identity, a prior that words match
        # the frames spoken at the same time (M starts peaked on equal relative times).
        init = 0.01 * torch.randn(width, width)
        if config.same_time_prior:
            init[d:, d:] += config.same_time_prior * torch.eye(config.time_code)
        self.coupling = nn.ParameterDict({m: nn.Parameter(init.clone()) for m in self.others})
        self.row_attention = nn.ModuleDict(
            {m: TemporalAttention(self.pivot_len, config.attention_hidden) for m in self.others}
        )
        if len(self.others) == 2:
            x = self.others[0]
            self.tensor_attention = TensorAttention(
                spec.max_lengths[x], self.pivot_len, config.attention_hidden
            )
        self.build_head()

    def build_head(self) -> None:
        """Two profiles of P' per pivot step, flattened, then an MLP (encoder pooling if unimodal)."""
        d, out, drop = self.config.hidden, self.spec.output_size, self.config.dropout
        if self.others:
            extra = 2 * d * len(self.spec.modalities) if self.config.unimodal else 0
            if self.config.unimodal:
                self.unimodal_pool = nn.ModuleDict({m: AttentionPool(d) for m in self.spec.modalities})
            self.head = mlp_head(2 * self.pivot_len + extra, d, out, drop)
        else:
            self.pool = AttentionPool(d)
            self.head = mlp_head(2 * d, d, out, drop)

    # -------------------------------------------------------------------------------
    def encode(self, batch: Batch) -> dict[str, torch.Tensor]:
        out = {}
        for m in self.spec.modalities:
            mask = batch.masks[m]
            x = batch.features[m]
            if m == "text":
                x = self.text_dropout(x)  # identity unless text_dropout > 0 and training
            e = self.encoders[m](x, mask)
            if self.config.time_code:  # emofuse's relative-time code (off by default)
                e = torch.cat([e, relative_time_encoding(mask, self.config.time_code)], dim=-1)
            out[m] = e
        if self.training and self.config.modality_dropout > 0 and len(out) > 1:
            keep = modality_keep_mask(len(out), next(iter(out.values())).shape[0],
                                      self.config.modality_dropout, next(iter(out.values())).device)
            out = {m: e * keep[:, i, None, None].to(e.dtype) for i, (m, e) in enumerate(out.items())}
        return out

    def match(self, e_x: torch.Tensor, e_y: torch.Tensor, m: str, mask_x, mask_y) -> torch.Tensor:
        """Eq 8: M_xy = E_x W E_y^T, zero wherever either step is padding."""
        scores = torch.einsum("bid,de,bje->bij", e_x, self.coupling[m], e_y)
        valid = mask_x.unsqueeze(-1) & mask_y.unsqueeze(1)
        return scores * valid.to(scores.dtype)

    def weighted_matches(
        self, enc: dict[str, torch.Tensor], batch: Batch, extras: dict[str, torch.Tensor]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Eqs 8-12 for each non-pivot modality: ({m: M'_my}, {m: M_my}), B x t_m x t_y each."""
        weighted, matrices = {}, {}
        for m in self.others:
            mask_x = batch.masks[m]
            mat = self.match(enc[m], enc[self.pivot], m, mask_x, batch.masks[self.pivot])
            alpha = self.row_attention[m](mat, mask_x)  # eqs 10-11
            weighted[m] = alpha.unsqueeze(-1) * mat  # eq 12
            matrices[m] = mat
            extras[f"alpha_{m}"] = alpha
            extras[f"match_{m}"] = mat  # M_my, for `emofuse explain`; read only, never trained on
        return weighted, matrices

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        enc = self.encode(batch)
        extras: dict[str, torch.Tensor] = {}
        if not self.others:
            e, mask = enc[self.pivot][..., : self.config.hidden], batch.masks[self.pivot]
            pooled = torch.cat([self.pool(e, mask), masked_mean(e, mask)], dim=-1)
            return ModelOutput(squeeze_regression(self.head(pooled), self.spec), extras=extras)
        weighted, _ = self.weighted_matches(enc, batch, extras)
        profiles = self.profiles(weighted, batch, extras)
        flat = F.pad(profiles, (0, 0, 0, self.pivot_len - profiles.shape[1])).flatten(1)
        if self.config.unimodal:
            d = self.config.hidden
            summaries = [
                torch.cat(
                    [
                        self.unimodal_pool[m](enc[m][..., :d], batch.masks[m]),
                        masked_mean(enc[m][..., :d], batch.masks[m]),
                    ],
                    dim=-1,
                )
                for m in self.spec.modalities
            ]
            flat = torch.cat([flat, *summaries], dim=-1)
        return ModelOutput(squeeze_regression(self.head(flat), self.spec), extras=extras)

    def profiles(
        self, weighted: dict[str, torch.Tensor], batch: Batch, extras: dict[str, torch.Tensor]
    ) -> torch.Tensor:
        """Eqs 13-16 and the pooling of P': pivot-time profiles (B x t_y x 2: mean, max)."""
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
            alpha_p = self.tensor_attention(a_xy, a_zy, mask_x, mask_z)  # eqs 14-15, exact
            extras["alpha_tensor"] = alpha_p
            mean, peak = pool_three_way(a_xy, a_zy, alpha_p, mask_x, mask_z)  # eq 16 + pooling
        profiles = torch.stack([mean, peak], dim=-1)
        return profiles * mask_y.unsqueeze(-1).to(profiles.dtype)


def modality_keep_mask(
    n_modalities: int, batch_size: int, p: float, device: torch.device | None = None
) -> torch.Tensor:
    """B x n booleans: modality i of sample b is kept; each dropped with probability p, never all.

    A sample whose draw drops every modality keeps one, uniformly at random, so that every sample
    still carries some input (an all-zero sample would only teach the label prior).
    """
    keep = torch.rand(batch_size, n_modalities, device=device) >= p
    none = ~keep.any(1)
    if none.any():
        rescue = torch.randint(n_modalities, (int(none.sum()),), device=device)
        keep[none.nonzero(as_tuple=True)[0], rescue] = True
    return keep


def _default_pivot(modalities: tuple[str, ...]) -> str:
    # Text is the natural pivot (the paper: "the text is relatively stable, which can pull other
    # modes"); without text, vision, whose frames are closer to words in rate than audio's.
    for m in ("text", "vision", "audio"):
        if m in modalities:
            return m
    raise ValueError(f"no modality in {modalities}")  # ModelSpec refuses an empty modality list


# The paper trains with lr 0.15 for 2000 epochs, which diverges with Adam (README); the recipe
# is emofuse's Adam default, the setting this model was developed at.
@register_model(
    "fusion_matched",
    recipe=Recipe(
        lr=1e-3, batch_size=32, grad_clip=1.0, source="emofuse (the paper's SGD lr 0.15 diverges with Adam)"
    ),
)
def fusion_matched(spec: ModelSpec, **options: object) -> FusionMatched:
    return FusionMatched(spec, build_config(FusionMatchedConfig, options))

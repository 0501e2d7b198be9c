"""The interface every model shares and the blocks several models use.

A model is built from a `ModelSpec` (which modalities, their feature sizes and padded lengths,
the task) plus its own typed config, takes a `Batch` and returns a `ModelOutput`. The trainer
knows nothing else about it; a model that needs its own training loss (MCTN's translation
loss) returns it as `aux_loss`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar, runtime_checkable

import torch
from torch import nn

from emofuse import configs
from emofuse.configs import field_names
from emofuse.data.dataset import MODALITIES, Batch
from emofuse.errors import OptionError

T = TypeVar("T")


@dataclass
class ModelSpec:
    """What a model needs to know about its inputs; saved in every checkpoint."""

    modalities: tuple[str, ...]
    dims: dict[str, int]
    max_lengths: dict[str, int]
    task: str = "regression"  # or "classification"
    num_classes: int = 1

    def __post_init__(self) -> None:
        self.modalities = tuple(m for m in MODALITIES if m in self.modalities)
        if not self.modalities:
            raise ValueError("a model needs at least one modality")
        for m in self.modalities:
            if m not in self.dims or m not in self.max_lengths:
                raise ValueError(f"spec lacks the dimension or length of modality {m!r}")
        if self.task not in ("regression", "classification"):
            raise ValueError(f"task must be regression or classification, not {self.task!r}")

    @property
    def output_size(self) -> int:
        return 1 if self.task == "regression" else self.num_classes

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelSpec:
        return cls(**{**d, "modalities": tuple(d["modalities"])})


@dataclass
class ModelOutput:
    """prediction: B (regression) or B x C logits; aux_loss: extra training loss, if any."""

    prediction: torch.Tensor
    aux_loss: torch.Tensor | None = None
    extras: dict[str, torch.Tensor] = field(default_factory=dict)


class MultimodalModel(nn.Module):
    """Base class: subclasses implement `forward(batch) -> ModelOutput`."""

    model_name: str = ""
    # Modality subsets a model refuses (e.g. MCTN needs a source and a target).
    min_modalities: int = 1

    def __init__(self, spec: ModelSpec, config: Any) -> None:
        super().__init__()
        if len(spec.modalities) < self.min_modalities:
            raise OptionError(
                f"{type(self).__name__} needs at least {self.min_modalities} modalities, "
                f"got {spec.modalities}"
            )
        self.spec = spec
        self.config = config

    def config_dict(self) -> dict[str, Any]:
        config = self.config  # a config instance (is_dataclass is also true of a dataclass type)
        return (
            dataclasses.asdict(config)
            if dataclasses.is_dataclass(config) and not isinstance(config, type)
            else {}
        )


@runtime_checkable
class OwnParameterGroups(Protocol):
    """A model that asks for its own optimizer parameter groups (LMF's factors, a text encoder's layers)."""

    def parameter_groups(self, lr: float) -> list[dict[str, Any]]: ...


def build_config(config_cls: type[T], options: dict[str, Any]) -> T:
    """A model's (or encoder's) typed config from keyword options (`emofuse.configs.build_config`);
    unknown keys are an OptionError that lists the known ones."""
    known = field_names(config_cls)
    unknown = sorted(set(options) - set(known))
    if unknown:  # said here, naming the config class after the keys; build_config checks the values
        raise OptionError(f"unknown option(s) {unknown} for {config_cls.__name__}; known: {sorted(known)}")
    return configs.build_config(config_cls, options, config_cls.__name__)


# ---------------------------------------------------------------------------- shared blocks
def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over time of B x L x D, counting only real steps (padding must not dilute it)."""
    weights = mask.unsqueeze(-1).to(x.dtype)
    return (x * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax that gives padded positions exactly zero weight."""
    scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
    return torch.softmax(scores, dim=dim) * mask.to(scores.dtype)


def last_step(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The output at each sequence's last real step (B x L x D -> B x D)."""
    idx = (mask.sum(1) - 1).clamp_min(0)
    return x[torch.arange(x.shape[0], device=x.device), idx]


def reverse_padded(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence within its own length, leaving padding at the end (B x L x D)."""
    length = x.shape[1]
    steps = torch.arange(length, device=x.device)[None, :]
    lengths = mask.sum(1, keepdim=True)
    idx = torch.where(steps < lengths, lengths - 1 - steps, steps)
    return x.gather(1, idx.unsqueeze(-1).expand_as(x))


class SequenceEncoder(nn.Module):
    """Intra-modal encoder: Linear -> bidirectional LSTM -> Linear, masks respected.

    Inputs are expected standardised per feature (the trainer's FeatureScaler); a per-step
    LayerNorm here would distort magnitudes that carry meaning (how loud, how strong a smile).

    The backward direction runs a second forward LSTM over each sequence reversed within its
    own length. With padding always at the end, no real step ever sees padding, so outputs do
    not depend on how long the batch's longest clip is; this is exact like packing, and on CPU
    several times faster to train than pack_padded_sequence (whose backward allocates a full
    zero tensor per time step).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: int,
        out_dim: int,
        dropout: float = 0.1,
        bidirectional: bool = True,
        local: bool = False,
    ) -> None:
        super().__init__()
        self.proj = nn.Linear(input_dim, hidden)
        # local=True adds a per-step projection of the input to the output, so each step keeps
        # its own features unsmeared by the recurrence (what step-level matching needs)
        self.local = nn.Linear(input_dim, out_dim) if local else None
        self.forward_rnn = nn.LSTM(hidden, hidden, batch_first=True)
        self.backward_rnn = nn.LSTM(hidden, hidden, batch_first=True) if bidirectional else None
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden * (2 if bidirectional else 1), out_dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.proj(x))
        states, _ = self.forward_rnn(h)
        if self.backward_rnn is not None:
            back, _ = self.backward_rnn(reverse_padded(h, mask))
            states = torch.cat([states, reverse_padded(back, mask)], dim=-1)
        out = self.out(self.dropout(states))
        if self.local is not None:
            out = out + self.local(x)
        return out * mask.unsqueeze(-1).to(out.dtype)


def align_to_mask(x: torch.Tensor, mask: torch.Tensor, target_mask: torch.Tensor) -> torch.Tensor:
    """Resample B x L x D onto the real steps of `target_mask` (B x L_t), per sample.

    Frame i of a sequence with n real frames falls in target step floor((i + 0.5) / n * T),
    T the sample's own number of real target steps; a target step averages its frames, and
    one with none (fewer frames than steps) takes the nearest frame. Both lengths are the
    sample's own, so the result does not depend on how much padding the batch has. Padded target
    steps are zero. Masks are prefix masks (real steps first), as emofuse's batches are.
    """
    if x.shape[1] == target_mask.shape[1] and torch.equal(mask, target_mask):
        return x * target_mask.unsqueeze(-1).to(x.dtype)
    b, length, dim = x.shape
    target_len = target_mask.shape[1]
    n = mask.sum(1, keepdim=True).clamp_min(1)  # B x 1, integer
    t = target_mask.sum(1, keepdim=True).clamp_min(1)
    steps = torch.arange(length, device=x.device)
    # floor((i + 0.5) / n * T) in integers, so equal lengths map step i to i exactly
    bins = torch.minimum((2 * steps + 1) * t // (2 * n), t - 1)  # B x L
    onehot = torch.nn.functional.one_hot(bins, target_len).to(x.dtype) * mask.unsqueeze(-1).to(x.dtype)
    counts = onehot.sum(1)  # B x L_t
    mean = torch.einsum("blt,bld->btd", onehot, x) / counts.clamp_min(1).unsqueeze(-1)
    tsteps = torch.arange(target_len, device=x.device)
    nearest_idx = torch.minimum((2 * tsteps + 1) * n // (2 * t), n - 1)  # B x L_t
    nearest = torch.gather(x, 1, nearest_idx.unsqueeze(-1).expand(b, target_len, dim))
    out = torch.where((counts > 0).unsqueeze(-1), mean, nearest)
    return out * target_mask.unsqueeze(-1).to(x.dtype)


def relative_time_encoding(mask: torch.Tensor, dim: int, max_cycles: float = 25.0) -> torch.Tensor:
    """Sinusoidal code of each step's relative time (step / length) in its own sequence.

    Relative rather than absolute position, so that word 10 of 50 and audio frame 100 of 500
    (the same moment of an unaligned clip) get the same code and bilinear matching can find
    them. Frequencies run from 1 to `max_cycles` cycles per clip: the dot product of two codes
    is then sharply peaked at equal times (adjacent words of a 50-word clip are told apart).
    """
    steps = torch.arange(mask.shape[1], device=mask.device, dtype=torch.float32)
    lengths = mask.sum(1, keepdim=True).clamp_min(1).to(torch.float32)
    rel = (steps[None, :] + 0.5) / lengths  # B x L in (0, 1]
    half = dim // 2
    cycles = torch.linspace(1.0, max_cycles, half, device=mask.device)
    angles = rel.unsqueeze(-1) * (2 * math.pi * cycles)  # B x L x half
    enc = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    if enc.shape[-1] < dim:
        enc = torch.nn.functional.pad(enc, (0, dim - enc.shape[-1]))
    return enc * mask.unsqueeze(-1).to(enc.dtype)


class AttentionPool(nn.Module):
    """Learned masked attention pooling over time: B x L x D -> B x D."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.score = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Linear(dim, 1))

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = masked_softmax(self.score(x).squeeze(-1), mask)
        return torch.einsum("bl,bld->bd", weights, x)


def mlp_head(in_dim: int, hidden: int, out_dim: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_dim, hidden), nn.ReLU(), nn.Dropout(dropout), nn.Linear(hidden, out_dim)
    )


def squeeze_regression(out: torch.Tensor, spec: ModelSpec) -> torch.Tensor:
    """Regression heads emit B x 1; the trainer wants B."""
    return out.squeeze(-1) if spec.task == "regression" else out


def check_batch(spec: ModelSpec, batch: Batch) -> None:
    missing = [m for m in spec.modalities if m not in batch.features]
    if missing:
        raise ValueError(
            f"the model was built for {spec.modalities} but the batch lacks {missing}"
        )


# ---------------------------------------------------------------------------- CPU fast paths
class _LSTMSequence(torch.autograd.Function):
    """One-layer unidirectional LSTM (PyTorch's gate order i, f, g, o), batch first.

    Same function as nn.LSTM; a faster training path on CPU than the mkldnn kernel, which
    computes the gradient of the input even when nothing needs it (the model's input features
    never do) and accumulates weight gradients step by step. Here the input projection of every
    step is one matrix product before the loop, and the weight gradients are one product each
    after the backward loop (as cuDNN does). Outputs and gradients match nn.LSTM to float
    rounding (tests check it).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: torch.Tensor,
        w_ih: torch.Tensor,
        w_hh: torch.Tensor,
        b_ih: torch.Tensor,
        b_hh: torch.Tensor,
    ) -> torch.Tensor:
        b, steps, d = x.shape
        hidden = w_hh.shape[1]
        pre = torch.addmm(b_ih + b_hh, x.reshape(b * steps, d), w_ih.t()).view(b, steps, 4 * hidden)
        # hs[:, t] / cs[:, t] are the states before step t (hs[:, 0] = 0)
        hs = x.new_zeros(b, steps + 1, hidden)
        cs = x.new_zeros(b, steps + 1, hidden)
        acts = x.new_empty(b, steps, 4 * hidden)
        w_hh_t = w_hh.t()
        h, c = hs[:, 0], cs[:, 0]
        for t in range(steps):
            gates = torch.addmm(pre[:, t], h, w_hh_t)
            act = acts[:, t]
            torch.sigmoid(gates, out=act)
            torch.tanh(gates[:, 2 * hidden : 3 * hidden], out=act[:, 2 * hidden : 3 * hidden])
            i, f, g, o = act.chunk(4, 1)
            c = torch.addcmul(f * c, i, g)
            h = o * torch.tanh(c)
            cs[:, t + 1] = c
            hs[:, t + 1] = h
        ctx.save_for_backward(x, w_ih, w_hh, acts, hs, cs)
        return hs[:, 1:]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, w_ih, w_hh, acts, hs, cs = ctx.saved_tensors
        b, steps, d = x.shape
        hidden = w_hh.shape[1]
        grad_gates = x.new_empty(b, steps, 4 * hidden)
        dh = x.new_zeros(b, hidden)
        dc = x.new_zeros(b, hidden)
        for t in range(steps - 1, -1, -1):
            dh = dh + grad_out[:, t]
            i, f, g, o = acts[:, t].chunk(4, 1)
            tanh_c = torch.tanh(cs[:, t + 1])
            dc = dc + dh * o * (1 - tanh_c * tanh_c)
            dg = grad_gates[:, t]
            di, df, dgg, do = dg.chunk(4, 1)
            torch.mul(dc * g, i * (1 - i), out=di)
            torch.mul(dc * cs[:, t], f * (1 - f), out=df)
            torch.mul(dc * i, 1 - g * g, out=dgg)
            torch.mul(dh * tanh_c, o * (1 - o), out=do)
            dc = dc * f
            dh = dg @ w_hh
        flat = grad_gates.view(b * steps, 4 * hidden)
        grad_w_hh = flat.t() @ hs[:, :-1].reshape(b * steps, hidden)
        grad_w_ih = flat.t() @ x.reshape(b * steps, d)
        grad_b = flat.sum(0)
        grad_x = (flat @ w_ih).view(b, steps, d) if ctx.needs_input_grad[0] else None
        return grad_x, grad_w_ih, grad_w_hh, grad_b, grad_b


def lstm_outputs(rnn: nn.LSTM, x: torch.Tensor) -> torch.Tensor:
    """nn.LSTM's output sequence (B x L x H) for a one-layer, unidirectional, batch-first LSTM.

    Training on CPU takes the faster `_LSTMSequence` path; inference and CUDA (cuDNN) use the
    module itself. The parameters stay the module's, so checkpoints do not change.
    """
    if (
        torch.is_grad_enabled()
        and x.device.type == "cpu"
        and rnn.num_layers == 1
        and not rnn.bidirectional
        and rnn.batch_first
        and rnn.bias
        and rnn.proj_size == 0
        and x.dim() == 3
    ):
        return _LSTMSequence.apply(x, rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0)
    return rnn(x)[0]


def lstm_gates_step(
    pre: torch.Tensor, h: torch.Tensor, c: torch.Tensor, w_hh: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One LSTMCell step given the input's precomputed part `pre` = x W_ih^T + b_ih + b_hh.

    Same function as nn.LSTMCell (gate order i, f, g, o); hoisting x W_ih^T out of a time loop
    turns T small products (and T accumulations of W_ih's gradient) into one large product.
    """
    gates = torch.addmm(pre, h, w_hh.t())
    hidden = h.shape[1]
    # one contiguous sigmoid over all four gates (g's share is unused) beats three strided ones
    i, f, _, o = torch.sigmoid(gates).chunk(4, 1)
    g = torch.tanh(gates[:, 2 * hidden : 3 * hidden])
    c = torch.addcmul(f * c, i, g)
    return o * torch.tanh(c), c


class FastDropout(nn.Dropout):
    """nn.Dropout with the same distribution, its mask drawn by torch.rand (x * (u >= p) / (1 - p)).

    On CPU, bernoulli_ over millions of elements (TFN's 140k-wide fusion tensor per clip) costs
    several times a uniform draw and a compare; the random stream differs from nn.Dropout's, the
    distribution of masks does not. No parameters, so swapping it in leaves checkpoints as they are.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fast_dropout(x, self.p, self.training)


def fast_dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    """F.dropout's distribution with a uniform-draw mask (see FastDropout)."""
    if not training or p == 0.0:
        return x
    if p >= 1.0:
        return x * 0.0
    # the uniform draws become the scaled mask in place: no boolean tensor and no dtype copy
    keep = torch.rand(x.shape, device=x.device).ge_(p).mul_(1.0 / (1.0 - p))
    return x * (keep if x.dtype == keep.dtype else keep.to(x.dtype))

"""Multimodal Transformer, MulT (Tsai et al., ACL 2019).

Each modality is projected to d features by a Conv1d(kernel 1) and given sinusoidal
positions. For every ordered pair (target <- source) a crossmodal transformer lets the
target's steps attend to the source's (query = target, key/value = source; pre-LayerNorm
blocks), which works on unaligned data since nothing needs the two sequences to match. Per
target, the crossmodal outputs from its sources are concatenated and a self-attention
transformer (the "memory") reads them; its output at the target's last real step
represents the target. The targets' vectors are concatenated and go through a residual
two-layer MLP to the output.

With a single modality there is no crossmodal pair: a self-attention transformer of the
same depth takes the crossmodal stage's place.

Defaults are the paper's / reference code's (yaohungt/Multimodal-Transformer): d 30,
5 heads, 5 layers, memory layers max(layers, 3), attention dropout 0.1 when text is the
source and in the memories / 0.0 when audio or vision is the source (the reference keys it
by the source: trans_l_with_a uses attn_dropout_a), relu 0.1, residual 0.1, embedding
0.2, output 0.0; lr 1e-3, batch 24, grad clip 0.8 (paper; main.py's default is 1.0),
L1 loss. They are heavy on CPU: unaligned
MOSI at batch 32 took MMSA 12.7 GiB; tests build with layers=1. Here no attention map is kept
for backward (see multihead_attention): a CPU training step there peaks near 3 GiB, or 1.4 GiB
with checkpointing (each layer rebuilt in backward, about 1.5x the time), which checkpoint=auto
(the default) turns on for sequences longer than 128 steps.

Departures from the reference code:
- key padding masks from the batch masks, so no step ever attends to padding and a clip's
  output does not depend on its batch's padded length. The reference attends to padding,
  and its `attn_mask` (on by default) is a causal mask whose offset depends on the padded
  lengths; it is not used here, so every step sees the whole real source;
- each target is read at its last real step, not at the last padded position;
- positions are the step index 1..L for every step (the reference gives position 0 to
  steps whose first feature happens to be exactly 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from emofuse.data.dataset import Batch
from emofuse.errors import OptionError
from emofuse.models.base import (
    FastDropout,
    ModelOutput,
    ModelSpec,
    MultimodalModel,
    build_config,
    check_batch,
    fast_dropout,
    last_step,
    squeeze_regression,
)
from emofuse.models.registry import Recipe, register_model


# ---------------------------------------------------------------------------- blocks
def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    """The fairseq / MulT sinusoidal table for positions 1..length: length x dim."""
    half = dim // 2
    scale = math.log(10000) / max(half - 1, 1)
    freqs = torch.exp(torch.arange(half, device=device, dtype=torch.float32) * -scale)
    pos = torch.arange(1, length + 1, device=device, dtype=torch.float32)
    angles = pos[:, None] * freqs[None, :]
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = F.pad(table, (0, 1))
    return table


# ---------------------------------------------------------------------------- attention
# elements of one query chunk's attention map (B*heads*chunk*Lk) on the CPU dropout path: 16 MB
_CHUNK_ELEMENTS = 1 << 22


def multihead_attention(
    attn: nn.MultiheadAttention,
    query: torch.Tensor,
    key_value: torch.Tensor | None,
    attend: torch.Tensor,
    dropout_p: float,
) -> torch.Tensor:
    """`attn`'s batch-first output (key = value = `key_value`, or `query` when None).

    The same weights and result as nn.MultiheadAttention's forward, but the attention maps
    (B x heads x Lq x Lk) are never kept for backward: at 375-500 unaligned steps, kept per
    layer, they were most of MulT's 7 GiB. Without dropout (eval, or the audio/vision
    sources) scaled_dot_product_attention's flash / memory-efficient kernels do it; CPU's take
    no dropout, so there DropoutAttention does. `attend` (B x Lk, True = may be attended) must
    leave every row at least one key, or that row is NaN.
    """
    dim, heads = attn.embed_dim, attn.num_heads
    w, b = attn.in_proj_weight, attn.in_proj_bias
    if key_value is None:
        q, k, v = F.linear(query, w, b).chunk(3, dim=-1)
    else:
        w_q, w_kv = w.split([dim, 2 * dim])
        b_q, b_kv = (None, None) if b is None else b.split([dim, 2 * dim])
        q = F.linear(query, w_q, b_q)
        k, v = F.linear(key_value, w_kv, b_kv).chunk(2, dim=-1)
    q, k, v = (x.unflatten(-1, (heads, dim // heads)).transpose(1, 2) for x in (q, k, v))
    mask = attend[:, None, None, :]
    if dropout_p > 0.0 and q.device.type == "cpu":
        bias = torch.zeros(mask.shape, dtype=q.dtype).masked_fill_(~mask, float("-inf"))
        # drawn from the global generator, so torch.manual_seed (and checkpoint's RNG restore)
        # fixes the dropout masks
        seed = int(torch.randint(0, 2**62, ()).item())
        out = DropoutAttention.apply(q.contiguous(), k.contiguous(), v.contiguous(), bias, dropout_p, seed)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    return attn.out_proj(out.transpose(1, 2).flatten(2))


def query_chunks(queries: int, rows: int, keys: int) -> list[slice]:
    """Query slices whose rows x chunk x keys attention map stays near _CHUNK_ELEMENTS."""
    size = max(1, _CHUNK_ELEMENTS // max(1, rows * keys))
    return [slice(i, i + size) for i in range(0, queries, size)]


class DropoutAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(E) + bias) with inverted dropout, times v; B x heads x L x E tensors.

    Flash-attention style: forward keeps q, k, v, the output and each row's logsumexp, and
    backward rebuilds the maps query chunk by query chunk, with the dropout masks redrawn from
    `seed` in the same order. Memory is linear in the lengths (plus one chunk's maps); the
    maps cost one more matrix product and draw in backward. The dropout distribution is
    nn.Dropout's (keep with probability 1 - p, scale 1 / (1 - p)).
    """

    @staticmethod
    def forward(
        ctx: Any,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        bias: torch.Tensor,
        p: float,
        seed: int,
    ) -> torch.Tensor:
        scale = q.shape[-1] ** -0.5
        out = q.new_empty(*q.shape[:-1], v.shape[-1])
        lse = q.new_empty(q.shape[:-1])
        gen = torch.Generator(device=q.device).manual_seed(seed)
        kt = k.transpose(-2, -1)
        for sl in query_chunks(q.shape[2], q.shape[0] * q.shape[1], k.shape[2]):
            s = torch.matmul(q[:, :, sl], kt).mul_(scale).add_(bias)
            lse[:, :, sl] = torch.logsumexp(s, dim=-1)
            weights = s.sub_(lse[:, :, sl, None]).exp_()
            weights.mul_(_keep_scaled(weights.shape, p, gen))
            out[:, :, sl] = torch.matmul(weights, v)
        ctx.save_for_backward(q, k, v, bias, out, lse)
        ctx.p, ctx.seed = p, seed
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        q, k, v, bias, out, lse = ctx.saved_tensors
        scale = q.shape[-1] ** -0.5
        grad_out = grad_out.contiguous()
        gen = torch.Generator(device=q.device).manual_seed(ctx.seed)
        # sum_j W_ij dW_ij = sum_e dO_ie O_ie: softmax's backward without the full map
        delta = (grad_out * out).sum(-1, keepdim=True)
        dq, dk, dv = torch.empty_like(q), torch.zeros_like(k), torch.zeros_like(v)
        kt, vt = k.transpose(-2, -1), v.transpose(-2, -1)
        for sl in query_chunks(q.shape[2], q.shape[0] * q.shape[1], k.shape[2]):
            probs = torch.matmul(q[:, :, sl], kt).mul_(scale).add_(bias).sub_(lse[:, :, sl, None]).exp_()
            keep = _keep_scaled(probs.shape, ctx.p, gen)
            dv += torch.matmul((probs * keep).transpose(-2, -1), grad_out[:, :, sl])
            # dS = P * (dW * keep - delta)
            ds = torch.matmul(grad_out[:, :, sl], vt).mul_(keep).sub_(delta[:, :, sl]).mul_(probs)
            dq[:, :, sl] = torch.matmul(ds, k).mul_(scale)
            dk += torch.matmul(ds.transpose(-2, -1), q[:, :, sl]).mul_(scale)
        return dq, dk, dv, None, None, None


def _keep_scaled(shape: torch.Size, p: float, gen: torch.Generator) -> torch.Tensor:
    # a uniform draw and compare, as fast_dropout (bernoulli_ is slower on CPU), in place
    return torch.rand(shape, generator=gen, device=gen.device).ge_(p).mul_(1.0 / (1.0 - p))


class TransformerLayer(nn.Module):
    """Pre-LayerNorm block: attention (self, or crossmodal from `source`) then a ReLU FFN."""

    def __init__(
        self, dim: int, heads: int, attn_dropout: float, relu_dropout: float, res_dropout: float
    ) -> None:
        super().__init__()
        # holds the projection weights (checkpoint keys as before); its forward is not used: see
        # multihead_attention
        self.attn = nn.MultiheadAttention(dim, heads, dropout=attn_dropout, batch_first=True)
        # one LayerNorm for query and key/value, as the reference has it
        self.norm_attn = nn.LayerNorm(dim)
        self.norm_ffn = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.fc2 = nn.Linear(4 * dim, dim)
        # uniform-draw masks: bernoulli_ was a third of a CPU training step (same distribution)
        self.relu_dropout = FastDropout(relu_dropout)
        self.res_dropout = FastDropout(res_dropout)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)

    def forward(
        self, x: torch.Tensor, attend: torch.Tensor, source: torch.Tensor | None = None
    ) -> torch.Tensor:
        """`attend`: B x source steps, True where a step may be attended."""
        q = self.norm_attn(x)
        kv = None if source is None else self.norm_attn(source)
        p = self.attn.dropout if self.training else 0.0
        attended = multihead_attention(self.attn, q, kv, attend, p)
        x = x + self.res_dropout(attended)
        y = self.fc2(self.relu_dropout(F.relu(self.fc1(self.norm_ffn(x)))))
        return x + self.res_dropout(y)


class TransformerEncoder(nn.Module):
    """Scaled input + positions -> layers -> LayerNorm; crossmodal when given a source."""

    def __init__(
        self,
        dim: int,
        heads: int,
        layers: int,
        attn_dropout: float,
        relu_dropout: float,
        res_dropout: float,
        embed_dropout: float,
        checkpoint_layers: bool = False,
    ) -> None:
        super().__init__()
        self.dim = dim
        self.checkpoint_layers = checkpoint_layers
        self.scale = math.sqrt(dim)
        self.embed_dropout = FastDropout(embed_dropout)
        self.layers = nn.ModuleList(
            [
                TransformerLayer(dim, heads, attn_dropout, relu_dropout, res_dropout)
                for _ in range(layers)
            ]
        )
        self.norm = nn.LayerNorm(dim)

    def _embed(self, x: torch.Tensor) -> torch.Tensor:
        pos = sinusoidal_positions(x.shape[1], self.dim, x.device).to(x.dtype)
        return self.embed_dropout(self.scale * x + pos)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor,
        source: torch.Tensor | None = None,
        source_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self._embed(x)
        if source is None:
            key_mask = mask
        else:
            assert source_mask is not None
            source = self._embed(source)
            key_mask = source_mask
        # a sequence with no real step would give NaN attention rows: let it see step 0
        attend = key_mask.clone()
        attend[:, 0] |= ~key_mask.any(1)
        for layer in self.layers:
            if self.checkpoint_layers and self.training and torch.is_grad_enabled():
                # keeps only each layer's input; checkpoint restores the RNG, so the rebuilt
                # dropout masks are the forward's
                x = checkpoint(layer, x, attend, source, use_reentrant=False)
            else:
                x = layer(x, attend, source)
        return self.norm(x)


# ---------------------------------------------------------------------------- model
AUTO_CHECKPOINT_STEPS = 128


@dataclass
class MulTConfig:
    d: int = 30
    heads: int = 5
    layers: int = 5
    # None: max(layers, 3), as the reference
    mem_layers: int | None = None
    attn_dropout: float = 0.1
    attn_dropout_audio: float = 0.0
    attn_dropout_vision: float = 0.0
    relu_dropout: float = 0.1
    res_dropout: float = 0.1
    embed_dropout: float = 0.2
    out_dropout: float = 0.0
    # activation checkpointing of every transformer layer in training: less memory, more time,
    # the same numbers. "auto": on when a modality is longer than AUTO_CHECKPOINT_STEPS steps
    # (unaligned MOSI: 375/500 steps, 3.0 -> 1.4 GiB a step at batch 32), off for aligned data
    checkpoint: bool | str = "auto"

    def __post_init__(self) -> None:
        if self.checkpoint not in (True, False, "auto"):
            raise OptionError(f"checkpoint must be true, false or auto, not {self.checkpoint!r}")


class MulT(MultimodalModel):
    def __init__(self, spec: ModelSpec, config: MulTConfig) -> None:
        super().__init__(spec, config)
        c = config
        if c.d % c.heads:
            raise OptionError(f"MulT's d ({c.d}) must be divisible by heads ({c.heads})")
        mem_layers = c.mem_layers if c.mem_layers is not None else max(c.layers, 3)
        checkpoint_layers = (
            max(spec.max_lengths.values()) > AUTO_CHECKPOINT_STEPS
            if c.checkpoint == "auto"
            else bool(c.checkpoint)
        )
        attn_drop = {
            "text": c.attn_dropout,
            "audio": c.attn_dropout_audio,
            "vision": c.attn_dropout_vision,
        }
        mods = spec.modalities
        self.proj = nn.ModuleDict(
            {m: nn.Conv1d(spec.dims[m], c.d, kernel_size=1, bias=False) for m in mods}
        )
        self.sources = {t: tuple(s for s in mods if s != t) for t in mods}
        self.cross = nn.ModuleDict()
        self.memory = nn.ModuleDict()
        combined = 0
        for t in mods:
            # a lone modality attends to itself in the crossmodal stage's place
            keys = self.sources[t] or (t,)
            self.cross[t] = nn.ModuleDict(
                {
                    s: TransformerEncoder(
                        c.d,
                        c.heads,
                        c.layers,
                        attn_drop[s],  # keyed by the source, as the reference
                        c.relu_dropout,
                        c.res_dropout,
                        c.embed_dropout,
                        checkpoint_layers,
                    )
                    for s in keys
                }
            )
            mem_dim = c.d * len(keys)
            self.memory[t] = TransformerEncoder(
                mem_dim,
                c.heads,
                mem_layers,
                c.attn_dropout,
                c.relu_dropout,
                c.res_dropout,
                c.embed_dropout,
                checkpoint_layers,
            )
            combined += mem_dim
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out_dropout = FastDropout(c.out_dropout)
        self.out = nn.Linear(combined, spec.output_size)

    def forward(self, batch: Batch) -> ModelOutput:
        check_batch(self.spec, batch)
        mods, masks = self.spec.modalities, batch.masks
        projected = {}
        for m in mods:
            x = batch.features[m]
            if m == "text":
                x = fast_dropout(x, self.config.embed_dropout, self.training)
            projected[m] = self.proj[m](x.transpose(1, 2)).transpose(1, 2)
        reps = []
        for t in mods:
            cross = cast(nn.ModuleDict, self.cross[t])
            if self.sources[t]:
                parts = [
                    cross[s](projected[t], masks[t], projected[s], masks[s])
                    for s in self.sources[t]
                ]
            else:
                parts = [cross[t](projected[t], masks[t])]
            mem = self.memory[t](torch.cat(parts, dim=-1), masks[t])
            reps.append(last_step(mem, masks[t]))
        h = torch.cat(reps, dim=-1)
        h = h + self.proj2(self.out_dropout(F.relu(self.proj1(h))))
        return ModelOutput(squeeze_regression(self.out(h), self.spec))


@register_model(
    "mult",
    recipe=Recipe(
        lr=1e-3,
        batch_size=24,
        grad_clip=0.8,
        source="MulT paper: lr 1e-3, batch 24, grad clip 0.8 (MMSA: 2e-3, 16, 0.6)",
    ),
)
def mult(spec: ModelSpec, **options: object) -> MulT:
    return MulT(spec, build_config(MulTConfig, options))

"""MulT's attention through scaled_dot_product_attention: same results as nn.MultiheadAttention,
same checkpoint keys, and memory for backward that grows linearly with the sequence length.

The reference is nn.MultiheadAttention's own forward on the same weights (what MulT called
before), swapped in for `multihead_attention`. Tiny shapes: the file runs in seconds.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import emofuse.models.mult as mult_module
from emofuse.data.dataset import Batch
from emofuse.models.base import ModelSpec
from emofuse.models.mult import TransformerLayer, multihead_attention
from emofuse.models.registry import create_model

DIMS = {"text": 5, "audio": 3, "vision": 4}
LENGTHS = {"text": 6, "audio": 9, "vision": 7}
TINY = {"d": 8, "heads": 2, "layers": 2, "mem_layers": 2}
NO_DROPOUT = {
    "attn_dropout": 0.0,
    "relu_dropout": 0.0,
    "res_dropout": 0.0,
    "embed_dropout": 0.0,
    "out_dropout": 0.0,
}


def reference_attention(
    attn: nn.MultiheadAttention,
    query: torch.Tensor,
    key_value: torch.Tensor | None,
    attend: torch.Tensor,
    dropout_p: float,
    recompute: bool = True,
) -> torch.Tensor:
    """The call MulT made before: nn.MultiheadAttention's forward with a key padding mask."""
    kv = query if key_value is None else key_value
    return attn(query, kv, kv, key_padding_mask=~attend, need_weights=False)[0]


def random_mha(dim: int = 8, heads: int = 2, dropout: float = 0.0) -> nn.MultiheadAttention:
    mha = nn.MultiheadAttention(dim, heads, dropout=dropout, batch_first=True)
    with torch.no_grad():  # non-zero biases so a wrong split of in_proj shows
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    return mha


def make_batch(seed: int, lengths: dict[str, int] = LENGTHS, empty_audio: bool = True) -> Batch:
    g = torch.Generator().manual_seed(seed)
    b = 4
    feats = {m: torch.randn(b, n, DIMS[m], generator=g) for m, n in lengths.items()}
    masks = {}
    for m, n in lengths.items():
        real = torch.randint(1, n + 1, (b,), generator=g)
        real[0] = n  # one full-length clip
        if m == "audio" and empty_audio:
            real[1] = 0  # a clip whose audio is all padding must not give NaN
        masks[m] = torch.arange(n)[None, :] < real[:, None]
    return Batch(feats, masks, torch.randn(b, generator=g), torch.arange(b))


def build(seed: int = 0, lengths: dict[str, int] = LENGTHS, **options: object) -> nn.Module:
    torch.manual_seed(seed)
    spec = ModelSpec(("text", "audio", "vision"), DIMS, dict(lengths))
    return create_model("mult", spec, **{**TINY, **options})


def grads(model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    pred = model(batch).prediction
    F.l1_loss(pred, batch.labels).backward()
    return pred.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


# ---------------------------------------------------------------------------- the attention call
@pytest.mark.parametrize("cross", [True, False])
def test_attention_equals_multihead_attention_with_padding(cross: bool) -> None:
    torch.manual_seed(0)
    mha = random_mha()
    query = torch.randn(3, 5, 8, requires_grad=True)
    source = torch.randn(3, 7, 8, requires_grad=True) if cross else None
    keys = source.shape[1] if source is not None else 5
    attend = torch.rand(3, keys) > 0.4
    attend[:, 0] = True
    attend[1, 1:] = False  # one query row that sees a single key
    w = torch.randn(3, 5, 8)
    inputs = [query] + ([source] if source is not None else []) + list(mha.parameters())

    want = reference_attention(mha, query, source, attend, 0.0)
    want_grads = torch.autograd.grad((want * w).sum(), inputs)
    got = multihead_attention(mha, query, source, attend, 0.0)
    got_grads = torch.autograd.grad((got * w).sum(), inputs)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for g, r in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)


def test_state_dict_of_multihead_attention_loads() -> None:
    layer = TransformerLayer(8, 2, 0.1, 0.1, 0.1)
    assert set(layer.state_dict()) == {
        "attn.in_proj_weight",
        "attn.in_proj_bias",
        "attn.out_proj.weight",
        "attn.out_proj.bias",
        "norm_attn.weight",
        "norm_attn.bias",
        "norm_ffn.weight",
        "norm_ffn.bias",
        "fc1.weight",
        "fc1.bias",
        "fc2.weight",
        "fc2.bias",
    }
    torch.manual_seed(3)
    mha = random_mha(dropout=0.1)
    layer.attn.load_state_dict(mha.state_dict(), strict=True)
    query, attend = torch.randn(2, 4, 8), torch.tensor([[True, True, False, False]] * 2)
    with torch.no_grad():
        torch.testing.assert_close(
            multihead_attention(layer.attn, query, None, attend, 0.0),
            reference_attention(mha.eval(), query, None, attend, 0.0),
            atol=1e-5,
            rtol=0,
        )


# ---------------------------------------------------------------------------- the whole model
@pytest.mark.parametrize("checkpoint", [False, True])
def test_eval_output_as_with_multihead_attention(monkeypatch: pytest.MonkeyPatch, checkpoint: bool) -> None:
    batch = make_batch(seed=1)
    model = build(checkpoint=checkpoint).eval()
    with torch.no_grad():
        got = model(batch).prediction
        monkeypatch.setattr(mult_module, "multihead_attention", reference_attention)
        want = model(batch).prediction
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("checkpoint", [False, True])
def test_training_gradients_as_with_multihead_attention(
    monkeypatch: pytest.MonkeyPatch, checkpoint: bool
) -> None:
    batch = make_batch(seed=2)
    model = build(checkpoint=checkpoint, **NO_DROPOUT).train()
    got_pred, got = grads(model, batch)
    monkeypatch.setattr(mult_module, "multihead_attention", reference_attention)
    want_pred, want = grads(model, batch)
    torch.testing.assert_close(got_pred, want_pred, atol=1e-5, rtol=0)
    assert set(got) == set(want) and all(torch.isfinite(g).all() for g in got.values())
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-5, rtol=1e-4, msg=name)


def test_checkpointed_layers_give_the_same_training_step_with_dropout() -> None:
    """checkpoint=true rebuilds each layer in backward with the forward's dropout masks."""
    batch = make_batch(seed=3)
    plain = build(seed=4, attn_dropout=0.3, attn_dropout_audio=0.3).train()
    ckpt = build(seed=4, attn_dropout=0.3, attn_dropout_audio=0.3, checkpoint=True).train()
    ckpt.load_state_dict(plain.state_dict())
    torch.manual_seed(5)
    pred_a, grads_a = grads(plain, batch)
    torch.manual_seed(5)
    pred_b, grads_b = grads(ckpt, batch)
    torch.testing.assert_close(pred_b, pred_a, atol=1e-6, rtol=0)
    for name in grads_a:
        torch.testing.assert_close(grads_b[name], grads_a[name], atol=1e-6, rtol=1e-5, msg=name)


# ---------------------------------------------------------------------------- CPU attention dropout
def test_dropout_attention_gradients_as_autograd_with_the_same_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Backward redraws the forward's masks chunk by chunk; autograd on the full maps is the reference."""
    monkeypatch.setattr(mult_module, "_CHUNK_ELEMENTS", 2 * 2 * 3 * 7)  # 3 queries a chunk
    torch.manual_seed(6)
    q = torch.randn(2, 2, 8, 4, requires_grad=True)
    k, v = torch.randn(2, 2, 7, 4, requires_grad=True), torch.randn(2, 2, 7, 4, requires_grad=True)
    attend = torch.ones(2, 1, 1, 7, dtype=torch.bool)
    attend[1, ..., 4:] = False
    bias = torch.zeros(attend.shape).masked_fill_(~attend, float("-inf"))
    p, seed = 0.4, 1234
    w = torch.randn(2, 2, 8, 4)

    got = mult_module.DropoutAttention.apply(q, k, v, bias, p, seed)
    got_grads = torch.autograd.grad((got * w).sum(), (q, k, v))

    gen = torch.Generator().manual_seed(seed)
    chunks = mult_module.query_chunks(8, 4, 7)
    assert len(chunks) == 3
    keep = torch.cat([(torch.rand(2, 2, len(range(8)[c]), 7, generator=gen) >= p).float() for c in chunks], 2)
    probs = torch.softmax(q @ k.transpose(-2, -1) / 2.0 + bias, dim=-1)
    want = (probs * keep / (1 - p)) @ v
    want_grads = torch.autograd.grad((want * w).sum(), (q, k, v))
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    for g, r in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, r, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(keep, torch.ones_like(keep))  # something was dropped


def test_attention_dropout_keeps_the_expectation() -> None:
    torch.manual_seed(7)
    mha = random_mha()
    query, source = torch.randn(2, 8, 8), torch.randn(2, 7, 8)
    attend = torch.ones(2, 7, dtype=torch.bool)
    with torch.no_grad():
        plain = multihead_attention(mha, query, source, attend, 0.0)
        draws = [multihead_attention(mha, query, source, attend, 0.5) for _ in range(400)]
    assert not torch.allclose(draws[0], plain) and not torch.allclose(draws[0], draws[1])
    # inverted dropout: the mean over draws is the plain attention
    torch.testing.assert_close(sum(draws) / len(draws), plain, atol=0.1, rtol=0)


def test_saved_activations_grow_linearly_with_length() -> None:
    """No B x heads x Lq x Lk map is kept for backward (it was 7 GiB at unaligned MOSI size)."""

    def saved_bytes(n: int) -> int:
        lengths = {"text": n, "audio": n, "vision": n}
        model = build(lengths=lengths, **{**TINY, "layers": 1, "mem_layers": 1}).train()
        batch = make_batch(seed=8, lengths=lengths, empty_audio=False)
        storages: dict[int, int] = {}
        params = {p.untyped_storage().data_ptr() for p in model.parameters()}

        def pack(t: torch.Tensor) -> torch.Tensor:
            s = t.untyped_storage()
            if s.data_ptr() not in params:
                storages[s.data_ptr()] = s.nbytes()
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(batch)
        return sum(storages.values())

    small, large = saved_bytes(96), saved_bytes(192)
    # linear: x2; the attention maps (heads * L per step, against ~25 * d linear values) made it > x3
    assert large / small < 2.4, (small, large)


def test_checkpointing_is_automatic_for_long_sequences_only() -> None:
    """checkpoint=auto (the default) keeps long unaligned inputs small and leaves aligned ones fast."""

    def checkpointed(model: nn.Module) -> set[bool]:
        return {m.checkpoint_layers for m in model.modules() if hasattr(m, "checkpoint_layers")}

    assert checkpointed(build(lengths={"text": 20, "audio": 20, "vision": 20})) == {False}
    assert checkpointed(build(lengths={"text": 50, "audio": 375, "vision": 500})) == {True}
    assert checkpointed(build(lengths={"text": 50, "audio": 375, "vision": 500}, checkpoint=False)) == {False}
    with pytest.raises(ValueError, match="checkpoint must be"):
        build(checkpoint="sometimes")

"""The baselines TFN, LMF, MFN, MCTN, RAVEN and MulT: shapes, gradients, padding, mechanisms.

Tiny dimensions throughout (B=4, L text/audio/vision 6/9/7 unaligned or 6 aligned, features
5/3/4, hidden 8) so the whole file runs in seconds on a CPU.
"""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from emofuse.data.dataset import Batch
from emofuse.models.base import ModelSpec
from emofuse.models.lmf import lmf
from emofuse.models.mctn import mctn
from emofuse.models.mfn import align_to_mask, mfn
from emofuse.models.mult import mult
from emofuse.models.raven import frames_per_word, raven
from emofuse.models.registry import create_model
from emofuse.models.tfn import tensor_fusion, tfn

MODS = ("text", "audio", "vision")
DIMS = {"text": 5, "audio": 3, "vision": 4}
UNALIGNED = {"text": 6, "audio": 9, "vision": 7}
ALIGNED = {"text": 6, "audio": 6, "vision": 6}
B = 4

BUILDERS = {"tfn": tfn, "lmf": lmf, "mfn": mfn, "mctn": mctn, "raven": raven, "mult": mult}
TINY: dict[str, dict[str, object]] = {
    "tfn": {
        "text_hidden": 8,
        "audio_hidden": 8,
        "vision_hidden": 8,
        "text_out": 8,
        "post_fusion_dim": 8,
    },
    "lmf": {"text_hidden": 8, "audio_hidden": 8, "vision_hidden": 8, "text_out": 8, "rank": 2},
    "mfn": {
        "text_hidden": 8,
        "audio_hidden": 8,
        "vision_hidden": 8,
        "memory": 8,
        "nn1_hidden": 8,
        "nn2_hidden": 8,
        "gamma1_hidden": 8,
        "gamma2_hidden": 8,
        "out_hidden": 8,
    },
    "mctn": {"hidden": 8},
    "raven": {"norm_dim": 8, "cell_dim": 8, "hidden": 8, "max_frames_per_word": 2},
    "mult": {"d": 8, "heads": 2, "layers": 1, "mem_layers": 1},
}


def supports(name: str, mods: tuple[str, ...]) -> bool:
    if name == "mctn":
        return len(mods) >= 2
    if name == "raven":
        return "text" in mods and len(mods) >= 2
    return True


def subsets() -> list[tuple[str, ...]]:
    return [c for k in (1, 2, 3) for c in itertools.combinations(MODS, k)]


CASES = [(n, s) for n in BUILDERS for s in subsets() if supports(n, s)]


def make_spec(mods: tuple[str, ...], task: str = "regression") -> ModelSpec:
    return ModelSpec(
        modalities=mods,
        dims={m: DIMS[m] for m in mods},
        max_lengths={m: UNALIGNED[m] for m in mods},
        task=task,
        num_classes=3 if task == "classification" else 1,
    )


def build(name: str, mods: tuple[str, ...], task: str = "regression", **extra: object):
    opts = dict(TINY[name])
    if name == "mctn" and "text" not in mods:
        opts["source"] = mods[0]
    opts.update(extra)
    return BUILDERS[name](make_spec(mods, task), **opts)


def make_batch(
    mods: tuple[str, ...] = MODS, aligned: bool = False, task: str = "regression", seed: int = 0
) -> Batch:
    """Random features, zero on padded steps; lengths vary per sample (sample 0 is full)."""
    g = torch.Generator().manual_seed(seed)
    lens = ALIGNED if aligned else UNALIGNED
    shared = torch.randint(1, ALIGNED["text"] + 1, (B,), generator=g)
    feats, masks = {}, {}
    for m in mods:
        n = lens[m]
        lengths = shared.clone() if aligned else torch.randint(1, n + 1, (B,), generator=g)
        lengths[0] = n  # one clip spans the padded length, as in a trimmed batch
        mask = torch.arange(n)[None, :] < lengths[:, None]
        feats[m] = torch.randn(B, n, DIMS[m], generator=g) * mask.unsqueeze(-1)
        masks[m] = mask
    labels = (
        torch.randint(0, 3, (B,), generator=g)
        if task == "classification"
        else torch.randn(B, generator=g)
    )
    return Batch(features=feats, masks=masks, labels=labels, indices=torch.arange(B))


def pad_batch(batch: Batch, extra: dict[str, int]) -> Batch:
    feats = {m: F.pad(x, (0, 0, 0, extra[m])) for m, x in batch.features.items()}
    masks = {m: F.pad(x, (0, extra[m]), value=False) for m, x in batch.masks.items()}
    return Batch(features=feats, masks=masks, labels=batch.labels, indices=batch.indices)


def one_sample(batch: Batch, i: int) -> Batch:
    """Sample i alone, trimmed to its own lengths (what a batch of one would hold)."""
    feats, masks = {}, {}
    for m, x in batch.features.items():
        n = int(batch.masks[m][i].sum())
        feats[m], masks[m] = x[i : i + 1, :n], batch.masks[m][i : i + 1, :n]
    sl = slice(i, i + 1)
    return Batch(features=feats, masks=masks, labels=batch.labels[sl], indices=batch.indices[sl])


# ---------------------------------------------------------------------------- every model
@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("task", ["regression", "classification"])
@pytest.mark.parametrize(
    "name,mods", CASES, ids=[f"{n}-{'+'.join(m[0] for m in s)}" for n, s in CASES]
)
def test_forward_backward(name: str, mods: tuple[str, ...], task: str, aligned: bool) -> None:
    torch.manual_seed(0)
    model = build(name, mods, task)
    model.train()
    batch = make_batch(mods, aligned, task)
    out = model(batch)
    expected = (B,) if task == "regression" else (B, 3)
    assert out.prediction.shape == expected
    assert torch.isfinite(out.prediction).all()
    if task == "regression":
        loss = F.l1_loss(out.prediction, batch.labels)
    else:
        loss = F.cross_entropy(out.prediction, batch.labels)
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing}"
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", list(BUILDERS))
def test_registered(name: str) -> None:
    model = create_model(name, make_spec(MODS), **TINY[name])
    assert type(model) is type(BUILDERS[name](make_spec(MODS), **TINY[name]))
    assert model.model_name == name
    with pytest.raises(ValueError, match="unknown option"):
        create_model(name, make_spec(MODS), no_such_option=1)


@pytest.mark.parametrize("aligned", [True, False], ids=["aligned", "unaligned"])
@pytest.mark.parametrize("name", list(BUILDERS))
def test_padding_and_batch_mates_do_not_change_predictions(name: str, aligned: bool) -> None:
    torch.manual_seed(1)
    model = build(name, MODS).eval()
    batch = make_batch(MODS, aligned, seed=3)
    with torch.no_grad():
        ref = model(batch).prediction
        padded = model(pad_batch(batch, {"text": 3, "audio": 5, "vision": 2})).prediction
        torch.testing.assert_close(padded, ref, atol=1e-5, rtol=0)
        for i in range(B):
            alone = model(one_sample(batch, i)).prediction
            torch.testing.assert_close(alone[0], ref[i], atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- TFN
def test_tfn_fusion_holds_the_unimodal_terms() -> None:
    model = build("tfn", MODS, text_out=3, audio_hidden=4, vision_hidden=2).eval()
    hs = model.encode(make_batch())
    z = model.fuse(hs).view(B, 4, 5, 3)  # [1; h_t] x [1; h_a] x [1; h_v]
    t, a, v = hs["text"], hs["audio"], hs["vision"]
    torch.testing.assert_close(z[:, 0, 0, 0], torch.ones(B))
    torch.testing.assert_close(z[:, 1:, 0, 0], t)
    torch.testing.assert_close(z[:, 0, 1:, 0], a)
    torch.testing.assert_close(z[:, 0, 0, 1:], v)
    torch.testing.assert_close(z[:, 1:, 1:, 0], torch.einsum("bi,bj->bij", t, a))
    torch.testing.assert_close(z[:, 1:, 1:, 1:], torch.einsum("bi,bj,bk->bijk", t, a, v))


def test_tfn_two_modalities_and_output_range() -> None:
    model = build("tfn", ("audio", "vision"), output_range=3.0).eval()
    hs = model.encode(make_batch(("audio", "vision")))
    z = model.fuse(hs).view(B, 9, 9)
    torch.testing.assert_close(z[:, 1:, 0], hs["audio"])
    torch.testing.assert_close(z[:, 0, 1:], hs["vision"])
    with torch.no_grad():
        model.post_fusion[-1].bias.fill_(100.0)  # saturate: still inside (-3, 3]
        pred = model(make_batch(("audio", "vision"))).prediction
    assert pred.abs().max() <= 3.0


@pytest.mark.parametrize("name", ["tfn", "lmf"])
def test_batchnorm_subnets_train_on_a_batch_of_one(name: str) -> None:
    # the last batch of an epoch can hold one clip; BatchNorm must not crash on it
    model = build(name, MODS).train()
    out = model(one_sample(make_batch(), 1))
    out.prediction.sum().backward()
    assert out.prediction.shape == (1,)


# ---------------------------------------------------------------------------- LMF
def test_lmf_rank_one_by_hand() -> None:
    model = build("lmf", MODS, rank=1, text_out=1, audio_hidden=1, vision_hidden=1)
    with torch.no_grad():
        model.factors["text"].copy_(torch.tensor([[[0.5], [2.0]]]))  # 1 x (1+1) x 1
        model.factors["audio"].copy_(torch.tensor([[[1.0], [-1.0]]]))
        model.factors["vision"].copy_(torch.tensor([[[3.0], [0.5]]]))
        model.fusion_weights.fill_(2.0)
        model.fusion_bias.fill_(0.25)
    hs = {
        "text": torch.tensor([[1.5]]),
        "audio": torch.tensor([[4.0]]),
        "vision": torch.tensor([[-2.0]]),
    }
    expected_product = (0.5 + 2.0 * 1.5) * (1.0 - 4.0) * (3.0 + 0.5 * -2.0)
    fused = model.fuse(hs)
    torch.testing.assert_close(fused, torch.tensor([[[expected_product]]]))
    torch.testing.assert_close(model.head(fused), torch.tensor([[2.0 * expected_product + 0.25]]))


def test_tensor_fusion_and_its_gradients_are_the_outer_product() -> None:
    # z is computed by batched matmuls for speed; it must stay flatten([1;t] x [1;a] x [1;v])
    torch.manual_seed(0)
    hs = [torch.randn(4, d, dtype=torch.float64, requires_grad=True) for d in (3, 2, 5)]
    one = [torch.cat([torch.ones(4, 1, dtype=torch.float64), h], 1) for h in hs]
    want = (one[0][:, :, None, None] * one[1][:, None, :, None] * one[2][:, None, None, :]).flatten(1)
    got = tensor_fusion(hs)
    torch.testing.assert_close(got, want)
    upstream = torch.randn_like(want)
    grads_got = torch.autograd.grad(got, hs, upstream)
    grads_want = torch.autograd.grad(want, hs, upstream)
    for g, w in zip(grads_got, grads_want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("task", ["regression", "classification"])
def test_lmf_equals_tensor_fusion_with_its_low_rank_weight(task: str) -> None:
    model = build("lmf", MODS, task, rank=3, text_out=2, audio_hidden=3, vision_hidden=2).eval()
    with torch.no_grad():
        model.fusion_bias.normal_()
    hs = model.encode(make_batch(task=task))
    z = tensor_fusion([hs[m] for m in MODS]).view(B, 3, 4, 3)
    f = model.factors
    weight = torch.einsum(
        "r,rio,rjo,rko->ijko", model.fusion_weights[0], f["text"], f["audio"], f["vision"]
    )
    expected = torch.einsum("bijk,ijko->bo", z, weight) + model.fusion_bias
    torch.testing.assert_close(model.head(model.fuse(hs)), expected, atol=1e-5, rtol=1e-5)


def test_lmf_fusion_weights_train_and_have_their_own_lr() -> None:
    model = build("lmf", MODS, factor_lr_scale=0.5)
    out = model(make_batch())
    out.prediction.sum().backward()
    assert model.fusion_weights.grad.abs().sum() > 0
    assert model.fusion_bias.grad.abs().sum() > 0
    groups = model.parameter_groups(1e-3)
    ids = [id(p) for g in groups for p in g["params"]]
    assert sorted(ids) == sorted(id(p) for p in model.parameters())  # each exactly once
    fusion = next(g for g in groups if any(p is model.fusion_weights for p in g["params"]))
    assert fusion["lr"] == pytest.approx(5e-4)
    assert any(p is model.fusion_bias for p in fusion["params"])
    opt = torch.optim.Adam(groups, lr=1e-3)
    before = model.fusion_weights.detach().clone()
    opt.step()
    assert not torch.equal(before, model.fusion_weights)


# ---------------------------------------------------------------------------- MFN
def test_mfn_attention_sums_to_one_and_padding_keeps_memory() -> None:
    model = build("mfn", MODS).eval()
    batch = make_batch(seed=5)
    out = model(batch)
    att, mem = out.extras["attention"], out.extras["memory"]
    text_mask = batch.masks["text"]
    assert att.shape[:2] == text_mask.shape and mem.shape[:2] == text_mask.shape
    torch.testing.assert_close(att.sum(-1), torch.ones_like(att[..., 0]))
    lengths = text_mask.sum(1)
    assert (lengths < text_mask.shape[1]).any()
    for b in range(B):
        n = int(lengths[b])
        for t in range(n, text_mask.shape[1]):
            assert torch.equal(mem[b, t], mem[b, n - 1])
        assert not torch.equal(mem[b, n - 1], torch.zeros_like(mem[b, n - 1]))


def test_align_to_mask() -> None:
    x = torch.arange(1.0, 7.0).view(1, 6, 1)
    full6 = torch.ones(1, 6, dtype=torch.bool)
    assert torch.equal(align_to_mask(x, full6, full6), x)
    # 4 real frames onto 2 real steps of 3: means of frame pairs, the padded step zero
    mask4 = torch.tensor([[True] * 4 + [False] * 2])
    target = torch.tensor([[True, True, False]])
    torch.testing.assert_close(
        align_to_mask(x, mask4, target).view(-1), torch.tensor([1.5, 3.5, 0.0])
    )
    # 2 frames onto 4 steps: nearest frame repeated
    mask2 = torch.tensor([[True, True] + [False] * 4])
    torch.testing.assert_close(
        align_to_mask(x, mask2, torch.ones(1, 4, dtype=torch.bool)).view(-1),
        torch.tensor([1.0, 1.0, 2.0, 2.0]),
    )


# ---------------------------------------------------------------------------- MCTN
@pytest.mark.parametrize("mods", [("text", "audio"), ("text", "audio", "vision")])
def test_mctn_predicts_from_the_source_alone(mods: tuple[str, ...]) -> None:
    torch.manual_seed(0)
    model = build("mctn", mods)
    batch = make_batch(mods, seed=2)
    model.train()
    assert model(batch).aux_loss is not None
    model.eval()
    out = model(batch)
    assert out.aux_loss is None
    noisy = Batch(
        features={
            m: (x if m == "text" else torch.randn_like(x) * 10) for m, x in batch.features.items()
        },
        masks=batch.masks,
        labels=batch.labels,
        indices=batch.indices,
    )
    source_only = Batch(
        features={"text": batch.features["text"]},
        masks={"text": batch.masks["text"]},
        labels=batch.labels,
        indices=batch.indices,
    )
    assert torch.equal(model(noisy).prediction, out.prediction)
    assert torch.equal(model(source_only).prediction, out.prediction)
    model.train()
    with pytest.raises(ValueError, match="lacks"):
        model(source_only)


def test_mctn_refuses_what_it_cannot_do() -> None:
    with pytest.raises(ValueError, match="at least 2"):
        build("mctn", ("text",))
    with pytest.raises(ValueError, match="source"):
        build("mctn", ("audio", "vision"), source="text")
    model = build("mctn", ("audio", "vision"), source="vision")
    assert model.targets == ("audio",)


# ---------------------------------------------------------------------------- RAVEN
def test_raven_zero_gates_leave_words_unshifted() -> None:
    model = build("raven", MODS).eval()
    batch = make_batch(seed=4)
    assert not torch.allclose(model.shift_words(batch), batch.features["text"])
    with torch.no_grad():
        for gate in model.gates.values():
            gate.weight.zero_()
            gate.bias.fill_(-1e9)  # sigmoid -> exactly 0
        model.shift.bias.zero_()
    torch.testing.assert_close(model.shift_words(batch), batch.features["text"], atol=0, rtol=0)


def test_raven_frames_per_word() -> None:
    x = torch.arange(10.0).view(1, 10, 1)
    mask = torch.ones(1, 10, dtype=torch.bool)
    words = torch.tensor([[True, True, True, False]])
    # frame i -> word floor((i + 0.5) / 10 * 3): words get frames 0-2, 3-6, 7-9
    grouped, lengths = frames_per_word(x, mask, words, cap=8)
    assert lengths.tolist() == [[3, 4, 3, 0]]
    assert grouped[0, 1, :4, 0].tolist() == [3.0, 4.0, 5.0, 6.0]
    # capped at 2 frames per word: neighbours averaged
    grouped, lengths = frames_per_word(x, mask, words, cap=2)
    assert lengths.tolist() == [[2, 2, 2, 0]]
    assert grouped[0, :3, :, 0].tolist() == [[0.5, 2.0], [3.5, 5.5], [7.5, 9.0]]
    # aligned: one frame per word, the word's own
    grouped, lengths = frames_per_word(x[:, :3], mask[:, :3], words[:, :3], cap=2)
    assert lengths.tolist() == [[1, 1, 1]] and grouped[0, :, 0, 0].tolist() == [0.0, 1.0, 2.0]


def test_raven_needs_text() -> None:
    with pytest.raises(ValueError, match="text"):
        build("raven", ("audio", "vision"))


# ---------------------------------------------------------------------------- MulT
def test_mult_ignores_masked_source_steps() -> None:
    torch.manual_seed(0)
    model = build("mult", MODS).eval()
    batch = make_batch(seed=6)
    audio_len = batch.masks["audio"].sum(1)
    b = int(torch.nonzero(audio_len < UNALIGNED["audio"])[0])
    with torch.no_grad():
        ref = model(batch).prediction
        changed = batch.features["audio"].clone()
        changed[b, int(audio_len[b]) :] = 100.0
        out = model(
            Batch(
                features={**batch.features, "audio": changed},
                masks=batch.masks,
                labels=batch.labels,
                indices=batch.indices,
            )
        ).prediction
        torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
        changed = batch.features["audio"].clone()
        changed[b, 0] = 100.0  # a real step does matter
        out = model(
            Batch(
                features={**batch.features, "audio": changed},
                masks=batch.masks,
                labels=batch.labels,
                indices=batch.indices,
            )
        ).prediction
    assert not torch.allclose(out[b], ref[b])


# ---------------------------------------------------------------------------- CPU fast paths
def test_lstm_fast_path_equals_nn_lstm() -> None:
    """The training path TFN/LMF use on CPU: outputs and every gradient as nn.LSTM's."""
    from emofuse.models.base import lstm_outputs

    torch.manual_seed(0)
    rnn = torch.nn.LSTM(5, 7, batch_first=True)
    x = torch.randn(3, 6, 5, requires_grad=True)
    w = torch.randn(3, 6, 7)
    ref = rnn(x)[0]
    (ref * w).sum().backward()
    ref_grads = [p.grad.clone() for p in rnn.parameters()] + [x.grad.clone()]
    rnn.zero_grad()
    x.grad = None
    out = lstm_outputs(rnn, x)
    assert out.grad_fn is not None and "LSTMSequence" in type(out.grad_fn).__name__
    (out * w).sum().backward()
    grads = [p.grad for p in rnn.parameters()] + [x.grad]
    torch.testing.assert_close(out, ref, atol=1e-6, rtol=1e-5)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)
    with torch.no_grad():  # inference runs the module itself
        torch.testing.assert_close(lstm_outputs(rnn, x), ref.detach())


def test_lstm_gates_step_equals_lstm_cell() -> None:
    from emofuse.models.base import lstm_gates_step

    torch.manual_seed(1)
    cell = torch.nn.LSTMCell(4, 6)
    x, h, c = torch.randn(5, 4), torch.randn(5, 6), torch.randn(5, 6)
    pre = F.linear(x, cell.weight_ih, cell.bias_ih + cell.bias_hh)
    got_h, got_c = lstm_gates_step(pre, h, c, cell.weight_hh)
    want_h, want_c = cell(x, (h, c))
    torch.testing.assert_close(got_h, want_h)
    torch.testing.assert_close(got_c, want_c)


def test_fast_dropout_keeps_dropout_semantics() -> None:
    from emofuse.models.base import FastDropout

    x = torch.ones(200_000)
    drop = FastDropout(0.3)
    drop.eval()
    assert torch.equal(drop(x), x)
    drop.train()
    torch.manual_seed(0)
    y = drop(x)
    kept = y != 0
    # kept entries are scaled by 1 / (1 - p), so the mean is unchanged
    assert abs(kept.float().mean().item() - 0.7) < 0.01
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    assert torch.equal(FastDropout(0.0).train()(x), x)
    xg = torch.randn(50, requires_grad=True)
    out = drop(xg)
    out.sum().backward()
    torch.testing.assert_close(xg.grad, (out != 0).float() / 0.7)


@pytest.mark.parametrize("name", ["tfn", "lmf"])
def test_training_forward_equals_eval_path_without_dropout(name: str) -> None:
    """The CPU training fast path (grad enabled) computes what nn.LSTM computes (no grad)."""
    torch.manual_seed(0)
    opts = {k: 0.0 for k in ("text_dropout", "audio_dropout", "vision_dropout")}
    model = build(name, MODS, **opts)
    batch = make_batch(seed=3)
    model.eval()  # BatchNorm on running statistics in both passes
    with torch.no_grad():
        want = model(batch).prediction
    got = model(batch).prediction  # grad enabled: the fast path
    assert got.requires_grad
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_mfn_equals_the_step_by_step_definition() -> None:
    """MFN's hoisted input products and fused gamma layers: the cell-by-cell loop's result."""
    torch.manual_seed(0)
    model = build("mfn", MODS).eval()
    batch = make_batch(aligned=True, seed=5)
    mask = batch.masks["text"]
    xs = batch.features
    h = {m: torch.zeros(B, 8) for m in MODS}
    c = {m: torch.zeros(B, 8) for m in MODS}
    u = torch.zeros(B, 8)
    with torch.no_grad():
        for t in range(mask.shape[1]):
            new = {m: model.cells[m](xs[m][:, t], (h[m], c[m])) for m in MODS}
            cstar = torch.cat([c[m] for m in MODS] + [new[m][1] for m in MODS], dim=1)
            attended = torch.softmax(model.nn1(cstar), dim=1) * cstar
            both = torch.cat([attended, u], dim=1)
            new_u = torch.sigmoid(model.gamma1(both)) * u + torch.sigmoid(model.gamma2(both)) * torch.tanh(
                model.nn2(attended)
            )
            real = mask[:, t].unsqueeze(-1)
            u = torch.where(real, new_u, u)
            h = {m: torch.where(real, new[m][0], h[m]) for m in MODS}
            c = {m: torch.where(real, new[m][1], c[m]) for m in MODS}
        want = model.out(torch.cat([h[m] for m in MODS] + [u], dim=1)).squeeze(-1)
        got = model(batch).prediction
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-5)


def test_pooled_is_mean_and_max_over_real_steps_and_an_empty_modality_pools_to_zero() -> None:
    spec = ModelSpec(("text", "audio"), {"text": 3, "audio": 2}, {"text": 4, "audio": 5}, "classification", 3)
    model = create_model("pooled", spec, dropout=0.0).eval()
    text, audio = torch.randn(2, 4, 3), torch.randn(2, 5, 2)
    masks = {"text": torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.bool),
             "audio": torch.tensor([[1, 1, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)}
    text[0, 2:] = 1e6  # padding far above the real values: a max that read it would show
    out = model(
        Batch({"text": text, "audio": audio}, masks, torch.zeros(2, dtype=torch.long), torch.arange(2))
    ).prediction
    pooled = torch.stack([
        torch.cat([text[0, :2].mean(0), text[0, :2].amax(0), audio[0, :3].mean(0), audio[0, :3].amax(0)]),
        torch.cat([text[1].mean(0), text[1].amax(0), torch.zeros(2), torch.zeros(2)]),  # no audio: zeros
    ])
    linear = model.head[1]
    torch.testing.assert_close(out, pooled @ linear.weight.T + linear.bias)

"""The paper-faithful fusion-matched network (eq 14 exact, linear memory) and its extension.

`fusion_matched` computes eqs 8-16 on the encoders' outputs alone by default; emofuse's three
matching aids (time_code, same_time_prior, encoder_skip) are options, on by default only in
`fusion_matched_xattn`."""

from __future__ import annotations

import itertools

import pytest
import torch

from emofuse.data.dataset import MODALITIES, Batch
from emofuse.models import ModelSpec, create_model
from emofuse.models.base import relative_time_encoding
from emofuse.models.fusion_matched import (
    FusionMatchedConfig,
    TensorAttention,
    tensor_hidden,
    tensor_hidden_materialised,
)
from emofuse.models.fusion_matched_xattn import FusionMatchedXAttnConfig
from emofuse.models.registry import get_recipe, list_models

DIMS = {"text": 5, "audio": 3, "vision": 4}
SMALL = {"hidden": 8, "attention_hidden": 4}  # each model's own defaults otherwise
AIDS = {"time_code": 8, "same_time_prior": 0.5, "encoder_skip": True}  # emofuse's three, all on
SUBSETS = [c for r in (1, 2, 3) for c in itertools.combinations(MODALITIES, r)]


def make_batch(lengths: dict[str, int], b: int = 3, seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    feats, masks = {}, {}
    for m, length in lengths.items():
        real = torch.randint(max(1, length // 2), length + 1, (b,), generator=g)
        real[0] = length
        masks[m] = torch.arange(length)[None, :] < real[:, None]
        feats[m] = torch.randn(b, length, DIMS[m], generator=g) * masks[m].unsqueeze(-1)
    return Batch(feats, masks, torch.randn(b, generator=g), torch.arange(b))


def padded_pair(seed: int, b: int = 3, tx: int = 4, ty: int = 5, tz: int = 6):
    g = torch.Generator().manual_seed(seed)
    mask_x = torch.arange(tx)[None] < torch.tensor([tx, 2, 3])[:, None]
    mask_z = torch.arange(tz)[None] < torch.tensor([tz, 1, 4])[:, None]
    mask_y = torch.arange(ty)[None] < torch.tensor([ty, ty, 3])[:, None]
    a_xy = torch.randn(b, tx, ty, generator=g) * mask_x[:, :, None] * mask_y[:, None, :]
    a_zy = torch.randn(b, tz, ty, generator=g) * mask_z[:, :, None] * mask_y[:, None, :]
    return a_xy, a_zy, mask_x, mask_z, g


@pytest.mark.parametrize("seed", range(5))
def test_eq14_scores_equal_the_materialised_tensor(seed):
    a_xy, a_zy, mask_x, mask_z, g = padded_pair(seed)
    weight, bias = torch.randn(7, 4, 5, generator=g), torch.randn(7, generator=g)
    fast = tensor_hidden(a_xy, a_zy, weight, bias, mask_x)
    slow = tensor_hidden_materialised(a_xy, a_zy, weight, bias, mask_x, mask_z)
    real_k = mask_z.unsqueeze(-1).expand_as(slow)
    torch.testing.assert_close(fast[real_k], slow[real_k])


def test_eq14_is_not_the_averaged_slice():
    """The exact score differs from the former mean-over-i approximation (a test that can fail)."""
    a_xy, a_zy, mask_x, mask_z, g = padded_pair(11)
    weight, bias = torch.randn(3, 4, 5, generator=g), torch.zeros(3)
    exact = tensor_hidden(a_xy, a_zy, weight, bias, mask_x)
    n_x = mask_x.sum(1, keepdim=True)
    averaged = (a_xy.sum(1) / n_x).unsqueeze(1) + a_zy  # the old B x t_z x t_y slice
    approx = torch.tanh(torch.einsum("bkj,hj->bkh", averaged, weight.sum(1)) + bias)
    assert not torch.allclose(exact, approx, atol=1e-3)


def test_tensor_attention_is_a_distribution_over_real_steps():
    a_xy, a_zy, mask_x, mask_z, _ = padded_pair(2)
    attn = TensorAttention(x_len=6, pivot_len=7, hidden=4)  # the model's lengths exceed the batch's
    alpha = attn(a_xy, a_zy, mask_x, mask_z)
    assert torch.all(alpha[~mask_z] == 0)
    torch.testing.assert_close(alpha.sum(-1), torch.ones(3))
    with pytest.raises(ValueError, match="exceed the model"):
        TensorAttention(x_len=3, pivot_len=7, hidden=4)(a_xy, a_zy, mask_x, mask_z)


def test_eq14_never_builds_the_cube():
    """Memory stays linear: a 512 x 64 x 512 P would need 64 MiB per hidden unit's product."""
    b, tx, ty, tz, h = 1, 512, 64, 512, 4
    a_xy, a_zy = torch.randn(b, tx, ty), torch.randn(b, tz, ty)
    weight, bias = torch.randn(h, tx, ty), torch.randn(h)
    mask_x = torch.ones(b, tx, dtype=torch.bool)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        tensor_hidden(a_xy, a_zy, weight, bias, mask_x)
    peak_alloc = max(e.cpu_memory_usage for e in prof.key_averages())
    assert peak_alloc < 4 * tx * ty * tz / 16


def test_faithful_head_reads_only_the_profiles_of_p_prime():
    lengths = {"text": 6, "audio": 9, "vision": 7}
    model = create_model("fusion_matched", ModelSpec(MODALITIES, DIMS, lengths), **SMALL)
    # two profiles per pivot step, nothing else: no cross-modal contexts, no encoder features
    assert model.head[0].in_features == 2 * lengths["text"]
    assert not any("context" in n or "token" in n for n, _ in model.named_parameters())
    out = model(make_batch(lengths))
    assert {"alpha_audio", "alpha_vision", "alpha_tensor"} <= set(out.extras)


@pytest.mark.parametrize("mods", [("text", "audio"), MODALITIES], ids=["T+A", "T+A+V"])
def test_unimodal_option_lets_the_head_read_a_modality_the_pivot_hides(mods):
    lengths = {"text": 6, "audio": 9, "vision": 7}
    spec = ModelSpec(mods, {m: DIMS[m] for m in mods}, {m: lengths[m] for m in mods})
    model = create_model("fusion_matched", spec, unimodal=True, **SMALL).eval()
    assert model.head[0].in_features == 2 * lengths["text"] + 2 * SMALL["hidden"] * len(mods)
    batch = make_batch({m: lengths[m] for m in mods})
    # with a pivot that carries nothing (all zeros) the audio still moves the prediction
    batch.features["text"] = torch.zeros_like(batch.features["text"])
    base = model(batch).prediction
    batch.features["audio"] = batch.features["audio"] + 3.0 * batch.masks["audio"].unsqueeze(-1)
    assert not torch.allclose(model(batch).prediction, base)
    model.train()
    model(batch).prediction.sum().backward()
    assert all(p.grad is not None for n, p in model.named_parameters() if n.startswith("unimodal_pool"))
    with pytest.raises(ValueError, match="option of fusion_matched only"):
        create_model("fusion_matched_xattn", spec, unimodal=True, **SMALL)


@pytest.mark.parametrize(
    ("name", "options"),
    [("fusion_matched", {}), ("fusion_matched", AIDS), ("fusion_matched_xattn", {})],
    ids=["fusion_matched", "fusion_matched+aids", "fusion_matched_xattn"],
)
@pytest.mark.parametrize("mods", SUBSETS, ids=lambda m: "+".join(x[0].upper() for x in m))
def test_both_models_train_on_every_subset_unaligned(name, options, mods):
    lengths = {"text": 6, "audio": 11, "vision": 8}
    spec = ModelSpec(mods, {m: DIMS[m] for m in mods}, {m: lengths[m] for m in mods})
    model = create_model(name, spec, **SMALL, **options)
    out = model(make_batch({m: lengths[m] for m in mods}))
    assert out.prediction.shape == (3,) and torch.isfinite(out.prediction).all()
    out.prediction.sum().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert not no_grad, f"parameters without gradient: {no_grad}"


def test_extension_is_registered_apart_and_adds_contexts():
    assert {"fusion_matched", "fusion_matched_xattn"} <= set(list_models("fusion_matched*"))
    lengths = {"text": 6, "audio": 6, "vision": 6}
    spec = ModelSpec(MODALITIES, DIMS, lengths)
    ext = create_model("fusion_matched_xattn", spec, **SMALL)
    assert set(ext.context_proj) == {"audio", "vision"}
    with pytest.raises(ValueError, match="unknown option"):
        create_model("fusion_matched", spec, head="matched")


def test_recipes_are_the_papers_and_mmsas():
    assert get_recipe("mctn").lr == 1e-4
    assert get_recipe("lmf").weight_decay == 5e-3 and get_recipe("lmf").batch_size == 64
    assert (get_recipe("mfn").lr, get_recipe("mfn").batch_size) == (2e-3, 128)
    assert get_recipe("mult").grad_clip == 0.8 and get_recipe("mult").batch_size == 24
    assert get_recipe("fusion_matched").settings() == {
        "lr": 1e-3,
        "batch_size": 32,
        "weight_decay": 0.0,
        "grad_clip": 1.0,
        "patience": 8,
    }
    with pytest.raises(ValueError, match="known models"):
        get_recipe("nope")


def test_modality_keep_mask_drops_at_the_rate_and_never_everything():
    from emofuse.models.fusion_matched import modality_keep_mask

    torch.manual_seed(0)
    keep = modality_keep_mask(2, 20_000, 0.3)
    assert keep.any(1).all()
    # P(dropped) = p, minus the rescued all-dropped draws (p^2 / 2 per modality)
    assert abs((~keep).float().mean().item() - (0.3 - 0.3**2 / 2)) < 0.01
    assert modality_keep_mask(3, 5, 0.0).all()


@pytest.mark.parametrize("name", ["fusion_matched", "fusion_matched_xattn"])
def test_regularisers_are_inert_in_evaluation_and_drop_whole_modalities_in_training(name):
    lengths = {"text": 6, "audio": 9}
    mods = ("text", "audio")
    spec = ModelSpec(mods, {m: DIMS[m] for m in mods}, lengths)
    torch.manual_seed(0)
    plain = create_model(name, spec, **SMALL).eval()
    regular = create_model(name, spec, modality_dropout=0.5, text_dropout=0.5, **SMALL)
    regular.load_state_dict(plain.state_dict())  # no new parameters: the same weights fit both
    batch = make_batch(lengths, b=64)
    # evaluation: exactly the faithful model (the options only act while training)
    torch.testing.assert_close(regular.eval()(batch).prediction, plain(batch).prediction)
    regular.train()
    torch.manual_seed(1)
    enc = regular.encode(batch)
    dropped = {m: (e.abs().sum((1, 2)) == 0) for m, e in enc.items()}  # whole encodings zeroed
    assert 0 < int(dropped["text"].sum()) < 64 and 0 < int(dropped["audio"].sum()) < 64
    assert not (dropped["text"] & dropped["audio"]).any()
    with pytest.raises(ValueError, match="modality_dropout must lie in"):
        create_model(name, spec, modality_dropout=1.0, **SMALL)


def test_unimodal_with_a_dropped_pivot_still_predicts_from_audio():
    """What modality dropout trains for: with the pivot's encoding zeroed the P' profiles vanish and
    (unimodal=true) the audio summary alone drives the head."""
    lengths = {"text": 6, "audio": 9}
    mods = ("text", "audio")
    spec = ModelSpec(mods, {m: DIMS[m] for m in mods}, lengths)
    model = create_model("fusion_matched", spec, unimodal=True, **SMALL).eval()
    batch = make_batch(lengths)
    enc = model.encode(batch)
    enc["text"] = torch.zeros_like(enc["text"])
    weighted, _ = model.weighted_matches(enc, batch, {})
    assert torch.all(model.profiles(weighted, batch, {}) == 0)


# ------------------------------------------------------------- emofuse's matching aids: options
def _spec(lengths=None):
    lengths = lengths or {"text": 6, "audio": 9, "vision": 7}
    return ModelSpec(MODALITIES, DIMS, lengths)


def test_default_fusion_matched_is_eqs_8_to_16_on_the_encoders_alone():
    """No time code in E (nor so in M), no identity in W, no skip around the BiLSTM."""
    cfg = FusionMatchedConfig()
    assert (cfg.time_code, cfg.same_time_prior, cfg.encoder_skip) == (0, 0.0, False)
    torch.manual_seed(0)
    model = create_model("fusion_matched", _spec(), **SMALL).eval()
    batch = make_batch(_spec().max_lengths)
    enc = model.encode(batch)
    d = SMALL["hidden"]
    for m in MODALITIES:
        # E is exactly the encoder's output, hidden wide
        torch.testing.assert_close(enc[m], model.encoders[m](batch.features[m], batch.masks[m]))
        assert enc[m].shape[-1] == d
        assert model.encoders[m].local is None
    assert not any(".local." in n for n, _ in model.named_parameters())
    for w in model.coupling.values():
        assert w.shape == (d, d)
        # small random start, no same-time (identity) block anywhere
        assert w.abs().max() < 0.1
        assert not torch.allclose(w, w.diag().diag(), atol=1e-3)
    # eq 8 on the encoders' outputs alone: M = E_x W E_y^T, zero on padded steps
    x, y = "audio", model.pivot
    mat = model.match(enc[x], enc[y], x, batch.masks[x], batch.masks[y])
    valid = batch.masks[x].unsqueeze(-1) & batch.masks[y].unsqueeze(1)
    expected = enc[x] @ model.coupling[x] @ enc[y].transpose(1, 2)
    torch.testing.assert_close(mat, expected * valid)


def test_time_code_option_appends_the_relative_time_code_to_every_e():
    torch.manual_seed(0)
    lengths = {"text": 6, "audio": 9, "vision": 7}
    model = create_model("fusion_matched", _spec(lengths), time_code=6, **SMALL).eval()
    batch = make_batch(lengths)
    enc = model.encode(batch)
    d = SMALL["hidden"]
    for m in MODALITIES:
        assert enc[m].shape[-1] == d + 6
        torch.testing.assert_close(enc[m][..., :d], model.encoders[m](batch.features[m], batch.masks[m]))
        torch.testing.assert_close(enc[m][..., d:], relative_time_encoding(batch.masks[m], 6))
    assert all(w.shape == (d + 6, d + 6) for w in model.coupling.values())
    # the code enters M (eq 8): with the feature blocks of W zeroed, M is the time-code match alone
    with torch.no_grad():
        for w in model.coupling.values():
            w.zero_()
            w[d:, d:] = torch.eye(6)
    x, y = "audio", "text"
    mat = model.match(enc[x], enc[y], x, batch.masks[x], batch.masks[y])
    code_x, code_y = relative_time_encoding(batch.masks[x], 6), relative_time_encoding(batch.masks[y], 6)
    torch.testing.assert_close(mat, code_x @ code_y.transpose(1, 2))
    assert mat.abs().sum() > 0
    # no identity prior unless asked for
    assert (
        create_model("fusion_matched", _spec(), time_code=6, **SMALL).coupling["audio"][d:, d:].abs().max()
        < 0.1
    )


def test_same_time_prior_starts_w_at_a_scaled_identity_on_the_time_block():
    torch.manual_seed(0)
    d, n = SMALL["hidden"], 8
    model = create_model("fusion_matched", _spec(), time_code=n, same_time_prior=0.7, **SMALL)
    for w in model.coupling.values():
        w = w.detach()
        assert (w[d:, d:] - 0.7 * torch.eye(n)).abs().max() < 0.1  # the prior plus the small random start
        assert w[:d].abs().max() < 0.1 and w[:, :d].abs().max() < 0.1  # feature blocks: small random only
    with pytest.raises(ValueError, match="needs time_code > 0"):
        create_model("fusion_matched", _spec(), same_time_prior=0.5, **SMALL)
    with pytest.raises(ValueError, match="is a weight"):
        create_model("fusion_matched", _spec(), time_code=n, same_time_prior=True, **SMALL)
    with pytest.raises(ValueError, match="time_code must be"):
        create_model("fusion_matched", _spec(), time_code=-1, **SMALL)


def test_encoder_skip_adds_a_per_step_linear_projection_of_the_input():
    torch.manual_seed(0)
    spec = _spec()
    skip = create_model("fusion_matched", spec, encoder_skip=True, **SMALL).eval()
    plain = create_model("fusion_matched", spec, **SMALL).eval()
    missing, unexpected = plain.load_state_dict(skip.state_dict(), strict=False)
    assert not missing and unexpected and all(".local." in k for k in unexpected)
    batch = make_batch(spec.max_lengths)
    for m in MODALITIES:
        x, mask = batch.features[m], batch.masks[m]
        local = skip.encoders[m].local
        assert isinstance(local, torch.nn.Linear) and local.in_features == DIMS[m]
        expected = plain.encoders[m](x, mask) + local(x) * mask.unsqueeze(-1)
        torch.testing.assert_close(skip.encoders[m](x, mask), expected)
    with pytest.raises(ValueError, match="encoder_skip must be"):
        create_model("fusion_matched", spec, encoder_skip="yes", **SMALL)


def test_aids_are_set_from_the_command_line():
    from emofuse.cli.main import _model_options, _parse_option

    parsed = [_parse_option(t) for t in ("time_code=16", "same_time_prior=0.5", "encoder_skip=true")]
    options = _model_options(parsed, ["fusion_matched"])["fusion_matched"]
    model = create_model("fusion_matched", _spec(), **options, **SMALL)
    assert (model.config.time_code, model.config.same_time_prior, model.config.encoder_skip) == (
        16,
        0.5,
        True,
    )


def test_extension_keeps_the_three_aids_on_by_default():
    """fusion_matched_xattn was developed with the aids; its defaults keep them (its behaviour unchanged)."""
    cfg = FusionMatchedXAttnConfig()
    assert (cfg.time_code, cfg.same_time_prior, cfg.encoder_skip) == (32, 0.5, True)
    spec = _spec()
    torch.manual_seed(5)
    ext = create_model("fusion_matched_xattn", spec, **SMALL)
    torch.manual_seed(5)
    faithful = create_model(
        "fusion_matched", spec, time_code=32, same_time_prior=0.5, encoder_skip=True, **SMALL
    )
    d = SMALL["hidden"]
    # the shared part (encoders, W, eqs 10-15) is built identically: same shapes, same initial values
    shared = {k: v for k, v in faithful.state_dict().items() if not k.startswith("head")}
    ext_state = ext.state_dict()
    for k, v in shared.items():
        torch.testing.assert_close(ext_state[k], v, msg=k)
    assert all(ext.encoders[m].local is not None for m in MODALITIES)
    assert ext.encode(make_batch(spec.max_lengths))["text"].shape[-1] == d + 32
    assert (ext.coupling["audio"].detach()[d:, d:] - 0.5 * torch.eye(32)).abs().max() < 0.1
    # and each can be turned off there too
    off = create_model(
        "fusion_matched_xattn", spec, time_code=0, same_time_prior=0, encoder_skip=False, **SMALL
    )
    assert off.coupling["audio"].shape == (d, d) and off.encoders["audio"].local is None


def test_a_run_saved_before_the_matching_aids_were_options_still_loads(tmp_path, capsys) -> None:
    """Runs trained when fusion_matched always had its time code, prior and skip keep working."""
    import json

    from emofuse.cli.main import main
    from emofuse.evaluation.evaluate import load_run
    from emofuse.models.fusion_matched import MATCHING_AIDS_BEFORE_OPTIONS

    aids = [x for k, v in MATCHING_AIDS_BEFORE_OPTIONS.items() for x in ("-o", f"{k}={json.dumps(v)}")]
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic",
                "-D",
                "n_train=64",
                "-D",
                "n_valid=16",
                "-D",
                "n_test=16",
                "--model",
                "fusion_matched",
                "--modalities",
                "T+A+V",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--quiet",
                "-o",
                "hidden=8",
                *aids,
                "--out",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    run = tmp_path / "runs" / "seed_1"
    before = load_run(run).model.state_dict()
    # what such a run recorded then: only the options the user typed (here: hidden)
    for name in ("best.pt", "last.pt"):
        ckpt = torch.load(run / name, weights_only=False)
        ckpt["model_options"] = {"hidden": 8}
        torch.save(ckpt, run / name)
    saved = json.loads((run / "config.json").read_text())
    saved["train"]["model_options"] = {"hidden": 8}
    (run / "config.json").write_text(json.dumps(saved))
    capsys.readouterr()
    loaded = load_run(run)
    assert "matching aids" in capsys.readouterr().err
    assert loaded.config.model_options["encoder_skip"] is True
    for key, value in before.items():
        assert torch.equal(loaded.model.state_dict()[key], value)

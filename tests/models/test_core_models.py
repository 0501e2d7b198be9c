"""Registry-driven checks every model must pass, and the fusion-matched network's algebra."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from emofuse.data.dataset import MODALITIES, Batch
from emofuse.models import ModelSpec, create_model, list_models
from emofuse.models.fusion_matched import pool_three_way, pool_three_way_materialised

DIMS = {"text": 5, "audio": 3, "vision": 4}
SUBSETS = [c for r in (1, 2, 3) for c in itertools.combinations(MODALITIES, r)]
SMALL = {"hidden": 8}
# small sizes keep the tests fast; a wrong key here is an error, not a silent fall-back
OPTIONS = {
    "fusion_matched": {"hidden": 8, "time_code": 8, "attention_hidden": 4},
    "fusion_matched_xattn": {"hidden": 8, "time_code": 8, "attention_hidden": 4},
    "ef_lstm": SMALL,
    "late_fusion": SMALL,
    "mult": {"layers": 1, "d": 8, "heads": 2},
}
# subsets a model refuses by design, with the reason; build() marks exactly these xfail
UNSUPPORTED = {
    "mctn": (lambda mods: len(mods) < 2 or "text" not in mods,
             "MCTN translates its source modality (text by default) into at least one other"),
    "raven": (lambda mods: len(mods) < 2 or "text" not in mods,
              "RAVEN shifts words by the other modalities: it needs text and one more"),
}


def make_batch(lengths: dict[str, int], b: int = 3, seed: int = 0, classes: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    feats, masks = {}, {}
    for m, length in lengths.items():
        feats[m] = torch.randn(b, length, DIMS[m], generator=g)
        real = torch.randint(max(1, length // 2), length + 1, (b,), generator=g)
        real[0] = length
        masks[m] = torch.arange(length)[None, :] < real[:, None]
        feats[m] = feats[m] * masks[m].unsqueeze(-1)
    labels = torch.randint(0, classes, (b,), generator=g) if classes else torch.randn(b, generator=g)
    return Batch(feats, masks, labels, torch.arange(b))


def build(name: str, mods: tuple[str, ...], lengths: dict[str, int], task: str = "regression"):
    """The model on `mods`; for a subset it refuses by design, checks the refusal and xfails."""
    spec = ModelSpec(
        mods,
        {m: DIMS[m] for m in mods},
        {m: lengths[m] for m in mods},
        task,
        3 if task == "classification" else 1,
    )
    refuses, reason = UNSUPPORTED.get(name, (lambda mods: False, ""))
    if refuses(mods):
        with pytest.raises(ValueError, match=name.upper()):
            create_model(name, spec, **OPTIONS.get(name, {}))
        pytest.xfail(f"{name} on {'+'.join(mods)}: {reason}")
    return create_model(name, spec, **OPTIONS.get(name, {}))


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("mods", SUBSETS, ids=lambda m: "+".join(x[0].upper() for x in m))
@pytest.mark.parametrize("aligned", [True, False])
def test_core_models_forward_backward_every_subset(name, mods, aligned):
    lengths = {"text": 6, "audio": 6, "vision": 6} if aligned else {"text": 6, "audio": 11, "vision": 8}
    model = build(name, mods, lengths)
    batch = make_batch({m: lengths[m] for m in mods})
    out = model(batch)
    assert out.prediction.shape == (3,)
    assert torch.isfinite(out.prediction).all()
    # as the trainer does: a model's own loss (MCTN's translations) trains its auxiliary parts
    (out.prediction.sum() + (out.aux_loss if out.aux_loss is not None else 0)).backward()
    trained = [n for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert trained and not no_grad, f"parameters without gradient: {no_grad}"


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_classifies(name):
    lengths = {"text": 5, "audio": 5, "vision": 5}
    model = build(name, MODALITIES, lengths, task="classification")
    out = model(make_batch(lengths, classes=3))
    assert out.prediction.shape == (3, 3)


@pytest.mark.parametrize("name", list_models())
def test_padding_and_batch_mates_do_not_change_predictions(name):
    lengths = {"text": 6, "audio": 9, "vision": 7}
    padded = {m: n + 3 for m, n in lengths.items()}
    model = build(name, MODALITIES, padded).eval()
    batch = make_batch(lengths, b=4)
    more = Batch(
        {m: F.pad(x, (0, 0, 0, 3)) for m, x in batch.features.items()},
        {m: F.pad(x, (0, 3)) for m, x in batch.masks.items()},
        batch.labels,
        batch.indices,
    )
    with torch.no_grad():
        a = model(batch).prediction
        b = model(more).prediction
        alone = model(
            Batch(
                {m: x[1:2] for m, x in batch.features.items()},
                {m: x[1:2] for m, x in batch.masks.items()},
                batch.labels[1:2],
                batch.indices[1:2],
            )
        ).prediction
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a[1:2], alone, atol=1e-5, rtol=1e-4)


def test_unknown_model_lists_known_ones():
    spec = ModelSpec(("text",), {"text": 5}, {"text": 4})
    with pytest.raises(ValueError, match="known models: .*fusion_matched"):
        create_model("no_such_model", spec)


def test_unknown_option_is_an_error():
    spec = ModelSpec(("text",), {"text": 5}, {"text": 4})
    with pytest.raises(ValueError, match="unknown option"):
        create_model("fusion_matched", spec, hiden=3)


@pytest.mark.parametrize("seed", range(5))
def test_three_way_pooling_equals_the_materialised_tensor(seed):
    g = torch.Generator().manual_seed(seed)
    b, tx, ty, tz = 3, 4, 5, 6
    mask_x = torch.arange(tx)[None] < torch.tensor([4, 2, 3])[:, None]
    mask_z = torch.arange(tz)[None] < torch.tensor([6, 1, 4])[:, None]
    mask_y = torch.arange(ty)[None] < torch.tensor([5, 5, 3])[:, None]
    a_xy = torch.randn(b, tx, ty, generator=g) * mask_x[:, :, None] * mask_y[:, None, :]
    a_zy = torch.randn(b, tz, ty, generator=g) * mask_z[:, :, None] * mask_y[:, None, :]
    alpha = torch.softmax(torch.randn(b, tz, generator=g).masked_fill(~mask_z, -1e9), -1) * mask_z
    fast = pool_three_way(a_xy, a_zy, alpha, mask_x, mask_z)
    slow = pool_three_way_materialised(a_xy, a_zy, alpha, mask_x, mask_z)
    for f, s in zip(fast, slow):
        torch.testing.assert_close(f, s)


def test_three_way_pooling_never_builds_the_cube():
    """Memory stays linear: a 64 x 512 x 512 problem would need 1 GiB as a cube."""
    b, tx, ty, tz = 1, 512, 64, 512
    a_xy, a_zy = torch.randn(b, tx, ty), torch.randn(b, tz, ty)
    alpha = torch.softmax(torch.randn(b, tz), -1)
    ones_x, ones_z = torch.ones(b, tx, dtype=torch.bool), torch.ones(b, tz, dtype=torch.bool)
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        pool_three_way(a_xy, a_zy, alpha, ones_x, ones_z)
    peak_alloc = max(e.cpu_memory_usage for e in prof.key_averages())
    assert peak_alloc < 4 * tx * ty * tz / 16  # far below one float32 cube


def test_fusion_matched_attention_respects_padding():
    lengths = {"text": 6, "audio": 6, "vision": 6}
    model = build("fusion_matched", MODALITIES, lengths).eval()
    batch = make_batch(lengths, b=3)
    out = model(batch)
    for key in ("alpha_audio", "alpha_vision", "alpha_tensor"):
        alpha = out.extras[key]
        mod = "vision" if key == "alpha_tensor" else key.split("_")[1]
        mask = batch.masks[mod]
        assert torch.all(alpha[~mask] == 0), key
        torch.testing.assert_close(alpha.sum(-1), torch.ones(3))


def test_fusion_matched_pivot_choice():
    lengths = {"text": 6, "audio": 6, "vision": 6}
    spec = ModelSpec(MODALITIES, DIMS, lengths)
    model = create_model("fusion_matched", spec, pivot="vision", hidden=8, time_code=8)
    assert model.pivot == "vision" and set(model.others) == {"text", "audio"}
    model(make_batch(lengths)).prediction.sum().backward()
    # without the configured pivot, text is preferred, then vision
    spec2 = ModelSpec(("audio", "vision"), {"audio": 3, "vision": 4}, {"audio": 6, "vision": 6})
    assert create_model("fusion_matched", spec2, hidden=8).pivot == "vision"

"""The pooled head's ways of pooling a modality's steps: mean+max, a learned weight per position
(SUPERB's weighted layer sum when the steps are encoder layers), and content attention."""

from __future__ import annotations

import pytest
import torch

from emofuse.data.dataset import Batch
from emofuse.errors import OptionError, UserError
from emofuse.models.base import ModelSpec
from emofuse.models.registry import create_model as build_model


def _spec() -> ModelSpec:
    return ModelSpec(("audio",), {"audio": 4}, {"audio": 5}, "classification", 3)


def _batch(x: torch.Tensor, lengths: list[int]) -> Batch:
    mask = torch.arange(x.shape[1])[None, :] < torch.tensor(lengths)[:, None]
    return Batch({"audio": x}, {"audio": mask}, torch.zeros(x.shape[0], dtype=torch.long),
                 torch.arange(x.shape[0]))


@pytest.mark.parametrize("pool", ["weighted", "attention"])
def test_softmax_pools_ignore_padding_steps(pool: str) -> None:
    torch.manual_seed(0)
    model = build_model("pooled", _spec(), pool=pool).eval()
    x = torch.randn(2, 5, 4)
    noisy = x.clone()
    noisy[0, 3:] = 1e3  # clip 0 has 3 real steps: what lies past them must not matter
    with torch.no_grad():
        a = model(_batch(x, [3, 5])).prediction
        b = model(_batch(noisy, [3, 5])).prediction
    torch.testing.assert_close(a, b)


def test_weighted_pool_starts_as_the_mean_and_learns_a_weight_per_position() -> None:
    torch.manual_seed(0)
    model = build_model("pooled", _spec(), pool="weighted", dropout=0.0)
    x = torch.randn(2, 5, 4)
    pooled = model._softmax_pool("audio", x, torch.ones(2, 5, dtype=torch.bool))
    torch.testing.assert_close(pooled, x.mean(dim=1))  # zero weights: every layer counts the same
    with torch.no_grad():
        model.step_weights["audio"][2] = 50.0  # one position dominating is picking that layer
    pooled = model._softmax_pool("audio", x, torch.ones(2, 5, dtype=torch.bool))
    torch.testing.assert_close(pooled, x[:, 2], atol=1e-5, rtol=0)
    # the weights train: a loss reaches them
    out = model(_batch(x, [5, 5])).prediction
    out.sum().backward()
    assert model.step_weights["audio"].grad is not None


def test_weighted_pool_names_too_many_steps_and_bad_options() -> None:
    model = build_model("pooled", _spec(), pool="weighted", max_steps=3)
    with pytest.raises(UserError, match="max_steps=5"):
        model(_batch(torch.randn(1, 5, 4), [5]))
    with pytest.raises(OptionError, match="pool must be one of"):
        build_model("pooled", _spec(), pool="median")


def test_meanmax_stays_the_default_and_its_width() -> None:
    model = build_model("pooled", _spec())
    assert model.config.pool == "meanmax" and model.step_weights is None
    assert model(_batch(torch.randn(2, 5, 4), [2, 5])).prediction.shape == (2, 3)

"""The `harris3d_cnn` video encoder: shapes, attention modes, gradients, span independence, config."""

from __future__ import annotations

import pytest
import torch

from emofuse.models.encoders import create_encoder, get_encoder, list_encoders
from emofuse.models.encoders.harris import harris_analysis
from emofuse.models.encoders.video_cnn import Harris3DCNN, Harris3DCNNConfig

SMALL = {"channels": (4, 8, 8), "dropout": 0.0}


def _turning_squares(n: int = 3, frames: int = 8, size: int = 32) -> torch.Tensor:
    """Word spans with space-time corners: a square that moves down, then back up."""
    video = torch.zeros(n, frames, size, size)
    for i in range(n):
        for t in range(frames):
            y = 6 + i + (t if t <= frames // 2 else frames - t)
            video[i, t, y : y + 8, 10 + 2 * i : 18 + 2 * i] = 1.0
    return video


def _encoder(attention: str, seed: int = 0, **options) -> Harris3DCNN:
    torch.manual_seed(seed)  # gates hold no random weights, so every mode gets the same conv weights
    return create_encoder("harris3d_cnn", 12, attention=attention, **{**SMALL, **options}).eval()


def test_registered_as_a_vision_encoder():
    assert "harris3d_cnn" in list_encoders("vision")
    assert "harris3d_cnn" not in list_encoders("audio")
    assert get_encoder("harris3d_cnn").modality == "vision"
    assert isinstance(create_encoder("harris3d_cnn", 5), Harris3DCNN)


@pytest.mark.parametrize("shape", [(3, 8, 32, 32), (2, 1, 16, 16), (1, 5, 17, 23), (2, 16, 48, 48)])
def test_output_shape(shape):
    out = _encoder("harris3d")(torch.rand(shape))
    assert out.shape == (shape[0], 12)
    assert torch.isfinite(out).all()


def test_attention_modes_differ_and_none_ignores_the_volume():
    frames = _turning_squares()
    assert harris_analysis(frames, "harris3d").keypoints.any()
    with torch.no_grad():
        outs = {mode: _encoder(mode)(frames) for mode in ("harris3d", "harris2d", "none")}
    assert not torch.allclose(outs["harris3d"], outs["harris2d"])
    assert not torch.allclose(outs["harris3d"], outs["none"])
    assert not torch.allclose(outs["harris2d"], outs["none"])
    # "none" is exactly the gated network with every gate held at 1
    gated = _encoder("harris3d")
    with torch.no_grad():
        for gate in [gated.input_gate, *gated.gates]:
            gate.weight.zero_()
            gate.bias.fill_(1.0)
        torch.testing.assert_close(gated(frames), outs["none"])
    assert _encoder("none").explain(frames) is None
    assert not any("gate" in name for name, _ in _encoder("none").named_parameters())


def test_flat_spans_are_not_reweighted():
    # no key points -> attention volume of ones -> initial gates are identity: same as "none"
    frames = torch.full((2, 8, 32, 32), 0.4)
    with torch.no_grad():
        torch.testing.assert_close(_encoder("harris3d")(frames), _encoder("none")(frames))


@pytest.mark.parametrize("attention", ["harris3d", "harris2d", "none"])
def test_gradients_reach_every_parameter(attention):
    encoder = _encoder(attention).train()
    encoder(_turning_squares()).pow(2).sum().backward()
    for name, p in encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_a_span_does_not_depend_on_its_batch_mates():
    encoder = _encoder("harris3d")
    frames = torch.cat([_turning_squares(2), torch.rand(3, 8, 32, 32)])
    with torch.no_grad():
        together = encoder(frames)
        for i in range(frames.shape[0]):
            torch.testing.assert_close(encoder(frames[i : i + 1])[0], together[i], atol=1e-5, rtol=1e-5)


def test_explain_returns_the_volume_the_forward_uses():
    encoder = _encoder("harris3d", harris={"max_points": 4})
    frames = _turning_squares(2)
    result = encoder.explain(frames)
    assert result.attention.shape == frames.shape
    assert result.keypoints.flatten(1).sum(1).tolist() == [4, 4]
    assert result.attention.max() > 1.0 and result.attention.min() == 1.0


def test_options_are_checked():
    with pytest.raises(ValueError, match=r"unknown option.*known:.*attention"):
        create_encoder("harris3d_cnn", 8, attenion="harris3d")
    with pytest.raises(ValueError, match="attention must be one of"):
        create_encoder("harris3d_cnn", 8, attention="harris4d")
    with pytest.raises(ValueError, match=r"unknown option.*HarrisConfig"):
        create_encoder("harris3d_cnn", 8, harris={"sigmaa": 2.0})
    config = Harris3DCNNConfig(channels=[8, 8], harris={"threshold": 0.3})
    assert config.channels == (8, 8) and config.harris.threshold == 0.3
    with pytest.raises(ValueError, match="N x F x H x W"):
        create_encoder("harris3d_cnn", 8)(torch.rand(2, 1, 8, 16, 16))

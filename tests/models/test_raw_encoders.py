"""Raw-input encoders inside any model: spectro_cnn, WithRawEncoders, and training end to end."""

from __future__ import annotations

import pytest
import torch

from emofuse.data.dataset import Batch
from emofuse.models import create_model
from emofuse.models.base import ModelSpec
from emofuse.models.encoders import create_encoder, list_encoders
from emofuse.models.raw_encoders import RawEncoderConfig, WithRawEncoders, raw_model_spec


def test_spectro_cnn_shapes_silence_and_short_words() -> None:
    enc = create_encoder("spectro_cnn", 16).eval()
    assert enc(torch.randn(5, 24, 12)).shape == (5, 16)
    assert enc(torch.randn(2, 24, 1)).shape == (2, 16)  # a one-step word survives every pooling
    silent = enc(torch.full((1, 24, 12), -80.0, dtype=torch.float16))
    assert torch.isfinite(silent).all()


@pytest.mark.parametrize("norm", ["batch", "group"])
def test_spectro_cnn_word_vectors_do_not_depend_on_batch_mates(norm: str) -> None:
    enc = create_encoder("spectro_cnn", 8, norm=norm)
    x = torch.randn(4, 24, 12)
    enc.train()
    enc(torch.randn(16, 24, 12) * 20 - 50)  # one training step's statistics, so eval is not the init
    enc.eval()
    alone = enc(x[:1])
    together = enc(torch.cat([x[:1], 100 * x[1:]]))[:1]
    torch.testing.assert_close(alone, together, atol=1e-5, rtol=1e-5)
    if norm == "group":  # per-sample statistics: invariant in training too
        enc.train()
        enc.config.spec_augment, enc.dropout.p = 0.0, 0.0
        torch.testing.assert_close(enc(x[:1]), enc(torch.cat([x[:1], 100 * x[1:]]))[:1], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="norm must be"):
        create_encoder("spectro_cnn", 8, norm="layer")


def test_spectro_cnn_freq_warp_moves_a_band_like_another_voice_in_training_only() -> None:
    from emofuse.models.encoders.audio_cnn import _freq_warp

    # a formant-like peak at band 40 of 64 lands between bands 36 and 44 (alpha in [0.9, 1.1])
    x = torch.full((200, 64, 6), -80.0)
    x[:, 40] = -20.0
    torch.manual_seed(0)
    peaks = _freq_warp(x, 0.1).mean(dim=2).argmax(dim=1)
    assert peaks.min() >= 36 and peaks.max() <= 44 and len(set(peaks.tolist())) >= 5
    assert torch.equal(_freq_warp(x, 0.1)[:, 0], x[:, 0])  # band 0 is the anchor
    low_band = torch.zeros(3, 64, 6)
    low_band[:, 0] = 1.0
    assert torch.equal(_freq_warp(low_band, 0.0), low_band)  # alpha 1: no change
    enc = create_encoder("spectro_cnn", 8, freq_warp=0.2).eval()
    torch.testing.assert_close(enc(x[:2]), enc(x[:2]))  # evaluation is deterministic: no warp
    with pytest.raises(ValueError, match="freq_warp must lie"):
        create_encoder("spectro_cnn", 8, freq_warp=0.7)


def test_spectro_cnn_freq_pool_keep_reads_bands_apart_and_names_a_wrong_band_count() -> None:
    enc = create_encoder("spectro_cnn", 16, freq_pool="keep", n_mels=24, channels=(4, 8)).eval()
    assert enc.out.in_features == 2 * 8 * 6  # 24 bands -> 12 -> 6 after two pools
    assert enc(torch.randn(3, 24, 30)).shape == (3, 16)
    assert enc(torch.randn(2, 24, 1)).shape == (2, 16)
    # the same pattern one octave of bands higher gives another vector: position is kept
    low, high = torch.full((1, 24, 30), -80.0), torch.full((1, 24, 30), -80.0)
    low[:, 2:6], high[:, 16:20] = -20.0, -20.0
    assert not torch.allclose(enc(low), enc(high))
    with pytest.raises(ValueError, match="built for n_mels=24.*these patches have 40 bands"):
        enc(torch.randn(1, 40, 30))
    with pytest.raises(ValueError, match="freq_pool must be"):
        create_encoder("spectro_cnn", 8, freq_pool="max")


def test_unknown_encoder_and_option_are_named() -> None:
    with pytest.raises(ValueError, match="spectro_cnn"):
        create_encoder("nope", 8)
    with pytest.raises(ValueError, match="unknown option"):
        create_encoder("spectro_cnn", 8, width=3)
    assert "spectro_cnn" in list_encoders("audio")
    with pytest.raises(ValueError, match="reads audio, not vision"):
        RawEncoderConfig({"vision": "spectro_cnn"})


def _raw_batch(lengths: list[int], words: int = 5) -> Batch:
    b = len(lengths)
    mask = torch.arange(words)[None, :] < torch.tensor(lengths)[:, None]
    torch.manual_seed(0)
    return Batch(
        features={"text": torch.randn(b, words, 4) * mask.unsqueeze(-1), "audio": torch.zeros(b, words, 1)},
        masks={"text": mask, "audio": mask.clone()},
        labels=torch.zeros(b),
        indices=torch.arange(b),
        extras={"raw_audio": torch.randn(b, words, 16, 6).half() * mask[..., None, None]},
    )


def _wrapped(model: str = "fusion_matched") -> WithRawEncoders:
    spec = ModelSpec(("text", "audio"), {"text": 4, "audio": 1}, {"text": 5, "audio": 5})
    config = RawEncoderConfig({"audio": "spectro_cnn"}, dim=8)
    torch.manual_seed(0)
    return WithRawEncoders(create_model(model, raw_model_spec(spec, config)), config).eval()


@pytest.mark.parametrize("model", ["fusion_matched", "ef_lstm", "late_fusion"])
def test_any_model_reads_raw_audio_and_padding_is_never_encoded(model: str) -> None:
    net = _wrapped(model)
    batch = _raw_batch([5, 2])
    out = net(batch).prediction
    assert out.shape == (2,)
    # garbage in the padded words of clip 1 changes nothing
    noisy = _raw_batch([5, 2])
    noisy.extras["raw_audio"][1, 2:] = 1e3
    torch.testing.assert_close(net(noisy).prediction, out)
    # and gradients reach the encoder
    net.train()
    net(batch).prediction.sum().backward()
    assert all(p.grad is not None for p in net.encoders.parameters())


def test_missing_raw_input_is_a_clear_error() -> None:
    batch = _raw_batch([3, 3])
    batch.extras.pop("raw_audio")
    with pytest.raises(ValueError, match="carries no raw_audio"):
        _wrapped()(batch)

"""train --mixup: what a mixed batch holds, reproducible draws, exact resume, and the refusal."""

from __future__ import annotations

import pytest
import torch
from small_runs import config, train_interrupted_then_resumed

from emofuse.cli.main import main
from emofuse.data.dataset import Batch
from emofuse.training.checkpoint import load_checkpoint
from emofuse.training.mixup import Mixup, mix_batch, mixed_loss
from emofuse.training.trainer import train_run


def _batch() -> Batch:
    """Two clips: clip 0 has 2 audio words, clip 1 has 1 (its word 2 is padding)."""
    mel = torch.tensor([[[-30.0], [-40.0]], [[-60.0], [0.0]]]).view(2, 2, 1, 1).repeat(1, 1, 2, 3).half()
    crops = torch.tensor([[200, 100], [50, 0]], dtype=torch.uint8).view(2, 2, 1, 1, 1).repeat(1, 1, 1, 2, 2)
    masks = {
        "audio": torch.tensor([[True, True], [True, False]]),
        "vision": torch.tensor([[True, True], [True, False]]),
        "text": torch.tensor([[True, False], [True, True]]),
    }
    features = {"text": torch.tensor([[[1.0], [0.0]], [[3.0], [5.0]]]), "audio": torch.zeros(2, 2, 1),
                "vision": torch.zeros(2, 2, 1)}
    return Batch(
        features, masks, torch.tensor([0, 1]), torch.arange(2), {"raw_audio": mel, "raw_vision": crops}
    )


def test_mixed_batch_blends_every_input_and_pads_log_mel_with_silence() -> None:
    batch, swap, lam = _batch(), torch.tensor([1, 0]), 0.75
    mixed = mix_batch(batch, swap, lam)
    # features: a plain blend (padding zeros are the standardised training mean)
    torch.testing.assert_close(
        mixed.features["text"][0], 0.75 * torch.tensor([[1.0], [0.0]]) + 0.25 * torch.tensor([[3.0], [5.0]])
    )
    # a word is real where either clip has it
    assert mixed.masks["audio"].all() and mixed.masks["text"].all()
    mel = mixed.extras["raw_audio"].float()
    assert mixed.extras["raw_audio"].dtype == torch.float16
    assert mel[0, 0, 0, 0].item() == pytest.approx(0.75 * -30 + 0.25 * -60)
    # clip 1 lacks word 2: its padding (0 dB, loud) becomes the batch's quietest real value (-60 dB)
    assert mel[0, 1, 0, 0].item() == pytest.approx(0.75 * -40 + 0.25 * -60)
    assert mel[1, 1, 0, 0].item() == pytest.approx(0.75 * -60 + 0.25 * -40)
    # crops stay bytes; a missing crop is black
    crops = mixed.extras["raw_vision"]
    assert crops.dtype == torch.uint8 and crops[0, 0, 0, 0, 0].item() == round(0.75 * 200 + 0.25 * 50)
    assert crops[1, 1, 0, 0, 0].item() == round(0.25 * 100)
    # the loss weighs both clips' labels as their inputs were weighed
    loss_fn, logits = torch.nn.CrossEntropyLoss(), torch.randn(2, 2)
    expected = 0.75 * loss_fn(logits, batch.labels) + 0.25 * loss_fn(logits, batch.labels[swap])
    torch.testing.assert_close(mixed_loss(loss_fn, logits, batch.labels, swap, lam), expected)


def test_mixup_draws_depend_on_the_seed_only() -> None:
    draws = [Mixup(0.2, seed)(_batch()) for seed in (7, 7, 8, 9, 10)]
    (_, p1, l1), (_, p2, l2) = draws[:2]
    assert l1 == l2 and torch.equal(p1, p2) and 0 < l1 < 1
    assert len({round(lam, 6) for _, _, lam in draws}) == 4
    with pytest.raises(ValueError, match="alpha must be > 0"):
        Mixup(0.0, 1)


def test_mixup_training_learns_and_resumes_exactly(tmp_path, splits) -> None:
    cfg = config(epochs=3, mixup=0.4)
    full = train_run(cfg, splits, tmp_path / "full", progress=False)
    plain = train_run(config(epochs=3), splits, tmp_path / "plain", progress=False)
    assert full.metrics["test"] != plain.metrics["test"]  # the batches were really mixed
    train_interrupted_then_resumed(cfg, splits, tmp_path / "cut", after_epoch=1)
    a, b = (load_checkpoint(tmp_path / r / "last.pt") for r in ("full", "cut"))
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)


def test_mixup_with_a_text_encoder_is_one_clear_line(tmp_path, capsys) -> None:
    code = main(
        [
            "train",
            "--data",
            "synthetic",
            "--modalities",
            "T",
            "--text-encoder",
            "minilm",
            "--mixup",
            "0.2",
            "--epochs",
            "1",
            "--quiet",
            "--out",
            str(tmp_path / "r"),
        ]
    )
    assert code == 2
    assert "--mixup cannot mix an in-model text encoder's token ids" in capsys.readouterr().err

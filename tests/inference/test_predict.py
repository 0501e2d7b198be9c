"""`Predictor` on feature records (no media stack needed): labels, contributions, refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from emofuse.cli.main import main
from emofuse.data.dataset import MultimodalDataset
from emofuse.data.mmsa import save_mmsa_pickle
from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.evaluation.evaluate import load_run, predictions_for
from emofuse.inference import Predictor, RunMismatch, sentiment_labels
from emofuse.inference.predict import resize_words


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> tuple[Path, Path]:
    """A fusion_matched T+A+V run on a small synthetic pickle (dims 16 / 8 / 12)."""
    root = tmp_path_factory.mktemp("run")
    data = root / "syn.pkl"
    save_mmsa_pickle(make_synthetic(SyntheticConfig(n_train=48, n_valid=16, n_test=16)), data)
    out = root / "run"
    assert main(["train", "--data", str(data), "--model", "fusion_matched", "--epochs", "1", "--threads", "1",
                 "--out", str(out), "--quiet", "-o", "hidden=16"]) == 0
    return out / "seed_1", data


def _record(dims: dict[str, int], words: int = 5, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "raw_text": " ".join(f"w{i}" for i in range(words)),
        "aligned": {m: rng.normal(size=(words, d)).astype(np.float32) for m, d in dims.items()},
        "words": [f"w{i}" for i in range(words)],
        "starts": np.arange(words) * 0.4, "ends": np.arange(words) * 0.4 + 0.3, "word_source": "test",
    }


def test_sentiment_labels_follow_mmsa_rounding() -> None:
    assert sentiment_labels(0.0) == {"2": "non-negative", "3": "neutral", "7": "neutral", "7_value": 0}
    assert sentiment_labels(-0.6)["3"] == "negative" and sentiment_labels(-0.6)["7"] == "weakly negative"
    assert sentiment_labels(2.5)["7_value"] == 2  # numpy's half-even rounding, as MMSA's Acc-7
    assert sentiment_labels(9.0)["7"] == "strongly positive" and sentiment_labels(9.0)["3"] == "positive"


def test_record_prediction_matches_evaluate_and_removal_is_the_training_mean(small_run) -> None:
    run_dir, _ = small_run
    predictor = Predictor(run_dir)
    record = _record({"text": 16, "audio": 8, "vision": 12})
    result = predictor.predict_record(record, clip="r1")
    assert result["modalities"] == "T+A+V" and result["task"] == "regression"
    assert [w["word"] for w in result["words"]] == record["words"] and result["words"][1]["start"] == 0.4
    # the same number as `evaluate`'s path (load_run, prepare, predict) on the same arrays
    run = load_run(run_dir)
    plain = MultimodalDataset({m: torch.from_numpy(x)[None] for m, x in record["aligned"].items()},
                              {m: torch.tensor([5]) for m in record["aligned"]}, torch.zeros(1), ["r1"],
                              [record["raw_text"]])
    assert result["score"] == pytest.approx(float(predictions_for(run, plain)[0]), abs=1e-4)
    assert result["labels"] == sentiment_labels(result["score"])
    # removing a modality = giving it the training mean: a record whose audio is that mean agrees
    mean = run.scaler.mean["audio"].numpy().astype(np.float32)
    at_mean = dict(record, aligned={**record["aligned"], "audio": np.tile(mean, (5, 1))})
    assert predictor.predict_record(at_mean)["score"] == pytest.approx(
        result["contributions"]["audio"]["score_without"], abs=1e-4)
    for m, c in result["contributions"].items():
        assert c["contribution"] == pytest.approx(result["score"] - c["score_without"], abs=2e-4), m
    predictor.close()


def test_other_feature_sizes_are_refused_naming_the_run(small_run) -> None:
    run_dir, data = small_run
    with Predictor(run_dir) as predictor:
        with pytest.raises(
            RunMismatch, match=r"reads 16-d text features and `emofuse extract` gives 384-d"
        ) as err:
            predictor.predict_record(_record({"text": 384, "audio": 8, "vision": 12}))
        assert str(data) in str(err.value) and "\n" not in str(err.value)


def test_classifier_gives_class_and_probabilities(tmp_path: Path) -> None:
    data = tmp_path / "syn.pkl"
    splits = make_synthetic(SyntheticConfig(n_train=48, n_valid=16, n_test=16))
    save_mmsa_pickle(splits, data)
    out = tmp_path / "run"
    assert main(["train", "--data", str(data), "--model", "ef_lstm", "--modalities", "T+A", "--classes", "3",
                 "--epochs", "1", "--threads", "1", "--out", str(out), "--quiet", "-o", "hidden=8"]) == 0
    with Predictor(out / "seed_1") as predictor:
        result = predictor.predict_record(_record({"text": 16, "audio": 8}))
    probs = result["probabilities"]
    assert list(probs) == ["-1", "+0", "+1"] and sum(probs.values()) == pytest.approx(1.0, abs=1e-3)
    assert result["class"] == max(probs, key=probs.get) and "score" not in result
    assert set(result["contributions"]) == {"text", "audio"}
    assert all(0.0 <= c["probability_without"] <= 1.0 for c in result["contributions"].values())


def test_resize_words_keeps_type_and_range() -> None:
    crops = np.full((3, 16, 64, 64), 200, np.uint8)
    small = resize_words(crops, (8, 32, 32))
    assert small.shape == (3, 8, 32, 32) and small.dtype == np.uint8 and int(small.max()) == 200
    mel = np.linspace(-10, 0, 3 * 64 * 32).reshape(3, 64, 32).astype(np.float16)
    assert resize_words(mel, (24, 12)).shape == (3, 24, 12)
    with pytest.raises(RunMismatch):
        resize_words(mel, (8, 8, 8))

"""Model comparison: paired bootstrap and the compare_models outputs."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.reports.compare import compare_models, paired_bootstrap
from emofuse.training.config import TrainConfig

SMALL = SyntheticConfig(n_train=96, n_valid=32, n_test=32, max_words=8, min_words=4)


def test_identical_predictions_give_zero_difference():
    rng = np.random.default_rng(1)
    y = rng.uniform(-3, 3, 50)
    p = y + rng.normal(0, 1, 50)
    for metric in ("mae", "acc2_non0"):
        r = paired_bootstrap(p, p.copy(), y, metric, n_boot=200)
        assert r["diff"] == 0 and r["low"] == 0 and r["high"] == 0
        assert r["p"] == 1 and not r["significant"]


def test_clearly_better_model_is_significant():
    rng = np.random.default_rng(2)
    y = rng.uniform(-3, 3, 200)
    y[y == 0] = 1.0
    good = y + rng.normal(0, 0.1, 200)
    bad = -y + rng.normal(0, 0.1, 200)
    r = paired_bootstrap(good, bad, y, "mae")
    assert r["diff"] < 0 and r["high"] < 0 and r["significant"] and r["p"] < 0.01
    r = paired_bootstrap(good, bad, y, "acc2_non0")
    assert r["diff"] > 0 and r["low"] > 0 and r["significant"] and r["p"] < 0.01
    labels = rng.integers(0, 3, 100)
    r = paired_bootstrap(labels, (labels + 1) % 3, labels, "accuracy")
    assert r["diff"] == pytest.approx(1.0) and r["low"] > 0 and r["significant"]


def test_bootstrap_is_seeded_and_rejects_unknown_metric():
    rng = np.random.default_rng(3)
    y, a, b = rng.normal(size=(3, 40))
    assert paired_bootstrap(a, b, y, "mae", seed=5) == paired_bootstrap(a, b, y, "mae", seed=5)
    with pytest.raises(ValueError, match="unknown bootstrap metric"):
        paired_bootstrap(a, b, y, "nope")


def test_compare_models_writes_tables_bootstrap_and_plot(tmp_path):
    splits = make_synthetic(SMALL)
    base = TrainConfig(modalities="T+A", epochs=1, batch_size=16, patience=0, model_options={"hidden": 8})
    result = compare_models(base, ["ef_lstm", "late_fusion"], [1, 2], tmp_path, splits=splits, n_boot=200)
    for name in ("compare.csv", "compare.md", "bootstrap.csv", "compare.png"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "ef_lstm" in result["table"] and "late_fusion" in result["table"]
    assert (tmp_path / "compare.md").read_text().strip() == result["table"]
    assert set(result["summary"]) == {"ef_lstm", "late_fusion"}
    assert result["summary"]["ef_lstm"]["mae"]["n"] == 2
    rows = list(csv.DictReader((tmp_path / "bootstrap.csv").open()))
    assert len(rows) == 2 == len(result["bootstrap"])  # one pair x (mae, acc2_non0)
    assert {r["metric"] for r in rows} == {"mae", "acc2_non0"}
    assert all(float(r["low"]) <= float(r["diff"]) <= float(r["high"]) for r in rows)
    summary_rows = list(csv.DictReader((tmp_path / "compare.csv").open()))
    assert {r["model"] for r in summary_rows} == {"ef_lstm", "late_fusion"}
    assert (tmp_path / "late_fusion" / "seed_2" / "predictions.csv").is_file()

"""`emofuse demo`: two planted sets, every table with its ceilings; the Bayes ceiling is E[y | x]."""

from __future__ import annotations

import json

import numpy as np

from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.reports.demo import DEMO_MODELS, feature_ceilings, run_demo


def test_demo_defaults_hold_both_fusion_matched_models():
    assert {"fusion_matched", "fusion_matched_xattn"} <= set(DEMO_MODELS)


def test_feature_ceiling_is_the_conditional_mean():
    """E[y | x] minimises squared error among all functions of x: scaling it can only hurt,
    and it beats the ceiling that ignores the interaction."""
    for aligned in (True, False):
        cfg = SyntheticConfig(n_train=16, n_valid=16, n_test=1500, aligned=aligned)
        test = make_synthetic(cfg).test
        y = test.labels.numpy()
        ceiling = feature_ceilings(test, cfg)
        mse = np.mean((ceiling["full"] - y) ** 2)
        for scale in (0.9, 1.1):
            assert mse < np.mean((scale * ceiling["full"] - y) ** 2)
        assert mse < np.mean((ceiling["additive"] - y) ** 2) - 0.1
        # and it stays below what the hidden components allow
        assert mse > np.mean((test.extras["oracle_full"] - y) ** 2)


def test_demo_prints_both_sets_with_ceilings(tmp_path, capsys):
    results = run_demo(tmp_path, epochs=1, progress=False, models=("ef_lstm",), workers=1,
                       sizes={"n_train": 64, "n_valid": 32, "n_test": 32})
    assert set(results) == {"synthetic", "synthetic-unaligned"}
    text = capsys.readouterr().out
    assert text.count("Bayes from the inputs: E[y given features]") == 2 and text.count("| ef_lstm |") == 2
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["model"] for r in saved["synthetic-unaligned"]][0] == "ef_lstm"
    assert (tmp_path / "synthetic-unaligned" / "ef_lstm" / "seed_1" / "predictions.csv").is_file()

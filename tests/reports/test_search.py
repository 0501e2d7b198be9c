"""Per-model recipes, the validation-only search, scoped model options and --resume."""

from __future__ import annotations

import csv
import json

import pytest

from emofuse.cli.main import _model_options
from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.reports.compare import compare_models
from emofuse.reports.search import grid_points, model_config, parse_search
from emofuse.training.config import TrainConfig

SMALL = SyntheticConfig(n_train=64, n_valid=24, n_test=24, max_words=6, min_words=3)
TINY = {"hidden": 8}


def test_each_model_gets_its_recipe_unless_one_is_forced():
    base = TrainConfig(epochs=3)
    mctn = model_config(base, "mctn")
    assert (mctn.lr, mctn.batch_size, mctn.grad_clip) == (1e-4, 32, 1.0)
    lmf = model_config(base, "lmf")
    assert (lmf.lr, lmf.batch_size, lmf.weight_decay) == (1e-3, 64, 5e-3)
    assert model_config(base, "mfn").lr == 2e-3 and model_config(base, "mult").grad_clip == 0.8
    same = model_config(base, "mctn", same_recipe=True)
    assert (same.lr, same.batch_size) == (base.lr, base.batch_size)
    forced = model_config(base, "lmf", overrides={"lr": 5e-4})  # what the user typed wins
    assert (forced.lr, forced.weight_decay) == (5e-4, 5e-3)
    assert model_config(base, "tfn").epochs == 3  # the budget is not part of a recipe


def test_search_grid_parsing_and_relative_values():
    grid = parse_search(["lr=1e-4,1e-3,batch_size=32,64", "weight_decay=0"])
    assert grid == {"lr": ["1e-4", "1e-3"], "batch_size": ["32", "64"], "weight_decay": ["0"]}
    points = grid_points(model_config(TrainConfig(), "mctn"), parse_search("lr=x0.5,x1,x3"))
    assert [p["lr"] for p in points] == pytest.approx([5e-5, 1e-4, 3e-4])
    assert len(grid_points(TrainConfig(), grid)) == 4
    for bad, match in [("epochs=3", "cannot search"), ("lr=fast", "not a number"), ("1e-3", "KEY=V1"),
                       ("batch_size=0", "positive")]:
        with pytest.raises(ValueError, match=match):
            parse_search(bad)


def test_search_picks_the_lowest_validation_loss_and_reuses_its_run(tmp_path):
    splits = make_synthetic(SMALL)
    base = TrainConfig(modalities="T+A", epochs=2, patience=0)
    result = compare_models(
        base,
        ["ef_lstm", "late_fusion"],
        [1, 2],
        tmp_path,
        splits=splits,
        n_boot=50,
        model_options={"ef_lstm": TINY, "late_fusion": TINY},
        search=parse_search("lr=x0.1,x3"),
    )
    for model in ("ef_lstm", "late_fusion"):
        record = json.loads((tmp_path / model / "search.json").read_text())
        assert len(record["points"]) == 2 and "test never read" in record["criterion"]
        best = min(record["points"], key=lambda p: p["valid_loss"])
        assert record["chosen"] == best["settings"]
        for seed in (1, 2):
            run = json.loads((tmp_path / model / f"seed_{seed}" / "config.json").read_text())["train"]
            assert run["lr"] == pytest.approx(best["settings"]["lr"])
        assert result["settings"][model]["lr"] == pytest.approx(best["settings"]["lr"])
        # the chosen point's run is the final seed-1 run: the same predictions
        chosen = tmp_path / model / "search" / f"lr={best['settings']['lr']:g}" / "seed_1"
        assert (chosen / "predictions.csv").read_text() == (
            tmp_path / model / "seed_1" / "predictions.csv"
        ).read_text()
    assert "search (validation)" in (tmp_path / "settings.md").read_text()
    # late_fusion's recipe (batch 128, weight decay 1e-2) is applied, not ef_lstm's
    run = json.loads((tmp_path / "late_fusion" / "seed_1" / "config.json").read_text())["train"]
    assert (run["batch_size"], run["weight_decay"]) == (128, 1e-2)


def test_resume_reuses_finished_runs_and_continues_interrupted_ones(tmp_path):
    splits = make_synthetic(SMALL)
    base = TrainConfig(modalities="T+A", epochs=1, patience=0, model_options=TINY)
    compare_models(base, ["ef_lstm", "late_fusion"], [1], tmp_path, splits=splits, n_boot=50)
    best = tmp_path / "ef_lstm" / "seed_1" / "best.pt"
    stamp = best.stat().st_mtime_ns
    first_log = (tmp_path / "late_fusion" / "seed_1" / "log.csv").read_text().splitlines()
    # the same command again with --resume: nothing is trained again
    compare_models(base, ["ef_lstm", "late_fusion"], [1], tmp_path, splits=splits, n_boot=50, resume=True)
    assert best.stat().st_mtime_ns == stamp
    # a run cut short at one epoch of two continues where it stopped
    longer = TrainConfig(modalities="T+A", epochs=2, patience=0, model_options=TINY)
    compare_models(longer, ["ef_lstm", "late_fusion"], [1], tmp_path, splits=splits, n_boot=50, resume=True)
    rows = list(csv.DictReader((tmp_path / "late_fusion" / "seed_1" / "log.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert (tmp_path / "late_fusion" / "seed_1" / "log.csv").read_text().splitlines()[:2] == first_log


def test_model_options_are_scoped_per_model():
    parsed = [("tfn:hidden", 32), ("fusion_matched:time_code", 8)]
    assert _model_options(parsed, ["tfn", "fusion_matched"]) == {
        "tfn": {"hidden": 32},
        "fusion_matched": {"time_code": 8},
    }
    assert _model_options([("hidden", 8)], ["ef_lstm"]) == {"ef_lstm": {"hidden": 8}}  # train: the one model
    with pytest.raises(ValueError, match="scope the option"):
        _model_options([("hidden", 8)], ["tfn", "ef_lstm"])
    with pytest.raises(ValueError, match="'mult' is not among"):
        _model_options([("mult:layers", 1)], ["tfn", "ef_lstm"])

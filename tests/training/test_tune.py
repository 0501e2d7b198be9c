"""`emofuse tune`: a 3-trial Optuna study on tiny synthetic data, the search space parser, and
the guarantee that the test split is not read until the search is over."""

from __future__ import annotations

import csv
import json

import pytest
from small_runs import SMALL, config

from emofuse.cli.main import main
from emofuse.data.dataset import DatasetSplits, MultimodalDataset
from emofuse.data.mmsa import save_mmsa_pickle
from emofuse.data.synthetic import make_synthetic
from emofuse.errors import UserError
from emofuse.evaluation.evaluate import evaluate_run
from emofuse.training.config import TrainConfig
from emofuse.training.trainer import train_run

optuna = pytest.importorskip("optuna", reason="emofuse tune needs the tune extra (optuna)")

from emofuse.training.tune import Param, load_space, parse_param, trial_config, tune  # noqa: E402

SEALED = ("features", "lengths", "labels", "ids", "raw_text", "extras")


class SealedTest(MultimodalDataset):
    """A test split that fails the test if read before OUT/best exists (the search's end)."""

    def seal(self, best_dir) -> SealedTest:
        object.__setattr__(self, "_best_dir", best_dir)
        return self

    def __getattribute__(self, name):
        best = object.__getattribute__(self, "__dict__").get("_best_dir")
        if name in SEALED and best is not None and not best.exists():
            raise AssertionError(f"the test split's {name} was read during the search")
        return object.__getattribute__(self, name)


def _sealed_splits(splits: DatasetSplits, out) -> DatasetSplits:
    t = splits.test
    sealed = SealedTest(t.features, t.lengths, t.labels, t.ids, t.raw_text, t.source, t.extras)
    return DatasetSplits(
        splits.train, splits.valid, sealed.seal(out / "best"), splits.name, splits.class_names
    )


def test_three_trial_study_never_reads_test_and_its_best_is_a_normal_run(tmp_path):
    splits = make_synthetic(SMALL)
    data = tmp_path / "small.pkl"
    save_mmsa_pickle(splits, data)
    base = config(data=str(data), epochs=3)
    out = tmp_path / "tune"
    space = [
        parse_param("lr=log:1e-3:3e-2"),
        parse_param("hidden=int:4:12"),
        parse_param("batch_size=cat:16,32"),
    ]
    result = tune(base, _sealed_splits(splits, out), space, out, trials=3, prune_startup=1, progress=False)

    trials = result.study.trials
    assert len(trials) == 3 and {t.state.name for t in trials} <= {"COMPLETE", "PRUNED"}
    for t in trials:  # every trial is a run folder that holds validation results only
        run = out / "trials" / f"trial_{t.number:04d}"
        assert (run / "best.pt").is_file() and (run / "log.csv").is_file()
        epochs = len((run / "log.csv").read_text().splitlines()) - 1
        if t.state.name == "PRUNED":  # stopped by the pruner after an epoch, before the end
            assert epochs == len(t.intermediate_values) < 3 and not (run / "metrics.json").exists()
            continue
        assert epochs == 3
        with open(run / "predictions.csv") as f:
            assert {r["split"] for r in csv.DictReader(f)} == {"valid"}
        assert "test" not in json.loads((run / "metrics.json").read_text())
        cfg = TrainConfig.load(run / "config.json")
        assert cfg.model_options["hidden"] == t.params["hidden"] and cfg.lr == t.params["lr"]
    best = result.study.best_trial
    log = (out / "trials" / f"trial_{best.number:04d}" / "log.csv").read_text().splitlines()[1:]
    assert best.value == pytest.approx(min(float(r.split(",")[2]) for r in log), abs=1e-6)

    # OUT/best: a normal run folder that `evaluate` reopens, its test scored after the search
    metrics = json.loads((out / "best" / "metrics.json").read_text())
    assert metrics["test"]["mae"] == pytest.approx(result.best_metrics["test"]["mae"])
    assert evaluate_run(out / "best")["test"]["mae"] == pytest.approx(metrics["test"]["mae"], abs=1e-5)
    with open(out / "study.csv") as f:
        assert len(list(csv.DictReader(f))) == 3
    assert (out / "history.png").stat().st_size > 1000
    assert f"| {best.number} |" in result.table

    # the same study continued from its database: trials accumulate
    again = tune(base, splits, space, out, trials=1, prune_startup=1, progress=False)
    assert len(again.study.trials) == 4


def test_cli_tune_prints_the_trials_and_the_best_run(tmp_path, capsys):
    splits = make_synthetic(SMALL)
    data = tmp_path / "small.pkl"
    save_mmsa_pickle(splits, data)
    space = tmp_path / "space.yaml"
    space.write_text("lr: log:1e-3:3e-2\nhidden: [4, 8]\n")
    code = main(["tune", "--data", str(data), "--model", "ef_lstm", "--modalities", "T+A", "--epochs", "2",
                 "--batch-size", "16", "--patience", "0", "--space-file", str(space), "--trials", "2",
                 "--out", str(tmp_path / "t"), "--study-name", "cli", "--quiet"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "| trial | state | best valid loss | epochs | hidden | lr |" in printed
    assert "its run folder:" in printed and (tmp_path / "t" / "study.db").is_file()


def test_space_items_and_files_parse_and_bad_ones_are_named(tmp_path):
    assert parse_param("lr=log:1e-4:1e-2") == Param("lr", "log", 1e-4, 1e-2)
    assert parse_param("batch_size=cat:16,32").choices == (16, 32)
    assert parse_param("dropout=float:0:0.5").high == 0.5
    for bad, match in [("lr", "KEY=KIND"), ("lr=log:0:1", "positive"), ("lr=gauss:1:2", "unknown kind"),
                       ("hidden=int:8", "LOW:HIGH"), ("seed=int:1:3", "fixed"), ("x=float:2:1", "below")]:
        with pytest.raises(ValueError, match=match):
            parse_param(bad)
    toml = tmp_path / "s.toml"
    toml.write_text('lr = "log:1e-4:1e-2"\n[hidden]\ntype = "int"\nlow = 8\nhigh = 64\n')
    assert [p.name for p in load_space(toml)] == ["lr", "hidden"]
    broken = tmp_path / "s.json"
    broken.write_text("{lr: }")
    with pytest.raises(UserError, match=r"s\.json: not valid json"):
        load_space(broken)
    # TrainConfig fields go to the config, everything else to the model's options
    cfg = trial_config(config(), {"lr": 0.01, "hidden": 16})
    assert cfg.lr == 0.01 and cfg.model_options == {"hidden": 16}


def test_epoch_callback_sees_every_epoch_and_can_stop_the_run(tmp_path, splits):
    seen = []

    class Stop(Exception):
        pass

    def callback(epoch, row):
        seen.append((epoch, row["valid_loss"]))
        if epoch == 2:
            raise Stop

    with pytest.raises(Stop):
        train_run(config(epochs=4), splits, tmp_path / "run", progress=False, callbacks=[callback])
    assert [e for e, _ in seen] == [1, 2]
    # the stopped run's finished epochs are saved: --resume carries it to the end
    resumed = train_run(config(epochs=4), splits, tmp_path / "run", resume=True, progress=False)
    assert resumed.epochs_run == 4

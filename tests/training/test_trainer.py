"""The trainer: run folder contents, validation-only selection, atomic checkpoints, resume."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from small_runs import config

from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.evaluation.evaluate import evaluate_run
from emofuse.training.checkpoint import CheckpointError, load_checkpoint
from emofuse.training.multiseed import train_seeds
from emofuse.training.trainer import train_run


def test_run_folder_has_everything(tmp_path, splits):
    result = train_run(config(), splits, tmp_path / "run", progress=False)
    run = tmp_path / "run"
    for name in ("config.json", "log.csv", "best.pt", "last.pt", "metrics.json", "predictions.csv"):
        assert (run / name).is_file(), name
    saved = json.loads((run / "config.json").read_text())
    assert saved["train"]["model"] == "ef_lstm" and saved["spec"]["modalities"] == ["text", "audio"]
    log = (run / "log.csv").read_text().strip().splitlines()
    assert len(log) == 1 + 3
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics) >= {"valid", "test", "best_epoch"}
    assert 0 <= metrics["test"]["acc2_non0"] <= 1
    preds = (run / "predictions.csv").read_text().splitlines()
    assert len(preds) == 1 + 32 + 32
    assert result.metrics["test"]["mae"] == pytest.approx(metrics["test"]["mae"])


def test_best_checkpoint_is_the_lowest_validation_loss(tmp_path, splits):
    train_run(config(epochs=5), splits, tmp_path / "run", progress=False)
    rows = [line.split(",") for line in (tmp_path / "run" / "log.csv").read_text().splitlines()[1:]]
    valid = [float(r[2]) for r in rows]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["epoch"] == 1 + valid.index(min(valid))


def test_resume_gives_the_same_result_as_an_uninterrupted_run(tmp_path, splits):
    full = train_run(
        config(epochs=4, model="fusion_matched", model_options={"hidden": 8, "time_code": 8}),
        splits,
        tmp_path / "full",
        progress=False,
    )
    # interrupted after 2 epochs: a run with epochs=2, then resumed with epochs=4
    train_run(
        config(epochs=2, model="fusion_matched", model_options={"hidden": 8, "time_code": 8}),
        splits,
        tmp_path / "part",
        progress=False,
    )
    resumed = train_run(
        config(epochs=4, model="fusion_matched", model_options={"hidden": 8, "time_code": 8}),
        splits,
        tmp_path / "part",
        resume=True,
        progress=False,
    )
    assert resumed.epochs_run == 4
    a = load_checkpoint(tmp_path / "full" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "part" / "last.pt")["model"]
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0)
    assert resumed.metrics["test"] == full.metrics["test"]
    assert (tmp_path / "part" / "log.csv").read_text() .count("\n") == 5


def test_resume_refuses_changed_settings(tmp_path, splits):
    train_run(config(epochs=1), splits, tmp_path / "run", progress=False)
    with pytest.raises(CheckpointError, match="different settings.*lr"):
        train_run(config(epochs=2, lr=0.5), splits, tmp_path / "run", resume=True, progress=False)


def test_half_written_checkpoint_gives_a_clear_error(tmp_path, splits):
    train_run(config(epochs=1), splits, tmp_path / "run", progress=False)
    last = tmp_path / "run" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="last.pt.*corrupt or incomplete"):
        train_run(config(epochs=2), splits, tmp_path / "run", resume=True, progress=False)


def test_seeds_summary_and_reproducibility(tmp_path, splits):
    results, summary = train_seeds(config(epochs=2), splits, tmp_path / "multi", [1, 2, 1], progress=False)
    assert summary["test"]["mae"]["n"] == 3
    assert results[0].metrics["test"] == results[2].metrics["test"]  # same seed, same result
    assert (tmp_path / "multi" / "summary.json").is_file()


def test_classification_training_and_evaluate(tmp_path):
    data = make_synthetic(
        SyntheticConfig(n_train=96, n_valid=32, n_test=32, max_words=8, min_words=4, classes=3)
    )
    result = train_run(
        config(data="synthetic-classes", model="late_fusion"), data, tmp_path / "cls", progress=False
    )
    assert set(result.metrics["test"]) >= {"accuracy", "f1_weighted", "confusion_matrix", "per_class"}
    assert (tmp_path / "cls" / "confusion_test.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reopens_a_run_and_reproduces_its_metrics(tmp_path):
    data = make_synthetic()  # evaluate reloads by name, so the run must use the full default
    result = train_run(config(epochs=1), data, tmp_path / "run", progress=False)
    report = evaluate_run(tmp_path / "run")
    assert report["test"]["mae"] == pytest.approx(result.metrics["test"]["mae"], abs=1e-6)
    assert report["test"]["n"] == len(data.test)


def test_evaluate_trusts_the_checkpoint_when_config_json_names_another_model(tmp_path, splits, capsys):
    from emofuse.data.mmsa import save_mmsa_pickle

    save_mmsa_pickle(splits, tmp_path / "small.pkl")
    result = train_run(
        config(epochs=1, data=str(tmp_path / "small.pkl")), splits, tmp_path / "run", progress=False
    )
    path = tmp_path / "run" / "config.json"
    saved = json.loads(path.read_text())
    saved["train"].update(model="late_fusion", model_options={"hidden": 32})  # overwritten by hand
    path.write_text(json.dumps(saved))
    report = evaluate_run(tmp_path / "run")
    assert report["test"]["mae"] == pytest.approx(result.metrics["test"]["mae"], abs=1e-6)
    err = capsys.readouterr().err
    assert "config.json disagrees with best.pt on model, model_options" in err and "ef_lstm" in err


def test_evaluate_names_a_checkpoint_whose_weights_do_not_fit(tmp_path, splits):
    train_run(config(epochs=1), splits, tmp_path / "run", progress=False)
    best = tmp_path / "run" / "best.pt"
    ckpt = load_checkpoint(best)
    ckpt["model_options"] = {"hidden": 16}  # a record that no longer matches the weights
    torch.save(ckpt, best)
    with pytest.raises(CheckpointError, match=r"best\.pt: the weights do not fit a ef_lstm model"):
        evaluate_run(tmp_path / "run")


def test_mean_std_leaves_out_and_counts_nan_seeds():
    from emofuse.training.multiseed import dropped_note, mean_std, summarise
    from emofuse.training.trainer import RunResult

    assert mean_std([0.5, float("nan"), 0.7]) == pytest.approx((0.6, 0.1414213), abs=1e-6)
    assert all(map(math.isnan, mean_std([float("nan"), None])))
    metrics = [{"test": {"accuracy": a, "f1_weighted": 0.5, "f1_macro": f}} for a, f in
               [(0.6, float("nan")), (0.8, 0.4), (0.7, float("nan"))]]
    summary = summarise([RunResult(None, m, 1, 1) for m in metrics])
    assert summary["accuracy"] == {
        "mean": pytest.approx(0.7),
        "std": pytest.approx(0.1),
        "n": 3,
        "dropped": 0,
    }
    assert summary["f1_macro"] == {"mean": 0.4, "std": 0.0, "n": 1, "dropped": 2}
    assert (
        dropped_note(summary, 3)
        == "undefined (NaN) for some seeds and left out of mean ± std: f1_macro (2 of 3)"
    )
    assert dropped_note({"accuracy": summary["accuracy"]}, 3) is None


def test_a_diverging_run_is_a_user_error_naming_the_lr(tmp_path, splits):
    from emofuse.errors import UserError

    with pytest.raises(UserError, match=r"diverged at epoch \d+.*--lr"):
        train_run(config(lr=1e30, grad_clip=0.0, epochs=3), splits, tmp_path / "run", progress=False)


def test_run_folder_blocked_by_a_file_is_one_clear_error(tmp_path, splits):
    from emofuse.errors import UserError

    (tmp_path / "taken").write_text("a file where the run folder should go")
    with pytest.raises(UserError, match="taken.*a file is in the way"):
        train_run(config(epochs=1), splits, tmp_path / "taken" / "seed_1", progress=False)


def test_evaluate_names_a_missing_or_broken_run(tmp_path, splits):
    with pytest.raises(CheckpointError, match="not a run folder"):
        evaluate_run(tmp_path)
    train_run(config(epochs=1), splits, tmp_path / "run", progress=False)
    shutil.copy(tmp_path / "run" / "config.json", tmp_path / "config.json")
    (tmp_path / "best.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="best.pt"):
        evaluate_run(tmp_path)

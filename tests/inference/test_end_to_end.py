"""extract -> train -> predict / explain on generated media, and what broken clips give the user."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
from extract_media import (  # noqa: E402
    NEW_SENTENCE,
    broken_inputs,
    needs_extraction_stack,
    speaking_clip,
    speech,
    write_sample_folder,
    write_wav,
)

from emofuse.cli.main import main  # noqa: E402

pytestmark = needs_extraction_stack()

NEW = NEW_SENTENCE


def _errors(stderr: str) -> list[str]:
    """emofuse's error lines (the model libraries print their own loading notes on stderr)."""
    assert "Traceback" not in stderr
    return [line for line in stderr.splitlines() if line.startswith("emofuse: error: ")]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, Path]:
    """A generated MMSA-FET folder, extracted, and two 1-epoch runs (T+A+V aligned, T+A unaligned) on it."""
    root = tmp_path_factory.mktemp("e2e")
    write_sample_folder(root / "fet")
    cache = root / "cache"
    assert main(["extract", str(root / "fet"), "--out", str(root / "feat.pkl"), "--cache", str(cache),
                 "--quiet"]) == 0
    # the T+A run reads the unaligned pickle (audio frames at 25 Hz), so both layouts are covered
    for modalities, pickle in (("T+A+V", "feat.pkl"), ("T+A", "feat_unaligned.pkl")):
        assert main(["train", "--data", str(root / pickle), "--model", "fusion_matched", "--modalities",
                     modalities, "--epochs", "1", "--threads", "1", "--batch-size", "2", "--quiet",
                     "--out", str(root / modalities.replace("+", "")), "-o", "hidden=16"]) == 0
    times = speaking_clip(root / "new.mp4", NEW.split())
    audio, _ = speech(NEW.split())
    write_wav(root / "new.wav", audio)
    broken = broken_inputs(root / "broken", ["this", "is", "bad"])
    return {"root": root, "cache": cache, "tav": root / "TAV" / "seed_1", "ta": root / "TA" / "seed_1",
            "times": times, **{f"broken_{k}": v for k, v in broken.items()}}


def test_predict_json_for_a_new_clip(trained, capsys) -> None:
    code = main(["predict", str(trained["root"] / "new.mp4"), "--run", str(trained["tav"]), "--json",
                 "--cache", str(trained["cache"])])
    assert code == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["modalities"] == "T+A+V" and result["model"] == "fusion_matched"
    assert result["word_source"] == "asr:whisper-base"
    found = [w["word"].strip(".,!?").lower() for w in result["words"]]
    assert found == NEW.split()
    # recognised word ends agree with espeak's own timing within a fifth of a second
    for w, (_, end) in zip(result["words"], trained["times"], strict=True):
        assert abs(w["end"] - end) < 0.2
    assert result["labels"]["2"] == ("non-negative" if result["score"] >= 0 else "negative")
    assert set(result["contributions"]) == {"text", "audio", "vision"}
    for c in result["contributions"].values():
        assert c["contribution"] == pytest.approx(result["score"] - c["score_without"], abs=2e-4)
    assert {"decode", "words", "face", "text", "model", "total"} <= set(result["timings"])
    assert result["face_fraction"] == 1.0


def test_wav_with_transcript_gives_t_a_and_a_vision_run_refuses_it(trained, capsys) -> None:
    wav = str(trained["root"] / "new.wav")
    assert main(["predict", wav, "--transcript", NEW, "--run", str(trained["ta"]), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert result["modalities"] == "T+A" and result["word_source"] == "forced:pocketsphinx"
    assert result["features"] == "unaligned"
    assert [w["word"] for w in result["words"]] == NEW.split()
    assert main(["predict", wav, "--transcript", NEW, "--run", str(trained["tav"])]) == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "no video track" in err[0] and "reads vision (T+A+V)" in err[0]


def test_broken_clips_give_one_line_each_and_the_good_one_its_prediction(trained, capsys) -> None:
    reasons = {"unreadable_file": "unreadable_file", "zero_bytes": "unreadable_file",
               "no_audio_track": "no_audio_track", "no_face": "no_face", "no_speech": "no_speech",
               "too_short": "too_short"}
    clips = [str(trained["root"] / "new.mp4")] + [str(trained[f"broken_{k}"]) for k in reasons]
    clips.append(str(trained["root"] / "absent.mp4"))
    code = main(["predict", *clips, "--run", str(trained["tav"]), "--json", "--cache", str(trained["cache"])])
    assert code == 2
    captured = capsys.readouterr()
    results = json.loads(captured.out)
    assert [r["clip"] for r in results] == clips
    assert "score" in results[0] and "error" not in results[0]
    got = {r["clip"]: r["error"]["reason"] for r in results[1:]}
    want = {str(trained[f"broken_{k}"]): v for k, v in reasons.items()}
    want[clips[-1]] = "missing_file"
    assert got == want
    lines = captured.err.strip().splitlines()
    assert len([line for line in lines if line.startswith("emofuse: error: ")]) == len(want)


def test_a_run_on_another_feature_set_is_one_line(trained, tmp_path: Path, capsys) -> None:
    run = tmp_path / "syn"
    assert main(["train", "--data", "synthetic", "--model", "ef_lstm", "--modalities", "T+A", "--epochs", "1",
                 "--threads", "1", "--quiet", "--out", str(run), "-o", "hidden=8"]) == 0
    capsys.readouterr()
    code = main(
        ["predict", str(trained["root"] / "new.wav"), "--transcript", NEW, "--run", str(run / "seed_1")]
    )
    assert code == 2
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "reads 16-d text features and `emofuse extract` gives 384-d" in err[0]


def test_explain_draws_matching_matrices(trained, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.png"
    assert main(["explain", str(trained["root"] / "new.mp4"), "--run", str(trained["tav"]), "--out", str(out),
                 "--cache", str(trained["cache"])]) == 0
    text = capsys.readouterr().out
    assert out.stat().st_size > 10_000 and out.read_bytes()[:4] == b"\x89PNG"
    assert "match_audio heat map" in text and "match_vision heat map" in text and "alpha_tensor" in text
    assert "word contributions: " in text


def test_explain_with_raw_encoders_shows_harris_frames(trained, tmp_path: Path, capsys) -> None:
    run = tmp_path / "raw"
    assert main(["train", "--data", "synthetic-raw", "--model", "fusion_matched", "--modalities", "A+V",
                 "--video-encoder", "harris3d_cnn", "--audio-encoder", "spectro_cnn", "--encoder-dim", "8",
                 "-E", "vision:channels=[4]", "-E", "audio:channels=[8]", "--epochs", "1", "--threads", "1",
                 "--quiet", "--out", str(run)]) == 0
    capsys.readouterr()
    out = tmp_path / "raw.png"
    assert main(["explain", str(trained["root"] / "new.mp4"), "--run", str(run / "seed_1"), "--out", str(out),
                 "--cache", str(trained["cache"])]) == 0
    text = capsys.readouterr().out
    assert "harris3d attention frames" in text and out.is_file()



def test_an_audio_only_run_loads_no_text_model_nor_face(trained, tmp_path: Path, capsys) -> None:
    from emofuse.inference import Predictor

    run = tmp_path / "A"
    assert (
        main(
            [
                "train",
                "--data",
                str(trained["root"] / "feat.pkl"),
                "--model",
                "fusion_matched",
                "--modalities",
                "A",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--batch-size",
                "2",
                "--quiet",
                "--out",
                str(run),
                "-o",
                "hidden=16",
            ]
        )
        == 0
    )
    with Predictor(run / "seed_1") as predictor:
        # a video clip: its face is not wanted by an A run, so it is not even decoded
        result = predictor.predict(trained["root"] / "new.mp4", NEW)
        assert predictor.extractor._embedder is None and predictor.extractor.face is None
    assert result["modalities"] == "A" and set(result["contributions"]) == {"audio"}
    assert not {"text", "face"} & set(result["timings"]) and result["face_fraction"] is None
    assert [w["word"] for w in result["words"]] == NEW.split()


def test_speaker_reference_clips_normalise_a_new_speaker_as_training_did(
    trained, tmp_path: Path, capsys
) -> None:
    import numpy as np
    from fake_ravdess import fake_ravdess

    from emofuse.inference import Predictor

    fake_ravdess(tmp_path / "rav")
    run = tmp_path / "rav_run"
    assert (
        main(
            [
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
                "--epochs",
                "1",
                "--threads",
                "1",
                "--out",
                str(run),
                "--quiet",
            ]
        )
        == 0
    )
    capsys.readouterr()
    wav = trained["root"] / "new.wav"
    with pytest.warns(UserWarning, match="speaker_norm=meanvar.*without reference clips of the speaker"):
        Predictor(run / "seed_1").close()
    # the clip as its own reference (both cut into the loader's windows): its patches, as fed to the
    # model, have each band at -50 dB mean and 20 dB spread, as every actor's clips had in training
    with Predictor(run / "seed_1", speaker_reference=[wav]) as predictor:
        features = predictor.extract(wav)
        data = predictor.dataset(features.record(), {"audio": predictor.raw_audio(features)})
        fed = data.extras["raw_audio"].array[0].astype(np.float64)  # words x n_mels x steps
        frames = fed.transpose(1, 0, 2).reshape(fed.shape[1], -1)
        assert fed.shape[1:] == (64, 100)
        np.testing.assert_allclose(frames.mean(axis=1), -50.0, atol=0.1)
        np.testing.assert_allclose(frames.std(axis=1), 20.0, rtol=0.01)
    # from the command line: a folder of the speaker's clips, then the prediction
    refs = tmp_path / "refs"
    refs.mkdir()
    (refs / "a.wav").write_bytes(wav.read_bytes())
    assert (
        main(
            [
                "predict",
                str(wav),
                "--transcript",
                NEW,
                "--run",
                str(run / "seed_1"),
                "--speaker-ref",
                str(refs),
                "--json",
            ]
        )
        == 0
    )
    (result,) = json.loads(capsys.readouterr().out)
    assert result["class"] in result["probabilities"]
    # references for a run trained without speaker normalisation, or a path that is not there: one line each
    assert (
        main(
            ["predict", str(wav), "--transcript", NEW, "--run", str(trained["ta"]), "--speaker-ref", str(wav)]
        )
        == 2
    )
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "trained without speaker normalisation" in err[0]
    assert (
        main(["predict", str(wav), "--run", str(run / "seed_1"), "--speaker-ref", str(tmp_path / "nope")])
        == 2
    )
    err = _errors(capsys.readouterr().err)
    assert len(err) == 1 and "--speaker-ref" in err[0] and "no such file or folder" in err[0]

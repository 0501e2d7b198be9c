"""Several runs predicting as one (`EnsemblePredictor`) through `predict`, `serve` and `explain`.

Clips are faked at the extractor (`ClipExtractor.extract` gives synthetic word-aligned features of
the synthetic pickle's sizes), so these tests need no media stack and count the extractions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_predict import _record as clip_record  # the same one-clip record the single-run tests use

from emofuse.cli.main import main
from emofuse.data.mmsa import save_mmsa_pickle
from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.evaluation.ensemble import IncompatibleRuns
from emofuse.features.clip import ClipExtractor, ClipFeatures
from emofuse.features.speech import Words
from emofuse.inference.ensemble import EnsemblePredictor, open_predictor
from emofuse.inference.predict import Predictor

DIMS = {"text": 16, "audio": 8, "vision": 12}  # the synthetic pickle's feature sizes
WORDS = 5


def _train(out: Path, data: Path, *extra: str) -> None:
    assert main(["train", "--data", str(data), "--model", "ef_lstm", "--epochs", "1", "--threads", "1",
                 "--out", str(out), "--quiet", "-o", "hidden=8", *extra]) == 0


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny ef_lstm runs on one synthetic pickle: T+A+V regression seeds 1 and 2, a text-only run of
    the same extraction, a text-only run whose layout keeps 30 words (another extraction), and a
    3-class classifier with seeds 1 and 2."""
    root = tmp_path_factory.mktemp("ensemble")
    data = root / "syn.pkl"
    save_mmsa_pickle(make_synthetic(SyntheticConfig(n_train=48, n_valid=16, n_test=16)), data)
    _train(root / "tav", data, "--seeds", "1", "2")
    _train(root / "t", data, "--modalities", "T")
    _train(root / "t30", data, "--modalities", "T", "--max-words", "30")
    _train(root / "cls", data, "--classes", "3", "--seeds", "1", "2")
    return {"tav": root / "tav", "tav1": root / "tav" / "seed_1", "tav2": root / "tav" / "seed_2",
            "t": root / "t" / "seed_1", "t30": root / "t30" / "seed_1", "cls": root / "cls",
            "cls1": root / "cls" / "seed_1", "cls2": root / "cls" / "seed_2"}


def _record(seed: int = 0) -> dict:
    return clip_record(DIMS, WORDS, seed)


@pytest.fixture()
def fake_clips(monkeypatch) -> list[tuple[str, tuple[int, bool, bool]]]:
    """Every extraction gives the same synthetic clip; the list records (path, (max_words, video, text))."""
    calls: list[tuple[str, tuple[int, bool, bool]]] = []

    def extract(self: ClipExtractor, path, transcript=None) -> ClipFeatures:
        calls.append((str(path), (self.config.max_words, self.config.video, self.config.text)))
        record = _record()
        words = Words(record["words"], record["starts"], record["ends"], "test")
        return ClipFeatures(str(path), 2.0, words, {}, record["aligned"], {}, None,
                            np.zeros((WORDS, 8, 8), np.float16), 1.0, {}, {"decode": 0.01, "words": 0.02})

    monkeypatch.setattr(ClipExtractor, "extract", extract)
    return calls


def test_probabilities_are_averaged_and_each_member_is_listed(runs) -> None:
    record = _record()
    singles = []
    for run in (runs["cls1"], runs["cls2"]):
        with Predictor(run) as one:
            singles.append(one.predict_record(record))
    with EnsemblePredictor([runs["cls1"], runs["cls2"]]) as ensemble:
        result = ensemble.predict_record(record)
    names = list(singles[0]["probabilities"])
    mean = {n: np.mean([s["probabilities"][n] for s in singles]) for n in names}
    assert list(result["probabilities"]) == names
    assert all(result["probabilities"][n] == pytest.approx(mean[n], abs=2e-4) for n in names)
    assert result["class"] == max(result["probabilities"], key=result["probabilities"].get)
    assert result["probability"] == result["probabilities"][result["class"]]
    assert [m["run"] for m in result["members"]] == ["cls/seed_1", "cls/seed_2"]
    for member, single in zip(result["members"], singles, strict=True):
        assert member["class"] == single["class"] and member["probabilities"] == single["probabilities"]
    # the single-run shape, plus the members
    assert set(singles[0]) | {"members"} == set(result) and result["run"] == "ensemble of 2 runs"


def test_runs_of_other_modalities_share_an_extraction_and_average_contributions(runs) -> None:
    record = _record(1)
    with Predictor(runs["tav1"]) as tav, Predictor(runs["t"]) as text:
        singles = [tav.predict_record(record), text.predict_record(record)]
    with EnsemblePredictor([runs["tav1"], runs["t"]]) as ensemble:
        # one layout: one extractor, running every stage either run reads
        assert len(ensemble.extractors) == 1
        config = ensemble.extractors[0].config
        assert config.video and config.require_video and config.text
        result = ensemble.predict_record(record)
    assert result["modalities"] == "T+A+V" and [m["modalities"] for m in result["members"]] == ["T+A+V", "T"]
    assert result["score"] == pytest.approx(np.mean([s["score"] for s in singles]), abs=2e-4)
    contributions = result["contributions"]
    # text: both runs lose it; audio and vision: the text-only run predicts as it did
    assert contributions["text"]["contribution"] == pytest.approx(
        np.mean([s["contributions"]["text"]["contribution"] for s in singles]), abs=3e-4)
    for m in ("audio", "vision"):
        assert contributions[m]["contribution"] == pytest.approx(
            singles[0]["contributions"][m]["contribution"] / 2, abs=3e-4)


def test_predict_with_two_runs_gives_members_and_extracts_once_per_layout(runs, fake_clips, capsys) -> None:
    args = ["predict", "clip.mp4", "--run", str(runs["tav1"]), "--run", str(runs["t"]), "--run",
            str(runs["t30"]), "--json"]
    assert main(args) == 0
    [result] = json.loads(capsys.readouterr().out)
    # the T+A+V and the text run share one extraction (with video), the 30-word run has its own
    assert sorted(c[1] for c in fake_clips) == [(30, False, True), (50, True, True)]
    assert [m["run"] for m in result["members"]] == ["tav/seed_1", "t/seed_1", "t30/seed_1"]
    assert result["score"] == pytest.approx(np.mean([m["score"] for m in result["members"]]), abs=2e-4)
    assert {"decode", "words", "model", "total"} <= set(result["timings"])
    assert result["duration"] == 2.0
    assert [w["word"] for w in result["words"]] == [f"w{i}" for i in range(WORDS)]
    # a folder of seeds is its runs; the text output names each run's score
    assert main(["predict", "clip.mp4", "--run", str(runs["tav"])]) == 0
    out = capsys.readouterr().out
    assert "  runs: tav/seed_1 " in out and ", tav/seed_2 " in out
    # one run: as before, no members
    assert main(["predict", "clip.mp4", "--run", str(runs["tav1"]), "--json"]) == 0
    assert "members" not in json.loads(capsys.readouterr().out)[0]


def test_incompatible_runs_are_refused_before_any_clip(runs, fake_clips, capsys) -> None:
    with pytest.raises(IncompatibleRuns, match="cannot be averaged") as err:
        EnsemblePredictor([runs["tav1"], runs["cls1"]])
    assert str(runs["tav1"]) in str(err.value) and str(runs["cls1"]) in str(err.value)
    assert main(["predict", "clip.mp4", "--run", str(runs["tav1"]), "--run", str(runs["cls"])]) == 2
    assert capsys.readouterr().err.startswith("emofuse: error: runs ") and not fake_clips
    assert isinstance(open_predictor([runs["tav1"]]), Predictor)


def test_explain_refuses_several_runs_naming_them(runs, tmp_path, capsys) -> None:
    for given in (["--run", str(runs["tav1"]), "--run", str(runs["t"])], ["--run", str(runs["tav"])]):
        assert main(["explain", "clip.mp4", *given, "--out", str(tmp_path / "x.png")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("emofuse: error: explain shows one model's internals") and "\n" not in err
        assert str(runs["tav1"]) in err and (str(runs["t"]) in err or str(runs["tav2"]) in err)


def test_serve_answers_with_the_ensemble_and_its_members(runs, fake_clips, tmp_path) -> None:
    testclient = pytest.importorskip("fastapi.testclient", reason="the serve extra is not installed")
    from emofuse.serve import Limits, PredictorPool, create_app

    record = _record(2)
    with Predictor(runs["tav1"]) as tav, Predictor(runs["t"]) as text:
        singles = [tav.predict_record(record), text.predict_record(record)]
    pool = PredictorPool([str(runs["tav1"]), str(runs["t"])], workers=1, queue_size=1, warm=False)
    try:
        with testclient.TestClient(create_app(pool, Limits(upload_dir=str(tmp_path)))) as client:
            body = {m: x.tolist() for m, x in record["aligned"].items()}
            body.update(words=record["words"], starts=record["starts"].tolist(), ends=record["ends"].tolist())
            response = client.post("/v1/predict/features", json=body)
            assert response.status_code == 200, response.text
            result = response.json()
            assert [m["run"] for m in result["members"]] == ["tav/seed_1", "t/seed_1"]
            assert [m["score"] for m in result["members"]] == [s["score"] for s in singles]
            assert result["score"] == pytest.approx(np.mean([s["score"] for s in singles]), abs=2e-4)
            # an upload: the ensemble's prediction, without the one-model explain picture
            upload = client.post("/v1/predict", files={"file": ("new.mp4", b"fake", "video/mp4")})
            assert upload.status_code == 200, upload.text
            answer = upload.json()
            assert answer["clip"] == "new.mp4" and len(answer["members"]) == 2 and "explain_url" not in answer
            assert len(fake_clips) == 1
            about = client.get("/v1/model").json()
            assert about["run"] == "ensemble of 2 runs" and about["modalities"] == "T+A+V"
            assert [m["run"] for m in about["members"]] == ["tav/seed_1", "t/seed_1"]
            assert about["members"][0]["test_metrics"] is not None
    finally:
        pool.close()

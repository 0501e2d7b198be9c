"""The HTTP API of `emofuse serve` through FastAPI's test client: a good clip, each bad input, the
feature-record route, the queue and the time limit, and that no upload is left on disk."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest

fastapi_testclient = pytest.importorskip("fastapi.testclient", reason="the serve extra is not installed")


@pytest.fixture(scope="module")
def api(served):
    from emofuse.serve import Limits, create_app

    app = create_app(served["pool"], Limits(upload_dir=str(served["uploads"])))
    with fastapi_testclient.TestClient(app) as client:
        yield client


def post(client, path: Path, name: str | None = None, content_type: str = "video/mp4", **params):
    with open(path, "rb") as f:
        return client.post("/v1/predict", files={"file": (name or path.name, f.read(), content_type)},
                           params=params)


def idle(served, seconds: float = 60.0) -> None:
    """Wait until the pool has no request in flight (a timed-out job finishes in the background)."""
    deadline = time.monotonic() + seconds
    while served["pool"].stats().in_flight and time.monotonic() < deadline:
        time.sleep(0.1)
    assert served["pool"].stats().in_flight == 0


def assert_no_uploads_left(served) -> None:
    assert list(served["uploads"].iterdir()) == []


def test_a_clip_gives_the_predict_json_and_its_explain_png(served, api) -> None:
    response = post(api, served["new"])
    assert response.status_code == 200, response.text
    result = response.json()
    # the fields of `emofuse predict --json` (Predictor.predict), with the client's file name as clip
    direct = served["pool"].first.predict(served["new"])
    assert set(direct) <= set(result)
    assert result["clip"] == "new.mp4"
    assert result["model"] == "fusion_matched" and result["modalities"] == "T+A+V"
    assert result["score"] == pytest.approx(direct["score"], abs=1e-4)
    assert result["labels"] == direct["labels"]
    assert [w["word"].strip(".,!?").lower() for w in result["words"]] == served["words"]
    assert set(result["contributions"]) == {"text", "audio", "vision"}
    assert len(result["word_contributions"]) == len(result["words"])
    assert {"decode", "words", "face", "text", "model", "total"} <= set(result["timings"])
    assert str(served["uploads"]) not in response.text and "png" not in result
    png = api.get(result["explain_url"])
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.content[:4] == b"\x89PNG" and len(png.content) > 10_000
    assert_no_uploads_left(served)


@pytest.mark.parametrize("kind, status", [
    ("unreadable_file", 415), ("zero_bytes", 415), ("no_audio_track", 422), ("no_face", 422),
    ("no_speech", 422), ("too_short", 422)])
def test_broken_media_is_refused_with_emofuse_s_reason(served, api, kind: str, status: int) -> None:
    path = served["broken"][kind]
    response = post(api, path, params={"explain": "false"})
    body = response.json()
    assert response.status_code == status, body
    assert body["error"]["reason"] == ("unreadable_file" if kind == "zero_bytes" else kind)
    # emofuse's own message, naming the client's file, never the server's private path
    assert body["error"]["message"].startswith(f"{path.name}: ")
    assert body["clip"] == path.name and str(served["uploads"]) not in response.text
    assert_no_uploads_left(served)


def test_type_size_and_form_problems(served, api) -> None:
    from emofuse.serve import Limits, create_app

    text = api.post("/v1/predict", files={"file": ("notes.txt", b"hello", "text/plain")})
    assert text.status_code == 415 and text.json()["error"]["reason"] == "unsupported_media_type"
    assert ".txt files are not accepted" in text.json()["error"]["message"]
    no_file = api.post("/v1/predict", data={"transcript": "hello"})
    assert no_file.status_code in (415, 422)
    wrong_field = api.post("/v1/predict", files={"clip": ("a.mp4", b"x", "video/mp4")})
    assert wrong_field.status_code == 422 and "'file'" in wrong_field.json()["error"]["message"]
    small = create_app(served["pool"], Limits(max_upload_bytes=20_000, upload_dir=str(served["uploads"])))
    with fastapi_testclient.TestClient(small) as client:
        big = post(client, served["new"])
    assert big.status_code == 413 and big.json()["error"]["reason"] == "too_large"
    assert "20000 bytes" in big.json()["error"]["message"] or "limit" in big.json()["error"]["message"]
    assert_no_uploads_left(served)


def convert(source: Path, target: Path, *options: str) -> Path:
    """`source` rewritten by ffmpeg into the container `target`'s suffix names."""
    subprocess.run(
        ["ffmpeg", "-y", "-loglevel", "error", "-i", str(source), *options, str(target)],
        check=True,
        capture_output=True,
    )
    return target


@pytest.mark.parametrize("suffix, content_type, options", [
    # CREMA-D's clips: Sorenson (FLV1) video and MP3 audio in FLV; `predict` reads them, so serve must
    (".flv", "video/x-flv", ["-c:v", "flv", "-q:v", "3", "-c:a", "libmp3lame", "-ar", "22050"]),
    (".mkv", "video/x-matroska", ["-c", "copy"]),
    (".mov", "video/quicktime", ["-c", "copy"])])
def test_other_video_containers_are_scored(served, api, suffix: str, content_type: str,
                                           options: list[str]) -> None:
    path = convert(served["new"], served["root"] / f"new{suffix}", *options)
    response = post(api, path, content_type=content_type, explain="false")
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["clip"] == f"new{suffix}" and result["modalities"] == "T+A+V"
    assert [w["word"].strip(".,!?").lower() for w in result["words"]] == served["words"]
    assert np.isfinite(result["score"])
    assert_no_uploads_left(served)


def test_an_audio_file_for_a_run_that_reads_vision_is_422_with_emofuse_s_reason(served, api) -> None:
    # an .m4a is accepted (the decoder reads it); what it lacks is the run's problem to explain,
    # not a 415 that would blame the container
    path = convert(served["new"], served["root"] / "voice.m4a", "-vn", "-c:a", "copy")
    response = post(api, path, content_type="audio/mp4", explain="false")
    body = response.json()
    assert response.status_code == 422, body
    assert body["clip"] == "voice.m4a" and body["error"]["reason"] == "no_video_track"
    message = body["error"]["message"]
    assert message.startswith("voice.m4a: no video track: ")
    assert str(served["uploads"]) not in response.text
    assert_no_uploads_left(served)


def test_the_accepted_suffixes_are_the_decoder_s_and_content_types_name_one() -> None:
    from emofuse.features.decode import MEDIA_SUFFIXES
    from emofuse.serve.uploads import CONTENT_TYPES, SUFFIXES, UploadError, media_suffix

    assert SUFFIXES == MEDIA_SUFFIXES
    assert {".mp4", ".avi", ".webm", ".mkv", ".mov", ".flv", ".wav", ".mp3", ".flac", ".m4a", ".ogg"} <= set(
        SUFFIXES
    )
    assert set(CONTENT_TYPES.values()) <= set(SUFFIXES)
    assert media_suffix("clip.FLV", "application/octet-stream") == ".flv"  # the name decides first
    # a part without a suffix (the page's recording, curl -F 'file=@-;type=...') by its content type
    for content_type, suffix in [("video/quicktime", ".mov"), ("video/x-matroska", ".mkv"),
                                 ("video/x-flv", ".flv"), ("audio/mp4", ".m4a"), ("audio/mpeg", ".mp3"),
                                 ("audio/ogg; codecs=opus", ".ogg"), ("audio/flac", ".flac"),
                                 ("video/webm;codecs=vp8,opus", ".webm")]:
        assert media_suffix("blob", content_type) == suffix, content_type
    with pytest.raises(UploadError) as info:
        media_suffix("notes.txt", "video/mp4")  # a named file is what its name says
    assert (
        info.value.status == 415 and ".txt files are not accepted; send one of .mp4, " in info.value.message
    )


def test_a_client_path_is_only_a_name(served, api) -> None:
    # the name points at a real clip on this machine, the bytes are garbage: the bytes are what is read
    response = api.post(
        "/v1/predict", files={"file": (str(served["new"]), b"not a video at all", "video/mp4")}
    )
    assert response.status_code == 415 and response.json()["clip"] == "new.mp4"
    traversal = post(
        api, served["broken"]["no_speech"], name="../../../etc/passwd.mp4", params={"explain": "false"}
    )
    assert traversal.status_code == 422 and traversal.json()["clip"] == "passwd.mp4"
    assert_no_uploads_left(served)


def test_concurrent_requests_queue_and_a_full_queue_answers_503(served, api) -> None:
    idle(served)
    answers: dict[str, int] = {}

    def send(key: str) -> None:
        answers[key] = post(api, served["new"], params={"explain": "false"}).status_code

    threads = [threading.Thread(target=send, args=(k,)) for k in ("a", "b")]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while served["pool"].stats().in_flight < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert served["pool"].stats().in_flight == 2  # one running, one queued: the pool is full
    refused = post(api, served["new"])
    assert refused.status_code == 503 and refused.json()["error"]["reason"] == "queue_full"
    assert int(refused.headers["Retry-After"]) >= 1
    for t in threads:
        t.join(120)
    assert answers == {"a": 200, "b": 200}
    health = api.get("/health").json()
    assert health["status"] == "ok" and health["in_flight"] == 0 and health["refused"] >= 1
    assert_no_uploads_left(served)


def test_the_time_limit_answers_504_and_the_upload_is_still_removed(served) -> None:
    from emofuse.serve import Limits, create_app

    idle(served)
    hasty = create_app(served["pool"], Limits(timeout_s=0.05, upload_dir=str(served["uploads"])))
    with fastapi_testclient.TestClient(hasty) as client:
        response = post(client, served["new"])
    assert response.status_code == 504 and response.json()["error"]["reason"] == "timeout"
    assert "0.05 s time limit" in response.json()["error"]["message"]
    idle(served)  # the job ran on in the background and cleaned up after itself
    assert_no_uploads_left(served)


def test_a_feature_record_gives_the_clip_s_prediction(served, api) -> None:
    predictor = served["pool"].first
    features = predictor.extract(served["new"])
    record = features.record()
    view = predictor.layout.view
    body = {m: np.asarray(x).tolist() for m, x in record[view].items()}
    body.update(words=record["words"], starts=record["starts"].tolist(), ends=record["ends"].tolist(),
                raw_text=record["raw_text"])
    response = api.post("/v1/predict/features", json=body)
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["score"] == pytest.approx(predictor.predict_record(record)["score"], abs=1e-4)
    assert [w["word"] for w in result["words"]] == record["words"]
    nested = api.post("/v1/predict/features", json={view: body, "words": body["words"]})
    assert nested.status_code == 200 and nested.json()["score"] == pytest.approx(result["score"], abs=1e-4)

    def error(payload) -> tuple[int, str]:
        r = api.post("/v1/predict/features", json=payload)
        return r.status_code, r.json()["error"]["message"]

    dims = predictor.run.spec.dims
    status, message = error({**body, "audio": [[0.0] * (dims["audio"] + 1)]})
    assert status == 422 and message.startswith("field 'audio': shape [1, " + str(dims["audio"] + 1) + "]")
    status, message = error({k: v for k, v in body.items() if k != "vision"})
    assert status == 422 and message.startswith("field 'vision' is missing")
    status, message = error({**body, "text": [[1.0, 2.0], [3.0]]})
    assert status == 422 and message.startswith("field 'text': not a steps x D list")
    status, message = error({**body, "starts": [0.0]})
    assert status == 422 and message.startswith("field 'starts': 1 values for")
    raw = api.post("/v1/predict/features", content=b"{not json", headers={"content-type": "application/json"})
    assert raw.status_code == 422 and raw.json()["error"]["reason"] == "bad_request"


def test_model_health_and_unknown_ids(served, api) -> None:
    model = api.get("/v1/model").json()
    assert model["model"] == "fusion_matched" and model["modalities"] == "T+A+V"
    assert model["task"] == "regression" and model["config"]["model"] == "fusion_matched"
    assert "mae" in model["test_metrics"] and model["metrics"]["test"] == model["test_metrics"]
    # one test clip leaves the correlation undefined: NaN in metrics.json, null in JSON
    assert model["test_metrics"]["corr"] is None
    assert model["serve"]["workers"] == 1 and model["serve"]["queue_size"] == 1
    assert api.get("/health").json()["capacity"] == 2
    missing = api.get("/v1/explain/nope")
    assert missing.status_code == 404 and missing.json()["error"]["reason"] == "unknown_id"
    page = api.get("/")
    assert page.status_code == 200 and 'id="timeline"' in page.text
    assert api.get("/static/app.js").status_code == 200
    assert "/v1/predict" in api.get("/openapi.json").json()["paths"]


@pytest.mark.parametrize(
    "option, message",
    [
        (["--workers", "0"], "workers must be at least 1"),
        (["--timeout", "0"], "the time limit must be positive"),
        (["--max-upload-mb", "0"], "the upload limit must be positive"),
    ],
)
def test_serve_refuses_bad_options_in_one_line(served, capsys, option: list[str], message: str) -> None:
    from emofuse.cli.main import main

    assert main(["serve", "--run", str(served["run"]), *option]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and f"emofuse: error: {message}" in err


def test_the_explain_store_keeps_the_most_recent_pictures() -> None:
    from emofuse.serve import PngStore

    store = PngStore(limit=2)
    store.put("a", b"1")
    store.put("b", b"2")
    assert store.get("a") == b"1"  # read: now the most recent
    store.put("c", b"3")
    assert store.get("b") is None and store.get("a") == b"1" and store.get("c") == b"3" and len(store) == 2
    with pytest.raises(ValueError, match="at least 1"):
        PngStore(limit=0)

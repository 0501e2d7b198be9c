"""The FastAPI app of `emofuse serve`: the HTTP API and the page, over one `PredictorPool`.

Routes (OpenAPI docs at /docs):
- POST /v1/predict: a clip upload (multipart 'file', optional 'transcript') -> the object that
  `emofuse predict --json` prints for the clip, plus 'word_contributions', 'id' and 'explain_url'
  (the explain PNG, kept in memory); `?explain=false` skips the picture and the per-word occlusion.
- POST /v1/predict/features: an MMSA-style feature record (JSON) -> the same prediction object.
- GET /v1/explain/{id}: the PNG of a finished prediction. GET /health, GET /v1/model.
- GET /: the page (static/index.html).

Serving several runs (an ensemble, `EnsemblePredictor`): the predictions are the ensemble's, in the
same shape plus 'members' (each run's own prediction); /v1/predict then draws no explain picture
(it shows one model's internals: no 'id', 'explain_url' nor 'word_contributions'), and /v1/model
describes the ensemble with each run's description and metrics under 'members'.

Errors answer {"clip", "error": {"reason", "message"}}, the shape `predict --json` gives a broken
clip, with the message of emofuse's own error (the server's temporary path replaced by the
client's file name): 413 too large, 415 a type not accepted (uploads.SUFFIXES: every container
`extract` reads) or a file that cannot be decoded, 422 a readable clip without what the run needs
(audio track, video for a run that reads vision, face, speech) or a bad record, 503
queue full (with Retry-After), 504 not finished within the time limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from emofuse.data.dataset import DataFormatError
from emofuse.errors import OptionError, UserError
from emofuse.features.registry import ClipError
from emofuse.inference.ensemble import AnyPredictor, EnsemblePredictor
from emofuse.inference.explain import explain
from emofuse.inference.predict import Predictor, RunMismatch
from emofuse.serve.uploads import SUFFIXES, UploadError, receive_clip
from emofuse.serve.workers import PngStore, PredictorPool, QueueFull, as_dict

log = logging.getLogger("emofuse.serve")
STATIC = files("emofuse.serve") / "static"
# a decodable clip that lacks what the run needs is 422; one that cannot be decoded at all is 415
UNREADABLE = {"unreadable_file", "missing_file"}


@dataclass(frozen=True)
class Limits:
    """Per-request limits. max_upload_bytes: 413 above it. timeout_s: 504 past it (queue wait included).
    upload_dir: where the private per-request folders are made (None: the system's temp folder)."""

    max_upload_bytes: int = 50_000_000
    timeout_s: float = 120.0
    upload_dir: str | None = None
    explain_cache: int = 64

    def __post_init__(self) -> None:
        if self.max_upload_bytes < 1:
            raise OptionError(f"the upload limit must be positive, got {self.max_upload_bytes} bytes")
        if self.timeout_s <= 0:
            raise OptionError(f"the time limit must be positive, got {self.timeout_s} s")
        if self.upload_dir is not None and not Path(self.upload_dir).is_dir():
            raise OptionError(f"upload folder {self.upload_dir} does not exist")


def _error(status: int, reason: str, message: str, clip: str = "", headers: dict[str, str] | None = None
           ) -> JSONResponse:
    return JSONResponse({"clip": clip, "error": {"reason": reason, "message": message}}, status_code=status,
                        headers=headers)


@dataclass
class Server:
    """What the routes share: the pool of loaded predictors, the limits and the kept PNGs."""

    pool: PredictorPool
    limits: Limits
    pngs: PngStore

    def refused(self) -> JSONResponse:
        pool = self.pool
        return _error(503, "queue_full", f"the server is busy: {pool.stats().in_flight} requests in progress "
                      f"({pool.workers} workers, queue of {pool.queue_size}); retry later",
                      headers={"Retry-After": str(pool.retry_after())})

    async def run_job(self, job: Callable[[AnyPredictor], Any], cleanup: Callable[[], None], clip: str,
                      mismatch_status: int = 500) -> tuple[Any, JSONResponse | None]:
        """Submit an admitted job and wait for it up to the time limit; (result, None) or (None, error).
        Whatever happens, `cleanup` runs and the slot is released exactly once.

        mismatch_status: the status of a RunMismatch, 500 for a clip (the served run cannot read
        what `extract` gives: the server's problem), 422 for a record (the client's sizes)."""
        pool, timeout_s = self.pool, self.limits.timeout_s
        try:
            future = pool.submit(job, cleanup)
        except RuntimeError:  # the executor is shutting down with the server
            cleanup()
            pool.release()
            return None, _error(503, "shutting_down", "the server is shutting down", clip)
        try:
            return await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(future)), timeout_s), None
        except asyncio.TimeoutError:
            if future.cancel():  # still queued: it will never run, so its clean-up is ours
                cleanup()
                pool.release()
                where = "waiting in the queue"
            else:
                where = "running; it finishes in the background and its result is dropped"
            return None, _error(504, "timeout", f"{clip}: not done within the {timeout_s:g} s time limit "
                                f"(it was {where})", clip)
        except ClipError as err:
            status = 415 if err.reason in UNREADABLE else 422
            return None, _error(status, err.reason, str(err), clip)
        except RunMismatch as err:
            return None, _error(mismatch_status, "run_mismatch", str(err), clip)
        except (DataFormatError, UserError) as err:
            return None, _error(422, "bad_features", str(err), clip)
        except Exception:
            log.exception("prediction failed for %s", clip)
            return None, _error(500, "internal_error", f"{clip}: the prediction failed inside the server "
                                "(see the server log)", clip)


router = APIRouter()


def create_app(pool: PredictorPool, limits: Limits | None = None) -> FastAPI:
    """The app over an already loaded pool (the caller owns the pool and closes it)."""
    limits = limits or Limits()
    app = FastAPI(title="emofuse", version="0.1.0",
                  description="Multimodal sentiment and emotion predictions for clips, with explanations.")
    app.state.server = Server(pool, limits, PngStore(limits.explain_cache))
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")
    app.add_exception_handler(RequestValidationError, _bad_request)  # type: ignore[arg-type]
    app.include_router(router)
    return app


def _server(request: Request) -> Server:
    return request.app.state.server


async def _bad_request(_request: Request, err: RequestValidationError) -> JSONResponse:
    """FastAPI's own 422s (a body that is not JSON, a bad query value) in the same shape as ours."""
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', '')}" for e in err.errors()
    )
    return _error(422, "bad_request", problems or "the request cannot be read")


@router.get("/", include_in_schema=False)
async def page() -> FileResponse:
    return FileResponse(str(STATIC / "index.html"), media_type="text/html")


@router.get("/health")
async def health(request: Request) -> dict[str, Any]:
    """Liveness and load: workers, requests in flight, refused so far."""
    pool = _server(request).pool
    return {"status": "ok", **as_dict(pool.stats()), "capacity": pool.capacity}


@router.get("/v1/model")
async def model(request: Request) -> dict[str, Any]:
    """What the run is: model, modalities, task, its metrics (valid and test split), its config.
    For an ensemble: its description, and each run's under 'members' (no metrics of its own)."""
    server = _server(request)
    pool, limits, first = server.pool, server.limits, server.pool.first
    about: dict[str, Any]
    if isinstance(first, EnsemblePredictor):
        about = {**first.describe(), "test_metrics": None, "metrics": {}, "config": None, "extract": None,
                 "members": [_about_run(p) for p in first.members]}
    else:
        about = _about_run(first)
    return {**about, "class_names": first.class_names if first.is_classifier else None,
            "serve": {"workers": pool.workers, "queue_size": pool.queue_size,
                      "max_upload_bytes": limits.max_upload_bytes, "timeout_s": limits.timeout_s,
                      "load_seconds": round(pool.load_seconds, 2)}}


def _about_run(predictor: Predictor) -> dict[str, Any]:
    metrics_path = predictor.run_dir / "metrics.json"
    # metrics.json writes an undefined metric (corr of one test clip) as NaN, which JSON lacks
    metrics = _finite(json.loads(metrics_path.read_text())) if metrics_path.is_file() else {}
    layout = predictor.layout
    return {**predictor.describe(), "test_metrics": metrics.get("test"), "metrics": metrics,
            "config": predictor.run.config.to_dict(),
            "extract": {"view": layout.view, "from_extract": layout.from_extract, "data": layout.source}}


@router.get("/v1/explain/{key}", responses={200: {"content": {"image/png": {}}}})
async def explain_png(key: str, request: Request) -> Response:
    """The explain PNG of a finished prediction (the most recent ones are kept)."""
    pngs = _server(request).pngs
    png = pngs.get(key)
    if png is None:
        return _error(404, "unknown_id", f"no explain picture with id {key!r} (only the last "
                      f"{pngs.limit} are kept)")
    return Response(png, media_type="image/png")


_UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"], "properties": {
        "file": {"type": "string", "format": "binary", "description": "a clip in any container the decoder "
                 "reads: " + ", ".join(s.lstrip(".") for s in SUFFIXES)},
        "transcript": {"type": "string", "description": "the words spoken (force-aligned instead of "
                       "recognised)"}}}}}}}


@router.post("/v1/predict", openapi_extra=_UPLOAD_SCHEMA)
async def predict(request: Request, with_explain: bool = Query(True, alias="explain")) -> JSONResponse:
    """Score one uploaded clip (the fields of `emofuse predict --json`)."""
    server = _server(request)
    limits, pool = server.limits, server.pool
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limits.max_upload_bytes + 64 * 1024:
        return _error(413, "too_large", f"the request is {int(declared)} bytes, over the "
                      f"{limits.max_upload_bytes} byte upload limit")
    try:
        pool.admit()
    except QueueFull:
        return server.refused()
    folder: Path | None = None
    submitted = False

    def cleanup() -> None:
        if folder is not None:
            shutil.rmtree(folder, ignore_errors=True)

    try:
        folder = Path(tempfile.mkdtemp(prefix="emofuse-serve-", dir=limits.upload_dir))
        try:
            upload = await receive_clip(request.headers.get("content-type", ""), request.stream(), folder,
                                        limits.max_upload_bytes)
        except UploadError as err:
            return _error(err.status, err.reason, err.message)
        assert upload.path is not None  # receive_clip raises when the form has no file part
        submitted = True
        return await _score_upload(server, upload.name, upload.path, upload.fields.get("transcript") or None,
                                   folder, with_explain, cleanup)
    finally:
        if not submitted:
            cleanup()
            pool.release()


async def _score_upload(server: Server, clip: str, path: Path, transcript: str | None, folder: Path,
                        with_explain: bool, cleanup: Callable[[], None]) -> JSONResponse:
    """Run the prediction (and the explain picture) of an admitted upload; keep the PNG."""

    def job(predictor: AnyPredictor) -> tuple[dict[str, Any], bytes | None]:
        # the picture shows one model's internals, which an ensemble has not
        if not with_explain or isinstance(predictor, EnsemblePredictor):
            return predictor.predict(path, transcript), None
        out = folder / "explain.png"
        result = explain(predictor, path, out, transcript)
        return result, out.read_bytes()

    outcome, failed = await server.run_job(job, cleanup, clip)
    if failed is not None:
        return _hide(failed, str(path), clip)
    result, png = outcome
    result = _public(result, clip)
    if png is not None:
        key = secrets.token_urlsafe(16)
        server.pngs.put(key, png)
        result["id"], result["explain_url"] = key, f"/v1/explain/{key}"
    return JSONResponse(result)


@router.post("/v1/predict/features")
async def predict_features(record: dict[str, Any], request: Request) -> JSONResponse:
    """Score an MMSA-style feature record: {"text": [[...], ...], "audio": ..., "vision": ...,
    "words": [...], "starts": [...], "ends": [...], "raw_text": "..."} (or the arrays under
    "aligned" / "unaligned", as `ClipFeatures.record()` gives them)."""
    server = _server(request)
    try:
        parsed = parse_record(server.pool.first, record)
    except DataFormatError as err:
        return _error(422, "bad_features", str(err), "<record>")
    try:
        server.pool.admit()
    except QueueFull:
        return server.refused()
    result, failed = await server.run_job(lambda p: p.predict_record(parsed), lambda: None, "<record>", 422)
    return failed if failed is not None else JSONResponse(_finite(result))


def _finite(value: Any) -> Any:
    """NaN and infinities (which JSON cannot carry) as null, in nested dicts and lists."""
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def _public(result: dict[str, Any], clip: str) -> dict[str, Any]:
    """The prediction as the client should see it: its file name, no server paths."""
    result = _finite(dict(result))
    result["clip"] = clip
    result.pop("png", None)
    return result


def _hide(response: JSONResponse, path: str, clip: str) -> JSONResponse:
    """Replace the private upload path in an error message with the client's file name."""
    body = json.loads(bytes(response.body))
    body["error"]["message"] = body["error"]["message"].replace(path, clip)
    return JSONResponse(body, status_code=response.status_code, headers={
        k: v for k, v in response.headers.items() if k.lower() == "retry-after"})


def parse_record(predictor: AnyPredictor, record: dict[str, Any]) -> dict[str, Any]:
    """A JSON feature record -> the `ClipFeatures.record()` layout `Predictor.predict_record` reads.

    Each modality the run reads from features must be a list of steps x D numbers with D the
    run's size; a DataFormatError names the field otherwise. An ensemble's record must satisfy
    each of its runs (each reads its own view and modalities of it).
    """
    if isinstance(predictor, EnsemblePredictor):
        parsed: dict[str, Any] = {}
        for member in predictor.members:
            for key, value in parse_record(member, record).items():
                # two runs of one view may read different modalities of it: keep both's arrays
                parsed[key] = {**parsed[key], **value} if isinstance(value, dict) and key in parsed else value
        return parsed
    view = predictor.layout.view
    nested = record.get(view) if isinstance(record.get(view), dict) else None
    source = nested if nested is not None else record
    prefix = f"{view}." if nested is not None else ""
    run = predictor.run
    arrays: dict[str, np.ndarray] = {}
    for m in predictor.modalities:
        if m in run.raw_modalities:
            raise DataFormatError(f"field '{prefix}{m}': the run reads raw {m} through its "
                                  f"{'video' if m == 'vision' else 'audio'} encoder, which a feature record "
                                  "cannot carry; POST the clip to /v1/predict")
        if m == "text" and run.tokenizer is not None:
            continue  # the run's own text encoder reads 'raw_text' / 'words'
        if m not in source:
            raise DataFormatError(
                f"field '{prefix}{m}' is missing: the run ({predictor.describe()['modalities']}, "
                f"{view}) reads {m} features"
            )
        try:
            x = np.asarray(source[m], dtype=np.float32)
        except (TypeError, ValueError):
            raise DataFormatError(f"field '{prefix}{m}': not a steps x D list of numbers (rows of "
                                  "different lengths or non-numbers)") from None
        want = run.spec.dims[m]
        if x.ndim != 2 or len(x) == 0 or x.shape[1] != want:
            raise DataFormatError(f"field '{prefix}{m}': shape {list(x.shape)}, the run reads steps x {want} "
                                  f"{m} features ({view})")
        if not np.isfinite(x).all():
            raise DataFormatError(f"field '{prefix}{m}': holds NaN or infinite values")
        arrays[m] = x
    words = record.get("words") or []
    if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
        raise DataFormatError("field 'words': a list of strings")
    times = {}
    for key in ("starts", "ends"):
        value = record.get(key)
        if value is None:
            value = [0.0] * len(words)
        try:
            times[key] = np.asarray(value, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            raise DataFormatError(f"field '{key}': a list of seconds, one per word") from None
        if len(times[key]) != len(words):
            raise DataFormatError(f"field '{key}': {len(times[key])} values for {len(words)} words")
    raw_text = record.get("raw_text")
    if raw_text is None:
        raw_text = " ".join(words)
    if not isinstance(raw_text, str):
        raise DataFormatError("field 'raw_text': a string")
    if run.tokenizer is not None and "text" in predictor.modalities and not raw_text.strip():
        raise DataFormatError(
            "field 'raw_text' (or 'words') is needed: the run reads the text with its own encoder"
        )
    return {
        view: arrays,
        "words": words,
        "starts": times["starts"],
        "ends": times["ends"],
        "raw_text": raw_text,
        "word_source": str(record.get("word_source", "client")),
    }

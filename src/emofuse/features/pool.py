"""Running the per-clip work of `emofuse extract`: in this process or in worker processes.

Workers are separate processes (spawned: each loads its models once, before its first clip, and
reports the seconds that took with that clip's result). Each worker's native thread pools (OpenMP,
BLAS, numexpr, numba, OpenCV, torch) are capped at one thread, so `workers` processes use about
`workers` cores instead of fighting over them; one worker (in this process) leaves them as they are.
Clips are handed out largest file first, so a long clip does not start last and leave the other
workers idle at the end, but results come back in job order whatever the timing, so the output
never depends on the number of workers. A clip that
fails (a `ClipError`) becomes a failed `ClipResult`, never an exception; the failure policy
(on_error) says what the run does next: 'skip' and 'pad' go on ('pad' is applied when the pickles
are assembled), 'stop' ends the run at the first failure.
"""

from __future__ import annotations

import functools
import multiprocessing
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch

from emofuse.data.raw import RAW_DTYPES, RAW_KEY_OF, write_clip
from emofuse.features.clip import ClipExtractor, ExtractConfig
from emofuse.features.clip_table import ClipJob
from emofuse.features.registry import ClipError, MissingFile

ON_ERROR = ("skip", "pad", "stop")
# the native thread pools' sizes, read by each library when it loads: set to 1 for the workers
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
              "NUMBA_NUM_THREADS")

_Item = TypeVar("_Item")
_Result = TypeVar("_Result")


@dataclass
class ClipResult:
    clip_id: str
    path: str
    status: str  # 'ok' or a failure reason code
    message: str = ""
    record: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    duration: float = 0.0
    # modality -> absolute path of the clip's raw store file (crops, log-mel), with --raw
    raw_files: dict[str, str] = field(default_factory=dict)
    # model -> seconds its loading took (`ClipExtractor.load`), on the first result of each worker
    # only (absent from results read back from shard files written before it existed: use getattr)
    load_seconds: dict[str, float] = field(default_factory=dict)


_WORKER: ClipExtractor | None = None
_WORKER_RECOGNISES = True  # whether the worker's clips may need speech recognition (see ClipExtractor.load)


def worker_thread_env() -> dict[str, str]:
    """The environment variables that cap a worker's native thread pools at one thread each."""
    return dict.fromkeys(THREAD_ENV, "1")


@contextmanager
def single_threaded_children() -> Iterator[None]:
    """Processes started inside this block inherit `worker_thread_env()`; the parent's own values
    come back afterwards. Spawned workers import numpy and torch (whose pools read these when
    they load) before any initializer runs, so they must be in the environment they start with."""
    saved = {key: os.environ.get(key) for key in THREAD_ENV}
    os.environ.update(worker_thread_env())
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _init_worker(config: ExtractConfig, cache_dir: str | None, recognise: bool = True) -> None:
    """A worker's set-up: one thread per native pool, and its extractor (whose models load with the
    first clip it gets, in `_run_job`: a worker that gets none loads nothing, and a model that fails
    to load fails that clip's future with its own error, not the whole pool as a broken one)."""
    global _WORKER, _WORKER_RECOGNISES
    torch.set_num_threads(1)
    if config.video or "cv2" in sys.modules:  # OpenCV (the face crops) has its own thread pool
        try:
            import cv2
        except ImportError:
            pass
        else:
            cv2.setNumThreads(1)
    _WORKER = ClipExtractor(config, cache_dir)
    _WORKER_RECOGNISES = recognise


def _run_job(job: ClipJob, raw_store: str | None = None) -> ClipResult:
    assert _WORKER is not None, "worker not initialised"
    loading = not _WORKER.load_seconds
    if loading:
        _WORKER.load(_WORKER_RECOGNISES)
    result = run_clip(_WORKER, job, raw_store)
    if loading:
        result.load_seconds = dict(_WORKER.load_seconds)
    return result


def needs_recognition(jobs: Sequence[ClipJob], config: ExtractConfig) -> bool:
    """Whether some job's words come from speech recognition (whisper): all of them with
    words='whisper', those without a transcript with 'auto'."""
    if config.words == "whisper":
        return True
    return config.words == "auto" and any(not (j.transcript or "").strip() for j in jobs)


def largest_first(paths: Sequence[str]) -> list[int]:
    """Indices of `paths` by file size, largest first (ties and missing files keep their order;
    missing files go last: they fail at once)."""
    def size(i: int) -> int:
        try:
            return os.path.getsize(paths[i])
        except OSError:
            return -1

    return sorted(range(len(paths)), key=lambda i: -size(i))


def run_clip(extractor: ClipExtractor, job: ClipJob, raw_store: str | None = None) -> ClipResult:
    """One clip; a ClipError becomes a failed result (never an exception).

    raw_store: also write the clip's per-word face crops and log-mel patches there (the worker
    writes them, so the arrays never travel between processes).
    """
    try:
        if not Path(job.path).is_file():
            raise MissingFile(job.path, "the clip named in label.csv does not exist")
        transcript = job.transcript if extractor.config.words != "whisper" else None
        features = extractor.extract(job.path, transcript)
    except ClipError as err:
        return ClipResult(job.clip_id, job.path, err.reason, str(err))
    timings = dict(features.timings)
    raw_files: dict[str, str] = {}
    if raw_store is not None:
        started = time.perf_counter()
        raw_files = write_raw_clip(Path(raw_store), job.clip_id, features)
        timings["raw"] = time.perf_counter() - started  # writing the crops and log-mel patches
    return ClipResult(job.clip_id, job.path, "ok", "", features.record(), timings, features.duration,
                      raw_files)


def write_raw_clip(store: Path, clip_id: str, features) -> dict[str, str]:  # features: ClipFeatures
    """The clip's raw inputs in the lazy raw store (`emofuse.data.raw`): one .npy per clip and kind,
    uint8 crops under vision/, float16 log-mel under audio/, at <kind>/<video_id>/<clip_id>.npy."""
    video_id, _, clip = clip_id.partition("$_$")
    arrays = {"audio": features.word_logmel}
    if features.word_crops is not None:
        arrays["vision"] = features.word_crops
    return {m: str(write_clip(store / m / video_id, clip, array, RAW_DTYPES[RAW_KEY_OF[m]]).resolve())
            for m, array in arrays.items()}


def clip_results(jobs: Sequence[ClipJob], config: ExtractConfig, cache_dir: str | None, workers: int,
                 raw_store: str | None) -> Iterator[ClipResult]:
    """Every job's result, in job order: here with one worker, else from a pool of `workers` processes.

    Models load before the first clip (in each worker); the first result of each carries the
    seconds that took (`ClipResult.load_seconds`), so its stage times are the clip's own work.
    """
    recognise = needs_recognition(jobs, config)
    if workers <= 1:
        with ClipExtractor(config, cache_dir) as extractor:
            for i, job in enumerate(jobs):
                if i == 0:
                    extractor.load(recognise)
                result = run_clip(extractor, job, raw_store)
                if i == 0:
                    result.load_seconds = dict(extractor.load_seconds)
                yield result
        return
    run = functools.partial(_run_job, raw_store=raw_store)
    yield from pool_results(run, jobs, workers, largest_first([j.path for j in jobs]),
                            initializer=_init_worker, initargs=(config, cache_dir, recognise))


def pool_results(run: Callable[[_Item], _Result], items: Sequence[_Item], workers: int,
                 order: Sequence[int] | None = None, initializer: Callable[..., object] | None = None,
                 initargs: tuple[Any, ...] = ()) -> Iterator[_Result]:
    """`run(item)` for every item in `workers` spawned processes, yielded in item order.

    order: the order the items are handed out in (indices; default: as given), e.g. largest first.
    The workers start with one thread per native pool (`single_threaded_children`). Closing the
    iterator early cancels the items not started yet.
    """
    order = list(range(len(items))) if order is None else list(order)
    if sorted(order) != list(range(len(items))):
        raise ValueError(f"order must be a permutation of the {len(items)} item indices")
    # spawn, not fork: the model libraries start threads that a forked child would inherit broken
    context = multiprocessing.get_context("spawn")
    # the workers start on submit (on demand): both inside the capped environment
    with single_threaded_children():
        pool = ProcessPoolExecutor(workers, mp_context=context, initializer=initializer, initargs=initargs)
        try:
            futures = {i: pool.submit(run, items[i]) for i in order}
        except BaseException:
            pool.shutdown(wait=True, cancel_futures=True)
            raise
    with pool:
        try:
            for i in range(len(items)):  # in item order: the output order never depends on timing
                yield futures[i].result()
        finally:
            for future in futures.values():
                future.cancel()


def run_jobs(jobs: Sequence[ClipJob], config: ExtractConfig, cache_dir: str | None, workers: int,
             raw_store: str | None, on_error: str, progress: bool) -> list[ClipResult]:
    """Run the jobs with a progress bar, naming each failed clip on stderr as it comes.

    With on_error='stop' the run ends at the first failure (its result is the last one returned,
    and the workers' queued jobs are cancelled); otherwise every job's result is returned.
    """
    from tqdm.auto import tqdm

    results: list[ClipResult] = []
    bar = tqdm(total=len(jobs), desc="extract", unit="clip", disable=not progress)
    stream = clip_results(jobs, config, cache_dir, workers, raw_store)
    try:
        for result in stream:
            results.append(result)
            bar.update(1)
            if result.status != "ok":
                bar.write(f"skip {result.clip_id}: {result.message}" if on_error != "stop"
                          else f"failed {result.clip_id}: {result.message}", file=sys.stderr)
                if on_error == "stop":
                    break
    finally:
        bar.close()
        close = getattr(stream, "close", None)
        if close is not None:
            close()
    return results

"""The bounded worker pool behind `emofuse serve`: N predictors, N threads, a bounded queue.

Each worker thread has a `Predictor` of its own (an `EnsemblePredictor` when several runs are
served, made the same way by `open_predictor`), loaded (and warmed up) once at start-up. They
are not shared because a `Predictor` is not safe for two threads at once: the per-modality
contributions of a raw-encoder run hook the shared model while it runs (`zero_word_vectors`),
and the face landmarker and openSMILE hold per-instance state. N predictors cost N times the
models' memory (a few hundred MB each), which is why N is small and set by the operator.

Admission is a counter of slots (workers + queue): a request takes a slot before its upload is
read and gives it back when its job has finished, so at most `capacity` clips are on disk or in
memory at once; a request that finds no free slot is refused (HTTP 503 with Retry-After) at once.
"""

from __future__ import annotations

import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

from emofuse.errors import OptionError
from emofuse.features.clip import ClipExtractor
from emofuse.features.registry import ClipError
from emofuse.inference.ensemble import AnyPredictor, EnsemblePredictor, open_predictor

T = TypeVar("T")


def warm_up(predictor: AnyPredictor) -> float:
    """Run every extraction stage once on a second of quiet noise (and grey frames for a vision
    run), so models that load on first use (whisper, openSMILE, the face landmarker, the text
    embedder) load now and not in the first user's request. Returns the seconds it took."""
    started = time.perf_counter()
    extractors = predictor.extractors if isinstance(predictor, EnsemblePredictor) else [predictor.extractor]
    for extractor in extractors:
        _warm_up(extractor)
    return time.perf_counter() - started


def _warm_up(extractor: ClipExtractor) -> None:
    rate = 16000
    # low noise, not digital silence: some stages treat an all-zero signal as a special case
    audio = (np.random.default_rng(0).standard_normal(rate) * 1e-3).astype(np.float32)
    extractor.words(audio, rate, None)
    for stage in [*extractor.audio, extractor.logmel]:
        stage(audio, rate)
    if getattr(extractor, "face", None) is not None:  # None: the run reads no vision, no face stage
        fps = float(extractor.config.fps)
        frames = np.full((2, 64, 64, 3), 128, dtype=np.uint8)
        try:
            extractor.face(frames, np.arange(2) / fps, fps)
        except ClipError:
            pass  # no face in grey frames is expected: the landmarker has loaded all the same
    if getattr(extractor.config, "text", True):  # False: the run's own text encoder reads the words
        extractor.embedder.embed(["warm up"])


class QueueFull(RuntimeError):
    """Every worker is busy and the queue is full."""


@dataclass
class PoolStats:
    workers: int
    queue_size: int
    in_flight: int  # admitted requests: uploading, queued or running
    running: int
    done: int
    refused: int


class PredictorPool:
    """N predictors of one run (or of one ensemble of runs), each used by one worker thread at a time,
    behind a bounded queue.

    run_dir: a run folder, or a list of them (one: as a run folder; several: their ensemble).
    workers: predictor threads. queue_size: admitted requests that may wait for a worker.
    """

    def __init__(self, run_dir: str | Sequence[str], workers: int = 1, queue_size: int = 4,
                 device: str = "cpu", cache_dir: str | None = None, warm: bool = True) -> None:
        if workers < 1:
            raise OptionError(f"workers must be at least 1, got {workers}")
        if queue_size < 0:
            raise OptionError(f"queue size must be 0 or more, got {queue_size}")
        started = time.perf_counter()
        self.workers, self.queue_size = workers, queue_size
        self._predictors: queue.SimpleQueue[AnyPredictor] = queue.SimpleQueue()
        self.predictors: list[AnyPredictor] = []
        run_dirs = [run_dir] if isinstance(run_dir, str) else list(run_dir)
        try:
            for _ in range(workers):
                predictor = open_predictor(run_dirs, device, cache_dir)
                self.predictors.append(predictor)
                if warm:
                    warm_up(predictor)
                self._predictors.put(predictor)
        except BaseException:
            for p in self.predictors:
                p.close()
            raise
        self.load_seconds = time.perf_counter() - started
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="emofuse-serve")
        self._lock = threading.Lock()
        self._in_flight = self._running = self._done = self._refused = 0
        self._durations: list[float] = []

    @property
    def capacity(self) -> int:
        return self.workers + self.queue_size

    @property
    def first(self) -> AnyPredictor:
        """Any one predictor, for what all of them share (the run, its description)."""
        return self.predictors[0]

    def admit(self) -> None:
        """Take a slot, or raise QueueFull; every admit is matched by one `release`."""
        with self._lock:
            if self._in_flight >= self.capacity:
                self._refused += 1
                raise QueueFull(
                    f"all {self.workers} workers are busy and {self.queue_size} requests are waiting"
                )
            self._in_flight += 1

    def release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def submit(self, job: Callable[[AnyPredictor], T], cleanup: Callable[[], None]) -> Future[T]:
        """Run job(predictor) on a worker; `cleanup` then runs and the slot is released.

        If the future is cancelled before a worker takes it (`Future.cancel()` returns True),
        the job never runs and the caller must call `cleanup` and `release` itself.
        """
        def run() -> T:
            predictor = self._predictors.get()
            started = time.perf_counter()
            with self._lock:
                self._running += 1
            try:
                return job(predictor)
            finally:
                self._predictors.put(predictor)
                try:
                    cleanup()
                finally:
                    with self._lock:
                        self._running -= 1
                        self._done += 1
                        self._durations = (self._durations + [time.perf_counter() - started])[-50:]
                    self.release()

        return self._executor.submit(run)

    def retry_after(self) -> int:
        """Seconds a refused client should wait: the recent job time, rounded up, at least 1."""
        with self._lock:
            recent = self._durations[-10:]
        return max(1, int(np.ceil(float(np.median(recent))))) if recent else 5

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(self.workers, self.queue_size, self._in_flight, self._running, self._done,
                             self._refused)

    def close(self) -> None:
        # queued jobs are left to finish (at most `capacity`): a cancelled one would never remove its upload
        self._executor.shutdown(wait=True)
        for p in self.predictors:
            p.close()


class PngStore:
    """The explain PNGs of finished predictions, by random id, the oldest dropped past `limit`."""

    def __init__(self, limit: int = 64) -> None:
        if limit < 1:
            raise OptionError(f"the explain store must hold at least 1 picture, got {limit}")
        self.limit = limit
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, key: str, png: bytes) -> None:
        with self._lock:
            self._items[key] = png
            self._items.move_to_end(key)
            while len(self._items) > self.limit:
                self._items.popitem(last=False)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            png = self._items.get(key)
            if png is not None:
                self._items.move_to_end(key)
            return png

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def keys(self) -> Sequence[str]:
        with self._lock:
            return list(self._items)


def as_dict(stats: PoolStats) -> dict[str, Any]:
    return {"workers": stats.workers, "queue_size": stats.queue_size, "in_flight": stats.in_flight,
            "running": stats.running, "done": stats.done, "refused": stats.refused}

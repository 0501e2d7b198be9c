"""Running the per-clip work of `emofuse extract`: in this process or in worker processes.

Workers are separate processes (spawned: each loads its models once). Results come back in job
order whatever the timing, so the output never depends on the number of workers. A clip that
fails (a `ClipError`) becomes a failed `ClipResult`, never an exception; the failure policy
(on_error) says what the run does next: 'skip' and 'pad' go on ('pad' is applied when the pickles
are assembled), 'stop' ends the run at the first failure.
"""

from __future__ import annotations

import multiprocessing
import sys
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from emofuse.data.raw import RAW_DTYPES, RAW_KEY_OF, write_clip
from emofuse.features.clip import ClipExtractor, ExtractConfig
from emofuse.features.clip_table import ClipJob
from emofuse.features.registry import ClipError, MissingFile

ON_ERROR = ("skip", "pad", "stop")


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


_WORKER: ClipExtractor | None = None


def _init_worker(config: ExtractConfig, cache_dir: str | None) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = ClipExtractor(config, cache_dir)


def _run_job(job: ClipJob, raw_store: str | None = None) -> ClipResult:
    assert _WORKER is not None, "worker not initialised"
    return run_clip(_WORKER, job, raw_store)


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
    raw_files = write_raw_clip(Path(raw_store), job.clip_id, features) if raw_store is not None else {}
    return ClipResult(job.clip_id, job.path, "ok", "", features.record(), features.timings,
                      features.duration, raw_files)


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
    """Every job's result, in job order: here with one worker, else from a pool of `workers` processes."""
    if workers <= 1:
        with ClipExtractor(config, cache_dir) as extractor:
            for job in jobs:
                yield run_clip(extractor, job, raw_store)
        return
    # spawn, not fork: the model libraries start threads that a forked child would inherit broken
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker,
                             initargs=(config, cache_dir)) as pool:
        futures = [pool.submit(_run_job, job, raw_store) for job in jobs]
        try:
            for future in futures:  # in submission order: the output order never depends on timing
                yield future.result()
        finally:
            for future in futures:
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

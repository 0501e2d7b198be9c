"""`emofuse extract`: an MMSA-FET folder (label.csv + Raw/<video_id>/<clip_id>.mp4) -> MMSA pickles.

A RAVDESS folder (Actor_NN/03-01-EE-II-SS-RR-AA.wav, no label.csv) is read in its own layout:
the speech clips, labelled with the 8 emotion classes from EE, split by actor (1-16 train, 17-20
valid, 21-24 test, as `emofuse.data.ravdess` does), their text the known statement SS.
Labels: a label.csv holds sentiment scores, or with `labels='classification'` (or a
'class'/'emotion' column) class ids/names (`emofuse.data.label_csv`); classification pickles
carry 'classification_labels' and the class names as 'annotations', as `train --labels
classification` reads them.

Outputs, for --out FILE.pkl:
- FILE.pkl: aligned to words (text/audio/vision each N x max_words x D) — what `train` reads;
- FILE_unaligned.pkl: text per word, audio frames (unaligned_audio_rate), video frames, each with
  its '<modality>_lengths';
- FILE.report.json and FILE.report.csv: every clip's status, and for each failed clip why
  (missing_file, unreadable_file, no_audio_track, no_video_track, too_short, no_speech, no_face).

Workers are separate processes (spawned: each loads its models once). Stage results are cached per
clip (see `emofuse.features.clip`), so a killed run resumes and writes the same pickle.
Failure policy: 'skip' leaves a failed clip out, 'pad' keeps it with one all-zero step per
modality (its 'extract_status' extra says why), 'stop' ends the run at the first failure.

Sharding (`--shard i/n`, i in 0..n-1, rows i, i+n, i+2n, ... of label.csv) writes a shard file
instead of pickles; `merge_shards` checks that the shards come from the same label.csv and
config, that every shard 0..n-1 is there once and every clip exactly once, then writes the
pickles and a merged report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import multiprocessing
import os
import pickle
import re
import sys
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import SPLITS, DataFormatError, DatasetSplits, MultimodalDataset, parse_modalities
from emofuse.data.mmsa import atomic_path, save_mmsa_pickle
from emofuse.data.raw import RAW_DTYPES, RAW_KEY_OF, write_clip
from emofuse.features.clip import ClipExtractor, ExtractConfig
from emofuse.features.decode import MEDIA_SUFFIXES as MEDIA_EXTENSIONS
from emofuse.features.registry import ClipError, MissingFile, file_hash

ON_ERROR = ("skip", "pad", "stop")
SHARD_FORMAT = "emofuse-extract-shard"
SHARD_VERSION = 1


@dataclass
class ClipJob:
    clip_id: str  # 'video$_$clip', MMSA's id
    path: str
    transcript: str | None


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


@dataclass
class ExtractResult:
    outputs: list[Path]
    report: dict[str, Any]

    @property
    def failed(self) -> list[dict[str, str]]:
        return self.report["failed"]


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """'2/8' -> (2, 8); i counts from 0 (SLURM_ARRAY_TASK_ID with --array=0-7)."""
    if text is None:
        return None
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError:
        raise ValueError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from None
    if n < 1 or not 0 <= i < n:
        raise ValueError(f"--shard {text}: need n >= 1 and 0 <= i < n (shards count from 0)")
    return i, n


def extract_config(modalities: str = "T+A+V", **options: Any) -> ExtractConfig:
    """An ExtractConfig for the modalities wanted ('T+A+V', 'T+A', 'A', 'A+V'; audio is always
    extracted: words and their times come from it); other options go to ExtractConfig."""
    wanted = parse_modalities(modalities)
    if "audio" not in wanted:
        raise ValueError(f"--modalities {modalities}: audio is always extracted (the words and their times "
                         "come from it); give T+A+V, T+A, A+V or A")
    return ExtractConfig(text="text" in wanted, video="vision" in wanted, **options)


# --------------------------------------------------------------------------- the folder
@dataclass
class DatasetTable:
    """The clips of a dataset folder: one label.csv-shaped row each.

    source: the label.csv, or the RAVDESS folder the table was made from.
    media_root: clips lie at media_root/<video_id>/<clip_id>.<media extension>.
    fingerprint: sha256 of label.csv's bytes, or of the table made from a RAVDESS folder (shards
        of one dataset must agree on it).
    """

    source: Path
    media_root: Path
    df: Any  # pandas DataFrame: video_id, clip_id, text, label, annotation, mode
    fingerprint: str
    task: str  # 'regression' or 'classification'
    class_names: list[str] = field(default_factory=list)


def dataset_rows(dataset_dir: str | os.PathLike[str], labels: str = "auto", allow_empty_text: bool = False) -> DatasetTable:
    """The folder's clips: <dir>/label.csv (or the label.csv given), or a RAVDESS folder's layout.

    labels: 'auto', 'regression' or 'classification', how label.csv's labels are read (see
    `emofuse.data.label_csv.read_label_csv`); RAVDESS's are always the 8 emotion classes.
    """
    from emofuse.data.label_csv import label_task, read_label_csv
    from emofuse.data.ravdess import ravdess_root

    path = Path(dataset_dir)
    label = path if path.is_file() else path / "label.csv"
    if not label.is_file():
        root = ravdess_root(path) if path.is_dir() else None
        if root is not None:
            if labels == "regression":
                raise ValueError(f"{path}: RAVDESS's labels are its 8 emotion classes; use --labels "
                                 "classification (or auto)")
            df, names = ravdess_table(root)
            digest = hashlib.sha256(df.to_csv(index=False).encode()).hexdigest()
            return DatasetTable(root, root, df, digest, "classification", names)
        if not path.exists():
            raise FileNotFoundError(f"dataset folder {path} does not exist")
        raise FileNotFoundError(f"{path} holds no label.csv (MMSA-FET layout: label.csv + "
                                "Raw/<video_id>/<clip_id>.mp4) and is no RAVDESS folder (Actor_NN/*.wav)")
    # rows without text are fine where the words come from speech recognition
    df = read_label_csv(label, labels=labels, allow_empty_text=allow_empty_text)
    task = label_task(df, labels)
    names: list[str] = []
    if task == "classification":
        per_id = df.groupby("label")["annotation"].unique()
        if all(len(v) == 1 for v in per_id) and list(per_id.index) == list(range(len(per_id))):
            names = [str(v[0]) for v in per_id]
    return DatasetTable(label, label.parent / "Raw", df, file_hash(str(label)), task, names)


def ravdess_table(root: Path):  # -> (DataFrame, class names)
    """RAVDESS's speech clips as label.csv rows (song clips, vocal channel 02, are another task)."""
    import pandas as pd

    from emofuse.data.ravdess import ACTOR_SPLITS, EMOTIONS, STATEMENTS, parse_name

    rows = []
    for wav in sorted(root.glob("Actor_[0-9][0-9]/*.wav")):
        codes = parse_name(wav)  # a stray file name is a DataFormatError naming it
        if codes["channel"] != 1:
            continue
        split = next((s for s, actors in ACTOR_SPLITS.items() if codes["actor"] in actors), None)
        if split is None or codes["statement"] not in STATEMENTS:
            raise DataFormatError(f"{wav}: actor {codes['actor']:02d} / statement {codes['statement']:02d} "
                                  "is not one of RAVDESS's (actors 01-24, statements 01-02)")
        rows.append((wav.parent.name, wav.stem, STATEMENTS[codes["statement"]], codes["emotion"] - 1,
                     EMOTIONS[codes["emotion"] - 1], split))
    if not rows:
        raise DataFormatError(f"{root}: the Actor_NN folders hold no RAVDESS speech .wav files (03-01-*.wav)")
    df = pd.DataFrame(rows, columns=["video_id", "clip_id", "text", "label", "annotation", "mode"])
    df["label"] = df["label"].astype(np.int64)
    return df, list(EMOTIONS)


def clip_path(folder: Path, video_id: str, clip_id: str) -> Path:
    """<folder>/<video_id>/<clip_id>.mp4 (folder: label.csv's Raw/), or another media extension."""
    base = folder / video_id
    for ext in MEDIA_EXTENSIONS:
        candidate = base / f"{clip_id}{ext}"
        if candidate.is_file():
            return candidate
    return base / f"{clip_id}.mp4"


def clip_jobs(folder: Path, df, shard: tuple[int, int] | None) -> list[ClipJob]:  # df: DataFrame
    jobs = []
    for row_index, row in enumerate(df.itertuples(index=False)):
        if shard is not None and row_index % shard[1] != shard[0]:
            continue
        vid, cid = str(row.video_id), str(row.clip_id)
        jobs.append(ClipJob(f"{vid}$_${cid}", str(clip_path(folder, vid, cid)), str(row.text)))
    return jobs


# --------------------------------------------------------------------------- workers
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


def _results(jobs: Sequence[ClipJob], config: ExtractConfig, cache_dir: str | None, workers: int,
             raw_store: str | None) -> Iterator[ClipResult]:
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


# --------------------------------------------------------------------------- the runner
def extract_dataset(
    dataset_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    config: ExtractConfig | None = None,
    workers: int = 1,
    on_error: str = "skip",
    shard: str | tuple[int, int] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    raw: bool = False,
    raw_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
    labels: str = "auto",
) -> ExtractResult:
    """Extract every clip of an MMSA-FET (or RAVDESS) folder; write the pickles (or a shard) and the report.

    cache_dir: the per-clip stage cache (default <emofuse cache>/extract).
    labels: how label.csv's labels are read ('auto', 'regression', 'classification').
    raw: also write every clip's per-word face crops and log-mel patches (the paper's front end,
        read by `train --video-encoder harris3d_cnn --audio-encoder spectro_cnn`) into the raw
        store `<out stem>.raw/` beside the pickle, or `raw_dir` when given; the aligned pickle
        names each clip's files relative to itself, so the folder can be moved as a whole.
    Raises ValueError for bad options, the first clip's ClipError with on_error='stop'.
    """
    from tqdm.auto import tqdm

    from emofuse.features.text_models import resolve_cache_dir

    config = config or ExtractConfig()
    if on_error not in ON_ERROR:
        raise ValueError(f"--on-error must be one of {list(ON_ERROR)}, got {on_error!r}")
    if workers < 1:
        raise ValueError(f"--workers must be >= 1, got {workers}")
    shard_pair = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    table = dataset_rows(dataset_dir, labels, allow_empty_text=recognises_words(config))
    label, df = table.source, table.df
    cache = str(cache_dir) if cache_dir is not None else str(resolve_cache_dir() / "extract")
    jobs = clip_jobs(table.media_root, df, shard_pair)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw_store = raw_store_path(out, raw_dir) if raw or raw_dir is not None else None

    started = time.perf_counter()
    results: list[ClipResult] = []
    bar = tqdm(total=len(jobs), desc="extract", unit="clip", disable=not progress)
    stream = _results(jobs, config, cache, workers, None if raw_store is None else str(raw_store))
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
    report = build_report(results, config, label, shard_pair, time.perf_counter() - started, workers,
                          transcripts={j.clip_id: j.transcript for j in jobs})
    if on_error == "stop" and any(r.status != "ok" for r in results):
        write_report(report, out)
        first = next(r for r in results if r.status != "ok")
        raise DataFormatError(f"{first.message} (--on-error stop; report in {report_paths(out)[0]})")

    if shard_pair is not None:
        payload = {
            "format": SHARD_FORMAT, "version": SHARD_VERSION, "label_csv": str(label),
            "label_sha256": table.fingerprint, "config": config.to_dict(), "shard": list(shard_pair),
            "clip_ids": [j.clip_id for j in jobs], "results": results, "on_error": on_error,
            "labels": labels, "raw_store": None if raw_store is None else str(raw_store.resolve()),
        }
        with atomic_path(out) as tmp, open(tmp, "wb") as handle:
            pickle.dump(payload, handle, protocol=4)
        write_report(report, out)
        return ExtractResult([out, *report_paths(out)], report)
    outputs = write_pickles(table, results, config, out, on_error, raw_store)
    write_report(report, out)
    return ExtractResult([*outputs, *report_paths(out)], report)


def recognises_words(config: ExtractConfig) -> bool:
    """Whether a clip without a transcript still gets words (speech recognition, not only alignment)."""
    return config.words != "pocketsphinx"


def raw_store_path(out: Path, raw_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where --raw writes: `raw_dir`, or `<out stem>.raw/` beside the pickle."""
    return Path(raw_dir) if raw_dir is not None else out.with_name(f"{out.stem}.raw")


def unaligned_path(out: Path) -> Path:
    return out.with_name(f"{out.stem}_unaligned{out.suffix or '.pkl'}")


def report_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(f"{out.stem}.report.json"), out.with_name(f"{out.stem}.report.csv")


# --------------------------------------------------------------------------- report
def build_report(results: Sequence[ClipResult], config: ExtractConfig, label: Path,
                 shard: tuple[int, int] | None, seconds: float, workers: int,
                 transcripts: dict[str, str | None] | None = None) -> dict[str, Any]:
    """The run's report; with `transcripts` (label.csv's text per clip id) it also scores the words
    that speech recognition found against them (`asr_wer`)."""
    ok = [r for r in results if r.status == "ok"]
    stage_seconds: dict[str, float] = {}
    for r in ok:
        for stage, s in r.timings.items():
            stage_seconds[stage] = stage_seconds.get(stage, 0.0) + s
    audio_seconds = sum(r.duration for r in ok)
    return {
        "label_csv": str(label),
        "shard": list(shard) if shard else None,
        "clips": len(results),
        "ok": len(ok),
        "failed": [{"id": r.clip_id, "path": r.path, "reason": r.status, "message": r.message}
                   for r in results if r.status != "ok"],
        "word_sources": _count(r.record["word_source"] for r in ok if r.record),
        "media_seconds": round(audio_seconds, 3),
        "wall_seconds": round(seconds, 3),
        "workers": workers,
        # seconds of work per second of media, per stage (cache hits make these small)
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "stage_real_time_factor": {k: round(v / audio_seconds, 4) for k, v in stage_seconds.items()}
        if audio_seconds else {},
        "asr_wer": asr_word_error_rate(ok, transcripts or {}),
        # with --raw: the raw store's size, in all and per minute of media
        "raw_store_bytes": _raw_bytes(ok),
        "raw_store_mb_per_media_minute": round(_raw_bytes(ok) / 2**20 / (audio_seconds / 60), 3)
        if audio_seconds and _raw_bytes(ok) else None,
        "config": config.to_dict(),
        "statuses": [{"id": r.clip_id, "path": r.path, "status": r.status, "message": r.message}
                     for r in results],
    }


def _raw_bytes(results: Sequence[ClipResult]) -> int:
    return sum(os.path.getsize(f) for r in results for f in r.raw_files.values() if os.path.isfile(f))


def _normal_words(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]", " ", text.lower()).split()


def _edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        diagonal, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            diagonal, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, diagonal + (x != y))
    return row[-1]


def asr_word_error_rate(results: Sequence[ClipResult], transcripts: dict[str, str | None]) -> dict[str, Any] | None:
    """Word error rate of recognised words against the known text (lower case, punctuation dropped).

    Only clips whose words came from speech recognition (word_source 'asr:...') and that have a
    text count; None when there are none (forced alignment reproduces the text by construction).
    """
    edits = words = exact = clips = 0
    for r in results:
        text = transcripts.get(r.clip_id)
        if r.record is None or not text or not str(r.record["word_source"]).startswith("asr"):
            continue
        reference, found = _normal_words(text), _normal_words(r.record["raw_text"])
        edits += _edit_distance(reference, found)
        words += len(reference)
        exact += reference == found
        clips += 1
    if not words:
        return None
    return {"wer": round(edits / words, 5), "edits": edits, "reference_words": words, "clips": clips,
            "exact_clips": exact}


def _count(values) -> dict[str, int]:  # Iterable[str]
    out: dict[str, int] = {}
    for v in values:
        out[v] = out.get(v, 0) + 1
    return out


def write_report(report: dict[str, Any], out: Path) -> None:
    json_path, csv_path = report_paths(out)
    with atomic_path(json_path) as tmp:
        tmp.write_text(json.dumps(report, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "path", "status", "message"])
    for row in report["statuses"]:
        writer.writerow([row["id"], row["path"], row["status"], row["message"]])
    with atomic_path(csv_path) as tmp:
        tmp.write_text(buffer.getvalue())


# --------------------------------------------------------------------------- pickles
def write_pickles(table: DatasetTable, results: Sequence[ClipResult], config: ExtractConfig, out: Path,
                  on_error: str, raw_store: Path | None = None) -> list[Path]:
    """Build the aligned and unaligned MMSA pickles from clip results (label.csv row order).

    Both carry, under the top-level key 'emofuse' (MMSA's readers look at the splits only), the
    extraction config and the log-mel map; with a raw store, the aligned pickle also names each
    clip's raw files relative to its own folder ('raw_vision_file', 'raw_audio_file') and the
    store's item shapes, which `load_mmsa_pickle` turns into lazily read raw inputs.
    """
    by_id = {r.clip_id: r for r in results}
    ok = [r for r in results if r.status == "ok" and r.record is not None]
    if not ok:
        reasons = _count(r.status for r in results)
        raise DataFormatError(f"no clip could be extracted ({reasons}); see {report_paths(out)[0]}")
    dims = {m: x.shape[1] for m, x in ok[0].record["aligned"].items()}
    # one padded length per modality across all splits, as MMSA's files have
    longest = {m: max(len(r.record["unaligned"][m]) for r in ok) for m in dims}
    raw = _raw_references(ok, config, out, raw_store) if raw_store is not None else None
    aligned = _splits(table, by_id, dims, {m: config.max_words for m in dims}, on_error == "pad",
                      out.stem, aligned=True, raw=raw)
    unaligned = _splits(table, by_id, dims, longest, on_error == "pad", unaligned_path(out).stem,
                        aligned=False)
    meta = pickle_meta(config)
    save_mmsa_pickle(aligned, out, meta={**meta, "view": "aligned", "raw": None if raw is None else raw["meta"]})
    save_mmsa_pickle(unaligned, unaligned_path(out), meta={**meta, "view": "unaligned", "raw": None})
    return [out, unaligned_path(out)]


def pickle_meta(config: ExtractConfig) -> dict[str, Any]:
    """What an extracted pickle says about how it was made (see `emofuse.data.frontend`)."""
    from emofuse.features.audio import logmel_config

    logmel = logmel_config(config.n_mels, config.n_fft, config_sample_rate(config))
    return {"format": "emofuse-extract", "extract_config": config.to_dict(), "logmel": logmel.describe()}


def config_sample_rate(config: ExtractConfig) -> int:
    """The decoder's audio rate: the log-mel is computed at it."""
    from emofuse.features.registry import get_extractor

    return int(get_extractor(config.decoder, "decode").Config().sample_rate)


def _raw_references(ok: Sequence[ClipResult], config: ExtractConfig, out: Path, store: Path) -> dict[str, Any]:
    """Per clip id, its raw files relative to the pickle's folder; an empty file for padded clips."""
    kinds = [m for m in ("vision", "audio") if all(m in r.raw_files for r in ok)]
    shapes = {m: list(shape) for m, shape in config.raw_shapes.items()}
    base = out.resolve().parent
    files = {r.clip_id: {m: os.path.relpath(r.raw_files[m], base) for m in kinds} for r in ok}
    empty = {}
    for m in kinds:  # a clip kept by --on-error pad has one all-zero word, as its features do
        path = write_clip(store / "empty", m, np.zeros((1, *shapes[m])), RAW_DTYPES[RAW_KEY_OF[m]])
        empty[m] = os.path.relpath(path.resolve(), base)
    return {"files": files, "empty": empty,
            "meta": {"store": os.path.relpath(store.resolve(), base), "shapes": {m: shapes[m] for m in kinds},
                     "dtypes": {m: RAW_DTYPES[RAW_KEY_OF[m]] for m in kinds}}}


def _splits(table: DatasetTable, by_id: dict[str, ClipResult], dims: dict[str, int],
            max_lengths: dict[str, int], pad: bool, name: str, aligned: bool,
            raw: dict[str, Any] | None = None) -> DatasetSplits:
    df = table.df
    classification = table.task == "classification"
    labels_all = df["label"].to_numpy(dtype=np.float64)
    # scores that happen to be class ids also get a classification key (as before)
    integral = not classification and bool(np.all(labels_all == np.round(labels_all)) and np.all(labels_all >= 0))
    datasets = {}
    for split in SPLITS:
        rows = df[df["mode"] == split]
        samples = []
        for row in rows.itertuples(index=False):
            clip_id = f"{row.video_id}$_${row.clip_id}"
            result = by_id.get(clip_id)
            if result is None:
                continue
            if result.status == "ok" and result.record is not None:
                samples.append((row, result))
            elif pad:
                samples.append((row, result))
        if not samples:
            raise DataFormatError(f"split {split!r} has no extracted clip; see the report")
        datasets[split] = _dataset(samples, dims, max_lengths, aligned, split, integral, classification, raw)
    return DatasetSplits(**datasets, name=name, class_names=list(table.class_names))


def _dataset(samples: list, dims: dict[str, int], max_lengths: dict[str, int], aligned: bool, split: str,
             integral: bool, classification: bool = False, raw: dict[str, Any] | None = None) -> MultimodalDataset:
    n = len(samples)
    sequences: dict[str, list[np.ndarray]] = {m: [] for m in dims}
    for _, result in samples:
        record = result.record
        for m, d in dims.items():
            if record is None:
                sequences[m].append(np.zeros((1, d), np.float32))
            else:
                x = record["aligned" if aligned else "unaligned"][m]
                sequences[m].append(x if len(x) else np.zeros((1, d), np.float32))
    features, lengths = {}, {}
    for m, seqs in sequences.items():
        max_len = max_lengths[m]
        arr = np.zeros((n, max_len, dims[m]), np.float32)
        lens = np.zeros(n, np.int64)
        for i, x in enumerate(seqs):
            k = min(len(x), max_len)
            arr[i, :k] = x[:k]
            lens[i] = max(k, 1)
        features[m], lengths[m] = torch.from_numpy(arr), torch.from_numpy(lens)
    rows = [row for row, _ in samples]
    results = [r for _, r in samples]
    labels = (np.array([int(row.label) for row in rows], np.int64) if classification
              else np.array([float(row.label) for row in rows], np.float32))
    extras = {
        "annotations": np.array([str(row.annotation) for row in rows], dtype=object),
        "extract_status": np.array([r.status for r in results], dtype=object),
        "word_source": np.array([r.record["word_source"] if r.record else "" for r in results], dtype=object),
        "word_times": np.array([json.dumps(_word_times(r.record)) for r in results], dtype=object),
    }
    if integral:
        extras["classification_labels"] = labels.astype(np.int64)
    if aligned and "vision" in dims:
        # words during which no face was seen: their vision is missing (emofuse.data.normalize)
        missing = np.zeros((n, max_lengths["vision"]), dtype=bool)
        for i, r in enumerate(results):
            flags = np.asarray((r.record or {}).get("vision_missing", []), dtype=bool)[: missing.shape[1]]
            missing[i, : len(flags)] = flags
        if missing.any():
            extras["vision_missing"] = missing
    for m in raw["empty"] if raw is not None else ():
        extras[f"raw_{m}_file"] = np.array([raw["files"][r.clip_id][m] if r.clip_id in raw["files"] else raw["empty"][m]
                                            for r in results], dtype=object)
    return MultimodalDataset(
        features=features,
        lengths=lengths,
        labels=torch.from_numpy(labels),
        ids=[r.clip_id for r in results],
        raw_text=[r.record["raw_text"] if r.record else str(row.text) for row, r in samples],
        source=f"extract [{split}]",
        extras=extras,
    )


def _word_times(record: dict[str, Any] | None) -> list[list[Any]]:
    if record is None:
        return []
    return [[w, round(float(s), 3), round(float(e), 3)]
            for w, s, e in zip(record["words"], record["starts"], record["ends"], strict=True)]


# --------------------------------------------------------------------------- merging shards
def _read_shard(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise FileNotFoundError(f"shard file {path} does not exist")
    try:
        with open(path, "rb") as handle:
            payload = pickle.load(handle)  # our own shard files only
    except Exception as exc:  # truncated: EOFError, garbage: UnpicklingError, ...
        raise DataFormatError(f"{path} is not a readable shard file ({type(exc).__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != SHARD_FORMAT:
        raise DataFormatError(f"{path} is not an `emofuse extract --shard` output")
    return payload


def merge_shards(shards: Sequence[str | os.PathLike[str]], out: str | os.PathLike[str],
                 dataset_dir: str | os.PathLike[str] | None = None) -> ExtractResult:
    """Check that the shards cover every clip of label.csv exactly once, then write the pickles."""
    out = Path(out)
    payloads = [(Path(p), _read_shard(Path(p))) for p in shards]
    if not payloads:
        raise ValueError("no shard files given")
    first_path, first = payloads[0]
    n = first["shard"][1]
    seen: dict[int, Path] = {}
    for path, p in payloads:
        for key, what in (("label_sha256", "label.csv"), ("config", "extraction config"),
                          ("on_error", "--on-error policy")):
            if p[key] != first[key]:
                raise DataFormatError(f"{path} was made with another {what} than {first_path}")
        i, m = p["shard"]
        if m != n:
            raise DataFormatError(f"{path} is shard {i}/{m} but {first_path} is one of {n} shards")
        if i in seen:
            raise DataFormatError(f"shard {i}/{n} given twice: {seen[i]} and {path}")
        seen[i] = path
    missing = sorted(set(range(n)) - set(seen))
    if missing:
        raise DataFormatError(f"shard(s) {missing} of {n} are missing; got {sorted(seen)}")
    config = ExtractConfig(**{k: tuple(v) if k == "audio" else v for k, v in first["config"].items()})
    table = dataset_rows(Path(dataset_dir) if dataset_dir is not None else Path(first["label_csv"]),
                         first.get("labels", "auto"), allow_empty_text=recognises_words(config))
    label, df = table.source, table.df
    if table.fingerprint != first["label_sha256"]:
        raise DataFormatError(f"{label} changed since the shards were extracted")
    results: dict[str, ClipResult] = {}
    for path, p in payloads:
        for r in p["results"]:
            if r.clip_id in results:
                raise DataFormatError(f"clip {r.clip_id} appears in two shards ({path})")
            results[r.clip_id] = r
    expected = [f"{v}$_${c}" for v, c in zip(df["video_id"], df["clip_id"], strict=True)]
    absent = [c for c in expected if c not in results]
    if absent:
        more = f" and {len(absent) - 5} more" if len(absent) > 5 else ""
        raise DataFormatError(f"{len(absent)} clip(s) of {label} are in no shard: {absent[:5]}{more}")
    extra = sorted(set(results) - set(expected))
    if extra:
        raise DataFormatError(f"shards hold clips that {label} does not list: {extra[:5]}")
    ordered = [results[c] for c in expected]
    texts = {f"{v}$_${c}": t for v, c, t in zip(df["video_id"], df["clip_id"], df["text"], strict=True)}
    report = build_report(ordered, config, label, None, 0.0, 0, transcripts=texts)
    report["merged_from"] = [str(p) for p, _ in payloads]
    out.parent.mkdir(parents=True, exist_ok=True)
    # the shards' raw stores stay where they were written; the merged pickle names their files
    stores = {p.get("raw_store") for _, p in payloads}
    if len(stores) > 1 and None in stores:
        raise DataFormatError("some shards were extracted with --raw and others without; extract them alike")
    store = next(iter(stores)) if stores else None
    outputs = write_pickles(table, ordered, config, out, first["on_error"],
                            Path(store) if store is not None else None)
    write_report(report, out)
    return ExtractResult([*outputs, *report_paths(out)], report)


"""`emofuse extract`: an MMSA-FET folder (label.csv + Raw/<video_id>/<clip_id>.mp4) -> MMSA pickles.

This module runs the steps; each lives in its own module:
- `clip_table`: the clips: label.csv, or a RAVDESS folder (Actor_NN/03-01-EE-II-SS-RR-AA.wav, no
  label.csv) read in its own layout, and the table's fingerprint. Labels: a label.csv holds
  sentiment scores, or with `labels='classification'` (or a 'class'/'emotion' column) class
  ids/names (`emofuse.data.label_csv`);
- `pool`: every clip's features (`emofuse.features.clip`), here or in worker processes (spawned:
  each loads its models once), with the failure policy;
- `extract_pickles`: for --out FILE.pkl, FILE.pkl (aligned to words: what `train` reads) and
  FILE_unaligned.pkl;
- `extract_report`: FILE.report.json and FILE.report.csv: every clip's status, and for each failed
  clip why (missing_file, unreadable_file, no_audio_track, no_video_track, too_short, no_speech,
  no_face);
- `shards`: `--shard i/n` writes a shard file instead of pickles; `merge_shards` joins them.

Stage results are cached per clip (see `emofuse.features.clip`), so a killed run resumes and
writes the same pickle. Failure policy: 'skip' leaves a failed clip out, 'pad' keeps it with one
all-zero step per modality (its 'extract_status' extra says why), 'stop' ends the run at the
first failure.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from emofuse.data.dataset import DataFormatError, parse_modalities
from emofuse.errors import OptionError
from emofuse.features.clip import ExtractConfig
from emofuse.features.clip_table import clip_jobs, dataset_rows, recognises_words
from emofuse.features.extract_pickles import write_pickles
from emofuse.features.extract_report import ExtractResult, build_report, report_paths, write_report
from emofuse.features.pool import ON_ERROR, run_jobs
from emofuse.features.shards import parse_shard, write_shard


def extract_config(modalities: str = "T+A+V", **options: Any) -> ExtractConfig:
    """An ExtractConfig for the modalities wanted ('T+A+V', 'T+A', 'A', 'A+V'; audio is always
    extracted: words and their times come from it); other options go to ExtractConfig."""
    wanted = parse_modalities(modalities)
    if "audio" not in wanted:
        raise OptionError(f"--modalities {modalities}: audio is always extracted (the words and their times "
                          "come from it); give T+A+V, T+A, A+V or A")
    return ExtractConfig(text="text" in wanted, video="vision" in wanted, **options)


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
    Raises OptionError for bad options, the first clip's ClipError with on_error='stop'.
    """
    from emofuse.runtime import resolve_cache_dir

    config = config or ExtractConfig()
    if on_error not in ON_ERROR:
        raise OptionError(f"--on-error must be one of {list(ON_ERROR)}, got {on_error!r}")
    if workers < 1:
        raise OptionError(f"--workers must be >= 1, got {workers}")
    shard_pair = parse_shard(shard) if isinstance(shard, str) or shard is None else shard
    table = dataset_rows(dataset_dir, labels, allow_empty_text=recognises_words(config))
    cache = str(cache_dir) if cache_dir is not None else str(resolve_cache_dir() / "extract")
    jobs = clip_jobs(table.media_root, table.df, shard_pair)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    raw_store = raw_store_path(out, raw_dir) if raw or raw_dir is not None else None

    started = time.perf_counter()
    results = run_jobs(jobs, config, cache, workers, None if raw_store is None else str(raw_store), on_error,
                       progress)
    report = build_report(results, config, table.source, shard_pair, time.perf_counter() - started, workers,
                          transcripts={j.clip_id: j.transcript for j in jobs})
    if on_error == "stop" and any(r.status != "ok" for r in results):
        write_report(report, out)
        first = next(r for r in results if r.status != "ok")
        raise DataFormatError(f"{first.message} (--on-error stop; report in {report_paths(out)[0]})")

    if shard_pair is not None:
        write_shard(out, table, config, shard_pair, jobs, results, on_error, labels, raw_store)
        write_report(report, out)
        return ExtractResult([out, *report_paths(out)], report)
    outputs = write_pickles(table, results, config, out, on_error, raw_store)
    write_report(report, out)
    return ExtractResult([*outputs, *report_paths(out)], report)


def raw_store_path(out: Path, raw_dir: str | os.PathLike[str] | None = None) -> Path:
    """Where --raw writes: `raw_dir`, or `<out stem>.raw/` beside the pickle."""
    return Path(raw_dir) if raw_dir is not None else out.with_name(f"{out.stem}.raw")

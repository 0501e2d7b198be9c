"""The report of an `emofuse extract` run: FILE.report.json and FILE.report.csv beside FILE.pkl.

It lists every clip's status and, for each failed clip, why (missing_file, unreadable_file,
no_audio_track, no_video_track, too_short, no_speech, no_face); it also gives the seconds each
stage took per second of media (the real-time factors; model loading is not in them, it is
counted apart, in seconds summed over the workers that loaded), the word error rate of speech
recognition against label.csv's text, and the raw store's size.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from emofuse.features.clip import ExtractConfig
from emofuse.features.pool import ClipResult
from emofuse.files import atomic_write_text


@dataclass
class ExtractResult:
    outputs: list[Path]
    report: dict[str, Any]

    @property
    def failed(self) -> list[dict[str, str]]:
        return self.report["failed"]


def report_paths(out: Path) -> tuple[Path, Path]:
    return out.with_name(f"{out.stem}.report.json"), out.with_name(f"{out.stem}.report.csv")


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
    # each worker's model loading, on its first result (failed or not); none in old shard files
    loads = [load for r in results if (load := getattr(r, "load_seconds", None))]
    load_seconds: dict[str, float] = {}
    for load in loads:
        for model, s in load.items():
            load_seconds[model] = load_seconds.get(model, 0.0) + s
    return {
        "label_csv": str(label),
        "shard": list(shard) if shard else None,
        "clips": len(results),
        "ok": len(ok),
        "failed": [{"id": r.clip_id, "path": r.path, "reason": r.status, "message": r.message}
                   for r in results if r.status != "ok"],
        "word_sources": dict(Counter(r.record["word_source"] for r in ok if r.record)),
        "media_seconds": round(audio_seconds, 3),
        "wall_seconds": round(seconds, 3),
        "workers": workers,
        # seconds of work per second of media, per stage (cache hits make these small)
        "stage_seconds": {k: round(v, 3) for k, v in stage_seconds.items()},
        "stage_real_time_factor": {k: round(v / audio_seconds, 4) for k, v in stage_seconds.items()}
        if audio_seconds else {},
        # model loading (before each worker's first clip; not in the stage times), summed over the
        # workers that loaded (model_load_workers), in all and per model
        "model_load_seconds": round(sum(load_seconds.values()), 3),
        "model_load_seconds_by_model": {k: round(v, 3) for k, v in load_seconds.items()},
        "model_load_workers": len(loads),
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


def asr_word_error_rate(
    results: Sequence[ClipResult], transcripts: dict[str, str | None]
) -> dict[str, Any] | None:
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


def write_report(report: dict[str, Any], out: Path) -> None:
    """FILE.report.json (the whole report) and FILE.report.csv (id, path, status, message per clip)."""
    json_path, csv_path = report_paths(out)
    atomic_write_text(json_path, json.dumps(report, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["id", "path", "status", "message"])
    for row in report["statuses"]:
        writer.writerow([row["id"], row["path"], row["status"], row["message"]])
    atomic_write_text(csv_path, buffer.getvalue())

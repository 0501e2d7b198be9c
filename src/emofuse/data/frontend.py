"""The record of how a dataset's inputs were made from media, which a run folder keeps.

`predict` turns a new clip into the inputs a run was trained on. What that takes depends on the
training data, and it used to be worked out from the data's path at predict time (the report
beside a pickle, a RAVDESS folder's config), so a run copied to another machine, or whose data
had moved, was fed other inputs than it learnt from. Now every source that is made from media
says how in `DatasetSplits.frontend`, the trainer writes that into the run's config.json, and
`predict` reads only the run folder.

Keys (all plain JSON):
    version      FRONTEND_VERSION
    source       'extract' (an `emofuse extract` pickle), 'ravdess', 'synthetic-raw'
    segments     'words' (one step per word, extract) or 'windows' (RAVDESS's fixed windows)
    extract      the ExtractConfig as a dict (source 'extract'), or None
    view         'aligned' or 'unaligned' (the pickle the run read)
    logmel       the log-mel map (`emofuse.audio_frontend.LogMelConfig.describe()`), or None
    raw_shapes   modality -> per-word item shape of the raw inputs ([F, S, S] crops, [n_mels, T])
    ravdess      the RavdessConfig as a dict (windows, speaker_norm), source 'ravdess' only
"""

from __future__ import annotations

from typing import Any

FRONTEND_VERSION = 1
SOURCES = ("extract", "ravdess", "synthetic-raw")


def frontend_record(source: str, *, segments: str = "words", extract: dict[str, Any] | None = None,
                    view: str = "aligned", logmel: dict[str, Any] | None = None,
                    raw_shapes: dict[str, list[int]] | None = None,
                    ravdess: dict[str, Any] | None = None) -> dict[str, Any]:
    if source not in SOURCES:
        raise ValueError(f"unknown front-end source {source!r}; known: {SOURCES}")
    return {
        "version": FRONTEND_VERSION, "source": source, "segments": segments, "extract": extract,
        "view": view, "logmel": logmel,
        "raw_shapes": {m: [int(s) for s in shape] for m, shape in (raw_shapes or {}).items()},
        "ravdess": ravdess,
    }

"""`--data synthetic-clips`: the generated talking-face clips, through the whole front end.

The clips are real mp4 files (`emofuse.data.synthetic_clips`: espeak-ng speech, a face from
scikit-image, planted text, audio, visual and interaction cues). This source generates them once,
runs `emofuse extract --raw` over them once (both cached), and loads the aligned pickle with its
raw store, so a model trains on exactly what extract gives for any video folder: word times from
forced alignment, openSMILE/librosa audio, mediapipe face features, per-word face crops and
log-mel patches. The planted parts and the reference predictions ride along as extras
(`oracle_full`, ...), which `ablate --attention` and `compare` print as ceilings.

Data options (`-D key=value`): the generator's (`SyntheticClipsConfig`) and these extraction ones.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.data.dataset import DataFormatError, DatasetSplits, MultimodalDataset
from emofuse.data.sources import SourceRequest, data_config, register_source


@dataclass
class ClipExtraction:
    """How the generated clips are extracted (part of the cache key, but for `workers`)."""

    # small crops: the planted events are large, and a 3D CNN over 8 x 32 x 32 trains about ten
    # times faster on a CPU than over 16 x 48 x 48 (measured: 32 vs 3-10 words a second)
    crop_frames: int = 8
    crop_size: int = 32
    n_mels: int = 64
    logmel_frames: int = 16
    max_words: int = 12
    workers: int = 0  # 0: one per core, at most 2 (the machines this runs on have 2)


@register_source("synthetic-clips", options=True)
def _synthetic_clips_source(request: SourceRequest) -> DatasetSplits:
    return load_synthetic_clips(request.options)


def load_synthetic_clips(options: dict[str, Any], progress: bool = True) -> DatasetSplits:
    from emofuse.data.mmsa import load_mmsa_pickle
    from emofuse.data.raw import store_key
    from emofuse.data.synthetic_clips import SyntheticClipsConfig, make_synthetic_clips, planted_extras
    from emofuse.features.align import ALIGNMENT_RULE
    from emofuse.features.extract import extract_config, extract_dataset

    # the options of both configs share one namespace: unknown keys are named with the known ones
    # of both, then each config takes its own
    extraction_keys = {f.name for f in dataclasses.fields(ClipExtraction)}
    generator_keys = {f.name for f in dataclasses.fields(SyntheticClipsConfig)}
    unknown = sorted(set(options) - extraction_keys - generator_keys)
    if unknown:
        raise DataFormatError(f"synthetic-clips: unknown data option(s) {unknown}; known: "
                              f"{sorted(extraction_keys | generator_keys)}")
    extraction = data_config(ClipExtraction, {k: v for k, v in options.items() if k in extraction_keys},
                             "synthetic-clips")
    generator = data_config(SyntheticClipsConfig, {k: v for k, v in options.items() if k in generator_keys},
                            "synthetic-clips")
    folder = Path(make_synthetic_clips(generator, progress=progress))
    settings = {k: v for k, v in dataclasses.asdict(extraction).items() if k != "workers"}
    config = extract_config("T+A+V", **settings)
    out = folder / "extracted" / store_key(**config.to_dict(), alignment=ALIGNMENT_RULE) / "feat.pkl"
    if not out.is_file():
        workers = extraction.workers or min(2, os.cpu_count() or 1)
        extract_dataset(folder, out, config=config, workers=workers, raw=True, progress=progress)
    splits = load_mmsa_pickle(out)
    return DatasetSplits(*(_with_planted(d, folder, planted_extras) for _, d in splits.items()),
                         name="synthetic-clips", class_names=splits.class_names, frontend=splits.frontend)


def _with_planted(data: MultimodalDataset, folder: Path, planted_extras) -> MultimodalDataset:
    extras = dict(data.extras)
    for key, values in planted_extras(folder, data.ids).items():
        extras[key] = np.asarray(values)
    return dataclasses.replace(data, extras=extras)

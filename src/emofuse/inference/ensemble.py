"""Several runs predicting as one: `EnsemblePredictor(run_dirs)`, with `Predictor`'s public methods.

The runs are loaded, checked to predict the same thing (`evaluation.ensemble.check_compatible`:
one task, the same classes in the same order) and grouped by the extraction their layout needs
(`feature_layout(run).config`): a clip is extracted once per group, with the stages any run of
the group reads (a text-only run and a T+A+V run of one extraction share it), and every run makes
its own inputs from it (its view, its raw sizes) as a lone `Predictor` would.

The prediction dict has a single run's shape; its prediction is the ensemble's (the mean of the
runs' class probabilities, or scores: `evaluation.ensemble.average`) and `members` lists each
run's own (its name, model, modalities, and class with probabilities, or score with labels).
Contributions are the ensemble's too: with a modality removed, each run that reads it predicts
without it and the others predict as they are, and the mean of that is compared with the
ensemble's prediction. The clip's words, times and notes are those of the first run that reads
vision (else of the first run), whose extraction decoded the most.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from emofuse.data.dataset import MODALITIES, modality_code
from emofuse.evaluation.ensemble import average, check_compatible
from emofuse.evaluation.evaluate import load_run
from emofuse.features.clip import ClipExtractor, ClipFeatures, ExtractConfig
from emofuse.inference.predict import (
    Outcome,
    Predictor,
    RunMismatch,
    extraction_config,
    feature_layout,
    predict_each,
)

# a prediction's own fields (Predictor.summarise), which `members` repeats per run
SUMMARY_FIELDS = ("class", "class_index", "probability", "probabilities", "score", "labels")


class EnsemblePredictor:
    """Runs opened once and averaged; what `predict` and `serve` call on a `Predictor` works here.

    speaker_reference: reference clips of the speaker, fitted by the runs trained with speaker
    normalisation (refused, as by one run, when none was).
    """

    def __init__(self, run_dirs: Sequence[str | os.PathLike[str]], device: str = "cpu",
                 cache_dir: str | os.PathLike[str] | None = None,
                 speaker_reference: Sequence[str | os.PathLike[str]] = ()) -> None:
        started = time.perf_counter()
        paths = [Path(d) for d in run_dirs]
        runs = [load_run(p, device) for p in paths]
        check_compatible(runs)
        layouts = [feature_layout(run) for run in runs]
        bases: list[ExtractConfig] = []
        wanted: list[list[ExtractConfig]] = []
        self.group_of: list[int] = []
        for run, layout in zip(runs, layouts, strict=True):
            if layout.config not in bases:
                bases.append(layout.config)
                wanted.append([])
            group = bases.index(layout.config)
            self.group_of.append(group)
            wanted[group].append(extraction_config(run, layout))
        # a group's extractor runs every stage one of its runs reads; each run picks its own inputs
        self.extractors = [
            ClipExtractor(dataclasses.replace(base, require_video=any(c.require_video for c in configs),
                                              video=any(c.video for c in configs),
                                              text=any(c.text for c in configs)), cache_dir)
            for base, configs in zip(bases, wanted, strict=True)
        ]
        references = list(speaker_reference)
        normalised = [layout.speaker_norm != "none" for layout in layouts]
        self.members: list[Predictor] = []
        try:
            if references and not any(normalised):
                raise RunMismatch(
                    f"{', '.join(map(str, paths))}: none of the runs was trained with speaker normalisation, "
                    "so speaker reference clips have nothing to do; leave them out"
                )
            for i, (path, run) in enumerate(zip(paths, runs, strict=True)):
                self.members.append(Predictor(path, device, cache_dir, references if normalised[i] else (),
                                              run=run, extractor=self.extractors[self.group_of[i]]))
        except BaseException:
            self.close()
            raise
        first = self.members[0]
        self.is_classifier = first.is_classifier
        self.class_names = first.class_names
        self.modalities = tuple(m for m in MODALITIES if any(m in p.modalities for p in self.members))
        self.needs_video = any(p.needs_video for p in self.members)
        # the run whose extraction gives the clip-level fields: it decoded the video, if any run did
        self.lead = next((i for i, p in enumerate(self.members) if p.needs_video), 0)
        self.load_seconds = time.perf_counter() - started

    def close(self) -> None:
        for member in self.members:
            member.close()
        for extractor in self.extractors:
            extractor.close()

    def __enter__(self) -> EnsemblePredictor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def run_dirs(self) -> list[Path]:
        return [p.run_dir for p in self.members]

    def describe(self) -> dict[str, Any]:
        """A single run's description fields, for the ensemble: each field joins the runs' distinct values."""

        def joined(key: str) -> str:
            return "+".join(dict.fromkeys(str(p.describe()[key]) for p in self.members))

        encoders: dict[str, list[str]] = {}
        for p in self.members:
            for m, name in p.describe()["raw_encoders"].items():
                if name not in encoders.setdefault(m, []):
                    encoders[m].append(name)
        return {
            "run": f"ensemble of {len(self.members)} runs",
            "model": joined("model"),
            "modalities": modality_code(self.modalities),
            "task": self.members[0].run.spec.task,
            "features": joined("features"),
            "raw_encoders": {m: "+".join(names) for m, names in encoders.items()},
        }

    # ------------------------------------------------------------------ clips
    def extract(self, path: str | os.PathLike[str], transcript: str | None = None) -> list[ClipFeatures]:
        """The clip's features once per extraction group, in group order."""
        out = []
        for group in range(len(self.extractors)):
            members = [p for p, g in zip(self.members, self.group_of, strict=True) if g == group]
            # through a run that reads vision where there is one, so a missing video names that run
            reader = next((p for p in members if p.needs_video), members[0])
            out.append(reader.extract(path, transcript))
        return out

    def predict(self, path: str | os.PathLike[str], transcript: str | None = None) -> dict[str, Any]:
        features = self.extract(path, transcript)
        outcomes = [p.score_features(features[g]) for p, g in zip(self.members, self.group_of, strict=True)]
        result = self._combine(outcomes)
        timings: dict[str, float] = {}
        for clip in features:
            for stage, seconds in clip.timings.items():
                timings[stage] = timings.get(stage, 0.0) + seconds
        timings = {k: round(v, 4) for k, v in timings.items()}
        timings["model"] = result["timings"]["model"]
        timings["total"] = round(sum(timings.values()), 4)
        result["timings"] = timings
        return result

    def predict_many(self, paths: Sequence[str | os.PathLike[str]],
                     transcripts: Sequence[str | None] | None = None) -> list[dict[str, Any]]:
        """Each clip's dict, or its error (`predict_each`)."""
        return predict_each(self.predict, paths, transcripts)

    def predict_record(self, record: dict[str, Any], raw: dict[str, Any] | None = None,
                       clip: str = "<record>") -> dict[str, Any]:
        """An MMSA row's arrays -> the ensemble's dict; each run reads its own view of the record."""
        return self._combine([p.score_record(record, raw, clip) for p in self.members])

    def _combine(self, outcomes: list[Outcome]) -> dict[str, Any]:
        task = self.members[0].run.spec.task
        # Predictor.forward gives a classifier's probabilities (softmax), never its logits
        pred = average([o.pred for o in outcomes], task)
        without = {m: average([o.without.get(m, o.pred) for o in outcomes], task) for m in self.modalities}
        first, lead = self.members[0], outcomes[self.lead].result
        notes = list(dict.fromkeys(note for o in outcomes for note in o.result["notes"]))
        result = {
            "clip": lead["clip"],
            "notes": notes,
            "vision_missing_words": lead["vision_missing_words"],
            **self.describe(),
            **first.summarise(pred),
            "text": lead["text"],
            "word_source": lead["word_source"],
            "words": lead["words"],
            "contributions": first.contributions(pred, without),
            "members": [
                {k: o.result[k] for k in ("run", "model", "modalities", *SUMMARY_FIELDS) if k in o.result}
                for o in outcomes
            ],
            "timings": {"model": round(sum(o.result["timings"]["model"] for o in outcomes), 4)},
        }
        for key in ("duration", "face_fraction"):
            if key in lead:
                result[key] = lead[key]
        return result


AnyPredictor: TypeAlias = Predictor | EnsemblePredictor


def open_predictor(run_dirs: Sequence[str | os.PathLike[str]], device: str = "cpu",
                   cache_dir: str | os.PathLike[str] | None = None,
                   speaker_reference: Sequence[str | os.PathLike[str]] = ()) -> AnyPredictor:
    """A `Predictor` for one run (exactly as before ensembles), an `EnsemblePredictor` for several."""
    if len(run_dirs) == 1:
        return Predictor(run_dirs[0], device, cache_dir, speaker_reference=speaker_reference)
    return EnsemblePredictor(run_dirs, device, cache_dir, speaker_reference)

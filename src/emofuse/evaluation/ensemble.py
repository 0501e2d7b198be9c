"""Several runs as one model: which runs a command was given, whether they can be averaged, the mean.

`expand_runs` turns the run arguments into run folders: a run folder (it holds config.json) as
it is, a folder of seeds (`emofuse train --out OUT --seeds 1 2 3` writes OUT/seed_1, ...) as its
seed_N runs in seed order. `check_compatible` refuses runs whose outputs mean different things,
and `average` is the ensemble's prediction: the mean of the members' class probabilities (a
classifier) or scores (regression). Probabilities, not logits: each run's logits have their own
scale (a confident run's are large), and their mean is not the mean of what the runs believe.

Shared by `emofuse evaluate` (evaluation.evaluate.evaluate_runs) and by `predict`/`serve`
(inference.ensemble.EnsemblePredictor), so both average the same way.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emofuse.errors import UserError
from emofuse.training.checkpoint import CheckpointError

if TYPE_CHECKING:
    from emofuse.evaluation.evaluate import LoadedRun

SEED_FOLDER = re.compile(r"seed_(\d+)")


class IncompatibleRuns(UserError):
    """Runs whose predictions cannot be averaged (another task, other classes)."""


def seed_runs(folder: Path) -> list[Path]:
    """The seed_N run folders (with a config.json) in `folder`, by seed number."""
    found = []
    for sub in folder.iterdir():
        match = SEED_FOLDER.fullmatch(sub.name)
        if match and (sub / "config.json").is_file():
            found.append((int(match.group(1)), sub))
    return [path for _, path in sorted(found)]


def expand_runs(given: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Run folders from run arguments, in the order given; a folder of seeds adds its seed_N runs.

    A run named twice (directly, or also through its folder of seeds) counts once: averaging it
    twice would weigh it double without the user asking for that.
    """
    runs: list[Path] = []
    seen: set[Path] = set()
    for item in given:
        path = Path(item).expanduser()
        if (path / "config.json").is_file():
            found = [path]
        elif not path.exists():
            raise CheckpointError(f"{item}: no such run folder")
        elif not path.is_dir():
            raise CheckpointError(
                f"{item}: not a run folder (a file; give the folder that holds config.json)"
            )
        else:
            found = seed_runs(path)
            if not found:
                raise CheckpointError(
                    f"{item}: not a run folder (no config.json) nor a folder of runs "
                    "(no seed_N folder with one)"
                )
        for run in found:
            key = run.resolve()
            if key not in seen:
                seen.add(key)
                runs.append(run)
    return runs


def _kind(run: LoadedRun) -> str:
    if run.spec.task == "classification":
        return f"a classifier ({run.spec.num_classes} classes)"
    return "a regression run (scores)"


def _classes(run: LoadedRun) -> str:
    names = run.class_names
    return f"classes {names}" if names else f"{run.spec.num_classes} unnamed classes"


def check_compatible(runs: Sequence[LoadedRun]) -> None:
    """Refuse runs that predict different things: one IncompatibleRuns naming the first two that
    differ and how. Model, modalities and feature front end may differ; the task and, for
    classifiers, the class names in their order may not (a probability is averaged by position)."""
    first = runs[0]
    for run in runs[1:]:
        a, b = first.spec, run.spec
        why = ""
        if a.task != b.task:
            why = f"{first.run_dir} is {_kind(first)}, {run.run_dir} is {_kind(run)}"
        elif a.task == "classification":
            named = bool(first.class_names) and bool(run.class_names)
            if a.num_classes != b.num_classes or (named and first.class_names != run.class_names):
                order = named and sorted(first.class_names) == sorted(run.class_names)
                why = (f"{'the same classes in another order' if order else 'their classes differ'}: "
                       f"{first.run_dir} has {_classes(first)}, {run.run_dir} has {_classes(run)}")
        if why:
            raise IncompatibleRuns(f"runs {first.run_dir} and {run.run_dir} cannot be averaged: {why}")


def probabilities(logits: np.ndarray) -> np.ndarray:
    """Softmax over the last axis (a classifier's N x C logits -> N x C probabilities)."""
    x = np.asarray(logits, dtype=np.float64)
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def average(predictions: Sequence[np.ndarray], task: str) -> np.ndarray:
    """The ensemble's prediction: the element-wise mean of the members' class probabilities
    (classification; rows that are not probabilities are refused as a bug: logits must go through
    `probabilities` first) or scores (regression)."""
    if not predictions:
        raise ValueError("an ensemble needs at least one member's predictions")
    stacked = np.stack([np.asarray(p, dtype=np.float64) for p in predictions])
    if task == "classification" and (
        (stacked < -1e-6).any() or not np.allclose(stacked.sum(axis=-1), 1.0, atol=1e-3)
    ):
        raise ValueError("classifier outputs to average must be probabilities (softmax of the logits)")
    return stacked.mean(axis=0)

"""The validation search over training settings (`compare --search`), and each model's config.

The recipes themselves are registered with the models (`emofuse.models.registry.Recipe`, a
partial OptimConfig, from its paper / MMSA's MOSI config); each model trains with its own unless
`same_recipe` asks for one setting for all. Settings the user gave explicitly (`overrides`) win
over any recipe.

`search_settings` tries a small grid per model (e.g. lr x batch size) on the first seed, picks
the point with the lowest validation loss (the trainer's own selection criterion; test is never
read) and writes the grid, every point's validation loss and the choice into the model's
folder (`search.json`). The chosen point's run is reused as that seed's final run.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import json
import shutil
from pathlib import Path
from typing import Any

from emofuse.data.dataset import DatasetSplits
from emofuse.errors import OptionError
from emofuse.files import atomic_write_text
from emofuse.models.registry import RECIPE_FIELDS, get_recipe
from emofuse.training.config import TrainConfig
from emofuse.training.multiseed import summarise
from emofuse.training.trainer import RunResult, train_run

# what --search may vary, and the type of each value
SEARCH_KEYS: dict[str, type] = {"lr": float, "batch_size": int, "weight_decay": float, "grad_clip": float}


def model_config(
    base: TrainConfig,
    model: str,
    same_recipe: bool = False,
    overrides: dict[str, Any] | None = None,
    options: dict[str, Any] | None = None,
) -> TrainConfig:
    """`base` for `model`: its recipe (unless same_recipe), then the explicit overrides.

    options: the model's own config options; None keeps base.model_options.
    """
    opts = dict(base.model_options if options is None else options)
    recipe = None if same_recipe else get_recipe(model)
    return dataclasses.replace(base, model=model, model_options=opts).with_recipe(recipe, overrides)


def parse_search(texts: list[str] | str | None) -> dict[str, list[str]]:
    """'lr=1e-4,1e-3,batch_size=32,64' -> {'lr': ['1e-4', '1e-3'], 'batch_size': ['32', '64']}.

    A value may be 'xF': F times the model's own recipe value (lr=x0.3,x1,x3 brackets each
    model's reference lr). Several --search arguments add up.
    """
    grid: dict[str, list[str]] = {}
    for text in [texts] if isinstance(texts, str) else texts or []:
        key = None
        for token in (t.strip() for t in text.split(",")):
            if "=" in token:
                key, token = (s.strip() for s in token.split("=", 1))
                if key not in SEARCH_KEYS:
                    raise OptionError(
                        f"--search {text!r}: cannot search {key!r}; searchable: {', '.join(SEARCH_KEYS)}"
                    )
                grid.setdefault(key, [])
            if key is None or not token:
                raise OptionError(f"--search {text!r}: expected KEY=V1,V2[,KEY=V1,...], e.g. lr=x0.3,x1,x3")
            _value(key, token, 1.0)  # checked now, not after an hour of training
            if token not in grid[key]:
                grid[key].append(token)
    return grid


def _value(key: str, token: str, recipe_value: float) -> float | int:
    try:
        number = recipe_value * float(token[1:]) if token.startswith("x") else float(token)
    except ValueError:
        raise OptionError(f"--search {key}={token}: not a number (or xFACTOR)") from None
    if number < 0 or (key in ("lr", "batch_size") and number <= 0):
        raise OptionError(f"--search {key}={token}: must be positive")
    return max(1, round(number)) if SEARCH_KEYS[key] is int else float(number)


def grid_points(config: TrainConfig, grid: dict[str, list[str]]) -> list[dict[str, Any]]:
    """The grid resolved against one model's config: a list of settings, duplicates removed."""
    keys = list(grid)
    axes = [[_value(k, t, getattr(config, k)) for t in grid[k]] for k in keys]
    points: list[dict[str, Any]] = []
    for combo in itertools.product(*axes):
        point = dict(zip(keys, combo))
        if point not in points:
            points.append(point)
    return points


def _tag(point: dict[str, Any]) -> str:
    return "_".join(f"{k}={v:g}" for k, v in point.items())


def best_valid_loss(run_dir: Path) -> float:
    """The lowest validation loss of a finished run (the loss its checkpoint was chosen by)."""
    with (Path(run_dir) / "log.csv").open() as f:
        return min(float(r["valid_loss"]) for r in csv.DictReader(f))


def search_settings(
    config: TrainConfig,
    splits: DatasetSplits,
    grid: dict[str, list[str]],
    out_dir: Path,
    seed: int,
    resume: bool = False,
    progress: bool = False,
) -> dict[str, Any]:
    """Train every grid point with `seed` under out_dir/search/<point>; return the chosen point.

    Scored on the validation loss only; search.json records the grid and the choice.
    """
    points = grid_points(config, grid)
    scores = []
    for point in points:
        run_dir = Path(out_dir) / "search" / _tag(point) / f"seed_{seed}"
        train_run(
            dataclasses.replace(config, seed=seed, **point), splits, run_dir, resume=resume, progress=progress
        )
        scores.append({"settings": point, "valid_loss": best_valid_loss(run_dir), "run_dir": str(run_dir)})
    best = min(scores, key=lambda s: s["valid_loss"])
    record = {
        "model": config.model,
        "criterion": f"lowest validation loss of seed {seed} (test never read)",
        "grid": grid,
        "points": scores,
        "chosen": best["settings"],
    }
    atomic_write_text(Path(out_dir) / "search.json", json.dumps(record, indent=2) + "\n")
    return best


def train_model(
    config: TrainConfig,
    splits: DatasetSplits,
    out_dir: Path,
    seeds: list[int],
    grid: dict[str, list[str]] | None = None,
    resume: bool = False,
    progress: bool = False,
) -> tuple[list[RunResult], dict[str, Any]]:
    """One model: the optional search, then one run per seed in out_dir/seed_<s>.

    Like `train_seeds` (same summary.json), plus the search; with resume, finished runs are
    reused and interrupted ones continued (the trainer's resume), search points included.
    """
    out_dir = Path(out_dir)
    reuse: dict[int, Path] = {}
    if grid:
        best = search_settings(config, splits, grid, out_dir, seeds[0], resume, progress)
        config = dataclasses.replace(config, **best["settings"])
        reuse[seeds[0]] = Path(best["run_dir"])
    results = []
    for seed in seeds:
        run_dir = out_dir / f"seed_{seed}"
        if seed in reuse:
            # the search already trained this exact run: copy it rather than train it again
            if run_dir.exists():
                shutil.rmtree(run_dir)
            shutil.copytree(reuse[seed], run_dir)
        cfg = dataclasses.replace(config, seed=seed)
        results.append(train_run(cfg, splits, run_dir, resume=resume or seed in reuse, progress=progress))
    summary = {
        "model": config.model,
        "modalities": config.modalities,
        "data": config.data,
        "seeds": seeds,
        "settings": {k: getattr(config, k) for k in RECIPE_FIELDS},
        "searched": bool(grid),
        "valid": summarise(results, "valid"),
        "test": summarise(results, "test"),
        "best_epochs": [r.best_epoch for r in results],
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return results, summary

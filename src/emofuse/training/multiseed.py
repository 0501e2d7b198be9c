"""Several seeds of one configuration, summarised as mean +- std."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.data.dataset import DatasetSplits
from emofuse.files import atomic_write_text
from emofuse.training.config import TrainConfig
from emofuse.training.trainer import RunResult, train_run

# the keys worth a summary table, in the order people read them (MOSI papers' order)
REGRESSION_KEYS = ["acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc3", "acc5", "acc7", "mae", "corr"]
CLASSIFICATION_KEYS = ["accuracy", "f1_weighted", "f1_macro"]


def summary_keys(metrics: dict[str, Any]) -> list[str]:
    return REGRESSION_KEYS if "mae" in metrics else CLASSIFICATION_KEYS


def finite(values: list[float | None]) -> list[float]:
    """The values a mean can use: a seed whose metric is undefined (None, NaN) is left out.

    Correlation is NaN when a run predicts one constant value; averaging it in would poison
    the mean, and counting it would overstate how many seeds the mean rests on.
    """
    return [float(v) for v in values if v is not None and not math.isnan(v)]


def mean_std(values: list[float | None]) -> tuple[float, float]:
    """Mean and sample std of the finite values (NaN, NaN when there are none)."""
    arr = np.asarray(finite(values), dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(results: list[RunResult], split: str = "test") -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std", "n", "dropped"}} over seeds for one split.

    n counts the seeds the mean rests on; dropped, the seeds whose metric was NaN.
    """
    keys = summary_keys(results[0].metrics[split])
    out = {}
    for k in keys:
        values = [r.metrics[split].get(k) for r in results]
        m, s = mean_std(values)
        n = len(finite(values))
        out[k] = {"mean": m, "std": s, "n": n, "dropped": len(values) - n}
    return out


def dropped_note(summary: dict[str, dict[str, float]], seeds: int) -> str | None:
    """A line naming the metrics some seeds could not contribute to, or None."""
    parts = [f"{k} ({int(v['dropped'])} of {seeds})" for k, v in summary.items() if v.get("dropped")]
    if not parts:
        return None
    return "undefined (NaN) for some seeds and left out of mean ± std: " + ", ".join(parts)


def train_seeds(
    config: TrainConfig,
    splits: DatasetSplits,
    out_dir: Path,
    seeds: list[int],
    resume: bool = False,
    progress: bool = True,
) -> tuple[list[RunResult], dict[str, Any]]:
    """Train one run per seed under out_dir/seed_<s>, write summary.json next to them."""
    out_dir = Path(out_dir)
    results = []
    for seed in seeds:
        cfg = dataclasses.replace(config, seed=seed)
        results.append(train_run(cfg, splits, out_dir / f"seed_{seed}", resume=resume, progress=progress))
    summary = {
        "model": config.model,
        "modalities": config.modalities,
        "data": config.data,
        "seeds": seeds,
        "valid": summarise(results, "valid"),
        "test": summarise(results, "test"),
        "best_epochs": [r.best_epoch for r in results],
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=2) + "\n")
    return results, summary

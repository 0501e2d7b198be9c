"""Several seeds of one configuration, summarised as mean +- std."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.data.dataset import DatasetSplits
from emofuse.training.checkpoint import atomic_write_text
from emofuse.training.config import TrainConfig
from emofuse.training.trainer import RunResult, train_run

# the keys worth a summary table, in the order people read them (MOSI papers' order)
REGRESSION_KEYS = ["acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc3", "acc5", "acc7", "mae", "corr"]
CLASSIFICATION_KEYS = ["accuracy", "f1_weighted", "f1_macro"]


def summary_keys(metrics: dict[str, Any]) -> list[str]:
    return REGRESSION_KEYS if "mae" in metrics else CLASSIFICATION_KEYS


def mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def summarise(results: list[RunResult], split: str = "test") -> dict[str, dict[str, float]]:
    """{metric: {"mean", "std", "n"}} over seeds for one split."""
    keys = summary_keys(results[0].metrics[split])
    out = {}
    for k in keys:
        m, s = mean_std([r.metrics[split][k] for r in results])
        out[k] = {"mean": m, "std": s, "n": len(results)}
    return out


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

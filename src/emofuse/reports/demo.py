"""`emofuse demo`: the main job on the embedded synthetic dataset.

Trains the fusion-matched network and the two simple baselines briefly, then prints their
test metrics next to the ceilings the planted structure allows (see emofuse.data.synthetic).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from emofuse.data.synthetic import make_synthetic
from emofuse.metrics import regression_metrics
from emofuse.reports.tables import markdown_table, summary_row
from emofuse.training.checkpoint import atomic_write_text
from emofuse.training.config import TrainConfig
from emofuse.training.multiseed import REGRESSION_KEYS, train_seeds

DEMO_MODELS = ("fusion_matched", "ef_lstm", "late_fusion")
COLUMNS = ["acc2_has0", "acc2_non0", "f1_non0", "acc7", "mae", "corr"]


def oracle_rows(test) -> list[dict]:
    """Reference predictions built from the planted components (no learning involved)."""
    labels = test.labels.numpy()
    names = {
        "oracle_full": "ceiling: noiseless label (any model)",
        "oracle_additive": "ceiling without interaction (unimodal/late fusion)",
        "oracle_text": "ceiling from text alone",
    }
    rows = []
    for key, name in names.items():
        m = regression_metrics(test.extras[key], labels)
        rows.append({"model": name, **{k: m[k] for k in REGRESSION_KEYS}})
    return rows


def run_demo(out: Path, epochs: int = 15, seeds: list[int] | None = None, progress: bool = True, threads: int = 1) -> list[dict]:
    seeds = seeds or [1]
    if threads:
        torch.set_num_threads(threads)
    splits = make_synthetic()
    print(f"SYNTHETIC data (planted structure, see emofuse.data.synthetic): {splits.describe()}")
    rows = []
    for model in DEMO_MODELS:
        start = time.perf_counter()
        config = TrainConfig(model=model, modalities="T+A+V", data="synthetic", epochs=epochs, patience=5, seed=seeds[0])
        _, summary = train_seeds(config, splits, Path(out) / model, seeds, progress=progress)
        rows.append(summary_row(model, summary["test"], seconds=f"{time.perf_counter() - start:.0f}"))
    rows.extend(oracle_rows(splits.test))
    table = markdown_table(rows, COLUMNS + ["seconds"])
    print(f"\nTest split, T+A+V, {len(seeds)} seed(s), {epochs} epochs at most:\n")
    print(table)
    atomic_write_text(Path(out) / "results.md", table + "\n")
    atomic_write_text(Path(out) / "results.json", json.dumps(rows, indent=2, default=str) + "\n")
    print(f"\nrun folders and results.md in {out}")
    return rows

"""Compare several models over several seeds, with a paired bootstrap on the test set.

`compare_models` trains every model with `train_seeds` (model selection stays on validation
inside the trainer; test is only scored), then writes into `out`:

    compare.csv     model, metric, mean, std over seeds (test split)
    compare.md      the same as a Markdown table (rows = models)
    bootstrap.csv   model_a, model_b, metric, diff, low, high, p, significant
    compare.png     bar panels with std-over-seeds error bars (the paper's Figs 8-9 layout)
    <model>/seed_<s>/...   the run folders

The bootstrap is paired: for each pair of models the same resampled test indices score both
models' predictions (averaged over seeds for regression, majority vote for classes).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import math
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.data.dataset import DatasetSplits
from emofuse.reports.tables import HEADERS, PERCENT, markdown_table, summary_row
from emofuse.training.checkpoint import atomic_write_text
from emofuse.training.config import TrainConfig
from emofuse.training.multiseed import train_seeds

__all__ = ["BOOTSTRAP_METRICS", "compare_models", "paired_bootstrap", "seed_averaged_test_predictions"]

# metrics compared by the bootstrap, per task; "lower is better" only matters for reading
BOOTSTRAP_METRICS = {"regression": ["mae", "acc2_non0"], "classification": ["accuracy"]}
PLOT_METRICS = {"regression": ["acc2_non0", "acc7", "mae"], "classification": ["accuracy", "f1_weighted"]}
BOOTSTRAP_FIELDS = ["model_a", "model_b", "metric", "diff", "low", "high", "p", "significant"]


# ---------------------------------------------------------------------------- bootstrap
def _metric_on_indices(pred: np.ndarray, labels: np.ndarray, metric: str, idx: np.ndarray) -> np.ndarray:
    """Metric of `pred` against `labels` on each row of index array `idx` (shape (B, n) or (n,))."""
    if metric == "mae":
        return np.abs(pred - labels)[idx].mean(axis=-1)
    if metric == "acc2_non0":
        # MMSA's non0 convention: drop label == 0, positive iff value > 0
        keep = (labels != 0).astype(float)
        correct = ((pred > 0) == (labels > 0)).astype(float) * keep
        n = keep[idx].sum(axis=-1)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(n > 0, correct[idx].sum(axis=-1) / np.maximum(n, 1), np.nan)
    if metric == "accuracy":
        return (pred == labels).astype(float)[idx].mean(axis=-1)
    raise ValueError(f"unknown bootstrap metric {metric!r}; known: mae, acc2_non0, accuracy")


def paired_bootstrap(
    pred_a: Any, pred_b: Any, labels: Any, metric: str, n_boot: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """Paired bootstrap of metric(a) - metric(b) over resampled test indices.

    Returns {"diff", "low", "high", "p", "significant"}: the observed difference, the 95%
    percentile interval of the bootstrap differences, a two-sided p-value (twice the fraction
    of bootstrap differences on the other side of 0 from the observed one, capped at 1) and
    whether the interval excludes 0.
    """
    a = np.asarray(pred_a, dtype=float).reshape(-1)
    b = np.asarray(pred_b, dtype=float).reshape(-1)
    y = np.asarray(labels, dtype=float).reshape(-1)
    if not (a.size == b.size == y.size) or y.size == 0:
        raise ValueError(f"predictions and labels must be non-empty and equally long ({a.size}, {b.size}, {y.size})")
    full = np.arange(y.size)
    diff = float(_metric_on_indices(a, y, metric, full) - _metric_on_indices(b, y, metric, full))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, y.size, size=(n_boot, y.size))
    boot = _metric_on_indices(a, y, metric, idx) - _metric_on_indices(b, y, metric, idx)
    boot = boot[np.isfinite(boot)]
    if boot.size == 0 or math.isnan(diff):
        return {"diff": diff, "low": math.nan, "high": math.nan, "p": math.nan, "significant": False}
    low, high = (float(v) for v in np.percentile(boot, [2.5, 97.5]))
    if diff > 0:
        p = 2.0 * float(np.mean(boot <= 0))
    elif diff < 0:
        p = 2.0 * float(np.mean(boot >= 0))
    else:
        p = 1.0
    return {"diff": diff, "low": low, "high": high, "p": min(p, 1.0), "significant": bool(low > 0 or high < 0)}


# ---------------------------------------------------------------------------- predictions
def _read_test_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    rows = [r for r in csv.DictReader(path.open(newline="")) if r["split"] == "test"]
    rows.sort(key=lambda r: int(r["index"]))
    ids = [r["id"] for r in rows]
    labels = np.array([float(r["label"]) for r in rows])
    preds = np.array([float(r["prediction"]) for r in rows])
    return ids, labels, preds


def seed_averaged_test_predictions(
    model_dir: Path, seeds: list[int], classification: bool = False
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """(ids, labels, predictions) on test: the mean over seeds, or the majority class
    (ties go to the smaller class) for classification."""
    ids, labels, per_seed = None, None, []
    for s in seeds:
        path = Path(model_dir) / f"seed_{s}" / "predictions.csv"
        sid, lab, pred = _read_test_predictions(path)
        if ids is None:
            ids, labels = sid, lab
        elif sid != ids:
            raise ValueError(f"{path}: test ids differ from the other seeds' runs")
        per_seed.append(pred)
    stacked = np.stack(per_seed)
    if classification:
        classes = stacked.astype(int)
        counts = np.stack([(classes == c).sum(axis=0) for c in range(int(classes.max()) + 1)])
        return ids, labels, counts.argmax(axis=0).astype(float)
    return ids, labels, stacked.mean(axis=0)


# ---------------------------------------------------------------------------- training
def _train_model_worker(base: TrainConfig, model: str, seeds: list[int], out_dir: Path, progress: bool) -> dict:
    """Runs in a spawned process: loads the data itself (no tensors are pickled)."""
    import torch

    from emofuse.data.loading import load_splits
    from emofuse.evaluation.evaluate import text_options

    torch.set_num_threads(1)
    splits = load_splits(base.data, text_options(base), base.classes)
    _, summary = train_seeds(dataclasses.replace(base, model=model), splits, out_dir, seeds, progress=progress)
    return summary


def _train_all(
    base: TrainConfig, models: list[str], seeds: list[int], out: Path, workers: int, progress: bool,
    splits: DatasetSplits | None,
) -> dict[str, dict]:
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(models)), mp_context=ctx) as pool:
            futures = {m: pool.submit(_train_model_worker, base, m, seeds, out / m, progress) for m in models}
            return {m: futures[m].result() for m in models}
    if splits is None:
        from emofuse.data.loading import load_splits
        from emofuse.evaluation.evaluate import text_options

        splits = load_splits(base.data, text_options(base), base.classes)
    summaries = {}
    for m in models:
        _, summaries[m] = train_seeds(dataclasses.replace(base, model=m), splits, out / m, seeds, progress=progress)
    return summaries


# ---------------------------------------------------------------------------- outputs
def _csv_text(fields: list[str], rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _plot(summary: dict[str, dict], metrics: list[str], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    models = list(summary)
    fig = Figure(figsize=(4.0 * len(metrics), 3.6))
    FigureCanvasAgg(fig)
    x = np.arange(len(models))
    for i, key in enumerate(metrics):
        ax = fig.add_subplot(1, len(metrics), i + 1)
        scale = 100.0 if key in PERCENT else 1.0
        means = np.array([summary[m][key]["mean"] for m in models], dtype=float) * scale
        stds = np.nan_to_num(np.array([summary[m][key]["std"] for m in models], dtype=float)) * scale
        ax.bar(x, means, yerr=stds, capsize=4, color=f"C{i}", alpha=0.85)
        ax.set_xticks(x)
        ax.set_xticklabels(models, rotation=30, ha="right")
        ax.set_title(HEADERS.get(key, key) + (" (%)" if key in PERCENT else ""))
        ax.grid(axis="y", alpha=0.3)
        if key in PERCENT and np.isfinite(means).any():
            finite = means[np.isfinite(means)]
            ax.set_ylim(max(0.0, float(finite.min() - stds.max() - 5)), min(100.0, float(finite.max() + stds.max() + 5)))
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def compare_models(
    base: TrainConfig,
    models: list[str],
    seeds: list[int],
    out: Path,
    workers: int = 1,
    progress: bool = False,
    splits: DatasetSplits | None = None,
    n_boot: int = 1000,
    boot_seed: int = 0,
) -> dict[str, Any]:
    """Train `models` x `seeds` into out/<model>/seed_<s>, summarise, bootstrap, plot.

    workers > 1 trains the models in spawned processes that each load `base.data` themselves
    (`splits` is then not used). Returns {"summary": {model: test summary}, "bootstrap": rows,
    "table": Markdown, "paths": {...}} plus the paths under their own keys.
    """
    if not models:
        raise ValueError("compare_models needs at least one model")
    if len(set(models)) != len(models):
        raise ValueError(f"duplicate model names in {models}")
    if not seeds:
        raise ValueError("compare_models needs at least one seed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    summaries = _train_all(base, list(models), list(seeds), out, workers, progress, splits)
    summary = {m: summaries[m]["test"] for m in models}
    task = "regression" if "mae" in summary[models[0]] else "classification"
    keys = list(summary[models[0]])

    # tables
    csv_rows = [
        {"model": m, "metric": k, "mean": f"{summary[m][k]['mean']:.6g}", "std": f"{summary[m][k]['std']:.6g}"}
        for m in models
        for k in keys
    ]
    paths = {"compare_csv": out / "compare.csv", "compare_md": out / "compare.md",
             "bootstrap_csv": out / "bootstrap.csv", "plot": out / "compare.png"}
    atomic_write_text(paths["compare_csv"], _csv_text(["model", "metric", "mean", "std"], csv_rows))
    table = markdown_table([summary_row(m, summary[m]) for m in models], keys)
    atomic_write_text(paths["compare_md"], table + "\n")

    # paired bootstrap on seed-averaged test predictions
    preds = {m: seed_averaged_test_predictions(out / m, seeds, task == "classification") for m in models}
    boot_rows = []
    for a, b in itertools.combinations(models, 2):
        ids_a, labels, pa = preds[a]
        ids_b, _, pb = preds[b]
        if ids_a != ids_b:
            raise ValueError(f"{a} and {b} were tested on different test sets")
        for metric in BOOTSTRAP_METRICS[task]:
            r = paired_bootstrap(pa, pb, labels, metric, n_boot=n_boot, seed=boot_seed)
            boot_rows.append({"model_a": a, "model_b": b, "metric": metric, **r})
    fmt = [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in boot_rows]
    atomic_write_text(paths["bootstrap_csv"], _csv_text(BOOTSTRAP_FIELDS, fmt))

    _plot(summary, PLOT_METRICS[task], paths["plot"])
    return {"summary": summary, "bootstrap": boot_rows, "table": table, "paths": paths, **paths}

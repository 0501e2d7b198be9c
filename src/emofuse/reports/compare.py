"""Compare several models over several seeds, with a paired bootstrap on the test set.

`compare_models` trains every model with `train_seeds` (model selection stays on validation
inside the trainer; test is only scored), then writes into `out`:

    compare.csv     model, metric, mean, std over seeds (test split)
    compare.md      the same as a Markdown table (rows = models)
    settings.md     the training settings each model ran with (its recipe, or the search's choice)
    bootstrap.csv   model_a, model_b, metric, diff, low, high, p, significant
    compare.png     bar panels with std-over-seeds error bars (the paper's Figs 8-9 layout)
    <model>/seed_<s>/...   the run folders

Each model trains with its own reference recipe (lr, batch size, weight decay, clipping,
patience; `emofuse.models.registry.Recipe`) unless `same_recipe`; explicit `overrides` apply to
every model; `search` runs a small grid per model scored on validation only
(`emofuse.reports.search`). `resume` reuses finished run folders and continues interrupted ones.

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
from emofuse.errors import OptionError, UserError
from emofuse.files import atomic_write_text
from emofuse.models.registry import RECIPE_FIELDS
from emofuse.reports.search import model_config, train_model
from emofuse.reports.tables import HEADERS, PERCENT, ceiling_rows, markdown_table, summary_row
from emofuse.training.config import TrainConfig

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
    raise ValueError(
        f"unknown bootstrap metric {metric!r}; known: mae, acc2_non0, accuracy"
    )  # from BOOTSTRAP_METRICS


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
        # emofuse's own seed-averaged test predictions: a bug if they differ
        raise ValueError(
            f"predictions and labels must be non-empty and equally long ({a.size}, {b.size}, {y.size})"
        )
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
    return {
        "diff": diff,
        "low": low,
        "high": high,
        "p": min(p, 1.0),
        "significant": bool(low > 0 or high < 0),
    }


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
            # a --resume folder holding runs of other data
            raise UserError(f"{path}: test ids differ from the other seeds' runs")
        per_seed.append(pred)
    stacked = np.stack(per_seed)
    if classification:
        classes = stacked.astype(int)
        counts = np.stack([(classes == c).sum(axis=0) for c in range(int(classes.max()) + 1)])
        return ids, labels, counts.argmax(axis=0).astype(float)
    return ids, labels, stacked.mean(axis=0)


# ---------------------------------------------------------------------------- training
@dataclasses.dataclass
class ModelJob:
    """Everything one model's training needs; picklable, so a spawned worker can run it."""

    config: TrainConfig
    seeds: list[int]
    out_dir: Path
    grid: dict[str, list[str]] | None = None
    resume: bool = False
    progress: bool = False

    def run(self, splits: DatasetSplits) -> dict:
        return train_model(
            self.config, splits, self.out_dir, self.seeds, self.grid, self.resume, self.progress
        )[1]


def _load_data(config: TrainConfig) -> DatasetSplits:
    from emofuse.evaluation.evaluate import load_data

    return load_data(config.data, config)


def _train_model_worker(job: ModelJob) -> dict:
    """Runs in a spawned process: loads the data itself (no tensors are pickled)."""
    import torch

    torch.set_num_threads(1)
    return job.run(_load_data(job.config))


def _train_all(jobs: dict[str, ModelJob], workers: int, splits: DatasetSplits | None) -> dict[str, dict]:
    if workers > 1:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(workers, len(jobs)), mp_context=ctx) as pool:
            futures = {m: pool.submit(_train_model_worker, job) for m, job in jobs.items()}
            return {m: futures[m].result() for m in jobs}
    if splits is None:
        splits = _load_data(next(iter(jobs.values())).config)
    return {m: job.run(splits) for m, job in jobs.items()}


def settings_table(summaries: dict[str, dict], same_recipe: bool = False) -> str:
    """Markdown: the lr, batch size, weight decay, clipping and patience each model ran with."""
    rows = []
    for m, s in summaries.items():
        source = (
            "search (validation)"
            if s.get("searched")
            else "one setting for all"
            if same_recipe
            else "own recipe"
        )
        rows.append({"model": m, **{k: f"{v:g}" for k, v in s["settings"].items()}, "chosen by": source})
    columns = [*RECIPE_FIELDS, "chosen by"]
    return markdown_table(rows, columns)


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
            ax.set_ylim(
                max(0.0, float(finite.min() - stds.max() - 5)),
                min(100.0, float(finite.max() + stds.max() + 5)),
            )
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def _ceilings(base: TrainConfig, splits: DatasetSplits | None, keys: list[str]) -> list[dict[str, Any]]:
    """The planted set's ceilings; with workers > 1 the parent holds no data, so a planted (generated,
    cached) source is loaded here for them, and real data, which has none, is never loaded."""
    from emofuse.data.loading import SYNTHETIC_SOURCES

    if splits is None and base.data in SYNTHETIC_SOURCES:
        from emofuse.evaluation.evaluate import load_data

        splits = load_data(base.data, base)
    return ceiling_rows(splits, keys) if splits is not None else []


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
    same_recipe: bool = False,
    overrides: dict[str, Any] | None = None,
    model_options: dict[str, dict[str, Any]] | None = None,
    search: dict[str, list[str]] | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train `models` x `seeds` into out/<model>/seed_<s>, summarise, bootstrap, plot.

    workers > 1 trains the models in spawned processes that each load `base.data` themselves
    (`splits` is then not used). model_options: {model: options}; None gives every model
    base.model_options. Returns {"summary": {model: test summary}, "bootstrap": rows, "table":
    Markdown, "settings": {model: settings}, "settings_table": Markdown, "paths": {...}} plus the
    paths under their own keys.
    """
    if not models:
        raise OptionError("compare_models needs at least one model")
    if len(set(models)) != len(models):
        raise OptionError(f"duplicate model names in {models}")
    if not seeds:
        raise OptionError("compare_models needs at least one seed")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    jobs = {
        m: ModelJob(
            model_config(
                base, m, same_recipe, overrides, None if model_options is None else model_options.get(m, {})
            ),
            list(seeds),
            out / m,
            search or None,
            resume,
            progress,
        )
        for m in models
    }
    summaries = _train_all(jobs, workers, splits)
    summary = {m: summaries[m]["test"] for m in models}
    task = "regression" if "mae" in summary[models[0]] else "classification"
    keys = list(summary[models[0]])

    # tables
    csv_rows = [
        {
            "model": m,
            "metric": k,
            "mean": f"{summary[m][k]['mean']:.6g}",
            "std": f"{summary[m][k]['std']:.6g}",
        }
        for m in models
        for k in keys
    ]
    paths = {
        "compare_csv": out / "compare.csv",
        "compare_md": out / "compare.md",
        "bootstrap_csv": out / "bootstrap.csv",
        "plot": out / "compare.png",
        "settings_md": out / "settings.md",
    }
    atomic_write_text(paths["compare_csv"], _csv_text(["model", "metric", "mean", "std"], csv_rows))
    # planted sets carry their ceilings: printed under the models, for scale
    table = markdown_table([summary_row(m, summary[m]) for m in models] + _ceilings(base, splits, keys), keys)
    atomic_write_text(paths["compare_md"], table + "\n")
    settings = settings_table(summaries, same_recipe)
    atomic_write_text(paths["settings_md"], settings + "\n")

    # paired bootstrap on seed-averaged test predictions
    preds = {m: seed_averaged_test_predictions(out / m, seeds, task == "classification") for m in models}
    boot_rows = []
    for a, b in itertools.combinations(models, 2):
        ids_a, labels, pa = preds[a]
        ids_b, _, pb = preds[b]
        if ids_a != ids_b:
            raise UserError(
                f"{a} and {b} were tested on different test sets"
            )  # as above: a stale --resume folder
        for metric in BOOTSTRAP_METRICS[task]:
            r = paired_bootstrap(pa, pb, labels, metric, n_boot=n_boot, seed=boot_seed)
            boot_rows.append({"model_a": a, "model_b": b, "metric": metric, **r})
    fmt = [{k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()} for r in boot_rows]
    atomic_write_text(paths["bootstrap_csv"], _csv_text(BOOTSTRAP_FIELDS, fmt))

    _plot(summary, PLOT_METRICS[task], paths["plot"])
    return {"summary": summary, "bootstrap": boot_rows, "table": table, "paths": paths,
            "settings": {m: summaries[m]["settings"] for m in models}, "settings_table": settings, **paths}

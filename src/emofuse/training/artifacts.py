"""The files a run folder holds besides its checkpoints (those are emofuse.training.resume's):

    config.json          resolved TrainConfig + ModelSpec + model config + data description
    log.csv              one row per epoch (train loss, valid loss, seconds)
    metrics.json         valid and test metrics of best.pt
    predictions.csv      split, index, id, label, prediction for valid and test
    confusion_test.png   the test confusion matrix of a classification run

Only rank 0 of a torchrun run writes them. Every write but the log's appends is atomic.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from emofuse.data.dataset import DatasetSplits, MultimodalDataset
from emofuse.errors import UserError
from emofuse.files import atomic_write_text, remove_stale_temp_files
from emofuse.models.base import MultimodalModel
from emofuse.training.config import TrainConfig
from emofuse.training.prepare import describe_splits

LOG_FIELDS = ["epoch", "train_loss", "valid_loss", "best_valid_loss", "seconds"]
PREDICTION_FIELDS = ["split", "index", "id", "label", "prediction"]


def open_run_dir(run_dir: Path) -> None:
    """Create the run folder, and clear the temp files of a writer killed mid-write in it
    (SIGKILL runs no cleanup)."""
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise UserError(f"{run_dir}: cannot hold a run, a file is in the way") from None
    remove_stale_temp_files(run_dir)


def write_config(run_dir: Path, config: TrainConfig, model: MultimodalModel, splits: DatasetSplits,
                 score_test: bool = True) -> None:
    payload = {
        "train": config.to_dict(),
        "spec": model.spec.to_dict(),
        "model_config": model.config_dict(),
        "data": {
            "name": splits.name,
            "description": describe_splits(splits, score_test),
            "class_names": splits.class_names,
        },
        # what predicting needs to make this run's inputs from a clip (emofuse.data.frontend)
        "frontend": splits.frontend,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
    atomic_write_text(run_dir / "config.json", json.dumps(payload, indent=2) + "\n")


# ---------------------------------------------------------------------- log.csv
def remove_log(run_dir: Path) -> None:
    """A fresh run in a used folder starts a new log."""
    path = run_dir / "log.csv"
    if path.exists():
        path.unlink()


def append_log(run_dir: Path, row: dict[str, Any]) -> None:
    path = run_dir / "log.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


def rewrite_log(run_dir: Path, history: list[dict[str, Any]]) -> None:
    # on resume, the log is rebuilt from the checkpoint so a crash between writing the
    # log and the checkpoint cannot leave duplicate or phantom epochs
    lines = [",".join(LOG_FIELDS)] + [",".join(str(r[k]) for k in LOG_FIELDS) for r in history]
    atomic_write_text(run_dir / "log.csv", "\n".join(lines) + "\n")


# ---------------------------------------------------------------------- results
def prediction_rows(split: str, data: MultimodalDataset, points: np.ndarray) -> list[dict[str, Any]]:
    """predictions.csv's rows for one split: one value per sample (scoring.point_predictions)."""
    return [{"split": split, "index": i, "id": sid, "label": label, "prediction": float(pred)}
            for i, (sid, label, pred) in enumerate(zip(data.ids, data.labels.tolist(), points))]


def write_results(run_dir: Path, metrics: dict[str, Any], rows: list[dict[str, Any]], splits: DatasetSplits,
                  title: str) -> None:
    """metrics.json, confusion_test.png (a classification run whose test split was scored) and
    predictions.csv."""
    atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2, default=_json_default) + "\n")
    if splits.task == "classification" and "test" in metrics:
        names = splits.class_names or [str(i) for i in range(splits.num_classes)]
        plot_confusion_matrix(
            metrics["test"]["confusion_matrix"], names, run_dir / "confusion_test.png", title=title
        )
    write_predictions(run_dir / "predictions.csv", rows)


def write_predictions(path: Path, rows: list[dict[str, Any]]) -> None:
    lines = [",".join(PREDICTION_FIELDS)]
    for r in rows:
        lines.append(",".join(_csv_cell(r[k]) for k in PREDICTION_FIELDS))
    atomic_write_text(path, "\n".join(lines) + "\n")


def _csv_cell(value: Any) -> str:
    text = f"{value:.6g}" if isinstance(value, float) else str(value)
    return f'"{text}"' if "," in text or '"' in text else text


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.floating, np.integer)):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"not JSON serialisable: {type(obj)}")


def plot_confusion_matrix(
    cm: Any,
    class_names: Sequence[str],
    path: str | Path,
    normalize: bool = True,
    title: str | None = None,
) -> Path:
    """Write the confusion matrix as a PNG heat-map; returns the path.

    ``normalize=True`` divides each row by its true-class count (so the
    diagonal is per-class recall); an all-zero row stays 0 instead of nan.
    Uses matplotlib's Agg renderer through ``Figure`` directly, so it works
    headless and never touches the global pyplot backend.
    """
    from matplotlib.figure import Figure  # lazy: matplotlib is slow to import

    m = np.asarray(cm, dtype=np.float64)
    k = len(class_names)
    if m.shape != (k, k):
        raise ValueError(f"cm shape {m.shape} does not match {k} class names")
    if normalize:
        rows = m.sum(axis=1, keepdims=True)
        m = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)

    size = max(4.0, 0.6 * k + 2)
    fig = Figure(figsize=(size + 1, size))
    ax = fig.add_subplot()
    im = ax.imshow(m, cmap="Blues", vmin=0, vmax=1 if normalize else None)
    fig.colorbar(im, ax=ax)
    ax.set(
        xticks=range(k),
        yticks=range(k),
        xlabel="Predicted",
        ylabel="True",
        title=title
        or ("Confusion matrix (row-normalised)" if normalize else "Confusion matrix"),
    )
    ax.set_xticklabels(class_names, rotation=45, ha="right")
    ax.set_yticklabels(class_names)
    thresh = (m.max() if m.size else 0) / 2
    for i in range(k):
        for j in range(k):
            txt = f"{m[i, j]:.2f}" if normalize else f"{int(m[i, j])}"
            ax.text(
                j,
                i,
                txt,
                ha="center",
                va="center",
                fontsize=8,
                color="white" if m[i, j] > thresh else "black",
            )
    fig.tight_layout()
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=120)
    return out

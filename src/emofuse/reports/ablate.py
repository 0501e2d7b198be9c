"""`emofuse ablate`: one model over all seven modality subsets (the paper's Figs 3-7).

Every subset is trained as a regression model (L1) with the same settings and seeds (each
model's own recipe unless `same_recipe`; see emofuse.reports.search), then read as 2-class
(Acc-2 in both conventions and F1), 3-class (Acc-3 and weighted F1), 7-class (Acc-7), MAE and
Corr. Selection is on validation loss inside each run; only the test split is reported.

Several models (by default both fusion-matched networks, the paper's and the extension) share
one table: `ablation.md` / `ablation.csv` have a model column, and each model's folder holds
its bar plots. A single model keeps the flat layout (out/<subset>/seed_<s>, plots in out).
`resume` reuses finished runs and continues interrupted ones.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import f1_score

from emofuse.data.dataset import MODALITIES, DatasetSplits, modality_code
from emofuse.errors import OptionError, UserError
from emofuse.files import atomic_write_text
from emofuse.reports.search import model_config
from emofuse.reports.tables import markdown_table
from emofuse.training.config import TrainConfig
from emofuse.training.multiseed import mean_std, train_seeds

SUBSETS = [c for r in (1, 2, 3) for c in itertools.combinations(MODALITIES, r)]
COLUMNS = ["acc2_has0", "acc2_non0", "f1_non0", "acc3", "f1_3class", "acc7", "mae", "corr"]
# the paper's figures: (file name, title, metric keys drawn side by side)
FIGURES = [
    ("ablation_2class.png", "2-class (Figs 3-4)", ["acc2_non0", "f1_non0", "acc2_has0"]),
    ("ablation_3class.png", "3-class (Figs 5-6)", ["acc3", "f1_3class"]),
    ("ablation_7class.png", "7-class (Fig 7)", ["acc7"]),
]


def three_class_f1(run_dir: Path) -> float:
    """Weighted F1 of round(clip(y, -1, 1)) classes on the test split of one run."""
    preds, labels = [], []
    with (run_dir / "predictions.csv").open() as f:
        for row in csv.DictReader(f):
            if row["split"] == "test":
                preds.append(float(row["prediction"]))
                labels.append(float(row["label"]))
    to_class = lambda x: np.round(np.clip(np.asarray(x), -1, 1))  # noqa: E731
    return float(f1_score(to_class(labels), to_class(preds), average="weighted"))


def run_ablation(
    base: TrainConfig,
    splits: DatasetSplits,
    seeds: list[int],
    out: Path,
    progress: bool = True,
    models: list[str] | None = None,
    same_recipe: bool = False,
    overrides: dict[str, Any] | None = None,
    model_options: dict[str, dict[str, Any]] | None = None,
    resume: bool = False,
) -> list[dict[str, Any]]:
    """Rows {model, subset, metric: (mean, std)} for each model (default: base.model) x subset."""
    if splits.task != "regression":
        raise UserError(
            f"{splits.name}: ablation reads regression scores as 2/3/7 classes; the data have classes"
        )
    models = list(models or [base.model])
    if len(set(models)) != len(models):
        raise OptionError(f"duplicate model names in {models}")
    available = set(splits.train.modalities)
    out = Path(out)
    rows = []
    for model in models:
        options = None if model_options is None else model_options.get(model, {})
        config = model_config(base, model, same_recipe, overrides, options)
        model_dir = out if len(models) == 1 else out / model
        model_rows = []
        for subset in SUBSETS:
            if not set(subset) <= available:
                continue
            code = modality_code(subset)
            sub_config = dataclasses.replace(config, modalities=code)
            results, _ = train_seeds(
                sub_config, splits, model_dir / code.replace("+", ""), seeds, resume=resume, progress=progress
            )
            row: dict[str, Any] = {"model": model, "subset": code}
            for key in COLUMNS:
                if key == "f1_3class":
                    values = [three_class_f1(r.run_dir) for r in results]
                else:
                    values = [r.metrics["test"][key] for r in results]
                mean, std = mean_std(values)
                row[key] = (mean, std if len(values) > 1 else None)  # one seed has no spread
            model_rows.append(row)
        for name, title, keys in FIGURES:
            _bar_plot(model_rows, keys, f"{model}: {title}", model_dir / name)
        rows.extend(model_rows)
    _write_outputs(rows, out, len(seeds))
    return rows


def _write_outputs(rows: list[dict[str, Any]], out: Path, n_seeds: int) -> None:
    lines = ["model,subset,metric,mean,std"]
    for row in rows:
        lines += [
            f"{row['model']},{row['subset']},{k},{row[k][0]:.6f},"
            f"{'' if row[k][1] is None else f'{row[k][1]:.6f}'}"
            for k in COLUMNS
        ]
    atomic_write_text(out / "ablation.csv", "\n".join(lines) + "\n")
    table = markdown_table([{**r, "model": f"{r['model']} {r['subset']}"} for r in rows], COLUMNS)
    atomic_write_text(out / "ablation.md", f"test split, mean ± std over {n_seeds} seed(s)\n\n{table}\n")


def _bar_plot(rows: list[dict[str, Any]], keys: list[str], title: str, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from emofuse.reports.tables import HEADERS

    fig = Figure(figsize=(1.2 + 1.1 * len(rows), 3.6))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(rows))
    width = 0.8 / len(keys)
    for i, key in enumerate(keys):
        means = [100 * r[key][0] for r in rows]
        stds = [100 * (r[key][1] or 0.0) for r in rows]
        bars = ax.bar(
            x + (i - (len(keys) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=3,
            label=HEADERS.get(key, key),
        )
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, [r["subset"] for r in rows])
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)

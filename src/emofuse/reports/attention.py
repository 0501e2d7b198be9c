"""The video attention ablation: Harris-3D vs Harris-2D vs no attention in the 3D-CNN encoder.

The paper claims its spatio-temporal attention helps. `attention_ablation` trains the same model
and raw video encoder three times per seed, changing only the encoder's `attention` option, and
writes into `out`:

    attention.md / attention.csv   mean ± std over seeds per mode (test), plus the planted ceilings
    bootstrap.csv                  paired bootstrap of each pair of modes on the seed-averaged
                                   test predictions
    attention.png                  bar panels with std-over-seeds error bars
    <mode>/seed_<s>/...            the run folders

Selection stays on validation inside the trainer; test is only scored.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import Any

from emofuse.data.dataset import DatasetSplits, parse_modalities
from emofuse.errors import OptionError
from emofuse.files import atomic_write_text
from emofuse.reports.compare import BOOTSTRAP_METRICS, paired_bootstrap, seed_averaged_test_predictions
from emofuse.reports.tables import ceiling_rows, markdown_table, summary_row
from emofuse.training.config import TrainConfig
from emofuse.training.multiseed import train_seeds

MODES = ("harris3d", "harris2d", "none")
COLUMNS = ["acc2_has0", "acc2_non0", "f1_non0", "acc7", "mae", "corr"]


def mode_config(base: TrainConfig, mode: str) -> TrainConfig:
    """`base` with its video encoder's attention set to `mode` (harris3d_cnn by default)."""
    options = {m: dict(v) for m, v in base.encoder_options.items()}
    options.setdefault("vision", {})["attention"] = mode
    return dataclasses.replace(
        base, video_encoder=base.video_encoder or "harris3d_cnn", encoder_options=options
    )


def attention_ablation(
    base: TrainConfig,
    splits: DatasetSplits,
    seeds: list[int],
    out: Path,
    modes: tuple[str, ...] = MODES,
    progress: bool = False,
    resume: bool = False,
    n_boot: int = 1000,
) -> dict[str, Any]:
    if "vision" not in parse_modalities(base.modalities):
        raise OptionError(f"the attention ablation needs the vision modality, not {base.modalities!r}")
    out = Path(out)
    summaries = {}
    for mode in modes:
        _, summary = train_seeds(
            mode_config(base, mode), splits, out / mode, seeds, resume=resume, progress=progress
        )
        summaries[mode] = summary["test"]
    classification = splits.task == "classification"
    predictions = {m: seed_averaged_test_predictions(out / m, seeds, classification) for m in modes}
    boot_rows = []
    for a, b in itertools.combinations(modes, 2):
        _, labels, pred_a = predictions[a]
        _, _, pred_b = predictions[b]
        for metric in BOOTSTRAP_METRICS[splits.task]:
            result = paired_bootstrap(pred_a, pred_b, labels, metric, n_boot=n_boot)
            boot_rows.append({"mode_a": a, "mode_b": b, "metric": metric, **result})
    rows = [summary_row(f"attention={m}", summaries[m]) for m in modes] + ceiling_rows(splits, COLUMNS)
    columns = COLUMNS if not classification else ["accuracy", "f1_weighted", "f1_macro"]
    table = markdown_table(rows, columns)
    boot_table = markdown_table(
        [
            {
                "pair": f"{r['mode_a']} − {r['mode_b']}",
                **{k: r[k] for k in ("metric", "diff", "low", "high", "p")},
            }
            for r in boot_rows
        ],
        ["metric", "diff", "low", "high", "p"],
        first="pair",
    )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(
        out / "attention.md", f"{table}\n\nPaired bootstrap (test, seed-averaged):\n\n{boot_table}\n"
    )
    atomic_write_text(
        out / "attention.json", json.dumps({"summary": summaries, "bootstrap": boot_rows}, indent=2) + "\n"
    )
    _plot(summaries, columns[:3] if classification else ["acc2_non0", "acc7", "mae"], out / "attention.png")
    return {"table": table, "bootstrap_table": boot_table, "summary": summaries, "bootstrap": boot_rows}


def _plot(summaries: dict[str, dict], metrics: list[str], path: Path) -> None:
    # the same bar panels compare draws, one bar per attention mode
    from emofuse.reports.compare import _plot as bar_panels

    bar_panels(summaries, metrics, path)

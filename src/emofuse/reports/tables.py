"""Plain-text tables for the terminal and Markdown files."""

from __future__ import annotations

import math
from typing import Any

# how each metric is shown: accuracies as percentages (as papers print them), errors as is
PERCENT = {
    "acc2_has0", "f1_has0", "acc2_non0", "f1_non0", "acc3", "acc5", "acc7",
    "accuracy", "f1_weighted", "f1_macro", "f1_3class", "precision_non0", "recall_non0", "f1_binary_non0",
}
HEADERS = {
    "acc2_has0": "Acc-2 has0",
    "f1_has0": "F1 has0",
    "acc2_non0": "Acc-2 non0",
    "f1_non0": "F1 non0",
    "acc3": "Acc-3",
    "f1_3class": "F1 3-class",
    "acc5": "Acc-5",
    "acc7": "Acc-7",
    "mae": "MAE",
    "corr": "Corr",
    "accuracy": "Acc",
    "f1_weighted": "F1 (w)",
    "f1_macro": "F1 (macro)",
}


def format_value(key: str, mean: float, std: float | None = None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    scale, digits = (100.0, 1) if key in PERCENT else (1.0, 3)
    text = f"{mean * scale:.{digits}f}"
    if std is not None and not math.isnan(std):
        text += f" ± {std * scale:.{digits}f}"
    return text


def markdown_table(rows: list[dict[str, Any]], columns: list[str], first: str = "model") -> str:
    """rows: {first: name, key: value-or-(mean, std)}; returns a Markdown table."""
    header = [first] + [HEADERS.get(c, c) for c in columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[first])]
        for c in columns:
            v = row.get(c)
            if isinstance(v, tuple):
                cells.append(format_value(c, *v))
            elif isinstance(v, (int, float)):
                cells.append(format_value(c, float(v)))
            else:
                cells.append("" if v is None else str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def summary_row(name: str, summary: dict[str, dict[str, float]], **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {"model": name, **extra}
    for k, v in summary.items():
        # a single seed has no spread: print the value alone rather than a misleading "± 0"
        row[k] = (v["mean"], v["std"] if v.get("n", 1) > 1 else None)
    return row


# reference predictions a planted dataset carries (synthetic-raw, synthetic-clips), and how a table
# names them
CEILINGS = {
    "oracle_full": "ceiling: noiseless label (Bayes)",
    "oracle_no_interaction": "ceiling without the interaction",
    "oracle_no_video": "ceiling without the visual cue",
    "oracle_video": "ceiling from the video alone (V-only models)",
}


def ceiling_rows(splits: Any, columns: list[str]) -> list[dict[str, Any]]:
    """Table rows for the planted reference predictions the test split carries (none for real data)."""
    from emofuse.metrics import regression_metrics

    test = splits.test
    rows = []
    for key, name in CEILINGS.items():
        if key in test.extras and splits.task == "regression":
            m = regression_metrics(test.extras[key], test.labels.numpy())
            rows.append({"model": name, **{k: m[k] for k in columns if k in m}})
    return rows

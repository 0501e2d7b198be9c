"""Test-time robustness of a trained run: one modality missing or noised at rising levels.

Follows MultiBench's protocol in spirit: at noise level p (0.0 ... 0.9) every real step of the
chosen modality gets Gaussian noise of standard deviation p (inputs are standardised, so p is
in units of a feature's spread) and, independently, is dropped (zeroed) with probability p.
"missing" zeroes the modality entirely. The model is never retrained; the area under the
score-vs-level curve (trapezoid, levels normalised to [0, 1]) summarises each curve.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import MultimodalDataset
from emofuse.evaluation.evaluate import LoadedRun
from emofuse.evaluation.predict import predict, score

LEVELS = tuple(round(0.1 * i, 1) for i in range(10))


@dataclass
class Corruption:
    modality: str
    level: float  # 0..1; ignored when missing
    missing: bool = False
    seed: int = 0

    def apply(self, data: MultimodalDataset) -> MultimodalDataset:
        feats = dict(data.features)
        x = feats[self.modality]
        mask = data.mask(self.modality).unsqueeze(-1).to(x.dtype)
        if self.missing:
            feats[self.modality] = torch.zeros_like(x)
        elif self.level > 0:
            g = torch.Generator().manual_seed(self.seed)
            noisy = x + self.level * torch.randn(x.shape, generator=g)
            keep = (torch.rand(x.shape[:2], generator=g) >= self.level).unsqueeze(-1).to(x.dtype)
            feats[self.modality] = noisy * keep * mask
        return MultimodalDataset(feats, data.lengths, data.labels, data.ids, data.raw_text, data.source, data.extras)


def robustness_curves(run: LoadedRun, test: MultimodalDataset, levels: tuple[float, ...] = LEVELS, seed: int = 0) -> dict[str, Any]:
    """{modality: {"levels", "scores", "auc", "missing"}} with the run's headline metric."""
    prepared = run.prepare(test)
    key = "accuracy" if prepared.is_classification else "acc2_non0"
    device = next(run.model.parameters()).device

    def metric(data: MultimodalDataset) -> float:
        return float(score(predict(run.model, data, 64, device), data, run.class_names)[key])

    out: dict[str, Any] = {"metric": key, "clean": metric(prepared), "modalities": {}}
    for m in run.spec.modalities:
        scores = [metric(Corruption(m, lv, seed=seed).apply(prepared)) for lv in levels]
        span = levels[-1] - levels[0] or 1.0
        out["modalities"][m] = {
            "levels": list(levels),
            "scores": scores,
            "auc": float(np.trapezoid(scores, levels) / span),
            "missing": metric(Corruption(m, 0.0, missing=True).apply(prepared)),
        }
    return out


def plot_robustness(result: dict[str, Any], path: Path, title: str) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for m, curve in result["modalities"].items():
        line = ax.plot(curve["levels"], [100 * s for s in curve["scores"]], marker="o", label=f"{m} noised (AUC {100 * curve['auc']:.1f})")
        ax.axhline(100 * curve["missing"], ls="--", lw=1, color=line[0].get_color(), label=f"{m} missing")
    ax.set_xlabel("test-time noise level (std and drop probability)")
    ax.set_ylabel(f"{result['metric']} (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)

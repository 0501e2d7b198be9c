"""`explain(predictor, clip, out_png)`: one picture of why a run predicted what it did for a clip.

Panels, top to bottom:
- the word timeline: each word a bar over its start..end time, coloured by its contribution
  (the prediction minus the prediction with that word occluded: its row of every word-aligned
  modality zeroed, its tokens masked for an in-model text encoder, its raw-encoder vector zeroed);
  beside it the per-modality contributions of `Predictor.predict`;
- for the fusion-matched networks: the matching matrices M_xy, M_zy (model extras `match_<m>`)
  as heat maps over the pivot's words x the other modality's steps (words when aligned, frames
  when not), with the row attention a_x (eq 11) beside each and a_P (eq 15) when all three
  modalities are used;
- with the raw video encoder (harris3d_cnn): the middle face-crop frame of the most contributing
  words with the Harris attention volume overlaid and its key points marked.

Occlusion sets a word's standardised features to zero, i.e. to the training mean: a word's
contribution is how much the prediction moves when that word carries nothing special.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import MultimodalDataset
from emofuse.data.raw import RAW_KEY_OF
from emofuse.inference.predict import InMemoryRaw, Predictor, zero_word_vectors
from emofuse.models.encoders.video_cnn import Harris3DCNN
from emofuse.models.fusion_matched import FusionMatched

MAX_HARRIS_WORDS = 6


def _repeat(data: MultimodalDataset, n: int) -> MultimodalDataset:
    """n copies of a one-clip dataset (features cloned, so each row can be occluded on its own)."""
    extras: dict[str, Any] = {}
    for k, v in data.extras.items():
        if isinstance(v, InMemoryRaw):
            extras[k] = InMemoryRaw(np.repeat(v.array, n, axis=0))
        else:
            extras[k] = np.repeat(np.asarray(v), n, axis=0)
    return MultimodalDataset(
        {m: x.repeat(n, 1, 1).clone() for m, x in data.features.items()},
        {m: v.repeat(n) for m, v in data.lengths.items()},
        data.labels.repeat(n), data.ids * n, data.raw_text * n, data.source, extras)


def word_contributions(predictor: Predictor, data: MultimodalDataset) -> np.ndarray:
    """Per word: the prediction (score, or the predicted class's probability) minus it with the word occluded."""
    run = predictor.run
    n_words = int(data.lengths["text"][0]) if "text" in data.lengths else int(next(iter(data.lengths.values()))[0])
    full = predictor.forward(data)[0][0]
    k = int(np.argmax(full)) if predictor.is_classifier else None
    copies = _repeat(data, n_words)
    rows = torch.arange(n_words)
    for m in predictor.modalities:
        if m in run.raw_modalities or (m == "text" and run.tokenizer is not None):
            continue
        if m == "text" or predictor.layout.view == "aligned":
            length = int(data.lengths[m][0])
            hit = rows[rows < length]
            copies.features[m][hit, hit] = 0.0
    if run.tokenizer is not None and "text" in predictor.modalities:
        mask_id = run.tokenizer.mask_token_id if run.tokenizer.mask_token_id is not None else run.tokenizer.unk_token_id
        ids, words = copies.extras["input_ids"].copy(), copies.extras["word_index"]
        for i in range(n_words):
            ids[i][words[i] == i] = int(mask_id)
        copies.extras["input_ids"] = ids
    hooks = []
    for m in run.raw_modalities:
        length = int(data.lengths[m][0])
        keep = rows[rows < length]
        hooks.append(zero_word_vectors(run.model, m, keep * length + keep))  # flat index of (row i, word i)
    for h in hooks:
        h.__enter__()
    try:
        occluded = predictor.forward(copies)[0]
    finally:
        for h in reversed(hooks):
            h.__exit__(None, None, None)
    if k is not None:
        return full[k] - occluded[:, k]
    return full - occluded


def explain(predictor: Predictor, path: str | os.PathLike[str], out: str | os.PathLike[str],
            transcript: str | None = None) -> dict[str, Any]:
    """Predict for one clip, draw the picture into `out` (PNG) and return the prediction dict with
    'png', 'word_contributions' and 'panels' (what the picture shows) added."""
    features = predictor.extract(path, transcript)
    result = predictor.predict_features(features)
    raw = {"vision": features.word_crops, "audio": features.word_logmel}
    data = predictor.dataset(features.record(), raw, clip=str(path))
    contrib = word_contributions(predictor, data)
    _, extras = predictor.forward(data)
    n = len(contrib)
    result["word_contributions"] = [{"word": w["word"], "contribution": round(float(c), 4)}
                                    for w, c in zip(result["words"][:n], contrib, strict=False)]
    panels = draw(predictor, result, features, data, contrib, extras, Path(out))
    result["png"] = str(out)
    result["panels"] = panels
    return result


# --------------------------------------------------------------------------- drawing
def _headline(result: dict[str, Any]) -> str:
    if "class" in result:
        return f"class {result['class']} (p = {result['probability']:.2f})"
    labels = result["labels"]
    return f"score {result['score']:+.2f}  ({labels['2']}, {labels['3']}, {labels['7']})"


def draw(predictor: Predictor, result: dict[str, Any], features: Any, data: MultimodalDataset,
         contrib: np.ndarray, extras: dict[str, np.ndarray], out: Path) -> list[str]:
    from matplotlib import cm, colormaps, colors
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fusion = predictor.run.model if isinstance(predictor.run.model, FusionMatched) else \
        next((m for m in predictor.run.model.modules() if isinstance(m, FusionMatched)), None)
    matrices = [m for m in (fusion.others if fusion is not None else ()) if f"match_{m}" in extras]
    harris = next((m for m in predictor.run.model.modules() if isinstance(m, Harris3DCNN)), None)
    crops = data.extras.get(RAW_KEY_OF["vision"]) if harris is not None else None
    show_harris = crops is not None and harris.config.attention != "none"

    n_rows = 1 + (1 if matrices else 0) + (1 if show_harris else 0)
    heights = [1.2] + ([2.6] if matrices else []) + ([1.6] if show_harris else [])
    fig = Figure(figsize=(13, 1.2 + sum(heights) * 1.6))
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(n_rows, 1, height_ratios=heights, hspace=0.45)
    panels = []
    fig.suptitle(f"{Path(result['clip']).name}: {_headline(result)}\n"
                 f"{result['model']} {result['modalities']} ({result['features']}), run {result['run']}; "
                 f"words: {result['word_source']}", fontsize=10)

    # -- word timeline coloured by contribution, with modality contributions beside it
    top = grid[0].subgridspec(1, 2, width_ratios=[5, 1], wspace=0.25)
    ax = fig.add_subplot(top[0])
    words = result["words"][: len(contrib)]
    span = float(np.max(np.abs(contrib))) if len(contrib) else 1.0
    norm = colors.TwoSlopeNorm(0.0, -max(span, 1e-6), max(span, 1e-6))
    cmap = colormaps["RdBu_r"]
    for w, c in zip(words, contrib, strict=False):
        ax.barh(0, max(w["end"] - w["start"], 0.02), left=w["start"], height=0.8, color=cmap(norm(c)),
                edgecolor="black", linewidth=0.5)
        ax.text((w["start"] + w["end"]) / 2, 0, w["word"], ha="center", va="center", fontsize=8,
                rotation=90 if w["end"] - w["start"] < 0.25 else 0)
    ax.set_xlim(0, max(result.get("duration", 0.0), max((w["end"] for w in words), default=1.0)))
    ax.set_yticks([])
    ax.set_xlabel("time (s)")
    what = "p(predicted class)" if predictor.is_classifier else "score"
    ax.set_title(f"words coloured by contribution (change of {what} when the word is occluded)", fontsize=9)
    fig.colorbar(cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, orientation="vertical", fraction=0.03, pad=0.01)
    panels.append("word timeline")
    bx = fig.add_subplot(top[1])
    mods = list(result["contributions"])
    values = [result["contributions"][m]["contribution"] for m in mods]
    bx.barh(mods, values, color=[cmap(norm(np.clip(v, -span, span))) for v in values], edgecolor="black")
    bx.axvline(0, color="black", linewidth=0.8)
    bx.set_title("modality removed: change", fontsize=9)
    bx.tick_params(labelsize=8)
    panels.append("modality contributions")

    # -- matching matrices and attention weights
    if matrices:
        pivot = fusion.pivot
        n_pivot = int(data.lengths[pivot][0])
        # pivot steps are words when it is text or the data is aligned (one row per word)
        by_word = pivot == "text" or predictor.layout.view == "aligned"
        pivot_labels = [w["word"] for w in result["words"][:n_pivot]] if by_word else None
        extra_cols = 1 if "alpha_tensor" in extras else 0
        sub = grid[1].subgridspec(1, len(matrices) + extra_cols, wspace=0.45)
        for j, m in enumerate(matrices):
            n_m = int(data.lengths[m][0])
            mat = extras[f"match_{m}"][0][:n_m, :n_pivot]
            pair = sub[j].subgridspec(1, 3, width_ratios=[8, 1.2, 0.4], wspace=0.08)
            hx = fig.add_subplot(pair[0])
            image = hx.imshow(mat, aspect="auto", cmap="viridis", interpolation="nearest")
            hx.set_title(f"M_{m[0]}{pivot[0]} = E_{m[0]} W E_{pivot[0]}^T\n({m} steps x {pivot} steps)", fontsize=9)
            if pivot_labels:
                hx.set_xticks(range(len(pivot_labels)))
                hx.set_xticklabels(pivot_labels, rotation=90, fontsize=7)
            else:
                hx.set_xticks(list(range(0, n_pivot, max(1, n_pivot // 12))))
            aligned = predictor.layout.view == "aligned"
            rows = range(0, n_m, max(1, n_m // 12))
            hx.set_yticks(list(rows))
            if aligned and pivot_labels:
                hx.set_yticklabels([pivot_labels[r] if r < len(pivot_labels) else str(r) for r in rows], fontsize=7)
            hx.set_ylabel(f"{m} {'per word' if aligned else 'frame'}", fontsize=8, labelpad=1)
            ax_alpha = fig.add_subplot(pair[1])
            alpha = extras.get(f"alpha_{m}")
            if alpha is not None:
                a = alpha[0][:n_m]
                ax_alpha.imshow(a[:, None], aspect="auto", cmap="magma", interpolation="nearest",
                                vmin=0, vmax=max(float(a.max()), 1e-6))
                if n_m <= 12:
                    for r, v in enumerate(a):
                        ax_alpha.text(0, r, f"{v:.2f}", ha="center", va="center", fontsize=6, color="cyan")
            ax_alpha.set_xticks([])
            ax_alpha.set_yticks([])
            ax_alpha.set_title(f"a_{m[0]}", fontsize=8)
            fig.colorbar(image, cax=fig.add_subplot(pair[2]))
            panels.append(f"match_{m} heat map with alpha_{m}")
        if extra_cols:
            z = fusion.others[1]
            n_z = int(data.lengths[z][0])
            tx = fig.add_subplot(sub[-1])
            tx.plot(extras["alpha_tensor"][0][:n_z], marker="o", markersize=3)
            tx.set_title(f"a_P over {z} steps (eq 15)", fontsize=9)
            tx.set_xlabel(f"{z} step", fontsize=8)
            panels.append("alpha_tensor")

    # -- Harris-3D attention over the most contributing words' face crops
    if show_harris:
        stack = crops.array[0]
        order = np.argsort(-np.abs(contrib[: len(stack)]))[:MAX_HARRIS_WORDS]
        frames = torch.from_numpy(stack[order].astype(np.float32) / 255.0)
        analysis = harris.explain(frames)
        sub = grid[-1].subgridspec(1, len(order), wspace=0.1)
        for col, i in enumerate(order):
            mid = frames.shape[1] // 2
            hx = fig.add_subplot(sub[col])
            hx.imshow(frames[col, mid].numpy(), cmap="gray", vmin=0, vmax=1)
            att = analysis.attention[col, mid].numpy()
            hx.imshow(att, cmap="inferno", alpha=0.45)
            ys, xs = np.nonzero(analysis.keypoints[col].any(0).numpy())
            hx.scatter(xs, ys, s=10, facecolors="none", edgecolors="cyan", linewidths=0.8)
            word = result["words"][int(i)]["word"] if int(i) < len(result["words"]) else str(i)
            hx.set_title(f"{word} ({contrib[int(i)]:+.3f})", fontsize=8)
            hx.axis("off")
        panels.append("harris3d attention frames")

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    return panels

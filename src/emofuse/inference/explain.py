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
- with the raw video encoder (harris3d_cnn, attention on): for the MAX_HARRIS_WORDS words of
  largest |contribution|, a strip of up to MAX_STRIP_FRAMES face-crop frames spread over the
  word's crop stack (first to last), each with the encoder's Harris attention volume A overlaid
  (a heat map, transparent where A = 1) and its key points marked: Harris-3D key points are
  space-time points, so a frame shows those on it (circles) and those one frame before or after
  it (crosses); Harris-2D ones are per frame. The run's own attention mode and HarrisConfig are
  used (`Harris3DCNN.explain`), i.e. exactly the volume the encoder gated the crops with.
  Each strip is labelled with the word, its time span and its contribution.

Layout: constrained, so the title, the subtitle (run, model, word source) and every panel title
have their own space. The picture names the clip by its file name and the run by its folder name
(`run_name`: e.g. fusion_matched_TAV/seed_1), never by a path on the machine that drew it.

Occlusion sets a word's standardised features to zero, i.e. to the training mean: a word's
contribution is how much the prediction moves when that word carries nothing special.
"""

from __future__ import annotations

import os
import textwrap
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import torch

from emofuse.data.dataset import MultimodalDataset
from emofuse.data.raw import RAW_KEY_OF
from emofuse.inference.predict import InMemoryRaw, Predictor, run_label, zero_word_vectors
from emofuse.models.encoders.video_cnn import Harris3DCNN
from emofuse.models.fusion_matched import FusionMatched

MAX_HARRIS_WORDS = 3  # words shown with their Harris strip
MAX_STRIP_FRAMES = 6  # frames per strip, spread over the word's crop stack


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
    """Per word: the prediction (score, or the predicted class's probability) minus it with the word
    occluded."""
    run = predictor.run
    n_words = (
        int(data.lengths["text"][0]) if "text" in data.lengths else int(next(iter(data.lengths.values()))[0])
    )
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
        mask_id = (
            run.tokenizer.mask_token_id
            if run.tokenizer.mask_token_id is not None
            else run.tokenizer.unk_token_id
        )
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


def clip_label(clip: str | os.PathLike[str]) -> str:
    """The clip as the picture names it: its file name only."""
    return PurePath(os.fspath(clip)).name or os.fspath(clip)


def explain_figure(predictor: Predictor, path: str | os.PathLike[str],
                   transcript: str | None = None) -> tuple[dict[str, Any], Any]:
    """Predict for one clip and build its picture without saving it: (the prediction dict with
    'word_contributions' and 'panels' added, the matplotlib Figure)."""
    features = predictor.extract(path, transcript)
    result = predictor.predict_features(features)
    record = predictor.with_embedding_rows(features.record(), path)
    data = predictor.dataset(record, predictor.raw_inputs(features), clip=str(path))
    contrib = word_contributions(predictor, data)
    _, extras = predictor.forward(data)
    n = len(contrib)
    # four significant digits, not four decimals: a small model's word contributions are often
    # below 1e-4 and must not all round to zero (the page colours words by them)
    result["word_contributions"] = [{"word": w["word"], "contribution": float(f"{float(c):.4g}")}
                                    for w, c in zip(result["words"][:n], contrib, strict=False)]
    fig, panels = build_figure(predictor, result, data, contrib, extras)
    result["panels"] = panels
    return result, fig


def explain(predictor: Predictor, path: str | os.PathLike[str], out: str | os.PathLike[str],
            transcript: str | None = None) -> dict[str, Any]:
    """Predict for one clip, draw the picture into `out` (PNG) and return the prediction dict with
    'png', 'word_contributions' and 'panels' (what the picture shows) added."""
    result, fig = explain_figure(predictor, path, transcript)
    save_png(fig, Path(out))
    result["png"] = str(out)
    return result


def save_png(fig: Any, out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


# --------------------------------------------------------------------------- drawing
def _headline(result: dict[str, Any]) -> str:
    if "class" in result:
        return f"class {result['class']} (p = {result['probability']:.2f})"
    labels = result["labels"]
    return f"score {result['score']:+.2f}  ({labels['2']}, {labels['3']}, {labels['7']})"


def _wrap(text: str, width: int = 150) -> str:
    """Break a long heading into lines that fit the figure's width."""
    return "\n".join(textwrap.wrap(text, width))


def _strip_frames(n_frames: int) -> list[int]:
    """Up to MAX_STRIP_FRAMES frame indices spread evenly from the first frame to the last."""
    n = min(n_frames, MAX_STRIP_FRAMES)
    return sorted({int(round(float(t))) for t in np.linspace(0, n_frames - 1, n)})


def draw(predictor: Predictor, result: dict[str, Any], features: Any, data: MultimodalDataset,
         contrib: np.ndarray, extras: dict[str, np.ndarray], out: Path) -> list[str]:
    """Build the picture (`build_figure`) and save it as the PNG `out`; returns the panels drawn."""
    fig, panels = build_figure(predictor, result, data, contrib, extras)
    save_png(fig, Path(out))
    return panels


def build_figure(predictor: Predictor, result: dict[str, Any], data: MultimodalDataset, contrib: np.ndarray,
                 extras: dict[str, np.ndarray]) -> tuple[Any, list[str]]:
    """The picture as a matplotlib Figure (Agg canvas, constrained layout) and the panels it shows."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    model = predictor.run.model
    fusion = model if isinstance(model, FusionMatched) else \
        next((m for m in model.modules() if isinstance(m, FusionMatched)), None)
    matrices = [m for m in (fusion.others if fusion is not None else ()) if f"match_{m}" in extras]
    harris = next((m for m in model.modules() if isinstance(m, Harris3DCNN)), None)
    crops = data.extras.get(RAW_KEY_OF["vision"]) if harris is not None else None
    show_harris = crops is not None and harris.config.attention != "none" and len(crops.array[0]) > 0
    strips = np.argsort(-np.abs(contrib[: len(crops.array[0])]), kind="stable")[:MAX_HARRIS_WORDS] \
        if show_harris else np.zeros(0, dtype=int)

    heights = [2.3] + ([4.0] if matrices else []) + ([1.0 + 2.2 * len(strips)] if show_harris else [])
    fig = Figure(figsize=(13, 0.6 + sum(heights)), layout="constrained")
    FigureCanvasAgg(fig)
    fig.get_layout_engine().set(h_pad=0.06, hspace=0.03)
    rows = list(fig.subfigures(len(heights), 1, height_ratios=heights, squeeze=False)[:, 0])
    # the title (the figure's) and the subtitle (the top panel's heading): both placed by the layout
    fig.suptitle(f"{clip_label(result['clip'])}: {_headline(result)}", fontsize=12, fontweight="bold")
    encoders = ", ".join(f"{m} encoder {n}" for m, n in result.get("raw_encoders", {}).items())
    rows[0].suptitle(f"{result['model']} {result['modalities']} ({result['features']}"
                     f"{'; ' + encoders if encoders else ''}), run {run_label(predictor.run_dir)}; "
                     f"words: {result['word_source']}", fontsize=9)
    panels = _draw_timeline(rows[0], predictor, result, contrib)
    if matrices:
        panels += _draw_matrices(rows[1], predictor, result, data, extras, fusion, matrices)
    if show_harris:
        panels += _draw_harris(rows[-1], harris, crops.array[0], strips, result, contrib)
    return fig, panels


def _draw_timeline(sub: Any, predictor: Predictor, result: dict[str, Any], contrib: np.ndarray) -> list[str]:
    """Word bars over time coloured by contribution; the modality contributions beside them."""
    from matplotlib import cm, colormaps, colors

    grid = sub.add_gridspec(1, 2, width_ratios=[5, 1])
    ax = sub.add_subplot(grid[0])
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
    sub.colorbar(
        cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, orientation="vertical", fraction=0.03, pad=0.01
    )
    bx = sub.add_subplot(grid[1])
    mods = list(result["contributions"])
    values = [result["contributions"][m]["contribution"] for m in mods]
    bx.barh(mods, values, color=[cmap(norm(np.clip(v, -span, span))) for v in values], edgecolor="black")
    bx.axvline(0, color="black", linewidth=0.8)
    bx.set_title("modality removed: change", fontsize=9)
    bx.tick_params(labelsize=8)
    return ["word timeline", "modality contributions"]


def _draw_matrices(sub: Any, predictor: Predictor, result: dict[str, Any], data: MultimodalDataset,
                   extras: dict[str, np.ndarray], fusion: FusionMatched, matrices: list[str]) -> list[str]:
    """The matching matrices M_xy as heat maps with their row attention a_x, and a_P."""
    panels = []
    pivot = fusion.pivot
    n_pivot = int(data.lengths[pivot][0])
    # pivot steps are words when it is text or the data is aligned (one row per word)
    by_word = pivot == "text" or predictor.layout.view == "aligned"
    pivot_labels = [w["word"] for w in result["words"][:n_pivot]] if by_word else None
    extra_cols = 1 if "alpha_tensor" in extras else 0
    grid = sub.add_gridspec(1, len(matrices) + extra_cols, wspace=0.1)
    for j, m in enumerate(matrices):
        n_m = int(data.lengths[m][0])
        mat = extras[f"match_{m}"][0][:n_m, :n_pivot]
        pair = grid[j].subgridspec(1, 3, width_ratios=[8, 1.2, 0.4], wspace=0.02)
        hx = sub.add_subplot(pair[0])
        image = hx.imshow(mat, aspect="auto", cmap="viridis", interpolation="nearest")
        hx.set_title(
            f"M_{m[0]}{pivot[0]} = E_{m[0]} W E_{pivot[0]}^T\n({m} steps x {pivot} steps)", fontsize=9
        )
        if pivot_labels:
            hx.set_xticks(range(len(pivot_labels)))
            hx.set_xticklabels(pivot_labels, rotation=90, fontsize=7)
        else:
            hx.set_xticks(list(range(0, n_pivot, max(1, n_pivot // 12))))
        aligned = predictor.layout.view == "aligned"
        steps = range(0, n_m, max(1, n_m // 12))
        hx.set_yticks(list(steps))
        if aligned and pivot_labels:
            hx.set_yticklabels(
                [pivot_labels[r] if r < len(pivot_labels) else str(r) for r in steps], fontsize=7
            )
        hx.set_ylabel(f"{m} {'per word' if aligned else 'frame'}", fontsize=8, labelpad=1)
        ax_alpha = sub.add_subplot(pair[1])
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
        sub.colorbar(image, cax=sub.add_subplot(pair[2]))
        panels.append(f"match_{m} heat map with alpha_{m}")
    if extra_cols:
        z = fusion.others[1]
        n_z = int(data.lengths[z][0])
        tx = sub.add_subplot(grid[-1])
        tx.plot(extras["alpha_tensor"][0][:n_z], marker="o", markersize=3)
        tx.set_title(f"a_P over {z} steps (eq 15)", fontsize=9)
        tx.set_xlabel(f"{z} step", fontsize=8)
        panels.append("alpha_tensor")
    return panels


def _draw_harris(sub: Any, harris: Harris3DCNN, stack: np.ndarray, strips: np.ndarray, result: dict[str, Any],
                 contrib: np.ndarray) -> list[str]:
    """One strip per word: frames spread over its crop stack, attention overlaid, key points marked."""
    from matplotlib import cm, colormaps, colors

    chosen = stack[strips]
    frames = torch.from_numpy(chosen.astype(np.float32) / 255.0 if chosen.dtype == np.uint8
                              else chosen.astype(np.float32))
    analysis = harris.explain(frames)  # the encoder's own mode and HarrisConfig
    attention = analysis.attention.cpu().numpy()
    keypoints = analysis.keypoints.cpu().numpy()
    config, mode = harris.config.harris, harris.config.attention
    three_d = mode == "harris3d"
    near = (
        1 if three_d else 0
    )  # Harris-3D key points are space-time points: show those of the next frames too
    top = float(attention.max())
    norm = colors.Normalize(1.0, top if top > 1.0 + 1e-6 else 2.0)
    cmap = colormaps["autumn"]  # bright at both ends: it shows on dark and light pixels
    name = "Harris-3D" if three_d else "Harris-2D"
    k = config.k3d if three_d else config.k2d
    tau = f", tau {config.tau:g} frames" if three_d else ""
    sub.suptitle(
        _wrap(
            f"{name} attention A over the face crops of the {len(strips)} words "
            "of largest |contribution|, as the run's "
            f"encoder computes it (its HarrisConfig: sigma {config.sigma:g} px{tau}, k {k:g}, threshold "
            f"{config.threshold:g}, at most {config.max_points} key points, {config.spread} spread)"
        ),
        fontsize=10,
    )
    marks = (
        "cyan circles: key points on the shown frame; green crosses: key points on the frame just before "
        "or after it (Harris-3D key points are space-time points, so a frame shows those of frames t-1..t+1)"
        if three_d
        else "cyan circles: key points of the shown frame (Harris-2D finds them frame by frame)"
    )
    sub.supxlabel(_wrap(f"{marks}. Heat map: A, transparent where A = 1 (no key point near); the encoder "
                        "multiplies the crops and its feature maps by it."), fontsize=8)
    n_frames = frames.shape[1]
    shown = _strip_frames(n_frames)
    rows = sub.subfigures(len(strips), 1, squeeze=False)[:, 0]
    for row, (strip, i) in enumerate(zip(rows, strips, strict=True)):
        i = int(i)
        w = (
            result["words"][i]
            if i < len(result["words"])
            else {"word": f"word {i + 1}", "start": np.nan, "end": np.nan}
        )
        n_points = int(keypoints[row].sum())
        strip.suptitle(
            f"#{row + 1}  \u201c{w['word']}\u201d  {w['start']:.2f}\u2013{w['end']:.2f} s, "
            f"contribution {contrib[i]:+.3f}  ({n_points} key point{'' if n_points == 1 else 's'} in its "
            f"{n_frames} frames)",
            fontsize=9,
            fontweight="bold",
        )
        axes = strip.subplots(1, len(shown), squeeze=False)[0]
        for ax, t in zip(axes, shown, strict=True):
            ax.imshow(frames[row, t].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            a = attention[row, t]
            # opaque in proportion to A: the crop shows through where A = 1 (no key point near)
            level = np.clip((a - 1.0) / (norm.vmax - 1.0), 0.0, 1.0)
            ax.imshow(a, cmap=cmap, norm=norm, alpha=np.where(level > 1e-3, 0.3 + 0.5 * level, 0.0),
                      interpolation="nearest")
            on = keypoints[row, t]
            around = keypoints[row, max(0, t - near): t + near + 1].any(0) & ~on
            ys, xs = np.nonzero(around)
            ax.scatter(
                xs, ys, marker="x", s=22, c="lime", linewidths=1.0, label="key points of the next frames"
            )
            ys, xs = np.nonzero(on)
            ax.scatter(xs, ys, marker="o", s=34, facecolors="none", edgecolors="cyan", linewidths=1.2,
                       label="key points of the frame")
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"frame {t + 1}/{n_frames}", fontsize=8)
        strip.colorbar(
            cm.ScalarMappable(norm=norm, cmap=cmap),
            ax=list(axes),
            fraction=0.02,
            pad=0.01,
            label="attention A",
        )
    return [f"{mode} attention frames"]

"""The explain picture of a raw-video run (harris3d_cnn): Harris strips, text that does not overlap,
no paths of the machine that drew it.

One tiny fusion_matched A+V run on synthetic-raw (Harris attention with a non-default spread, so
"the run's own config" is checked), one generated clip whose face has a dark patch that blinks
(a motion event: Harris-3D key points), explained once; the tests read the figure's artists.
"""

from __future__ import annotations

import itertools
import re
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
from extract_media import (  # noqa: E402
    FACE_SIZE,
    FPS,
    NEW_SENTENCE,
    SAMPLE_RATE,
    WIDTH,
    face_frames,
    mux,
    needs_extraction_stack,
    speech,
)

from emofuse.cli.main import main  # noqa: E402

pytestmark = needs_extraction_stack()

RUN_NAME = "fusion_matched_AV/seed_1"
HARRIS = '{"spread_radius": 2, "tau": 1.0}'  # not HarrisConfig's defaults (3 px, 1.5 frames)


def blinking_clip(path: Path, words: list[str]) -> Path:
    """`extract_media.speaking_clip` with a dark patch on the face, on for 3 frames, off for 3."""
    audio, _ = speech(words)
    n = int(np.ceil(len(audio) / SAMPLE_RATE * FPS))
    frames = face_frames(n)
    for i in range(n):
        if (i // 3) % 2:
            x = int(round(i * (WIDTH - FACE_SIZE) / max(1, n - 1)))  # where face_frames put the face
            frames[i, 16 + 50 : 16 + 64, x + 38 : x + 52] = 20
    return mux(path, frames, audio)


@pytest.fixture(scope="module")
def explained(tmp_path_factory) -> dict[str, Any]:
    import torch

    from emofuse.inference import Predictor
    from emofuse.inference.explain import build_figure, explain_figure, save_png
    from emofuse.inference.predict import resize_words
    from emofuse.models.encoders.harris import harris_analysis
    from emofuse.models.encoders.video_cnn import Harris3DCNN

    root = tmp_path_factory.mktemp("explain_raw")
    run = root / RUN_NAME
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic-raw",
                "-D",
                "n_train=48",
                "-D",
                "n_valid=16",
                "-D",
                "n_test=16",
                "--model",
                "fusion_matched",
                "--modalities",
                "A+V",
                "--video-encoder",
                "harris3d_cnn",
                "--audio-encoder",
                "spectro_cnn",
                "--encoder-dim",
                "8",
                "-E",
                "vision:channels=[4]",
                "-E",
                f"vision:harris={HARRIS}",
                "-E",
                "audio:channels=[8]",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--quiet",
                "--out",
                str(run.parent),
            ]
        )
        == 0
    )
    clip = blinking_clip(root / "clips" / "blink.mp4", NEW_SENTENCE.split())
    with Predictor(run, cache_dir=root / "cache") as predictor:
        result, fig = explain_figure(predictor, clip, NEW_SENTENCE)
        png = root / "out" / "explain.png"
        save_png(fig, png)
        # what the strips must show, worked out here from the run's encoder (the extraction is cached)
        encoder = next(m for m in predictor.run.model.modules() if isinstance(m, Harris3DCNN))
        features = predictor.extract(clip, NEW_SENTENCE)
        crops = resize_words(np.asarray(features.word_crops), predictor.layout.raw_shapes["vision"])
        frames = torch.from_numpy(crops.astype(np.float32) / 255.0)
        analysis = harris_analysis(frames, encoder.config.attention, encoder.config.harris)
        # the picture of a run with neither matching matrices nor raw video (e.g. ef_lstm): the
        # timeline alone, the shortest figure, where the old title was drawn over the panel titles
        contrib = np.array([w["contribution"] for w in result["word_contributions"]])
        short, panels = build_figure(predictor, result, SimpleNamespace(extras={}, lengths={}), contrib, {})
        assert panels == ["word timeline", "modality contributions"]
    return {
        "root": root,
        "run": run,
        "clip": clip,
        "png": png,
        "result": result,
        "fig": fig,
        "frames": frames,
        "encoder": encoder,
        "analysis": analysis,
        "short": short,
    }


# ------------------------------------------------------------------------- figure helpers
def _subfigures(fig) -> list:
    out = []
    for sub in getattr(fig, "subfigs", []):
        out += [sub, *_subfigures(sub)]
    return out


def _axes(fig) -> list:
    from matplotlib.axes import Axes

    return list(dict.fromkeys(fig.findobj(Axes)))


def headings(fig) -> list:
    """The title, the subtitle, the panel and strip headings, captions and every Axes title."""
    texts = []
    for f in [fig, *_subfigures(fig)]:
        texts += [t for t in (getattr(f, "_suptitle", None), getattr(f, "_supxlabel", None)) if t is not None]
    for ax in _axes(fig):
        texts += [ax.title, ax._left_title, ax._right_title]
    return [t for t in texts if t.get_text().strip() and t.get_visible()]


def overlaps(fig) -> list[str]:
    """Pairs of headings whose boxes intersect, headings over a plot, headings cut off by the edge."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text()[:40], t.get_window_extent(renderer)) for t in headings(fig)]
    found = [f"{a!r} overlaps {b!r}" for (a, box_a), (b, box_b) in itertools.combinations(boxes, 2)
             if box_a.overlaps(box_b)]
    for ax in _axes(fig):
        area = ax.get_window_extent(renderer)
        found += [f"{name!r} is drawn over a plot" for name, box in boxes if box.overlaps(area)]
    whole = fig.bbox
    found += [f"{name!r} is cut off by the figure's edge" for name, box in boxes
              if box.x0 < whole.x0 or box.y0 < whole.y0 or box.x1 > whole.x1 or box.y1 > whole.y1]
    return found


def _strips(fig) -> list:
    harris = [s for s in _subfigures(fig) if s.subfigs and s._suptitle is not None
              and "attention A" in s._suptitle.get_text()]
    assert len(harris) == 1
    return list(harris[0].subfigs)


# ------------------------------------------------------------------------- tests
def test_the_overlap_check_can_fail() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4))
    FigureCanvasAgg(fig)
    fig.suptitle("a title", y=0.98)
    sub = fig.subfigures(1, 1)
    sub.suptitle("a subtitle drawn at the title's place (the old picture)", y=0.98)
    sub.add_subplot().set_title("a panel")
    assert any("overlaps" in p for p in overlaps(fig))


def test_no_heading_overlaps_another_nor_a_plot(explained) -> None:
    fig = explained["fig"]
    names = [t.get_text() for t in headings(fig)]
    assert names[0].startswith("blink.mp4: ") and RUN_NAME in names[1]  # the title, then the subtitle
    assert len(names) > 20  # title, subtitle, panels, the Harris heading, strips and their frames
    assert overlaps(fig) == []
    short = explained["short"]
    names = [t.get_text() for t in headings(short)]
    assert names[0].startswith("blink.mp4: ") and RUN_NAME in names[1] and len(names) == 4
    assert overlaps(short) == []


def test_run_and_clip_names() -> None:
    from emofuse.inference.explain import clip_label, run_label

    assert run_label("/srv/runs/fusion_matched_TAV/seed_1") == "fusion_matched_TAV/seed_1"
    assert run_label("/srv/runs/fusion_matched_TAV/seed_1/") == "fusion_matched_TAV/seed_1"
    assert run_label("/srv/runs/my_run") == "my_run"
    assert (
        clip_label("/tmp/emofuse-serve-x1/My Clip.mp4") == "My Clip.mp4"
        and clip_label("<record>") == "<record>"
    )


def test_strips_show_the_top_words_frames_with_the_runs_own_harris_attention(explained) -> None:
    result, fig, analysis = explained["result"], explained["fig"], explained["analysis"]
    config = explained["encoder"].config
    assert config.attention == "harris3d" and config.harris.spread_radius == 2 and config.harris.tau == 1.0
    assert "harris3d attention frames" in result["panels"]
    harris_heading = next(t.get_text() for t in headings(fig) if "attention A" in t.get_text())
    assert "tau 1 frames" in harris_heading  # the run's config, not the default 1.5
    caption = next(s._supxlabel.get_text() for s in _subfigures(fig) if s._supxlabel is not None)
    assert "before or after" in caption and "t-1..t+1" in caption

    words, contrib = result["words"], [w["contribution"] for w in result["word_contributions"]]
    strips = _strips(fig)
    assert len(strips) == min(3, len(contrib))
    shown, n_marked = [], 0
    for strip in strips:
        label = strip._suptitle.get_text()
        match = re.search(r"\u201c(.+)\u201d\s+([\d.]+)\u2013([\d.]+) s, contribution ([+-][\d.]+)", label)
        assert match, label
        i = next(k for k, w in enumerate(words) if w["word"] == match[1])
        assert (float(match[2]), float(match[3])) == pytest.approx(
            (words[i]["start"], words[i]["end"]), abs=0.006
        )
        assert float(match[4]) == pytest.approx(contrib[i], abs=1.1e-3)
        shown.append(i)
        frame_axes = [ax for ax in strip.axes if ax.images]
        titles = [re.fullmatch(r"frame (\d+)/(\d+)", ax.title.get_text()) for ax in frame_axes]
        ts = [int(m[1]) - 1 for m in titles]
        n_frames = int(titles[0][2])
        assert n_frames == explained["frames"].shape[1]
        # several frames spread over the whole stack, not only the middle one
        assert 4 <= len(ts) <= 6 and ts[0] == 0 and ts[-1] == n_frames - 1 and ts == sorted(set(ts))
        for ax, t in zip(frame_axes, ts, strict=True):
            crop, overlay = ax.images
            np.testing.assert_allclose(np.asarray(crop.get_array()), explained["frames"][i, t].numpy())
            np.testing.assert_allclose(
                np.asarray(overlay.get_array()), analysis.attention[i, t].numpy(), rtol=1e-6
            )
            # translucent, and transparent where A = 1 (no key point near)
            alpha, volume = np.asarray(overlay.get_alpha()), analysis.attention[i, t].numpy()
            assert alpha.min() >= 0.0 and alpha.max() <= 0.8 and not alpha[volume <= 1.0].any()
            assert alpha[volume > 1.05].all()
            kp = analysis.keypoints[i].numpy()
            on = {(x, y) for y, x in zip(*np.nonzero(kp[t]), strict=True)}
            near = {(x, y) for y, x in zip(*np.nonzero(kp[max(0, t - 1) : t + 2].any(0)), strict=True)} - on
            marks = {c.get_label(): {tuple(p) for p in np.asarray(c.get_offsets()).round().astype(int)}
                     for c in ax.collections}
            got_on, got_near = marks["key points of the frame"], marks["key points of the next frames"]
            assert (got_on, got_near) == (on, near)
            n_marked += len(on) + len(near)
    # the words of largest |contribution| (ties within the rounding of the result's values)
    rest = [abs(c) for k, c in enumerate(contrib) if k not in shown]
    assert all(abs(contrib[i]) >= max(rest, default=0.0) - 1e-4 for i in shown)
    assert n_marked > 0  # the blinking patch gives key points, and they are marked


def test_the_picture_names_the_clip_and_run_without_paths(explained) -> None:
    from matplotlib.text import Text

    fig, root = explained["fig"], explained["root"]
    assert explained["png"].read_bytes()[:4] == b"\x89PNG"
    texts = [t.get_text() for t in fig.findobj(Text) if t.get_text()]
    assert any("blink.mp4" in t for t in texts) and any(RUN_NAME in t for t in texts)
    above = [p for p in root.resolve().parts[1:] if len(p) > 3]  # the folders above the run's name
    assert above
    for text in texts:
        assert str(root) not in text and str(root.resolve()) not in text
        assert not any(p in text for p in above), text
        for token in re.findall(r"\S*/\S*", text):
            # a slash only in the run's name or a frame number ("frame 3/8")
            assert token.strip("(),;:") in (RUN_NAME, "") or re.fullmatch(r"\d+/\d+", token), (token, text)
    data = explained["png"].read_bytes()
    assert str(root).encode() not in data

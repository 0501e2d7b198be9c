"""Harris-2D/3D attention: every step against a plain NumPy reference, then behaviour on clips.

The generated clips check what Harris-3D is for: it marks space-time corners (where motion
starts, stops or turns), not static corners and not corners moving at constant speed.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch

from emofuse.models.encoders.harris import (
    HarrisConfig,
    attention_volume,
    harris_analysis,
    harris_attention,
    harris_keypoints,
    harris_response,
    harris_strength,
    harris_terms,
    prewitt_gradients,
    select_keypoints,
)

SHAPE = (2, 6, 12, 12)


def _rng_video(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE)


# ---------------------------------------------------------------------------- NumPy references
def _clamp(i: int, n: int) -> int:
    return min(max(i, 0), n - 1)


def ref_gradients(v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Prewitt windows by loops, edge samples replicated."""
    b_, t_, h_, w_ = v.shape
    ix, iy, it = np.zeros_like(v), np.zeros_like(v), np.zeros_like(v)
    for b, t, y, x in itertools.product(range(b_), range(t_), range(h_), range(w_)):
        def at(tt: int, yy: int, xx: int, b: int = b) -> float:
            return v[b, _clamp(tt, t_), _clamp(yy, h_), _clamp(xx, w_)]

        ix[b, t, y, x] = sum(at(t, y + d, x + 1) - at(t, y + d, x - 1) for d in (-1, 0, 1)) / 6
        iy[b, t, y, x] = sum(at(t, y + 1, x + d) - at(t, y - 1, x + d) for d in (-1, 0, 1)) / 6
        it[b, t, y, x] = sum(
            at(t + 1, y + dy, x + dx) - at(t - 1, y + dy, x + dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)
        ) / 18
    return ix, iy, it


def ref_gauss(sigma: float) -> np.ndarray:
    radius = max(1, math.ceil(3 * sigma))
    g = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2)
    return g / g.sum()


def ref_smooth(x: np.ndarray, sigma: float, tau: float) -> np.ndarray:
    """Full (non-separable) Gaussian window over B x T x H x W, edges replicated."""
    gs = ref_gauss(sigma)
    gt = ref_gauss(tau) if tau > 0 else np.ones(1)
    rs, rt = len(gs) // 2, len(gt) // 2
    p = np.pad(x, ((0, 0), (rt, rt), (rs, rs), (rs, rs)), mode="edge")
    _, t_, h_, w_ = x.shape
    out = np.zeros_like(x)
    for a, b, c in itertools.product(range(len(gt)), range(len(gs)), range(len(gs))):
        out += gt[a] * gs[b] * gs[c] * p[:, a : a + t_, b : b + h_, c : c + w_]
    return out


def ref_terms(v: np.ndarray, mode: str, cfg: HarrisConfig) -> tuple[np.ndarray, np.ndarray]:
    """R or R3, and each clip's contrast measure: mean(Ix^2 + Iy^2)^2 [* mean(It^2) for 3D],
    the means over the clip of M's smoothed diagonal."""
    ix, iy, it = ref_gradients(v)
    if mode == "harris2d":
        m = np.empty(v.shape + (2, 2))
        for (i, gi), (j, gj) in itertools.product(enumerate((ix, iy)), repeat=2):
            m[..., i, j] = ref_smooth(gi * gj, cfg.sigma, 0.0)
        spatial = (m[..., 0, 0] + m[..., 1, 1]).reshape(len(v), -1).mean(1)
        return np.linalg.det(m) - cfg.k2d * np.trace(m, axis1=-2, axis2=-1) ** 2, spatial**2
    if v.shape[1] >= 3:  # first/last frames take their inner neighbour's gradient
        for g in (ix, iy, it):
            g[:, 0], g[:, -1] = g[:, 1].copy(), g[:, -2].copy()
    m = np.empty(v.shape + (3, 3))
    for (i, gi), (j, gj) in itertools.product(enumerate((ix, iy, it)), repeat=2):
        m[..., i, j] = ref_smooth(gi * gj, cfg.sigma, cfg.tau)
    spatial = (m[..., 0, 0] + m[..., 1, 1]).reshape(len(v), -1).mean(1)
    temporal = m[..., 2, 2].reshape(len(v), -1).mean(1)
    return np.linalg.det(m) - cfg.k3d * np.trace(m, axis1=-2, axis2=-1) ** 3, spatial**2 * temporal


def ref_response(v: np.ndarray, mode: str, cfg: HarrisConfig) -> np.ndarray:
    return ref_terms(v, mode, cfg)[0]


def ref_select(r: np.ndarray, mode: str, cfg: HarrisConfig, contrast: np.ndarray | None = None) -> np.ndarray:
    """Loops; `contrast` (one per clip) divides r for the strength floor, None: r is the strength."""
    rt = cfg.nms_radius_t if mode == "harris3d" else 0
    rs = cfg.nms_radius
    floor = cfg.min_strength3d if mode == "harris3d" else cfg.min_strength2d
    out = np.zeros(r.shape, dtype=bool)
    _, _, h_, w_ = r.shape
    for b in range(r.shape[0]):
        top = r[b].max()
        scale = 1.0 if contrast is None else contrast[b]
        found = []
        for t, y, x in itertools.product(*(range(n) for n in r.shape[1:])):
            window = r[
                b, max(t - rt, 0) : t + rt + 1, max(y - rs, 0) : y + rs + 1, max(x - rs, 0) : x + rs + 1
            ]
            value = r[b, t, y, x]
            strength = value / scale if scale > 0 else 0.0
            inside = cfg.border <= y < h_ - cfg.border and cfg.border <= x < w_ - cfg.border
            if (
                value == window.max()
                and value > 0
                and strength > floor
                and value >= cfg.threshold * top
                and inside
            ):
                found.append((value, t, y, x))
        for _, t, y, x in sorted(found, reverse=True)[: cfg.max_points]:
            out[b, t, y, x] = True
    return out


def ref_attention(r: np.ndarray, keypoints: np.ndarray, cfg: HarrisConfig) -> np.ndarray:
    def weight(d: int, radius: int) -> float:
        if cfg.spread == "box" or radius == 0:
            return 1.0
        return math.exp(-0.5 * (d / (radius / 2)) ** 2)

    a = np.ones_like(r)
    rs, rt = cfg.spread_radius, cfg.spread_radius_t
    for b in range(r.shape[0]):
        if not keypoints[b].any():
            continue
        top = r[b][keypoints[b]].max()
        for t, y, x in zip(*np.nonzero(keypoints[b])):
            for dt, dy, dx in itertools.product(range(-rt, rt + 1), range(-rs, rs + 1), range(-rs, rs + 1)):
                tt, yy, xx = t + dt, y + dy, x + dx
                if 0 <= tt < r.shape[1] and 0 <= yy < r.shape[2] and 0 <= xx < r.shape[3]:
                    a[b, tt, yy, xx] += r[b, t, y, x] / top * weight(dt, rt) * weight(dy, rs) * weight(dx, rs)
    return a


def _close(actual: torch.Tensor, expected: np.ndarray) -> None:
    scale = max(np.abs(expected).max(), 1e-300)
    np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-5, atol=1e-5 * scale)


# ---------------------------------------------------------------------------- against the references
def test_gradients_match_reference():
    v = _rng_video()
    for got, want in zip(prewitt_gradients(torch.from_numpy(v)), ref_gradients(v)):
        _close(got, want)


def test_prewitt_of_a_unit_ramp_is_one():
    ramp = torch.arange(10, dtype=torch.float64)
    video = (ramp[None, None, None, :] + 2 * ramp[None, None, :, None] + 3 * ramp[None, :, None, None])
    ix, iy, it = prewitt_gradients(video.expand(1, 10, 10, 10).contiguous())
    inner = (slice(None), slice(1, -1), slice(1, -1), slice(1, -1))
    assert torch.allclose(ix[inner], torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(iy[inner], torch.tensor(2.0, dtype=torch.float64))
    assert torch.allclose(it[inner], torch.tensor(3.0, dtype=torch.float64))


@pytest.mark.parametrize("mode", ["harris2d", "harris3d"])
@pytest.mark.parametrize("sigma,tau", [(1.5, 1.5), (1.0, 0.7)])
def test_response_matches_reference(mode, sigma, tau):
    cfg = HarrisConfig(sigma=sigma, tau=tau)
    v = _rng_video(1)
    _close(harris_response(torch.from_numpy(v), mode, cfg), ref_response(v, mode, cfg))


@pytest.mark.parametrize("mode", ["harris2d", "harris3d"])
@pytest.mark.parametrize(
    "cfg",
    [
        HarrisConfig(threshold=0.3, max_points=5, min_strength2d=0.0, min_strength3d=0.0),
        HarrisConfig(
            threshold=0.0,
            max_points=1000,
            nms_radius=1,
            nms_radius_t=2,
            min_strength2d=0.5,
            min_strength3d=0.5,
            border=0,
        ),
        HarrisConfig(
            threshold=0.5, max_points=3, min_strength2d=0.8, min_strength3d=0.8, nms_radius=0, border=2
        ),
    ],
)
@pytest.mark.parametrize("contrast", [None, np.array([0.5, 2.0])])
def test_keypoint_selection_matches_reference(mode, cfg, contrast):
    r = np.random.default_rng(2).normal(size=SHAPE)
    given = None if contrast is None else torch.from_numpy(contrast)
    got = select_keypoints(torch.from_numpy(r), mode, cfg, given).numpy()
    want = ref_select(r, mode, cfg, contrast)
    assert want.any()
    np.testing.assert_array_equal(got, want)
    assert got.reshape(SHAPE[0], -1).sum(1).max() <= cfg.max_points


@pytest.mark.parametrize(
    "cfg",
    [
        HarrisConfig(),
        HarrisConfig(spread="box", spread_radius=2, spread_radius_t=0),
        HarrisConfig(spread_radius_t=3),
    ],
)
def test_attention_matches_reference(cfg):
    rng = np.random.default_rng(3)
    r = rng.normal(size=SHAPE)
    keypoints = ref_select(r, "harris3d", HarrisConfig(threshold=0.2, max_points=6, min_strength3d=0.0))
    keypoints[1] = False  # a clip without key points must come out as exact ones
    got = attention_volume(torch.from_numpy(r), torch.from_numpy(keypoints), cfg)
    _close(got, ref_attention(r, keypoints, cfg))
    assert torch.equal(got[1], torch.ones_like(got[1]))


@pytest.mark.parametrize("mode", ["harris2d", "harris3d"])
def test_pipeline_matches_reference_end_to_end(mode):
    # faint noise plus a square that appears in frame 3 of clip 0 and sits still in clip 1
    v = 0.3 + 0.02 * np.random.default_rng(4).random(SHAPE)
    v[0, 3:, 3:8, 4:9] += 0.5
    v[1, :, 4:9, 3:8] -= 0.2
    cfg = HarrisConfig(max_points=4, min_strength2d=0.5)  # 5 px squares in 12 px frames: dense corners
    r, contrast = ref_terms(v, mode, cfg)
    keypoints = ref_select(r, mode, cfg, contrast)
    assert keypoints[0].any() and (mode == "harris2d") == keypoints[1].any()
    result = harris_analysis(torch.from_numpy(v), mode, cfg)
    np.testing.assert_array_equal(result.keypoints.numpy(), keypoints)
    _close(result.attention, ref_attention(r, keypoints, cfg))
    _close(result.strength, r / contrast[:, None, None, None])
    got_r, got_contrast = harris_terms(torch.from_numpy(v), mode, cfg)
    _close(got_r, r)
    _close(got_contrast, contrast)


# ---------------------------------------------------------------------------- generated clips
T, H, W = 24, 32, 32
SIDE, X0 = 8, 12  # the square's side and left column


def _square_clip(rows: list[int | None]) -> torch.Tensor:
    """One clip: a bright square whose top row in frame t is rows[t] (None: no square)."""
    video = torch.zeros(1, len(rows), H, W)
    for t, y in enumerate(rows):
        if y is not None:
            video[0, t, y : y + SIDE, X0 : X0 + SIDE] = 1.0
    return video


def _corners(y: int) -> list[tuple[int, int]]:
    return [(y, X0), (y, X0 + SIDE - 1), (y + SIDE - 1, X0), (y + SIDE - 1, X0 + SIDE - 1)]


def _points(video: torch.Tensor, mode: str, cfg: HarrisConfig | None = None) -> list[tuple[int, int, int]]:
    points = [p[1:4] for p in harris_analysis(video, mode, cfg).keypoint_list()]
    print(f"{mode} key points (t, y, x): {points}")
    return points


def _near(point: tuple[int, int], corner: tuple[int, int], pixels: int = 2) -> bool:
    return max(abs(point[0] - corner[0]), abs(point[1] - corner[1])) <= pixels


def _check_event(points: list[tuple[int, int, int]], t_event: float, top_row: int) -> None:
    """Key points within 2 frames of the event, each near a corner, and every corner marked."""
    near_event = [p for p in points if abs(p[0] - t_event) <= 2]
    assert near_event, f"no key point near frame {t_event}: {points}"
    corners = _corners(top_row)
    for p in near_event:
        assert any(_near(p[1:], c) for c in corners), f"key point {p} is not at a corner of {corners}"
    for c in corners:
        assert any(_near(p[1:], c) for p in near_event), f"corner {c} unmarked at frame {t_event}: {points}"


def test_harris3d_marks_the_corners_where_motion_turns():
    turn = 11  # moves down 1 px per frame until frame 11, then back up
    rows = [4 + (t if t <= turn else 2 * turn - t) for t in range(T)]
    points = _points(_square_clip(rows), "harris3d")
    assert all(abs(t - turn) <= 2 for t, _, _ in points), points
    _check_event(points, turn, rows[turn])


def test_harris3d_marks_where_a_square_appears_and_vanishes():
    first, last = 8, 15
    rows = [12 if first <= t <= last else None for t in range(T)]
    points = _points(_square_clip(rows), "harris3d")
    # appearance between frames 7 and 8, disappearance between 15 and 16
    assert all(abs(t - (first - 0.5)) <= 2 or abs(t - (last + 0.5)) <= 2 for t, _, _ in points), points
    _check_event(points, first - 0.5, 12)
    _check_event(points, last + 0.5, 12)


def test_harris3d_ignores_static_corners():
    texture = torch.rand(1, 1, H, W, generator=torch.Generator().manual_seed(0)) * 0.3
    static = _square_clip([12] * T) * 0.7 + texture  # same frame every time
    assert _points(static, "harris3d") == []
    assert harris_response(static, "harris3d").max() <= 0
    assert torch.equal(harris_attention(static, "harris3d"), torch.ones_like(static))

def test_harris3d_corner_at_constant_speed_is_weak():
    # At constant speed a corner traces a space-time edge: only discretisation gives it a positive
    # R3, a few % of a turn's. The threshold is relative to the clip's own maximum, so a clip with
    # nothing but such motion would still get key points; the strength floor removes them.
    turning = _square_clip([4 + (t if t <= 11 else 22 - t) for t in range(T)])
    moving = _square_clip([1 + t for t in range(T)])
    ratio = harris_response(moving, "harris3d").max() / harris_response(turning, "harris3d").max()
    print(f"constant-speed / turn max R3: {ratio:.3f}")
    assert ratio < 0.06
    assert _points(moving, "harris3d") == []
    assert len(_points(turning, "harris3d")) == 4
    assert _points(moving, "harris3d", HarrisConfig(min_strength3d=0.0)) != []  # the floor did it


def test_harris2d_finds_the_four_corners_in_every_frame():
    rows = [4 + (t if t <= 11 else 22 - t) for t in range(T)]
    cfg = HarrisConfig(max_points=T * 8)
    points = _points(_square_clip(rows), "harris2d", cfg)
    for t in range(T):
        in_frame = [p[1:] for p in points if p[0] == t]
        assert len(in_frame) == 4, (t, in_frame)
        for c in _corners(rows[t]):
            assert sum(_near(p, c) for p in in_frame) == 1, (t, c, in_frame)


@pytest.mark.parametrize("mode", ["harris2d", "harris3d"])
@pytest.mark.parametrize(
    "video",
    [torch.zeros(2, 8, 16, 16), torch.full((1, 5, 9, 7), 0.5), torch.zeros(1, 1, 16, 16)],
    ids=["black", "constant", "one-black-frame"],
)
def test_flat_clips_give_exact_ones(mode, video):
    result = harris_analysis(video, mode)
    assert not result.keypoints.any()
    assert not torch.isnan(result.response).any()
    assert torch.equal(result.attention, torch.ones_like(video))


def test_one_and_two_frame_clips():
    one = _square_clip([12])
    assert torch.equal(harris_attention(one, "harris3d"), torch.ones_like(one))  # no time: no 3D corner
    assert harris_keypoints(one, "harris2d").sum() == 4  # but the 2D corners are there
    two = _square_clip([None, 12])
    result = harris_analysis(two, "harris3d")
    assert not torch.isnan(result.attention).any() and result.keypoints.any()


def test_clips_of_a_batch_do_not_interact():
    clips = [
        _square_clip([4 + min(t, 11) for t in range(T)]),
        _square_clip([12] * T),
        torch.zeros(1, T, H, W),
    ]
    batched = harris_analysis(torch.cat(clips), "harris3d")
    for i, clip in enumerate(clips):
        alone = harris_analysis(clip, "harris3d")
        assert torch.equal(batched.keypoints[i], alone.keypoints[0])
        assert torch.allclose(batched.attention[i], alone.attention[0])


def test_attention_is_one_plus_normalised_windows():
    rows = [4 + (t if t <= 11 else 22 - t) for t in range(T)]
    result = harris_analysis(_square_clip(rows), "harris3d", HarrisConfig(spread="box"))
    assert result.attention.min() == 1.0
    strongest = max(result.keypoint_list(), key=lambda p: p[4])
    # the strongest key point gets 1 + 1 (its own window) + the windows of any overlapping ones
    assert result.attention[0, strongest[1], strongest[2], strongest[3]] >= 2.0


def test_bad_input_is_a_clear_error():
    with pytest.raises(ValueError, match="B x T x H x W"):
        harris_attention(torch.zeros(8, 16, 16))
    with pytest.raises(ValueError, match="B x T x H x W"):
        harris_attention(torch.zeros(1, 8, 16, 16, dtype=torch.uint8))
    with pytest.raises(ValueError, match="mode"):
        harris_attention(torch.zeros(1, 8, 16, 16), "harris4d")
    with pytest.raises(ValueError, match="spread"):
        HarrisConfig(spread="disc")
    with pytest.raises(ValueError, match="threshold"):
        HarrisConfig(threshold=2.0)


# ---------------------------------------------------------------------------- contrast invariance
CONTRASTS = (1.0, 0.3, 0.1, 0.05, 0.01)


def _scaled(video: torch.Tensor, contrast: float, about_mean: bool) -> torch.Tensor:
    """The clip with its intensities scaled: all of it, or its deviation from its mean."""
    if not about_mean:
        return video * contrast
    mean = video.mean()
    return (video - mean) * contrast + mean


@pytest.mark.parametrize("about_mean", [False, True], ids=["clip", "clip-minus-mean"])
@pytest.mark.parametrize(
    "mode,rows",
    [
        ("harris3d", [4 + (t if t <= 11 else 22 - t) for t in range(T)]),  # turns at frame 11
        ("harris3d", [12 if 8 <= t <= 15 else None for t in range(T)]),  # appears, vanishes
        ("harris2d", [12]),  # a static square: four 2D corners
    ],
    ids=["3d-turn", "3d-appear", "2d-static"],
)
def test_same_keypoints_at_every_contrast(mode, rows, about_mean):
    video = _square_clip(rows)
    full = harris_analysis(video, mode)
    assert full.keypoints.sum() >= 4
    for contrast in CONTRASTS[1:]:
        faint = harris_analysis(_scaled(video, contrast, about_mean), mode)
        assert torch.equal(faint.keypoints, full.keypoints), (contrast, faint.keypoint_list())
        scale = full.strength.abs().max().item()
        torch.testing.assert_close(faint.strength, full.strength, rtol=1e-3, atol=1e-3 * scale)
        torch.testing.assert_close(faint.attention, full.attention, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", ["harris2d", "harris3d"])
@pytest.mark.parametrize("kind", ["gaussian", "gaussian-static", "uniform"])
def test_pure_noise_gives_no_keypoints(mode, kind):
    generator = torch.Generator().manual_seed(5)
    for amplitude in (0.003, 0.03, 0.3):
        if kind == "gaussian":
            noise = torch.randn(4, T, H, W, generator=generator)
        elif kind == "gaussian-static":
            noise = torch.randn(4, 1, H, W, generator=generator).expand(4, T, H, W)
        else:
            noise = torch.rand(4, T, H, W, generator=generator) - 0.5
        video = 0.5 + amplitude * noise
        result = harris_analysis(video, mode)
        assert not result.keypoints.any(), (amplitude, result.keypoint_list()[:5])
        assert torch.equal(result.attention, torch.ones_like(video))


def test_a_faint_clip_keeps_its_keypoints_beside_a_bright_one():
    turn = _square_clip([4 + (t if t <= 11 else 22 - t) for t in range(T)])
    bright = _square_clip([12 if 8 <= t <= 15 else None for t in range(T)])
    noise = 0.5 + 0.3 * torch.randn(1, T, H, W, generator=torch.Generator().manual_seed(6))
    batch = torch.cat([turn * 0.05, bright, noise, torch.zeros(1, T, H, W)])
    result = harris_analysis(batch, "harris3d")
    alone = harris_analysis(turn, "harris3d")
    assert alone.keypoints.sum() == 4
    assert torch.equal(result.keypoints[0], alone.keypoints[0])
    assert torch.equal(result.keypoints[1], harris_analysis(bright, "harris3d").keypoints[0])
    assert not result.keypoints[2:].any()
    torch.testing.assert_close(result.attention[0], alone.attention[0], rtol=1e-4, atol=1e-4)


def test_clips_without_contrast_get_zero_strength():
    strength = harris_strength(torch.ones(3, 1, 2, 2), torch.tensor([0.0, 1e-45, 2.0]))
    assert torch.equal(strength, torch.tensor([0.0, 0.0, 0.5]).view(3, 1, 1, 1).expand(3, 1, 2, 2))
    # a square of contrast 1e-12: its contrast measure underflows float32, and nothing breaks
    whisper = _square_clip([12 if 8 <= t <= 15 else None for t in range(T)]) * 1e-12
    for mode in ("harris2d", "harris3d"):
        result = harris_analysis(whisper, mode)
        assert torch.isfinite(result.strength).all() and not result.keypoints.any()
        assert torch.equal(result.attention, torch.ones_like(whisper))


@pytest.mark.parametrize("contrast", [1.0, 0.05])
def test_harris3d_ignores_a_static_texture_at_any_contrast(contrast):
    texture = torch.rand(2, 1, H, W, generator=torch.Generator().manual_seed(7)).expand(2, T, H, W)
    result = harris_analysis(0.5 + contrast * (texture - 0.5), "harris3d")
    assert not result.keypoints.any()
    assert torch.equal(result.strength, torch.zeros_like(result.strength))  # Et = 0 exactly


def test_synthetic_raw_cue_is_found_and_the_checkerboard_is_not():
    """The synthetic-raw clips: a face with a static checkerboard, pixel noise, uint8 frames, and
    in one word a patch that starts and stops moving. Harris-3D must mark that start or stop (at
    the patch) and nothing in the words without motion."""
    from emofuse.data.synthetic_raw import SyntheticRawConfig, draw_clip_frames

    cfg = SyntheticRawConfig()
    rng, distractors = np.random.default_rng(3), np.random.default_rng([3, 1])
    moving_words = 0
    for v in (1.0, -1.0, 0.0, 1.0, -1.0, 0.0):
        frames = torch.from_numpy(draw_clip_frames(rng, distractors, cfg, 3, v).astype(np.float32) / 255)
        result = harris_analysis(frames, "harris3d")
        for w in range(frames.shape[0]):
            change = (frames[w, 1:] - frames[w, :-1]).abs() > 0.3  # the patch's moves, not the noise
            points = [p[1:4] for p in result.keypoint_list() if p[0] == w]
            if not change.any():
                assert points == [], (v, w, points)
                continue
            moving_words += 1
            moved = change.nonzero()
            events = (moved[:, 0].min().item() + 0.5, moved[:, 0].max().item() + 0.5)  # start, stop
            near_patch = [
                ((moved[:, 1:] - torch.tensor([y, x])).abs().amax(1) <= 3).any() for _, y, x in points
            ]
            near_event = [min(abs(t - e) for e in events) <= 2 for t, _, _ in points]
            at_cue = [p for p, a, b in zip(points, near_patch, near_event) if a and b]
            assert at_cue, (v, w, events, points)
    assert moving_words == 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    rows = [4 + (t if t <= 11 else 22 - t) for t in range(T)]
    video = torch.cat([_square_clip(rows), torch.rand(1, T, H, W)])
    cpu = harris_analysis(video, "harris3d")
    gpu = harris_analysis(video.cuda(), "harris3d")
    assert torch.equal(gpu.keypoints.cpu()[0], cpu.keypoints[0])
    assert torch.allclose(gpu.attention.cpu(), cpu.attention, atol=1e-4)

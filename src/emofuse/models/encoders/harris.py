"""Harris-2D / Harris-3D corner attention for video clips (paper eqs 1-7, Fig. 1).

Batched tensor code: a B x T x H x W grey clip stack (float in [0, 1]) goes in, and out come
the corner response, the key points and an attention volume of the input's shape. Everything is
slicing, conv3d and max-pool, so it runs on the CPU and on a GPU alike, a whole batch at once.

Conventions (the paper leaves them open; these are the choices, with the reason):

- Gradients (eqs 1-3). Prewitt windows Tx = [[-1, 0, 1]] x 3 rows and Ty = Tx^T applied by
  correlation, divided by 6 so that a unit ramp (I = x) has gradient exactly 1. The time gradient
  It is the 3D Prewitt-like window: a central difference along t, summed over the 3 x 3 spatial
  neighbourhood, divided by 18 (again a unit ramp gives 1). Ix and Iy stay per frame, as in the
  paper's 2D windows. Each window is computed as "difference first, then box sum", so a constant
  region gives exactly zero (not round-off) and a static clip has It == 0 exactly.
  The clip is padded by replicating its edge pixels and its first/last frame, so borders give no
  false gradients (zero padding would make every clip border an edge and every clip start an
  appearance). For Harris-3D the first and last frames then take the whole gradient of their
  inner neighbour (clips of 3+ frames): against a replicated frame their time difference is half a
  real one, and a moving edge would look like motion starting or stopping at the clip's ends.
- Structure tensor (eqs 4, 6). The gradient products are smoothed by a Gaussian window, separable:
  `sigma` pixels in space and, for Harris-3D, `tau` frames in time (Laptev's Harris3D). The
  paper's M3 entry (2, 3) "Ix x Iy" is a typo for Iy x It (M3 must be symmetric). Smoothing pads by
  replication too.
- Responses: R = det(M) - k trace(M)^2 (eq 5, k = 0.04), R3 = det(M3) - k trace(M3)^3 (eq 7,
  k = 0.005, Laptev's value).
- Contrast normalisation. R scales with the clip's contrast to the 4th power and R3 to the 6th,
  so no absolute floor on them serves clips of every contrast (one low enough for a faint face
  crop's corners lets a bright clip's noise through). Each clip's response is divided by a
  contrast measure of that same clip, of the same degree: with Es the clip's mean of the smoothed
  Ix^2 + Iy^2 (the spatial part of trace(M) or trace(M3)) and Et its mean of the smoothed It^2,
  the strength is S = R / Es^2 (Harris-2D) or S3 = R3 / (Es^2 Et) (Harris-3D). It is
  scale-free: multiplying a clip, or the clip minus its mean, by any factor leaves it unchanged,
  and so the key points. A mean over the clip, not a high percentile of the trace: the shape of
  M cannot tell a corner from noise (noise has isotropic structure tensors, the best "corners"
  there are); what does is that a corner stands out from the clip's average gradient energy,
  which noise spreads evenly. Harris-3D divides by Es^2 Et, not (Es + Et)^3: a space-time corner
  is two spatial eigenvalues times a temporal one, and a static texture (a face, the synthetic
  checkerboard) adds to Es only, so it should not dilute a small motion by a cube. Measured on
  the synthetic-raw cue: its weakest start/stop stands 3.2x above the largest S3 of Gaussian
  noise, 2.1x with (Es + Et)^3. A clip whose measure is not above finfo.tiny / finfo.eps of its
  dtype (a flat clip; a static one for Harris-3D, Et = 0 exactly) gets S = 0: no division by
  zero, no NaN, no key points. Every clip of a batch is normalised by its own Es and Et, so a
  faint clip beside a bright one keeps its key points. R and R3 themselves stay as in eqs 5, 7.
- Key points: a voxel is a key point when it equals the maximum of its neighbourhood (max-pool
  equality; a (2r_t+1) x (2r+1) x (2r+1) window for Harris-3D, a (2r+1) x (2r+1) window per frame
  for Harris-2D), its response is positive and at least `threshold` times the largest response
  of its clip, its strength is above `min_strength2d` / `min_strength3d`, and it is not in the
  frame's outermost `border` rows and columns; then at most `max_points` per clip, the strongest
  first. The floors are set so that pixel noise gives no key points at any amplitude. Measured
  (max strength off the border ring; ~1500 clips of 8 x 32 x 32 to 32 x 96 x 96, amplitudes
  0.003-0.3): i.i.d. Gaussian noise, static or per frame, reaches S3 = 5.8 and S = 4.6, uniform
  noise less, noise on a dark ground clipped at 0 (sparse bright pixels) S3 = 8.3 and S = 10.5.
  The Harris-3D floor, 10, sits between that and the planted cue of the synthetic-raw clips,
  whose every moving word reaches S3 >= 17 (median 34): its start or stop is found wherever the
  old absolute floor found it, and no word without motion gets a key point, on the checkerboard
  or elsewhere. A square turning on a flat ground reaches 110, while a corner moving at constant
  speed (only discretisation makes its R3 positive) stays at 4.3 and is dropped. The Harris-2D
  floor, 8, is the tighter trade: noise does look like dense 2D corners, so only corners well
  above the clip's average gradient energy pass: a square on a flat ground (S = 15) keeps all
  four, a synthetic face crop rarely any (10% of them). The border
  ring is excluded because there the windows see replicated pixels (an edge row enters the
  Prewitt sum twice, the integration window folds half its weight onto it), so the structure
  tensor rests on few samples: noise's largest strengths sit there (Gaussian noise: S3 up to
  11.8 and S up to 8.4 on the ring, 5.4 and 4.9 inside, 800 clips of 16 x 48 x 48), and a face
  crop has no corner worth keeping in its outermost pixels.
- Attention volume: A = 1 + sum_p (R_p / R_max) * kernel(p), R_max the largest key-point response
  of the clip and kernel a 3D window of peak 1 centred on the key point (Gaussian with
  sigma = radius / 2 per axis, or a box), cut at the clip borders. A clip without key points
  gets exactly ones, so the attention never scales a clip's input down and a flat clip passes
  unchanged. Overlapping windows add up (two close corners attend more than one).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from emofuse.errors import OptionError

MODES = ("harris2d", "harris3d")
SPREADS = ("gaussian", "box")


@dataclass
class HarrisConfig:
    """Every knob of the Harris attention; defaults suit 48-64 px face crops of 8-16 frames."""

    sigma: float = 1.5  # spatial integration scale of the structure tensor (pixels)
    tau: float = 1.5  # temporal integration scale, Harris-3D only (frames)
    k2d: float = 0.04  # eq 5
    k3d: float = 0.005  # eq 7
    nms_radius: int = 2  # spatial half-width of the non-maximum suppression window (pixels)
    nms_radius_t: int = 1  # temporal half-width of that window, Harris-3D only (frames)
    threshold: float = 0.1  # key points need R >= threshold * (largest R of the clip)
    # and a strength (R normalised by the clip's own contrast, see the module docstring) above
    # these floors, set so that pure pixel noise at any amplitude gives no key points
    min_strength2d: float = 8.0
    min_strength3d: float = 10.0
    border: int = 1  # key points stay out of a frame's outermost `border` rows and columns
    max_points: int = 32  # at most this many key points per clip, the strongest
    spread: str = "gaussian"  # "gaussian" or "box": the window each key point adds to the volume
    spread_radius: int = 3  # its spatial half-width (pixels)
    spread_radius_t: int = 1  # its temporal half-width (frames)

    def __post_init__(self) -> None:
        if self.sigma <= 0 or self.tau < 0:
            raise OptionError(f"HarrisConfig needs sigma > 0 and tau >= 0, got {self.sigma}, {self.tau}")
        if not 0.0 <= self.threshold <= 1.0:
            raise OptionError(
                f"HarrisConfig.threshold is relative to the clip's maximum: 0..1, not {self.threshold}"
            )
        if not (self.min_strength2d >= 0 and self.min_strength3d >= 0):
            raise OptionError(
                f"HarrisConfig strength floors must be >= 0, got {self.min_strength2d}, {self.min_strength3d}"
            )
        if self.max_points < 1:
            raise OptionError(f"HarrisConfig.max_points must be >= 1, got {self.max_points}")
        if min(self.nms_radius, self.nms_radius_t, self.spread_radius, self.spread_radius_t, self.border) < 0:
            raise OptionError("HarrisConfig radii and border must be >= 0")
        if self.spread not in SPREADS:
            raise OptionError(f"HarrisConfig.spread must be one of {SPREADS}, not {self.spread!r}")


@dataclass
class HarrisResult:
    """response: R (harris2d) or R3 (harris3d); strength: the response divided by the clip's
    contrast measure (scale-free, 0 for flat clips); keypoints: bool; attention: A.
    All B x T x H x W."""

    response: torch.Tensor
    keypoints: torch.Tensor
    attention: torch.Tensor
    strength: torch.Tensor

    def keypoint_list(self) -> list[tuple[int, int, int, int, float]]:
        """The key points as (clip, frame, y, x, response), strongest first within each clip."""
        idx = self.keypoints.nonzero().tolist()
        values = self.response[self.keypoints].tolist()
        points = [(b, t, y, x, v) for (b, t, y, x), v in zip(idx, values)]
        return sorted(points, key=lambda p: (p[0], -p[4]))


# ---------------------------------------------------------------------------- building blocks
def _check_video(video: torch.Tensor, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"Harris mode must be one of {MODES}, not {mode!r}")
    if not isinstance(video, torch.Tensor) or video.dim() != 4 or not video.is_floating_point():
        shape = tuple(video.shape) if isinstance(video, torch.Tensor) else type(video).__name__
        raise ValueError(f"Harris attention needs a float B x T x H x W clip stack, got {shape}")
    if min(video.shape) < 1:
        raise ValueError(f"Harris attention got an empty clip stack of shape {tuple(video.shape)}")


def prewitt_gradients(video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ix, Iy (per-frame Prewitt, eqs 1-3) and It (3D Prewitt-like), each B x T x H x W."""
    p = F.pad(video.unsqueeze(1), (1, 1, 1, 1, 1, 1), mode="replicate").squeeze(1)  # T+2, H+2, W+2
    dx = p[..., 2:] - p[..., :-2]  # B, T+2, H+2, W
    ix = (dx[:, 1:-1, :-2] + dx[:, 1:-1, 1:-1] + dx[:, 1:-1, 2:]) / 6.0
    dy = p[..., 2:, :] - p[..., :-2, :]  # B, T+2, H, W+2
    iy = (dy[:, 1:-1, :, :-2] + dy[:, 1:-1, :, 1:-1] + dy[:, 1:-1, :, 2:]) / 6.0
    dt = p[:, 2:] - p[:, :-2]  # B, T, H+2, W+2
    rows = dt[:, :, :-2] + dt[:, :, 1:-1] + dt[:, :, 2:]  # B, T, H, W+2
    it = (rows[..., :-2] + rows[..., 1:-1] + rows[..., 2:]) / 18.0
    return ix, iy, it


def _inner_frame_gradients(*grads: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Give the first and last frames the whole gradient (Ix, Iy, It) of their inner neighbour.

    Their time difference sees a replicated frame, so it is half of a real one: a gradient
    direction that no inner frame has, and Harris-3D would mark every clip start and end as
    motion that starts or stops there (seen: 13% of a real turn's response, above threshold).
    """
    if grads[0].shape[1] >= 3:
        for g in grads:  # in place: two frames copied instead of whole volumes concatenated
            g[:, 0] = g[:, 1]
            g[:, -1] = g[:, -2]
    return grads


def gaussian_kernel1d(sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1D Gaussian cut at 3 sigma (at least one tap each side)."""
    radius = max(1, math.ceil(3.0 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return (g / g.sum()).to(dtype=dtype, device=device)


def _band_matrix(length: int, kernel: torch.Tensor, pad_mode: str) -> torch.Tensor:
    """L x L matrix G with (G @ v)[i] = sum_j kernel[j] * v[i + j - r], borders per `pad_mode`.

    Replicate padding folds the weights that fall outside onto the edge sample; zero padding
    drops them. A matrix product is many times faster on the CPU than conv3d with a 1D kernel.
    """
    r = kernel.numel() // 2
    src = torch.arange(length, device=kernel.device)[:, None] + torch.arange(-r, r + 1, device=kernel.device)
    weights = kernel.expand(length, -1)
    if pad_mode == "replicate":
        src = src.clamp(0, length - 1)
    else:
        weights = weights * ((src >= 0) & (src < length)).to(kernel.dtype)
        src = src.clamp(0, length - 1)
    band = torch.zeros(length, length, dtype=kernel.dtype, device=kernel.device)
    return band.scatter_add_(1, src, weights)


def _conv_axis(x: torch.Tensor, kernel: torch.Tensor, axis: int, pad_mode: str) -> torch.Tensor:
    """Correlate ... x T x H x W with a 1D kernel along axis -3, -2 or -1 ('same' size)."""
    band = _band_matrix(x.shape[axis], kernel, pad_mode)
    if axis == -1:
        return x @ band.T
    if axis == -2:
        return band @ x
    shape = x.shape
    return (band @ x.reshape(*shape[:-3], shape[-3], -1)).reshape(shape)


def smooth(x: torch.Tensor, sigma: float, tau: float) -> torch.Tensor:
    """Separable Gaussian smoothing of ... x T x H x W (replicate borders); tau = 0: per frame."""
    g = gaussian_kernel1d(sigma, x.dtype, x.device)
    y = _conv_axis(_conv_axis(x, g, -1, "replicate"), g, -2, "replicate")
    if tau > 0:
        y = _conv_axis(y, gaussian_kernel1d(tau, x.dtype, x.device), -3, "replicate")
    return y


def harris_terms(
    video: torch.Tensor, mode: str = "harris3d", config: HarrisConfig | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """R (eq 5) or R3 (eq 7), B x T x H x W, and each clip's contrast measure, B values of the
    same degree: Es^2 (harris2d) or Es^2 Et (harris3d), Es and Et the clip's means of the
    smoothed Ix^2 + Iy^2 and It^2 (see the module docstring)."""
    config = config or HarrisConfig()
    _check_video(video, mode)
    ix, iy, it = prewitt_gradients(video)
    if mode == "harris2d":
        a, b, d = (smooth(p, config.sigma, 0.0) for p in (ix * ix, iy * iy, ix * iy))
        trace = a + b
        spatial = trace.flatten(1).mean(1)
        return (a * b - d * d) - config.k2d * trace * trace, spatial * spatial
    ix, iy, it = _inner_frame_gradients(ix, iy, it)
    # M3 = [[a, d, e], [d, b, f], [e, f, c]]
    a, b, c, d, e, f = (
        smooth(p, config.sigma, config.tau) for p in (ix * ix, iy * iy, it * it, ix * iy, ix * it, iy * it)
    )
    det = a * (b * c - f * f) - d * (d * c - f * e) + e * (d * f - b * e)
    trace = a + b + c
    spatial = (a + b).flatten(1).mean(1)
    return det - config.k3d * trace * trace * trace, spatial * spatial * c.flatten(1).mean(1)


def harris_response(
    video: torch.Tensor, mode: str = "harris3d", config: HarrisConfig | None = None
) -> torch.Tensor:
    """R (eq 5, per frame) or R3 (eq 7, over t, y, x) of a B x T x H x W clip stack."""
    return harris_terms(video, mode, config)[0]


def harris_strength(response: torch.Tensor, contrast: torch.Tensor) -> torch.Tensor:
    """The response divided by its clip's contrast measure (B values): scale-free.

    A clip whose measure is not above finfo.tiny / finfo.eps (flat, or static for Harris-3D)
    gets exactly 0: no division by zero, no NaN, and no key points.
    """
    info = torch.finfo(response.dtype)
    contrast = contrast.to(response.dtype).view(-1, *([1] * (response.dim() - 1)))
    usable = contrast > info.tiny / info.eps
    return torch.where(usable, response / torch.where(usable, contrast, torch.ones_like(contrast)), 0.0)


def _local_max(x: torch.Tensor, radius: int, axis: int) -> torch.Tensor:
    """Max over a window of 2 * radius + 1 along `axis`, counting only samples inside the clip
    (a border voxel competes with its inner neighbours only). A box max is separable."""
    if radius == 0:
        return x
    length = x.shape[axis]
    # F.pad takes (before, after) pairs starting from the last axis
    padded = F.pad(x, [0, 0] * (-axis - 1) + [radius, radius], value=-math.inf)
    out = padded.narrow(axis, 0, length)
    for k in range(1, 2 * radius + 1):
        out = torch.maximum(out, padded.narrow(axis, k, length))
    return out


def _inside_border(shape: torch.Size, border: int, device: torch.device) -> torch.Tensor:
    """Bool H x W: False on the frame's outermost `border` rows and columns, True inside."""
    h, w = shape[-2], shape[-1]
    ys, xs = torch.arange(h, device=device), torch.arange(w, device=device)
    inside_y = (ys >= border) & (ys < h - border)
    inside_x = (xs >= border) & (xs < w - border)
    return inside_y[:, None] & inside_x[None, :]


def select_keypoints(
    response: torch.Tensor,
    mode: str = "harris3d",
    config: HarrisConfig | None = None,
    contrast: torch.Tensor | None = None,
) -> torch.Tensor:
    """Bool B x T x H x W: local maxima, positive, above the relative threshold and the strength
    floor, off the border ring, top-N per clip.

    `contrast`: each clip's contrast measure (B values, from `harris_terms`); the strength floor
    applies to response / contrast. None: `response` is taken as already normalised.
    """
    config = config or HarrisConfig()
    _check_video(response, mode)
    rt = config.nms_radius_t if mode == "harris3d" else 0
    r = config.nms_radius
    floor = config.min_strength3d if mode == "harris3d" else config.min_strength2d
    strength = response if contrast is None else harris_strength(response, contrast)
    pooled = _local_max(_local_max(_local_max(response, r, -1), r, -2), rt, -3)
    clip_max = response.flatten(1).amax(1).view(-1, 1, 1, 1)
    candidate = (
        (response == pooled)
        & (response > 0)
        & (strength > floor)
        & (response >= config.threshold * clip_max)
        & _inside_border(response.shape, config.border, response.device)
    )
    flat = torch.where(candidate, response, torch.full_like(response, -math.inf)).flatten(1)
    n = min(config.max_points, flat.shape[1])
    values, index = flat.topk(n, dim=1)
    keep = torch.zeros_like(candidate).flatten(1)
    keep.scatter_(1, index, values > -math.inf)
    return keep.view_as(candidate)


def _spread_kernel1d(radius: int, spread: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    if spread == "box" or radius == 0:
        return torch.ones(2 * radius + 1, dtype=dtype, device=device)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-0.5 * (x / (radius / 2.0)) ** 2).to(dtype=dtype, device=device)


def attention_volume(
    response: torch.Tensor, keypoints: torch.Tensor, config: HarrisConfig | None = None
) -> torch.Tensor:
    """A = 1 + sum over key points of (R_p / R_max) * window(p); exactly ones without key points."""
    config = config or HarrisConfig()
    kp_max = torch.where(keypoints, response, torch.zeros_like(response)).flatten(1).amax(1)
    kp_max = kp_max.clamp_min(torch.finfo(response.dtype).tiny).view(-1, 1, 1, 1)
    seeds = torch.where(keypoints, response / kp_max, torch.zeros_like(response))
    dt, dev = response.dtype, response.device
    # zero padding: a key point near the border spreads only inside the clip
    spread = _conv_axis(seeds, _spread_kernel1d(config.spread_radius, config.spread, dt, dev), -1, "zeros")
    spread = _conv_axis(spread, _spread_kernel1d(config.spread_radius, config.spread, dt, dev), -2, "zeros")
    spread = _conv_axis(spread, _spread_kernel1d(config.spread_radius_t, config.spread, dt, dev), -3, "zeros")
    return 1.0 + spread


def harris_analysis(
    video: torch.Tensor, mode: str = "harris3d", config: HarrisConfig | None = None
) -> HarrisResult:
    """Response, strength, key points and attention volume of a B x T x H x W clip stack
    (no gradient)."""
    config = config or HarrisConfig()
    with torch.no_grad():
        response, contrast = harris_terms(video, mode, config)
        strength = harris_strength(response, contrast)
        keypoints = select_keypoints(response, mode, config, contrast)
        attention = attention_volume(response, keypoints, config)
    return HarrisResult(response, keypoints, attention, strength)


def harris_attention(
    video: torch.Tensor, mode: str = "harris3d", config: HarrisConfig | None = None
) -> torch.Tensor:
    """The attention volume (B x T x H x W, >= 1) that re-weights the clip stack `video`."""
    return harris_analysis(video, mode, config).attention


def harris_keypoints(
    video: torch.Tensor, mode: str = "harris3d", config: HarrisConfig | None = None
) -> torch.Tensor:
    """Bool B x T x H x W mask of the key points (for plots and explanations)."""
    return harris_analysis(video, mode, config).keypoints

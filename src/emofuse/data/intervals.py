"""Which frames belong to which reference interval: the CMU Multimodal SDK's overlap rule.

One rule serves every word alignment in emofuse: `.csd` computational sequences aligned to words
or segmented by labels (`emofuse.data.csd`) and the frame streams `emofuse extract` averages onto
its words (`emofuse.features.align`, which gives each frame of a stream an interval first).
"""

from __future__ import annotations

import numpy as np

# Overlaps up to this many seconds count as touching, not overlapping. The SDK's own value is
# `epsilon=10e-6` (1e-5 s, mmsdk/mmdatasdk/dataset/dataset.py line 10); emofuse has used 1e-6 s
# since its first .csd loader. Either is far below any frame length (10 ms audio, 33 ms video).
EPSILON = 1e-6


def overlapping(reference: np.ndarray, frames: np.ndarray, epsilon: float = EPSILON) -> np.ndarray:
    """Boolean R x F matrix: frame f belongs to reference interval r (both m x 2 [start, end] s).

    The rule is the CMU Multimodal SDK's: a frame belongs to an interval when their intersection
    is longer than `epsilon` seconds. A frame that only partly overlaps the interval belongs to it
    (whatever side of the boundary its centre lies on), so a frame straddling two words belongs
    to both; a frame that merely touches the interval does not.

    Source: CMU-MultiComp-Lab/CMU-MultimodalSDK (commit 4f2eadc, Dec 2023),
    mmsdk/mmdatasdk/dataset/dataset.py, `mmdataset.__intersect_and_copy` (lines 379-399; called
    by `mmdataset.align`, line 154, for every reference interval and every other sequence):
    it keeps the frames with `sub_start < ref_end + epsilon` and `sub_end > ref_start - epsilon`
    (`where_intersect=(numpy.all((sub_copy-ref_copy)>(-epsilon),axis=1)==True)`), clips them to
    the reference (`numpy.maximum(intersectors[:,0],ref[0])`, `numpy.minimum(intersectors[:,1],
    ref[1])`) and drops those whose clipped length is not above epsilon
    (`where_nonzero_len=numpy.where(abs(intersectors[:,0]-intersectors[:,1])>epsilon)`): together,
    intersection longer than epsilon. `align` then hands the kept frames to the collapse
    functions, whose documented example (README, examples/.../process_mosi.py `myavg`) is the
    plain mean `numpy.average(features,axis=0)`, unweighted by the overlap.

    One deliberate difference: the SDK skips a reference interval shorter than epsilon
    (`if (abs(ref_time[0]-ref_time[1])<epsilon): continue` in `align`), losing it; here such an
    instant takes the frames that contain it (start <= t < end). MOSI has one such opinion segment.
    """
    reference = np.asarray(reference, dtype=np.float64).reshape(-1, 2)
    frames = np.asarray(frames, dtype=np.float64).reshape(-1, 2)
    inter = np.minimum(reference[:, None, 1], frames[None, :, 1]) - np.maximum(
        reference[:, None, 0], frames[None, :, 0]
    )
    hit = inter > epsilon
    point = (reference[:, 1] - reference[:, 0]) <= epsilon
    if point.any():
        t = reference[point, 0][:, None]
        hit[point] = (frames[None, :, 0] <= t) & (t < frames[None, :, 1])
    return hit


def row_chunks(n_rows: int, n_cols: int, budget: int = 1_000_000) -> range:
    """Starts of row blocks that keep an R x F `overlapping` matrix near `budget` cells (a few MB
    for a long video); step is the block size."""
    step = max(1, budget // max(1, n_cols))
    return range(0, n_rows, step)

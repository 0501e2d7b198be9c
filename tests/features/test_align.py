"""Word alignment of frame streams: the CMU SDK's overlap rule, the same one `.csd` loading uses."""

from __future__ import annotations

import numpy as np
import pytest

from emofuse.data.csd import ComputationalSequence, align_to_reference
from emofuse.data.intervals import overlapping
from emofuse.features.align import (
    Stream,
    average_over_words,
    cut_columns_per_word,
    cut_frames_per_word,
    frame_intervals,
    regular_times,
    resample_stream,
    word_frames,
    words_with_valid_frames,
)

# four 100 ms frames, [0, .1) [.1, .2) [.2, .3) [.3, .4), centres .05 .15 .25 .35
TIMES = regular_times(4, 10.0)
VALUES = np.array([1.0, 2.0, 4.0, 8.0], np.float32)
# the word [.17, .33]: frame 2 holds it centre; frames 1 and 3 overlap it by 30 ms with their centres
# (.15 and .35) outside it. The frame-centre rule gave 4.0; the SDK's overlap rule gives (2+4+8)/3.
WORD = (np.array([0.17]), np.array([0.33]))


def stream(values=VALUES, valid=None) -> Stream:
    return Stream("s", values, TIMES, ["x"], valid)


def test_a_frame_overlapping_the_word_belongs_to_it_though_its_centre_is_outside() -> None:
    assert word_frames(TIMES, *WORD)[0].tolist() == [1, 2, 3]
    np.testing.assert_allclose(average_over_words(stream(), *WORD), [[14.0 / 3]])
    # the rule itself, on the frames' intervals
    np.testing.assert_allclose(
        frame_intervals(TIMES), [[0, 0.1], [0.1, 0.2], [0.2, 0.3], [0.3, 0.4]], atol=1e-12
    )
    assert overlapping(np.array([[0.17, 0.33]]), frame_intervals(TIMES)).tolist() == [
        [False, True, True, True]
    ]


def test_extract_and_csd_loading_give_a_word_the_same_value() -> None:
    """The hand-made word, and random words over a 100 Hz stream, through both paths."""
    rng = np.random.default_rng(0)
    times = regular_times(300, 100.0)
    values = rng.normal(size=(300, 3)).astype(np.float32)
    starts = np.concatenate([rng.uniform(0, 2.9, 40), [0.017, 1.0, 2.0]])
    ends = np.minimum(starts + rng.uniform(0.004, 0.5, 43), 3.0)
    ends[-3:] = [0.033, 1.004, 2.0]  # a frame straddled on both sides, a 4 ms word, an instant
    words = ComputationalSequence("words", {"v": (np.array([[b"w"]] * 43), np.stack([starts, ends], 1))})
    frames = ComputationalSequence("frames", {"v": (values, frame_intervals(times))})
    aligned, empty = align_to_reference(words, [frames])
    assert empty == {"frames": 0}
    np.testing.assert_allclose(average_over_words(Stream("s", values, times, list("abc")), starts, ends),
                               aligned["frames"].data["v"][0], rtol=1e-5, atol=1e-6)
    assert word_frames(times, starts, ends)[-3].tolist() == [1, 2, 3]


def test_touching_is_not_overlapping_and_a_straddling_frame_belongs_to_both_words() -> None:
    starts, ends = np.array([0.1, 0.15]), np.array([0.2, 0.3])
    assert [idx.tolist() for idx in word_frames(TIMES, starts, ends)] == [[1], [1, 2]]


def test_an_instant_takes_the_frame_holding_it_and_a_span_past_the_end_the_nearest() -> None:
    starts, ends = np.array([0.22, 0.05, 0.9]), np.array([0.22, 0.05, 1.0])
    assert [idx.tolist() for idx in word_frames(TIMES, starts, ends)] == [[2], [0], [3]]


def test_invalid_frames_are_left_out_and_a_word_without_valid_ones_takes_the_nearest() -> None:
    valid = np.array([True, False, True, False])
    s = stream(valid=valid)
    np.testing.assert_allclose(average_over_words(s, *WORD), [[4.0]])
    np.testing.assert_allclose(average_over_words(s, np.array([0.31]), np.array([0.39])), [[4.0]])
    # a word whose one valid frame overlaps it with its centre outside has a face to show
    only_edge = np.array([False, True, False, False])
    assert words_with_valid_frames(TIMES, only_edge, *WORD).tolist() == [True]
    assert words_with_valid_frames(TIMES, only_edge, np.array([0.31]), np.array([0.39])).tolist() == [False]


@pytest.mark.parametrize("count", [3, 6])
def test_crops_and_log_mel_columns_are_cut_from_the_same_frames(count: int) -> None:
    crops = np.arange(4, dtype=np.uint8)[:, None, None] * np.ones((4, 2, 2), np.uint8)
    stacks = cut_frames_per_word(crops, TIMES, *WORD, count)
    columns = cut_columns_per_word(np.arange(4, dtype=np.float32)[:, None], TIMES, *WORD, count)
    assert stacks.shape == (1, count, 2, 2) and columns.shape == (1, 1, count)
    assert set(stacks[0, :, 0, 0].tolist()) == set(columns[0, 0].tolist()) == {1, 2, 3}


def test_resampling_on_the_frame_grid_averages_whole_frames() -> None:
    out = resample_stream(stream(), 5.0, 0.4)
    np.testing.assert_allclose(out.values[:, 0], [1.5, 6.0])
    np.testing.assert_allclose(out.times, [0.1, 0.3])

"""Hand-worked checks of the MMSA-compatible regression metrics."""

import math

import numpy as np
import pytest

from emofuse.metrics import regression_metrics
from emofuse.metrics.regression import acc7

# i   pred   label | acc7 p/l | acc5 p/l | acc3 p/l | has0 p/l | non0 p/l
# 0   0.4    0.5   |  0 / 0   |  0 / 0   |  0 / 0   |  + / +   |  + / +    label 0.5 -> 0 (half-even)
# 1  -0.6   -1.0   | -1 /-1   | -1 /-1   | -1 /-1   |  - / -   |  - / -
# 2   2.5    2.0   |  2 / 2   |  2 / 2   |  1 / 1   |  + / +   |  + / +    pred 2.5 -> 2 (half-even)
# 3  -2.5   -1.5   | -2 /-2   | -2 /-2   | -1 /-1   |  - / -   |  - / -    -2.5 -> -2, -1.5 -> -2
# 4   0.0    1.0   |  0 / 1 x |  0 / 1 x |  0 / 1 x |  + / +   |  - / + x  pred 0: + in has0, - in non0
# 5   1.49   0.0   |  1 / 0 x |  1 / 0 x |  1 / 0 x |  + / +   |  dropped  label 0
# 6   3.7    2.2   |  3 / 2 x |  2 / 2   |  1 / 1   |  + / +   |  + / +    clip 3.7 -> 3
# 7  -0.2    0.0   | -0 / 0   | -0 / 0   | -0 / 0   |  - / + x |  dropped  label 0 positive in has0
# 8   1.6    1.0   |  2 / 1 x |  2 / 1 x |  1 / 1   |  + / +   |  + / +
PREDS = [0.4, -0.6, 2.5, -2.5, 0.0, 1.49, 3.7, -0.2, 1.6]
LABELS = [0.5, -1.0, 2.0, -1.5, 1.0, 0.0, 2.2, 0.0, 1.0]


def weighted_f1_by_hand(pred_pos, true_pos):
    """sum_c support_c * F1_c / N over both classes, written out independently."""
    pred_pos, true_pos = list(pred_pos), list(true_pos)
    n = len(true_pos)
    total = 0.0
    for cls in (True, False):
        tp = sum(p == cls and t == cls for p, t in zip(pred_pos, true_pos))
        fp = sum(p == cls and t != cls for p, t in zip(pred_pos, true_pos))
        fn = sum(p != cls and t == cls for p, t in zip(pred_pos, true_pos))
        support = tp + fn
        f1 = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0
        total += support * f1
    return total / n


def test_hand_worked_case():
    m = regression_metrics(PREDS, LABELS)
    assert m["n"] == 9 and m["n_non0"] == 7
    assert m["acc7"] == pytest.approx(5 / 9)
    assert m["acc5"] == pytest.approx(6 / 9)
    assert m["acc3"] == pytest.approx(7 / 9)
    # has0: only sample 7 wrong.  Pos class: TP=6 FP=0 FN=1 -> F1=12/13 (support 7);
    # neg class: TP=2 FP=1 FN=0 -> F1=4/5 (support 2).  (7*12/13 + 2*4/5)/9 = 524/585.
    assert m["acc2_has0"] == pytest.approx(8 / 9)
    assert m["f1_has0"] == pytest.approx(524 / 585)
    # non0 (drop 5, 7): only sample 4 wrong.  Pos: TP=4 FP=0 FN=1 -> P=1 R=4/5 F1=8/9 (support 5);
    # neg: TP=2 FP=1 FN=0 -> F1=4/5 (support 2).  (5*8/9 + 2*4/5)/7 = 272/315.
    assert m["acc2_non0"] == pytest.approx(6 / 7)
    assert m["f1_non0"] == pytest.approx(272 / 315)
    assert m["precision_non0"] == pytest.approx(1.0)
    assert m["recall_non0"] == pytest.approx(4 / 5)
    assert m["f1_binary_non0"] == pytest.approx(8 / 9)
    # |diff| = .1 .4 .5 1 1 1.49 1.5 .2 .6 -> 6.79
    assert m["mae"] == pytest.approx(6.79 / 9)
    p, y = np.array(PREDS), np.array(LABELS)
    dp, dy = p - p.mean(), y - y.mean()
    r = (dp * dy).sum() / math.sqrt((dp**2).sum() * (dy**2).sum())
    assert m["corr"] == pytest.approx(r)
    assert set(m) == {
        "acc2_has0",
        "f1_has0",
        "acc2_non0",
        "f1_non0",
        "acc3",
        "acc5",
        "acc7",
        "mae",
        "corr",
        "precision_non0",
        "recall_non0",
        "f1_binary_non0",
        "n",
        "n_non0",
    }


def test_weighted_f1_matches_hand_computation():
    p, y = np.array(PREDS), np.array(LABELS)
    m = regression_metrics(p, y)
    assert m["f1_has0"] == pytest.approx(weighted_f1_by_hand(p >= 0, y >= 0))
    keep = y != 0
    assert m["f1_non0"] == pytest.approx(weighted_f1_by_hand(p[keep] > 0, y[keep] > 0))
    rng = np.random.default_rng(0)
    p = rng.normal(size=200)
    y = np.round(rng.uniform(-3, 3, size=200) * 3) / 3  # includes exact zeros
    m = regression_metrics(p, y)
    assert m["f1_has0"] == pytest.approx(weighted_f1_by_hand(p >= 0, y >= 0))
    keep = y != 0
    assert m["f1_non0"] == pytest.approx(weighted_f1_by_hand(p[keep] > 0, y[keep] > 0))


def test_round_half_even():
    # half-away-from-zero would give 3, 1, -2 for the preds -> 0 matches; half-even: all match
    assert acc7([2.5, 0.5, -1.5, -0.5], [2.0, 0.0, -2.0, 0.0]) == 1.0


def test_torch_input_and_column_shape():
    torch = pytest.importorskip("torch")
    m_np = regression_metrics(PREDS, LABELS)
    m_t = regression_metrics(torch.tensor(PREDS).view(-1, 1), torch.tensor(LABELS))
    for k, v in m_np.items():
        assert m_t[k] == pytest.approx(v, rel=1e-6), k


def test_nan_input_raises_naming_input():
    with pytest.raises(ValueError, match=r"preds contains 1 non-finite"):
        regression_metrics([0.1, float("nan"), 0.3], [0.0, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"labels contains 2 non-finite"):
        regression_metrics([0.1, 0.2, 0.3], [np.inf, 1.0, np.nan])


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="differ in length"):
        regression_metrics([0.1, 0.2], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="empty"):
        regression_metrics([], [])
    with pytest.raises(ValueError, match="1-D"):
        regression_metrics(np.zeros((2, 3)), np.zeros((2, 3)))


def test_all_zero_labels_give_nan_non0():
    m = regression_metrics([0.3, -0.2, 0.0], [0.0, 0.0, 0.0])
    assert m["n_non0"] == 0
    for k in (
        "acc2_non0",
        "f1_non0",
        "precision_non0",
        "recall_non0",
        "f1_binary_non0",
    ):
        assert math.isnan(m[k]), k
    assert m["acc2_has0"] == pytest.approx(2 / 3)  # 0 counts as positive


def test_constant_predictions_give_nan_corr():
    m = regression_metrics([0.5, 0.5, 0.5], [1.0, -1.0, 2.0])
    assert math.isnan(m["corr"])
    assert m["mae"] == pytest.approx((0.5 + 1.5 + 1.5) / 3)


def test_zero_division_in_binary_prf():
    # No positive predictions -> precision 0/0 -> 0, F1 -> 0 (not nan).
    m = regression_metrics([-1.0, -2.0], [1.0, -1.0])
    assert m["precision_non0"] == 0.0 and m["recall_non0"] == 0.0
    assert m["f1_binary_non0"] == 0.0

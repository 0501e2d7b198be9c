"""Hand-worked checks of categorical metrics and the confusion-matrix plot."""

import numpy as np
import pytest

from emofuse.metrics import classification_metrics
from emofuse.training.artifacts import plot_confusion_matrix

LABELS = [0, 0, 1, 1, 1, 2]
PREDS = [0, 1, 1, 1, 0, 2]
# confusion (rows true): [[1,1,0],[1,2,0],[0,0,1]]
# class 0: TP1 FP1 FN1 -> P=R=F1=1/2, support 2
# class 1: TP2 FP1 FN1 -> P=R=F1=2/3, support 3
# class 2: TP1 FP0 FN0 -> 1, support 1
# weighted = (2*1/2 + 3*2/3 + 1*1)/6 = 4/6 ; macro = (1/2 + 2/3 + 1)/3 = 13/18
CM = [[1, 1, 0], [1, 2, 0], [0, 0, 1]]


def test_hand_worked_three_class():
    m = classification_metrics(PREDS, LABELS, 3, ["neg", "neu", "pos"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["f1_weighted"] == pytest.approx(4 / 6)
    assert m["f1_macro"] == pytest.approx(13 / 18)
    assert m["confusion_matrix"] == CM
    assert m["per_class"]["neg"] == pytest.approx(
        {"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2}
    )
    assert m["per_class"]["neu"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert m["per_class"]["pos"] == pytest.approx(
        {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    )


def test_logits_input():
    logits = np.full((6, 3), -1.0)
    logits[np.arange(6), PREDS] = 2.0
    m = classification_metrics(logits, np.array(LABELS), 3)
    assert m["confusion_matrix"] == CM
    assert m["accuracy"] == pytest.approx(4 / 6)
    with pytest.raises(ValueError, match="columns"):
        classification_metrics(logits[:, :2], LABELS, 3)


def test_absent_classes_in_confusion_matrix():
    m = classification_metrics(PREDS, LABELS, 5)
    cm = np.array(m["confusion_matrix"])
    assert cm.shape == (5, 5)
    assert (
        (cm[:3, :3] == np.array(CM)).all()
        and cm[3:].sum() == 0
        and cm[:, 3:].sum() == 0
    )
    assert m["per_class"]["4"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
    }
    assert m["f1_macro"] == pytest.approx(13 / 18)  # absent classes not averaged in


def test_out_of_range_labels_raise():
    with pytest.raises(ValueError, match=r"labels .*outside 0..2"):
        classification_metrics([0, 1, 2], [0, 1, 3], 3)
    with pytest.raises(ValueError, match=r"labels .*outside"):
        classification_metrics([0, 1, 2], [0, -1, 2], 3)
    with pytest.raises(ValueError, match=r"preds .*outside"):
        classification_metrics([0, 1, 7], [0, 1, 2], 3)
    with pytest.raises(ValueError, match="differ in length"):
        classification_metrics([0, 1], [0, 1, 2], 3)


def test_plot_writes_png(tmp_path):
    out = plot_confusion_matrix(CM, ["neg", "neu", "pos"], tmp_path / "sub" / "cm.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    raw = plot_confusion_matrix(
        CM, ["a", "b", "c"], tmp_path / "raw.png", normalize=False, title="counts"
    )
    assert raw.stat().st_size > 0

"""`emofuse ablate`: every subset trained, table/CSV/plots written, 3-class F1 from predictions."""

from __future__ import annotations

from emofuse.data.synthetic import SyntheticConfig, make_synthetic
from emofuse.reports.ablate import SUBSETS, run_ablation
from emofuse.training.config import TrainConfig


def test_ablation_covers_all_seven_subsets(tmp_path):
    splits = make_synthetic(SyntheticConfig(n_train=64, n_valid=24, n_test=24, max_words=6, min_words=3))
    base = TrainConfig(model="ef_lstm", epochs=1, batch_size=16, model_options={"hidden": 8})
    rows = run_ablation(base, splits, [1], tmp_path, progress=False)
    assert [r["subset"] for r in rows] == ["T", "A", "V", "T+A", "T+V", "A+V", "T+A+V"]
    assert len(rows) == len(SUBSETS)
    for row in rows:
        assert 0 <= row["f1_3class"][0] <= 1 and row["mae"][0] > 0
    for name in (
        "ablation.csv",
        "ablation.md",
        "ablation_2class.png",
        "ablation_3class.png",
        "ablation_7class.png",
    ):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "ablation_2class.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "T+A+V" in (tmp_path / "ablation.md").read_text()


def test_ablation_skips_subsets_the_data_lack(tmp_path):
    splits = make_synthetic(
        SyntheticConfig(n_train=32, n_valid=16, n_test=16, max_words=5, min_words=3)
    ).select_modalities(["text", "audio"])
    base = TrainConfig(model="late_fusion", epochs=1, batch_size=16, model_options={"hidden": 8})
    rows = run_ablation(base, splits, [1], tmp_path, progress=False)
    assert [r["subset"] for r in rows] == ["T", "A", "T+A"]

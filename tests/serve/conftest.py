"""What the serve tests share, made once for the folder: generated clips, a 1-epoch run on their
extraction, and one loaded `PredictorPool` (1 worker, a queue of 1) with a private upload folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "features"))
from extract_media import NEW_SENTENCE, broken_inputs, missing_for_tests, speaking_clip, write_sample_folder  # noqa: E402

MISSING = missing_for_tests(("fastapi", "uvicorn", "python_multipart", "httpx"))
SKIP_REASON = (f"serve tests need the extraction stack and the serve extra, missing: {MISSING} "
               "(bash scripts/install_extract.sh; bash scripts/install_serve.sh)")

NEW = NEW_SENTENCE


@pytest.fixture(scope="package")
def served(tmp_path_factory) -> dict:
    """The run, the clips and a loaded pool; the pool is closed at the end of the folder."""
    if MISSING:
        pytest.skip(SKIP_REASON)
    from emofuse.cli.main import main
    from emofuse.serve import PredictorPool

    root = tmp_path_factory.mktemp("serve")
    write_sample_folder(root / "fet")
    assert (
        main(
            [
                "extract",
                str(root / "fet"),
                "--out",
                str(root / "feat.pkl"),
                "--cache",
                str(root / "cache"),
                "--quiet",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "train",
                "--data",
                str(root / "feat.pkl"),
                "--model",
                "fusion_matched",
                "--modalities",
                "T+A+V",
                "--epochs",
                "1",
                "--threads",
                "1",
                "--batch-size",
                "2",
                "--quiet",
                "--out",
                str(root / "TAV"),
                "-o",
                "hidden=16",
            ]
        )
        == 0
    )
    speaking_clip(root / "new.mp4", NEW.split())
    broken = broken_inputs(root / "broken", ["this", "is", "bad"])
    uploads = root / "uploads"
    uploads.mkdir()
    # no stage cache: every request extracts afresh, so requests take their real time (queue tests)
    pool = PredictorPool(str(root / "TAV" / "seed_1"), workers=1, queue_size=1)
    yield {"root": root, "run": root / "TAV" / "seed_1", "new": root / "new.mp4", "broken": broken,
           "uploads": uploads, "pool": pool, "words": NEW.split()}
    pool.close()

"""`--text-normalize transcript`: text punctuated another way (MOSEI's) reaches an in-model encoder in the
form a MOSI-trained run learned (lower case, letters and digits), word by word; recorded in the run."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from emofuse.errors import OptionError
from emofuse.features.text import normalize_words
from emofuse.features.tokens import tokenize_texts


def test_transcript_form_keeps_the_word_count() -> None:
    words = "Anyhow, it was REALLY good. I didn't like ( the end".split()
    out = normalize_words(words, "transcript")
    assert out == ["anyhow", "it", "was", "really", "good", "i", "didnt", "like", "(", "the", "end"]
    assert len(out) == len(words)  # a lone "(" stays: the word slots (and audio/video alignment) hold
    assert normalize_words(words, "none") is words
    with pytest.raises(OptionError, match="text normalisation"):
        normalize_words(words, "lower")


@pytest.fixture(scope="module")
def tokenizer():
    from emofuse.models.text_encoder import load_tokenizer_and_encoder

    return load_tokenizer_and_encoder("minilm")[0]


def test_mosei_style_text_gives_mosi_style_tokens_when_normalised(tokenizer) -> None:
    plain = ["anyhow it was really good", "they didnt really do a whole bunch"]
    styled = ["Anyhow, it was really good.", "They didn't really do a whole bunch!"]
    same = tokenize_texts(tokenizer, plain, 50, 128)
    normalised = tokenize_texts(tokenizer, styled, 50, 128, "transcript")
    for key in ("input_ids", "word_index"):
        np.testing.assert_array_equal(same[key], normalised[key])
    as_written = tokenize_texts(tokenizer, styled, 50, 128)
    assert as_written["input_ids"].shape != same["input_ids"].shape or (
        as_written["input_ids"] != same["input_ids"]).any()


def test_texts_cut_at_max_words_are_counted_in_a_warning(tokenizer) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        tokenize_texts(tokenizer, ["a b c d e f", "a b"], 4, 128)
    assert any("1 of 2 texts are longer than max_words=4" in str(w.message) for w in caught)


def test_a_run_records_its_normalisation_and_evaluates_styled_text_as_plain(tmp_path: Path, capsys) -> None:
    from emofuse.cli.main import main
    from emofuse.evaluation.evaluate import evaluate_run, load_run

    words = ["good", "great", "bad", "awful", "fine", "poor"]
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        text = " ".join(rng.choice(words, 4))
        score = sum({"good": 1, "great": 2, "bad": -1, "awful": -2}.get(w, 0) for w in text.split())
        rows.append({"video_id": f"v{i}", "clip_id": 1, "text": text, "label": float(np.clip(score, -3, 3)),
                     "mode": ["train", "valid", "test"][min(i // 16, 2)]})
    plain = pd.DataFrame(rows)
    plain.to_csv(tmp_path / "plain.csv", index=False)
    styled = plain.assign(text=[t.capitalize() + "!" for t in plain.text])
    styled.to_csv(tmp_path / "styled.csv", index=False)
    assert main(["train", "--data", str(tmp_path / "plain.csv"), "--modalities", "T",
                 "--model", "late_fusion", "--text-encoder", "minilm", "--text-finetune", "none",
                 "--text-normalize", "transcript",
                 "--epochs", "1", "--threads", "1", "--quiet", "--out", str(tmp_path / "run")]) == 0
    run = tmp_path / "run" / "seed_1"
    assert load_run(run).config.text_normalize == "transcript"
    a = evaluate_run(run, str(tmp_path / "plain.csv"))["test"]
    b = evaluate_run(run, str(tmp_path / "styled.csv"))["test"]
    assert a["mae"] == pytest.approx(b["mae"], abs=1e-6)

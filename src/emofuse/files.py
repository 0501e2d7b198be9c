"""File I/O that every layer shares: atomic writes, the temp litter a killed writer leaves,
and content hashes.

Everything that writes a result a user keeps (a pickle, a checkpoint, a cache entry, a report)
goes through `atomic_path`, so a crash, a full disk or Ctrl-C never leaves a half-written file
where a good one was.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from emofuse.errors import OutputError

_CHUNK = 1 << 20
# the errors a full, read-only or mis-pointed output location gives: the user can fix them
OUTPUT_ERRNOS = frozenset({errno.EACCES, errno.EPERM, errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EISDIR,
                           errno.ENOTDIR, errno.EEXIST})
TEMP_GLOB = ".*.tmp*"  # the names atomic_path gives its temp files: hidden, .tmp before any extension


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success move it over `path` in one step.

    Writing beside the target (same file system) is what makes os.replace atomic, so readers see
    the old file or the new one, never a mix. The temp file is `.<name>.<random>.tmp<suffix>`:
    `suffix` lets a writer that picks its format from the name (numpy's ".npy", matplotlib's
    ".png") see the right one.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], write: Callable[[IO[bytes]], Any]) -> None:
    """Call write(fileobj) on a temp file beside `path`, then rename it over `path`.

    A write that fails for a reason the user can fix (no space, no permission, a folder in the
    way) is an `OutputError` naming `path`, not the temp file the user never asked for.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            write(f)
    except OSError as err:
        if err.errno not in OUTPUT_ERRNOS:
            raise
        reason = "it is a folder" if path.is_dir() else err.strerror or str(err)
        raise OutputError(f"cannot write {path}: {reason}") from err


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, lambda f: f.write(text.encode()))


def remove_stale_temp_files(folder: str | os.PathLike[str], pattern: str = TEMP_GLOB) -> list[Path]:
    """Delete the temp files a killed writer left in `folder`; returns what went.

    `atomic_path` removes its temp file on any exception, but SIGKILL or a power cut runs no
    cleanup. Only the names atomic_path gives (hidden, `.tmp`) are touched by default, so this is
    safe in a folder no other process is writing to.
    """
    removed = []
    for tmp in Path(folder).glob(pattern):
        if tmp.is_file():
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
                removed.append(tmp)
    return removed


def sha256_file(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of a string's UTF-8 bytes (config fingerprints, cache keys)."""
    return hashlib.sha256(text.encode()).hexdigest()

"""Writing files so that a crash never leaves half of one, and hashing them.

One policy for every file a run or a cache publishes: write a temporary file next to the target,
fsync it, rename it over the target, fsync the directory. A reader (or a resumed run) then sees
the old file or the new one, never a torn one, even after a power cut.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

TMP_PREFIX = ".tmp-"


def tmp_path_for(path: str | os.PathLike) -> Path:
    """The temporary name a write to ``path`` goes through: hidden, next to it, unique per process."""
    path = Path(path)
    return path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")


def fsync_dir(path: str | os.PathLike) -> None:
    """Make a rename in ``path`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def fsync_file(path: str | os.PathLike) -> None:
    with open(path, "rb") as fh:
        os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path``'s content to (by any library: h5py, pyarrow, pandas).

    On a clean exit the temporary file is fsynced and renamed over ``path``; on an exception it is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = tmp_path_for(path)
    try:
        yield tmp
        fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def sha256_file(path: str | os.PathLike, start: int = 0, end: int | None = None) -> str:
    """sha256 of a file's bytes ``[start, end)`` (the whole file by default), read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        fh.seek(start)
        left = None if end is None else max(0, end - start)
        while left is None or left > 0:
            block = fh.read(1 << 20 if left is None else min(1 << 20, left))
            if not block:
                break
            digest.update(block)
            if left is not None:
                left -= len(block)
    return digest.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()

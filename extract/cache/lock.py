"""The cache's write lock: one writing process per cache directory, a second one refused at once."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

from extract.cache.layout import LOCK_FILE


class CacheBusyError(RuntimeError):
    """Another process holds the cache's write lock."""


@contextlib.contextmanager
def cache_lock(cache_dir: str | os.PathLike) -> Iterator[Path]:
    """Hold the cache's exclusive write lock; a second writer is refused, not queued."""
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            raise CacheBusyError(
                f"{cache_dir} is being written by another `extract run` (pid {holder}); "
                "wait for it to finish (it resumes safely if killed), or use another --cache-root"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        yield path
    finally:
        os.close(fd)  # closing the descriptor releases the flock

"""Decoded frames handed from the decode workers to the face consumer through files, not pipes.

On the shared face path (``--face-models shared``) every decoded frame crosses from a worker
process to the driver, where the device's consumer runs the face models. Returned through joblib,
a chunk's frames (16 items of 8 s at 5 fps and 256², about 100 MB) are pickled into a pipe and
unpickled by one thread of the driver that holds the GIL the whole time: the consumers, whose
small kernel launches need the GIL too, wait. Instead a worker writes a chunk's frames into one
``.npy`` file in a spool directory (in ``/dev/shm``, memory, where it has room) and returns only
where they are (:class:`SpooledFrames`); the consumer maps the file, copies the frames once into
its pinned batch buffer, and deletes it.

The spool belongs to one ``extract run`` (``avpi-frames-<pid>``) and is removed when the run
ends; a killed run's spool is removed by the next run on the machine (its pid no longer lives).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.pipeline import Failure, Loaded

PREFIX = "avpi-frames-"
SHM = Path("/dev/shm")
#: /dev/shm is used only with at least this much free: in-flight chunks (two per worker and per
#: consumer) of a 16-core machine hold a few GB at the defaults.
MIN_SHM_FREE = 8 * 2**30


@dataclass(frozen=True)
class SpooledFrames:
    """Where an item's frames wait: rows ``start:stop`` of the ``.npy`` file ``path``."""

    path: str
    start: int
    stop: int


def stash(loaded: list[Loaded | Failure], directory: str) -> list[Loaded | Failure]:
    """Worker side: the chunk's frames into one file of ``directory``; the items point at them."""
    with_frames = [x for x in loaded if isinstance(x, Loaded) and len(x.media.frames)]
    if not with_frames:
        return loaded
    total = sum(len(x.media.frames) for x in with_frames)
    name = Path(directory) / f"{uuid.uuid4().hex}.npy"
    partial = name.with_suffix(".tmp")
    out = np.lib.format.open_memmap(
        partial, mode="w+", dtype=np.uint8, shape=(total, *with_frames[0].media.frames.shape[1:])
    )
    spooled, row = {}, 0
    for x in with_frames:
        n = len(x.media.frames)
        out[row : row + n] = x.media.frames
        spooled[id(x)] = SpooledFrames(str(name), row, row + n)
        row += n
    out.flush()
    del out
    partial.rename(name)  # the consumer never maps a file that is still being written
    return [
        dataclasses.replace(x, media=dataclasses.replace(x.media, frames=spooled[id(x)])) if id(x) in spooled else x
        for x in loaded
    ]


@contextlib.contextmanager
def unstashed(loaded: list[Loaded | Failure]) -> Iterator[list[Loaded | Failure]]:
    """Consumer side: the items with their frames mapped back in; the files are deleted on exit."""
    files: dict[str, np.ndarray] = {}
    out: list[Loaded | Failure] = []
    for x in loaded:
        frames = x.media.frames if isinstance(x, Loaded) else None
        if isinstance(frames, SpooledFrames):
            if frames.path not in files:
                files[frames.path] = np.load(frames.path, mmap_mode="r")
            x = dataclasses.replace(
                x, media=dataclasses.replace(x.media, frames=files[frames.path][frames.start : frames.stop])
            )
        out.append(x)
    try:
        yield out
    finally:
        del out
        for path in files:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def remove_stale(parent: Path) -> None:
    """Spools of runs that were killed (their pid is gone) under ``parent``."""
    with contextlib.suppress(OSError):
        for path in parent.glob(f"{PREFIX}*"):
            pid = path.name[len(PREFIX) :].split("-")[0]
            if pid.isdigit() and not _alive(int(pid)):
                shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def frame_spool(fallback: Path) -> Iterator[str]:
    """This run's spool directory: in /dev/shm when it has room, else under ``fallback`` (the cache)."""
    parent = fallback
    with contextlib.suppress(OSError):
        if SHM.is_dir() and os.access(SHM, os.W_OK) and shutil.disk_usage(SHM).free >= MIN_SHM_FREE:
            parent = SHM
    remove_stale(parent)
    directory = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-", dir=parent)
    try:
        yield directory
    finally:
        shutil.rmtree(directory, ignore_errors=True)

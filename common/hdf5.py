"""Read-only HDF5 handles that are safe to use from loader workers.

An HDF5 handle must not cross a fork or a pickle (the library's state belongs to one process), yet
opening a file per read costs more than the read. :class:`H5Files` keeps a small per-process LRU
of open handles, drops them when it finds itself in another process, and pickles empty, so a
Dataset that holds one can go to DataLoader workers and dask workers as it is.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import h5py


class H5Files:
    """Lazily opened read-only HDF5 files, at most ``max_open`` at once, per process."""

    def __init__(self, max_open: int = 64, chunk_cache_bytes: int = 1 << 20) -> None:
        self.max_open = max_open
        self.chunk_cache_bytes = chunk_cache_bytes
        self._handles: OrderedDict[Path, h5py.File] = OrderedDict()
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        return state

    def get(self, path: str | os.PathLike) -> h5py.File:
        if self._pid != os.getpid():  # forked: the inherited handles belong to the parent
            self._handles = OrderedDict()
            self._pid = os.getpid()
        path = Path(path)
        h5 = self._handles.get(path)
        if h5 is None:
            h5 = h5py.File(path, "r", rdcc_nbytes=self.chunk_cache_bytes)
            self._handles[path] = h5
            if len(self._handles) > self.max_open:
                _, oldest = self._handles.popitem(last=False)
                oldest.close()
        else:
            self._handles.move_to_end(path)
        return h5

    def close(self) -> None:
        for h5 in self._handles.values():
            h5.close()
        self._handles.clear()

    def __len__(self) -> int:
        """Handles open in this process (a forked child's inherited ones do not count)."""
        return len(self._handles) if self._pid == os.getpid() else 0

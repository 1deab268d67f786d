"""Read-only HDF5 handles that are safe to use from loader workers.

An HDF5 handle must not cross a fork or a pickle (the library's state belongs to one process), yet
opening a file per read costs more than the read. :class:`H5Files` keeps a small per-process LRU
of open handles, drops them when it finds itself in another process, and pickles empty, so a
Dataset that holds one can go to DataLoader workers and dask workers as it is. It also keeps each
open file's dataset objects: looking a dataset up by name (``h5["fbank"]``) costs more than
reading a 3 s crop from it.
"""

from __future__ import annotations

import os
from collections import OrderedDict

import h5py


class H5Files:
    """Lazily opened read-only HDF5 files, at most ``max_open`` at once, per process."""

    def __init__(self, max_open: int = 64, chunk_cache_bytes: int = 1 << 20) -> None:
        self.max_open = max_open
        self.chunk_cache_bytes = chunk_cache_bytes
        # keyed by the path as a string: hashing a str is cheap, a pathlib.Path is rebuilt and rehashed
        self._handles: OrderedDict[str, h5py.File] = OrderedDict()
        self._datasets: dict[str, dict[str, h5py.Dataset]] = {}  # per open file; dropped with it
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_handles"] = OrderedDict()
        state["_datasets"] = {}
        return state

    def get(self, path: str | os.PathLike) -> h5py.File:
        if self._pid != os.getpid():  # forked: the inherited handles belong to the parent
            self._handles = OrderedDict()
            self._datasets = {}
            self._pid = os.getpid()
        path = os.fspath(path)
        h5 = self._handles.get(path)
        if h5 is None:
            h5 = h5py.File(path, "r", rdcc_nbytes=self.chunk_cache_bytes)
            self._handles[path] = h5
            if len(self._handles) > self.max_open:
                oldest, handle = self._handles.popitem(last=False)
                self._datasets.pop(oldest, None)
                handle.close()
        else:
            self._handles.move_to_end(path)
        return h5

    def dataset(self, path: str | os.PathLike, name: str) -> h5py.Dataset:
        """``get(path)[name]``, the object kept while its file stays open."""
        h5 = self.get(path)
        datasets = self._datasets.setdefault(os.fspath(path), {})
        found = datasets.get(name)
        if found is None:
            found = datasets[name] = h5[name]
        return found

    def close(self) -> None:
        for h5 in self._handles.values():
            h5.close()
        self._handles.clear()
        self._datasets.clear()

    def __len__(self) -> int:
        """Handles open in this process (a forked child's inherited ones do not count)."""
        return len(self._handles) if self._pid == os.getpid() else 0

"""common/: the atomic write policy, hashing, device choice and per-process HDF5 handles."""

import hashlib
import multiprocessing as mp
import pickle

import h5py
import numpy as np
import pytest
import torch

from common.device import resolve_device
from common.files import TMP_PREFIX, atomic_output, atomic_write_text, sha256_file
from common.hdf5 import H5Files


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "metrics.json", "old\n")
    with pytest.raises(RuntimeError), atomic_output(path) as tmp:
        tmp.write_text("half of the new")
        raise RuntimeError("killed mid-write")
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_write_through_a_library_is_published_whole(tmp_path):
    with atomic_output(tmp_path / "x.h5") as tmp:
        assert tmp.name.startswith(TMP_PREFIX) and tmp.parent == tmp_path
        with h5py.File(tmp, "w") as h5:
            h5["a"] = np.arange(5)
    with h5py.File(tmp_path / "x.h5", "r") as h5:
        assert h5["a"][:].tolist() == [0, 1, 2, 3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.h5"]


def test_sha256_of_a_file_and_of_a_byte_range(tmp_path):
    data = bytes(range(256)) * 9000  # > 2 blocks of 1 MiB
    (tmp_path / "f").write_bytes(data)
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data).hexdigest()
    assert sha256_file(tmp_path / "f", 1000, 1_500_000) == hashlib.sha256(data[1000:1_500_000]).hexdigest()


def test_device_choice():
    assert resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda:1")
    with pytest.raises(ValueError, match="not a torch device"):
        resolve_device("gpu0")


def _read_in_child(files: H5Files, path, queue) -> None:
    queue.put((len(files), files.get(path)["a"][:].tolist()))


def test_handles_are_kept_per_process_bounded_and_never_pickled(tmp_path):
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"{k}.h5")
        with h5py.File(paths[-1], "w") as h5:
            h5["a"] = np.full(2, k)
    files = H5Files(max_open=2)
    assert files.get(paths[0]) is files.get(paths[0])
    files.get(paths[1]), files.get(paths[2])
    assert len(files) == 2  # the least recently used one was closed
    assert len(pickle.loads(pickle.dumps(files))) == 0
    queue = mp.get_context("fork").Queue()
    child = mp.get_context("fork").Process(target=_read_in_child, args=(files, paths[1], queue))
    child.start()
    child.join(30)
    assert queue.get(timeout=5) == (0, [1, 1])  # the child opened its own handle
    files.close()
    assert len(files) == 0


def test_dataset_objects_are_kept_with_their_file_and_dropped_when_it_closes(tmp_path):
    paths = []
    for k in range(3):
        paths.append(tmp_path / f"{k}.h5")
        with h5py.File(paths[-1], "w") as h5:
            h5["a"] = np.full(2, k)
    files = H5Files(max_open=2)
    kept = files.dataset(paths[0], "a")
    assert files.dataset(paths[0], "a") is kept
    files.get(paths[1]), files.get(paths[2])  # paths[0] is closed: its dataset object is invalid now
    assert files.dataset(paths[0], "a") is not kept and files.dataset(paths[0], "a")[:].tolist() == [0, 0]
    files.close()
    assert files.dataset(paths[2], "a")[:].tolist() == [2, 2]


def test_a_registry_by_names_takes_each_name_once():
    from common.registry import by_names

    registry: dict[str, type] = {}
    register = by_names(registry, "face_weights")

    @register
    class Two:
        names = ("a", "b")

    assert registry == {"a": Two, "b": Two}
    with pytest.raises(ValueError, match="face_weights name 'b' is taken by Two"):

        @register
        class Clash:
            names = ("b",)

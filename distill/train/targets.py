"""Teacher targets: the teacher's outputs on every grid cell, computed once, read by every student.

A target is only valid for the exact input the student sees, so the file is keyed by the
teacher checkpoint's sha256, the cache id and the grid spec. A student verifies all three before
reading (a retrained teacher, another cache or another grid is a clear error, never silently
wrong targets) and never loads or runs the teacher itself.

Targets also carry what the teacher learnt from: the teacher run records its training items in
``train_ids.txt`` (one utt id per line, sorted; its sha256 is in the key, so the two cannot drift
apart). A student whose val or test split holds any of them is refused (:func:`check_heldout`):
the teacher's embedding of an item it was trained on would carry that item's label into the
student's held-out score. Another ``split_seed`` or ``split_column`` than the teacher's is the
usual cause.

Layout of ``targets.h5`` (packed, item-major, one row per cell)::

    enc     (N_cells, D) nonseq | (N_cells, S, D) seq     teacher encoder embedding(s)
            | (N_segments, D) seq over whole utterances: every cell's segments, cell after cell
    agg     (N_cells, D2)                                  seq only
    logits  (N_cells, C)
    audio   like enc                                       the teacher's audio branch before fusion
    utt_id, cell_offset, n_cells                           per item (distill.target_index)
    seg_offset, n_segs                                     per cell, whole-utterance seq only: its rows of enc/audio
    attrs["key"] = JSON {teacher_sha256, cache_id, grid, labels, train_ids_sha256}
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import torch
from tqdm import tqdm

from common.files import atomic_output, atomic_write_text, sha256_file, sha256_text
from common.hdf5 import H5Files
from distill.data.dataset import Grid, GridDataset
from distill.eval.predict import forward_cells
from distill.precision import Precision
from distill.run import RunDir
from distill.target_index import TargetIndex

TARGETS_FILE = RunDir.TARGETS
TRAIN_IDS = RunDir.TRAIN_IDS
FIELDS = ("enc", "agg", "logits", "audio")
#: Per ``distill.target``: the stored array each student level imitates (the teacher has no
#: audio-only aggregate, so ``agg`` stays the fused one).
TARGET_FIELDS = {"fused": {"enc": "enc", "agg": "agg"}, "audio": {"enc": "audio", "agg": "agg"}}
#: The per-segment fields: in whole-utterance seq one row per valid segment (``seg_offset``, ``n_segs``).
PER_SEGMENT = ("enc", "audio")


class TargetMismatchError(RuntimeError):
    """Cached teacher targets that do not belong to this student's inputs."""


def cache_identity(cache) -> str:
    """The cache's config hash plus a digest of its index.

    The config hash alone names *how* features were made, not *which* items: two corpora
    extracted with the same settings share it. The index digest (utt ids, shard files, offsets)
    tells them apart, and changes when items are repaired or added.
    """
    columns = ["utt_id", "shard", "fbank_offset", "n_fbank"]
    return f"{cache.cache_id}:{sha256_text(cache.index[columns].to_csv(index=False))[:16]}"


def targets_key(teacher_sha256: str, cache_id: str, grid: Grid, labels: list[str]) -> dict:
    return {"teacher_sha256": teacher_sha256, "cache_id": str(cache_id), "grid": grid.spec(), "labels": list(labels)}


def ids_digest(ids) -> str:
    """sha256 of a set of utt ids (order-free): what the targets key records of the training set."""
    return sha256_text("".join(f"{u}\n" for u in sorted(map(str, ids))))


def write_train_ids(run_dir: str | Path, ids) -> str:
    """Record a teacher's training items in ``run_dir/train_ids.txt`` (atomically); returns their digest."""
    path = RunDir(run_dir).train_ids
    atomic_write_text(path, "".join(f"{u}\n" for u in sorted(map(str, ids))))
    return ids_digest(ids)


def check_heldout(teacher_dir: str | Path, heldout, key: dict | None = None, unlabelled=()) -> None:
    """Refuse a teacher that trained on any of the student's ``heldout`` (val + test) items, or on
    any item whose label the student is not to have (``unlabelled``: its transfer set).

    ``key`` (the targets key) when given must name the recorded set's digest, so an edited or
    stale ``train_ids.txt`` is refused too.
    """
    path = RunDir(teacher_dir).train_ids
    if not path.is_file():
        raise TargetMismatchError(
            f"{teacher_dir} records no training set ({TRAIN_IDS}); a teacher run made before "
            f"the leakage check: rerun `distill teacher` so its split can be checked"
        )
    trained = path.read_text().splitlines()
    if key is not None and key.get("train_ids_sha256") != ids_digest(trained):
        raise TargetMismatchError(
            f"{path} is not the training set its {TARGETS_FILE} was made with; rerun `distill teacher`"
        )
    leaked = sorted(set(trained).intersection(map(str, heldout)))
    if leaked:
        raise TargetMismatchError(
            f"{len(leaked)} of this run's val/test items were in the teacher's training set (e.g. {leaked[0]!r}): "
            f"its targets would leak their labels into held-out scores. Use the teacher's split "
            f"(data.split_column / data.split_seed as in {RunDir(teacher_dir).config_file}) or retrain the teacher"
        )
    taught = sorted(set(trained).intersection(map(str, unlabelled)))
    if taught:
        raise TargetMismatchError(
            f"{len(taught)} of this run's unlabelled (transfer) items were in the teacher's training set with "
            f"their labels (e.g. {taught[0]!r}): its targets would hand the student labels it is not to have. "
            f"Train the teacher on the student's labelled items or fewer (data.labels_per_class / "
            f"data.labels_seed as in {RunDir(teacher_dir).config_file})"
        )


def compute_targets(
    net: torch.nn.Module,
    dataset: GridDataset,
    precision: Precision,
    batch_size: int = 64,
    num_workers: int = 0,
    progress: bool = True,
) -> dict[str, np.ndarray]:
    """Run `net` (eval mode) over every cell of an evaluation GridDataset; arrays in cell order.

    Whole-utterance seq (padded batches with a ``seg_mask``): ``enc`` and ``audio`` hold only the valid
    segments, cell after cell, and ``n_segs`` says how many each cell has.
    """
    chunks: dict[str, list[np.ndarray]] = {k: [] for k in (*FIELDS, "n_segs")}
    cells = forward_cells(net, dataset, precision, batch_size=batch_size, num_workers=num_workers)
    total = -(-len(dataset) // batch_size)
    for batch, out in tqdm(cells, total=total, desc="teacher targets", disable=not progress, leave=False):
        seg_mask = batch.get("seg_mask")
        for name in FIELDS:
            value = getattr(out, name)
            if value is not None:
                if name in PER_SEGMENT and seg_mask is not None:
                    value = value[seg_mask.to(value.device)]
                chunks[name].append(value.float().cpu().numpy())
        if seg_mask is not None:
            chunks["n_segs"].append(seg_mask.sum(1).numpy())
    return {k: np.concatenate(v) for k, v in chunks.items() if v}


def write_targets(path: str | Path, arrays: dict[str, np.ndarray], dataset: GridDataset, key: dict) -> Path:
    """Write atomically: a student never reads half a targets file."""
    path = Path(path)
    arrays = dict(arrays)
    n_segs = arrays.pop("n_segs", None)
    n_rows = int(dataset.n_cells.sum())
    for name, value in arrays.items():
        want = int(n_segs.sum()) if name in PER_SEGMENT and n_segs is not None else n_rows
        if len(value) != want:
            raise ValueError(f"targets {name}: {len(value)} rows for {want} grid cells (or segments)")
    with atomic_output(path) as tmp, h5py.File(tmp, "w") as h5:
        for name, value in arrays.items():
            h5.create_dataset(name, data=value.astype(np.float32))
        if n_segs is not None:
            if len(n_segs) != n_rows:
                raise ValueError(f"targets: segment counts for {len(n_segs)} cells, the grid has {n_rows}")
            h5.create_dataset("n_segs", data=n_segs.astype(np.int64))
            h5.create_dataset("seg_offset", data=np.concatenate([[0], np.cumsum(n_segs)[:-1]]).astype(np.int64))
        TargetIndex.of(dataset.utt_ids, dataset.n_cells, key).write(h5)
    return path


class TargetStore:
    """Read access to a targets file; picklable, opens HDF5 lazily per process like the Cache.

    A file up to ``max_in_memory`` bytes is read whole, once per process, on first use: a
    student step then costs no HDF5 call per sample for its targets (larger files are read a
    row at a time). The arrays are never pickled, so loader workers each load their own.
    """

    max_in_memory = 256 * 2**20

    def __init__(self, path: str | Path, fields: tuple[str, ...] = FIELDS):
        self.path = Path(path)
        with h5py.File(self.path, "r") as h5:
            index = TargetIndex.read(h5)
            self.key = index.key
            utts, offsets, counts = index.utt_ids, index.cell_offset, index.n_cells
            self.fields = tuple(f for f in fields if f in h5)
            self.shapes = {f: h5[f].shape[1:] for f in self.fields}
            self.nbytes = sum(h5[f].size * h5[f].dtype.itemsize for f in self.fields)
            # whole-utterance seq: each cell's rows of enc (None: one enc row per cell)
            self._segs = (h5["seg_offset"][:], h5["n_segs"][:]) if "seg_offset" in h5 else None
        self._offset = dict(zip(utts, offsets.tolist()))
        self._count = dict(zip(utts, counts.tolist()))
        self._files = H5Files(max_open=1)
        self._arrays: dict | None = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_arrays"] = None
        return state

    def _source(self) -> dict:
        """Per process: the whole arrays (small file) or the open HDF5 datasets (large file)."""
        if self._arrays is None or self._pid != os.getpid():
            h5 = self._files.get(self.path)
            if self.nbytes <= self.max_in_memory:
                self._arrays = {f: h5[f][:] for f in self.fields}
                self._files.close()
            else:
                self._arrays = {f: h5[f] for f in self.fields}
            self._pid = os.getpid()
        return self._arrays

    def lookup(self, utt_id: str, cell: int) -> dict[str, np.ndarray]:
        try:
            offset, count = self._offset[utt_id], self._count[utt_id]
        except KeyError:
            raise TargetMismatchError(f"{self.path} has no teacher targets for item {utt_id!r}") from None
        if not 0 <= cell < count:
            raise TargetMismatchError(f"{self.path}: item {utt_id!r} has {count} grid cells, asked for cell {cell}")
        source = self._source()
        row = offset + cell
        out = {f: np.asarray(source[f][row]) for f in self.fields if not (f in PER_SEGMENT and self._segs is not None)}
        if self._segs is not None:
            first, count = int(self._segs[0][row]), int(self._segs[1][row])
            out.update({f: np.asarray(source[f][first : first + count]) for f in PER_SEGMENT if f in self.fields})
        return out


def open_targets(
    teacher_dir: str | Path,
    cache_id: str,
    grid: Grid,
    labels: list[str],
    fields: tuple[str, ...] = FIELDS,
    heldout: list[str] | None = None,
    unlabelled=(),
) -> TargetStore:
    """Open a teacher run's targets after checking they were made for these inputs.

    ``heldout`` (the student's val + test ids) and ``unlabelled`` (its transfer set) are checked
    against the teacher's training set (:func:`check_heldout`).
    """
    run = RunDir(teacher_dir)
    path, ckpt = run.targets, run.best
    if not path.is_file() or not ckpt.is_file():
        raise TargetMismatchError(
            f"{teacher_dir} has no {TARGETS_FILE} / {RunDir.BEST}: is it a finished `distill teacher` run?"
        )
    store = TargetStore(path, fields)
    expected = targets_key(sha256_file(ckpt), cache_id, grid, labels)
    found = store.key
    if found.get("teacher_sha256") != expected["teacher_sha256"]:
        raise TargetMismatchError(
            f"{path} was computed from another teacher checkpoint than {ckpt} (retrained teacher?); "
            f"rerun `distill teacher` to refresh its targets"
        )
    if found.get("cache_id") != expected["cache_id"]:
        raise TargetMismatchError(
            f"{path} was computed on cache {found.get('cache_id')}, this run uses cache {cache_id}: "
            f"train the teacher on this cache"
        )
    if found.get("grid") != expected["grid"]:
        # a window grid's spec omits span / max_segments (its key predates them): compare with them filled in
        filled = {"span": "window", "max_segments": 0}
        theirs, ours = {**filled, **found.get("grid", {})}, {**filled, **expected["grid"]}
        diff = {
            k: (theirs.get(k), ours.get(k)) for k in dict.fromkeys([*ours, *theirs]) if theirs.get(k) != ours.get(k)
        }
        detail = ", ".join(f"{k}: teacher {a} vs student {b}" for k, (a, b) in diff.items())
        raise TargetMismatchError(f"{path} was computed on another crop/segment grid ({detail})")
    if found.get("labels") != expected["labels"]:
        raise TargetMismatchError(
            f"{path}: the teacher's classes differ from this run's (another split or label column?)"
        )
    missing = [f for f in fields if f not in store.fields and f != "agg"]
    if "audio" in missing:
        raise TargetMismatchError(
            f"{path} holds no audio-branch targets (made before they were stored): rerun "
            f"`distill teacher` for distill.target=audio, or use distill.target=fused"
        )
    if missing:
        raise TargetMismatchError(f"{path} lacks target field(s) {missing}")
    if heldout is not None:
        check_heldout(teacher_dir, heldout, found, unlabelled)
    return store

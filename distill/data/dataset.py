"""Datasets over the feature cache on a fixed crop/segment grid.

Teacher targets are computed once per grid cell, so the student must only ever see inputs that lie
on that grid: training draws one random cell per item per epoch, evaluation uses every cell and
averages per utterance. The grid depends on the fbank length alone, so teacher and student agree on
it without sharing anything but the spec. Only the cache is read (``Cache.read``); video is never
decoded here.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset, Sampler

from distill.config import ConfigError, DataConfig
from manifests.splits import assign_split, fold_split

SPLITS = ("train", "val", "test")
AUGMENT_STREAM = 1  # the augmentation's draws: another random stream of (seed, epoch, item) than the cell's


@dataclass(frozen=True)
class Grid:
    """Where cells lie on an utterance of ``n`` fbank frames.

    A cell is ``cell_len`` frames long and cells start every ``hop`` frames; a last cell is
    aligned with the end so the tail is covered. Utterances shorter than a cell wrap around
    (deterministic, unlike random padding, so a cached target stays valid). In the sequential
    setting a cell is a window of ``n_segments`` segments of ``seg_len`` frames, ``seg_hop`` apart.

    ``span="utterance"`` (:meth:`utterance_cells`): in ``seq`` a cell is the whole utterance cut
    into segments, a variable number per item, at most ``max_segments`` (longer utterances give
    several interleaved cells); in ``nonseq`` (evaluation only, ``data.eval_span``) a cell is the
    whole utterance in one piece.
    """

    setting: str
    crop: int
    hop: int
    seg_len: int
    seg_hop: int
    n_segments: int
    max_faces: int
    span: str = "window"  # window | utterance; defaults keep grids recorded before the option loadable
    max_segments: int = 0  # seq, span=utterance: segments per cell at most

    @classmethod
    def from_config(cls, data: DataConfig) -> Grid:
        """The grid a run trains on and its teacher targets are computed on."""
        seq = data.setting == "seq"
        if seq and data.seq_span == "utterance":  # crop, crop_hop and n_segments do not apply
            return cls(
                setting="seq",
                crop=0,
                hop=0,
                seg_len=data.seg_len,
                seg_hop=data.seg_hop,
                n_segments=0,
                max_faces=data.max_faces,
                span="utterance",
                max_segments=data.max_segments,
            )
        return cls(
            setting=data.setting,
            crop=data.crop,
            hop=data.crop_hop,
            seg_len=data.seg_len if seq else 0,
            seg_hop=data.seg_hop if seq else 0,
            n_segments=data.n_segments if seq else 1,
            max_faces=data.max_faces,
        )

    @classmethod
    def for_eval(cls, data: DataConfig) -> Grid:
        """The grid val/test items are evaluated on: the training grid, except that ``nonseq`` with
        ``data.eval_span=utterance`` runs the encoder over each whole utterance at once."""
        grid = cls.from_config(data)
        if data.setting == "nonseq" and data.eval_span == "utterance":
            return replace(grid, span="utterance")
        return grid

    @property
    def cell_len(self) -> int:
        if self.setting == "seq":
            return self.seg_len + (self.n_segments - 1) * self.seg_hop
        return self.crop

    def spec(self) -> dict:
        """The part of the grid a cached target depends on (what the targets key records).

        A window grid's spec is what it was before whole-utterance spans existed, so targets
        computed then still match.
        """
        spec = asdict(self)
        if self.span == "window":
            del spec["span"], spec["max_segments"]
        return spec

    @property
    def segmented(self) -> bool:
        """Cells of a variable number of segments (seq over whole utterances): batches carry a seg_mask."""
        return self.setting == "seq" and self.span == "utterance"

    @staticmethod
    def _starts(n_frames: int, length: int, hop: int) -> np.ndarray:
        """Starts every ``hop`` frames of pieces of ``length`` frames, plus one aligned with the end."""
        last = max(n_frames - length, 0)
        starts = np.arange(0, last + 1, hop)
        if starts[-1] != last:
            starts = np.append(starts, last)
        return starts

    def starts(self, n_frames: int) -> np.ndarray:
        return self._starts(n_frames, self.cell_len, self.hop)

    def segment_starts(self, n_frames: int) -> np.ndarray:
        """seq over the whole utterance: the start of every segment (an utterance shorter than a
        segment is one wrapped segment)."""
        return self._starts(n_frames, self.seg_len, self.seg_hop)

    def n_cells(self, n_frames: int) -> int:
        if self.span == "utterance":
            return -(-len(self.segment_starts(n_frames)) // self.max_segments) if self.segmented else 1
        return len(self.starts(n_frames))

    def utterance_cells(self, n_frames: int, cell: int) -> np.ndarray:
        """seq over the whole utterance: the segment starts of one cell.

        Up to ``max_segments`` segments the utterance is one cell. Beyond, it is cut into
        k = ceil(n / max_segments) interleaved cells, cell c holding segments c, c + k, c + 2k, ...:
        each spans the whole utterance (so the aggregator still summarises all of it, as the
        paper's aggregator does), and the cells partition the segments, so the teacher's targets
        cover every segment once and stay exact for the cell a student is shown.
        """
        starts = self.segment_starts(n_frames)
        return starts[cell :: self.n_cells(n_frames)]

    def frame_index(self, n_frames: int, cell: int) -> np.ndarray:
        """Fbank rows of a cell: (crop,) for nonseq, (n_segments, seg_len) for seq; wrapped mod n.

        Whole-utterance spans: (n_frames,) for nonseq, (segments of the cell, seg_len) for seq.
        """
        if self.span == "utterance":
            if not self.segmented:
                return np.arange(n_frames)
            return (self.utterance_cells(n_frames, cell)[:, None] + np.arange(self.seg_len)[None, :]) % n_frames
        start = self.starts(n_frames)[cell]
        if self.setting == "seq":
            offsets = np.arange(self.n_segments)[:, None] * self.seg_hop + np.arange(self.seg_len)[None, :]
        else:
            offsets = np.arange(self.crop)
        return (start + offsets) % n_frames

    def face_index(self, frame_rows: np.ndarray, face_frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Face frames whose timestamp falls in the fbank rows of one crop/segment.

        Returns (max_faces,) indices into the item's face arrays and a validity mask; more faces than
        ``max_faces`` are thinned evenly, fewer are padded (mask False).
        """
        hits = np.flatnonzero(np.isin(face_frame, frame_rows))
        if len(hits) > self.max_faces:
            hits = hits[np.linspace(0, len(hits) - 1, self.max_faces).round().astype(int)]
        index = np.zeros(self.max_faces, dtype=np.int64)
        mask = np.zeros(self.max_faces, dtype=bool)
        index[: len(hits)] = hits
        mask[: len(hits)] = True
        return index, mask


def assign_splits(index: pd.DataFrame, data: DataConfig) -> pd.Series:
    """The train/val/test split per item: a cross-validation fold (``data.fold_column``), else the
    cache's split column, else a seeded split."""
    if data.fold_column:
        try:
            return fold_split(index, data.fold_column, data.fold, data.n_folds, seed=data.split_seed).astype(str)
        except ValueError as exc:
            raise ConfigError(f"fold {data.fold} over data.fold_column {data.fold_column!r}: {exc}") from exc
    if data.split_column in index.columns:
        splits = index[data.split_column].astype(str)
        bad = sorted(set(splits) - set(SPLITS))
        if bad:
            raise ConfigError(
                f"split column {data.split_column!r} holds {bad}; expected train/val/test: set data.split_column "
                "to a column that holds them (absent from the cache: a seeded split by data.task)"
            )
        return splits

    # Speakers: closed-set identification needs every speaker in every split. Emotion: the
    # standard speaker-independent protocol (test speakers never heard in training).
    kind = "speaker-id" if data.task == "speaker" else "leave-speakers-out"
    try:
        return assign_split(index, kind, seed=data.split_seed).astype(str)
    except ValueError as exc:
        raise ConfigError(
            f"the cache has no {data.split_column!r} column and a {kind} split failed: {exc}; set data.split_column "
            "to the cache's split column, or give the manifest one (`python -m manifests RECIPE ROOT --split KIND`)"
        ) from exc


@dataclass
class Labels:
    """Class names (sorted, from the train split) and each item's class id (-1: not a train class)."""

    names: list[str]

    def encode(self, values: pd.Series) -> np.ndarray:
        lookup = {name: i for i, name in enumerate(self.names)}
        return np.array([lookup.get(str(v), -1) for v in values], dtype=np.int64)

    @classmethod
    def from_train(cls, index: pd.DataFrame, splits: pd.Series, column: str) -> Labels:
        if column not in index.columns:
            raise ConfigError(
                f"the cache index has no {column!r} column; columns: {', '.join(index.columns)}: set "
                "data.label_column to the one holding the labels (or data.task to the task the cache has labels for)"
            )
        names = sorted(index.loc[splits == "train", column].dropna().astype(str).unique())
        if len(names) < 2:
            raise ConfigError(
                f"the train split has {len(names)} {column!r} class(es); need at least 2: check the split "
                "(data.split_column) and the label column (data.label_column)"
            )
        return cls(names)


class GridDataset(Dataset):
    """Samples of one set of items on a :class:`Grid`.

    ``train=True``: one sample per item, its cell drawn from (seed, epoch, item) so that an epoch
    is reproducible whatever the worker layout (and after a resume). ``train=False``: every cell
    of every item, item-major, for evaluation and for writing teacher targets.
    ``faces=False`` reads fbank only (students). ``targets`` attaches the cached teacher targets of
    the sampled cell. ``augment`` (training only: :mod:`distill.augment`) transforms the sampled
    cell's fbank; faces and targets stay those of the clean cell. The cache opens its HDF5 files
    lazily in each worker process.

    ``items`` are utt ids or cache rows (``cache.positions``). Only numpy arrays are kept per item:
    a list of a million id strings, touched by each loader worker, is copied page by page into
    every worker (reference counts live in the objects); arrays of ints are shared as they are.
    """

    def __init__(
        self,
        cache,
        items,
        labels: np.ndarray,
        grid: Grid,
        *,
        faces: bool,
        train: bool,
        seed: int = 0,
        targets=None,
        augment=None,
    ):
        if augment is not None and not train:
            raise ValueError(
                "augmentation is for training datasets only: evaluation and teacher targets see clean cells"
            )
        self.cache = cache
        items = np.asarray(items) if len(items) else np.zeros(0, np.int64)
        self.rows = items.astype(np.int64) if items.dtype.kind in "iu" else cache.positions(list(items))
        self.labels = np.asarray(labels, dtype=np.int64)
        self.grid = grid
        self.faces = faces
        self.train = train
        self.seed = seed
        self.targets = targets
        self.augment = augment
        self.hop_s = float(cache.config.get("hop_ms", 10.0)) / 1000.0
        self.face_dim = cache.face_dim
        self.n_frames = cache.table.locations[self.rows, 1].astype(np.int64)
        self.n_cells = np.array([grid.n_cells(int(n)) for n in self.n_frames], dtype=np.int64)
        self.cell_item = np.repeat(np.arange(len(self.rows)), self.n_cells)
        self.cell_id = np.concatenate([np.arange(n) for n in self.n_cells]) if len(self.n_cells) else np.zeros(0, int)
        self.fields = ("fbank", "face", "face_found", "frame_times") if faces else ("fbank",)

    @property
    def utt_ids(self) -> list[str]:
        """The items' utt ids, in dataset order (a fresh list: for reports, never on the loading path)."""
        return self.cache.utt_ids(self.rows)

    def __len__(self) -> int:
        return len(self.rows) if self.train else len(self.cell_item)

    def locate(self, i: int, epoch: int = 0) -> tuple[int, int]:
        """Sample index (of ``epoch``, for a training dataset) -> (item, cell)."""
        if self.train:
            rng = np.random.default_rng((self.seed, epoch, i))
            return i, int(rng.integers(self.n_cells[i]))
        return int(self.cell_item[i]), int(self.cell_id[i])

    def __getitem__(self, key: int | tuple[int, int]) -> dict:
        """``ds[i]``, or ``ds[(epoch, i)]`` as :class:`EpochTaggedSampler` yields them.

        The tagged form lets persistent loader workers (which hold a copy of the dataset made
        once) follow the epoch without being told.
        """
        epoch, i = key if isinstance(key, tuple) else (0, key)
        item, cell = self.locate(i, epoch)
        utt = self.cache.utt_id(self.rows[item])
        n_frames = int(self.n_frames[item])
        rows = self.grid.frame_index(n_frames, cell)
        # Only the cell's span of fbank rows is read (a 3 s crop of an 8 s utterance reads 3 s); a
        # wrapped cell or a whole utterance reads all of it.
        first, stop = (int(rows.min()), int(rows.max()) + 1) if rows.size else (0, 0)
        span = (first, stop) if stop - first < n_frames else (0, n_frames)
        arrays = self.cache.read_at(self.rows[item], fields=self.fields, labels=False, frames=span)
        fbank = np.asarray(arrays["fbank"], dtype=np.float32)
        if len(fbank) != span[1] - span[0]:
            raise RuntimeError(
                f"{utt}: cache holds {len(fbank)} fbank frames in [{span[0]}, {span[1]}), its index says "
                f"{n_frames} in all"
            )
        x = fbank[rows - span[0]]
        if self.augment is not None:
            x = self.augment(x, rows, n_frames, self.augment_rng(i, epoch))
        sample = {
            "fbank": torch.from_numpy(x),
            "label": int(self.labels[item]),
            "item": item,
            "cell": cell,
            "utt_id": utt,
        }
        if self.faces:
            sample.update(self._faces(arrays, rows, n_frames))
        if self.targets is not None:
            sample.update({f"t_{k}": torch.from_numpy(v) for k, v in self.targets.lookup(utt, cell).items()})
        if self.grid.segmented:
            sample["seg_mask"] = torch.ones(len(rows), dtype=torch.bool)
        return sample

    def augment_rng(self, i: int, epoch: int = 0) -> np.random.Generator:
        """The generator of sample ``i``'s augmentation: a function of (seed, epoch, item) like its
        cell, so a resumed run (or any worker layout) sees the same augmented input."""
        return np.random.default_rng((self.seed, epoch, i, AUGMENT_STREAM))

    def _faces(self, arrays: dict, rows: np.ndarray, n_frames: int) -> dict:
        face = np.asarray(arrays["face"], dtype=np.float32).reshape(-1, self.face_dim)
        found = np.asarray(arrays["face_found"], dtype=bool)
        face_frame = np.floor(np.asarray(arrays["frame_times"], dtype=np.float64) / self.hop_s + 1e-6).astype(np.int64)
        face_frame = np.where(face_frame < n_frames, face_frame, -1)  # a face past the audio never counts
        segments = rows if rows.ndim == 2 else rows[None]
        faces, masks = [], []
        for seg_rows in segments:
            idx, valid = self.grid.face_index(seg_rows, face_frame)
            if len(face):
                faces.append(face[idx])
                masks.append(valid & found[idx])
            else:  # an item without video: no frames at all
                faces.append(np.zeros((self.grid.max_faces, self.face_dim), np.float32))
                masks.append(np.zeros(self.grid.max_faces, bool))
        face_t, mask_t = np.stack(faces), np.stack(masks)
        if rows.ndim == 1:
            face_t, mask_t = face_t[0], mask_t[0]
        face_t = np.where(mask_t[..., None], face_t, 0.0).astype(np.float32)
        return {"face": torch.from_numpy(face_t), "face_mask": torch.from_numpy(mask_t)}


class EpochTaggedSampler(Sampler):
    """Wraps a sampler with an ``epoch`` attribute (e.g. DistributedSampler): yields (epoch, index)."""

    def __init__(self, sampler: Sampler):
        self.sampler = sampler

    def __iter__(self):
        epoch = self.sampler.epoch
        return ((epoch, i) for i in self.sampler)

    def __len__(self) -> int:
        return len(self.sampler)


#: Sample fields whose first axis is the segment axis (seq); padded by :func:`pad_segments`.
SEGMENT_FIELDS = ("fbank", "face", "face_mask", "t_enc", "t_audio", "seg_mask")


def pad_segments(samples: list[dict]) -> list[dict]:
    """Samples of variable segment counts (whole-utterance seq), padded to the batch's longest.

    Padding is trailing and zero (False in ``seg_mask`` and ``face_mask``), so ``seg_mask`` marks a
    prefix of valid segments, as every aggregator (and the BiLSTM's packing) expects.
    """
    longest = max(len(s["seg_mask"]) for s in samples)
    padded = []
    for sample in samples:
        missing = longest - len(sample["seg_mask"])
        if missing:
            sample = dict(sample)
            for key in SEGMENT_FIELDS:
                if key in sample:
                    value = sample[key]
                    sample[key] = torch.cat([value, value.new_zeros((missing, *value.shape[1:]))])
        padded.append(sample)
    return padded


def collate(samples: list[dict]) -> dict:
    """Stack tensors, keep ids as lists (so a failing batch can be named by its utt ids).

    Samples with a ``seg_mask`` (whole-utterance seq) are padded to one segment count first.
    """
    if "seg_mask" in samples[0]:
        samples = pad_segments(samples)
    out: dict = {}
    for key in samples[0]:
        values = [s[key] for s in samples]
        if isinstance(values[0], torch.Tensor):
            out[key] = torch.stack(values)
        elif key in ("label", "item", "cell"):
            out[key] = torch.tensor(values, dtype=torch.long)
        else:
            out[key] = values
    return out

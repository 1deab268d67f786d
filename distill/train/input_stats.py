"""Training statistics for the networks' input normalisers (``distill.models.normalize``).

One pass over (a fixed sample of at most :data:`MAX_ITEMS` of) the training split's items, one
HDF5 read per shard and field (the items of a shard are packed, so their rows are selected with a
vectorised mask rather than item by item); sums in float64. Computed on rank 0 before the first
epoch, broadcast to the other ranks, then stored as buffers in every checkpoint: a resumed run
restores them and never recomputes.
"""

from __future__ import annotations

from dataclasses import dataclass

import h5py
import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from distill.models.normalize import FaceNorm, FbankNorm, unfitted_norms
from distill.train.distributed import DistEnv
from extract.cache import SHARD_DIR

#: Per-dimension means and deviations settle long before this many utterances; a VoxCeleb2-size
#: training split (a million items, ~100 GB of log-mels) is sampled down to it, with a fixed seed,
#: so the pass costs minutes at most and every rank and rerun gets the same sample.
MAX_ITEMS = 20_000


def stats_sample(train_ids: list[str], max_items: int = MAX_ITEMS) -> list[str]:
    """The training items the statistics are computed from: all of them, or a seeded sample."""
    if len(train_ids) <= max_items:
        return list(train_ids)
    keep = np.sort(np.random.default_rng(0).choice(len(train_ids), size=max_items, replace=False))
    return [train_ids[i] for i in keep]


@dataclass
class InputStats:
    """Per-dimension moments of the training inputs (what the normalisers are fitted with)."""

    fbank_mean: np.ndarray  # (n_mels,)
    fbank_std: np.ndarray
    n_frames: int
    face_mean: np.ndarray | None  # (face_dim,); None when no training item has a found face
    face_std: np.ndarray | None
    face_cov: np.ndarray | None  # (face_dim, face_dim); only when asked for (whitening)
    n_faces: int


def _rows_of(offsets: np.ndarray, counts: np.ndarray, n_rows: int) -> np.ndarray:
    """Boolean mask over a shard's packed rows covering ``[offset, offset + count)`` of each item."""
    edges = np.zeros(n_rows + 1, dtype=np.int64)
    np.add.at(edges, offsets, 1)
    np.add.at(edges, offsets + counts, -1)
    return np.cumsum(edges[:-1]) > 0


def input_statistics(cache, utt_ids: list[str], *, faces: bool = True, face_cov: bool = False) -> InputStats:
    """Moments of the log-mel frames and of the found face frames of ``utt_ids`` (the train split)."""
    index = cache.index.loc[list(utt_ids)]
    fb = _Moments(cache.n_mels, outer=False)
    face: _Moments | None = None
    for shard, rows in index.groupby("shard", sort=False):
        with h5py.File(cache.dir / SHARD_DIR / shard, "r") as h5:
            fbank = h5["fbank"][:]
            keep = _rows_of(rows["fbank_offset"].to_numpy(np.int64), rows["n_fbank"].to_numpy(np.int64), len(fbank))
            fb.add(fbank[keep])
            if not faces:
                continue
            video = rows[rows["has_video"].astype(bool) & (rows["n_face"] > 0)]
            if not len(video):
                continue
            found = h5["face_found"][:].astype(bool)
            keep = _rows_of(video["face_offset"].to_numpy(np.int64), video["n_face"].to_numpy(np.int64), len(found))
            stored = h5["face"][:]
        face = face or _Moments(stored.shape[1], outer=face_cov)
        face.add(stored[keep & found])
    if fb.n == 0:
        raise ValueError(f"cache {cache.dir}: the training items hold no log-mel frames to normalise with")
    fb_mean, fb_std, _ = fb.result()
    if face is None or face.n == 0:
        return InputStats(fb_mean, fb_std, fb.n, None, None, None, 0)
    return InputStats(fb_mean, fb_std, fb.n, *face.result(), face.n)


class _Moments:
    """Running float64 sums of x, x² (and x xᵀ) over rows; mean, std (and covariance) at the end."""

    def __init__(self, dim: int, outer: bool) -> None:
        self.n, self.sum, self.sq = 0, np.zeros(dim), np.zeros(dim)
        self.outer = np.zeros((dim, dim)) if outer else None

    def add(self, rows: np.ndarray) -> None:
        x = rows.astype(np.float64)
        self.n += len(x)
        self.sum += x.sum(0)
        self.sq += (x * x).sum(0)
        if self.outer is not None:
            self.outer += x.T @ x

    def result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        mean = self.sum / self.n
        std = np.sqrt(np.maximum(self.sq / self.n - mean**2, 0.0))
        cov = None if self.outer is None else self.outer / self.n - np.outer(mean, mean)
        return mean, std, cov


def apply_statistics(net: nn.Module, stats: InputStats) -> None:
    """Load ``stats`` into every normaliser of ``net`` that needs them.

    A face normaliser on a cache without a single found training face stays the identity but is
    marked fitted (the trainer warns about such a teacher already).
    """
    for norm in unfitted_norms(net):
        if isinstance(norm, FbankNorm):
            norm.set_statistics(torch.from_numpy(stats.fbank_mean), torch.from_numpy(stats.fbank_std))
        elif isinstance(norm, FaceNorm):
            if stats.face_mean is None:
                norm.fitted.fill_(True)
                continue
            second = stats.face_cov if norm.mode == "whiten" else stats.face_std
            norm.set_statistics(torch.from_numpy(stats.face_mean), torch.from_numpy(second))


def fit_input_norms(net: nn.Module, cache, train_ids: list[str], env: DistEnv | None = None) -> InputStats | None:
    """Fit ``net``'s unfitted normalisers from the training items (rank 0), then share them.

    Returns the statistics on the rank that computed them, None where nothing needed fitting.
    Every rank must call this (it holds a broadcast when distributed).
    """
    norms = unfitted_norms(net)
    if not norms:
        return None
    stats = None
    if env is None or env.is_main:
        want_faces = any(isinstance(n, FaceNorm) for n in norms)
        whiten = any(isinstance(n, FaceNorm) and n.mode == "whiten" for n in norms)
        stats = input_statistics(cache, stats_sample(train_ids), faces=want_faces, face_cov=whiten)
        apply_statistics(net, stats)
    if env is not None and env.distributed:
        device = env.device if env.device.type == "cuda" else torch.device("cpu")
        for norm in norms:
            for buf in norm.buffers():
                shared = buf.detach().to(device=device, dtype=torch.float64)
                dist.broadcast(shared, src=0)
                buf.copy_(shared.to(buf.dtype))
    return stats

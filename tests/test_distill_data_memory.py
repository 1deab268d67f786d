"""Loader memory stays flat over epochs with persistent DataLoader workers reading HDF5.

Per-file HDF5 chunk caches and handles kept per worker are the known way feature-caching
toolkits grow epoch after epoch. The cache here has many small shards so each worker opens many
files; the reader must keep its handles and caches bounded.
"""

from __future__ import annotations

import psutil
import pytest

from distill.testing import make_lupi_items, tiny_config
from distill.train.trainer import Trainer
from extract.cache import build_cache

pytestmark = pytest.mark.slow

EPOCHS = 10


def workers_rss(proc: psutil.Process) -> int:
    return sum(child.memory_info().rss for child in proc.children(recursive=True))


def test_loader_rss_is_flat_over_epochs_with_two_workers(tmp_path):
    # 240 items in 60 shards of 4 (more shards than the reader keeps open, so handles churn), 4 s each
    # so that a leak of what is read (≈10 MB an epoch) would show against the workers' RSS.
    cache = build_cache(tmp_path / "cache", make_lupi_items(6, 40, n_frames=400), shard_size=4)
    cfg = tiny_config(cache, role="teacher", data__num_workers=2, data__batch_size=16)
    trainer = Trainer(cfg, tmp_path / "run", progress=False)
    loader, sampler = trainer.train_loader(trainer.train_dataset())
    proc = psutil.Process()
    per_epoch = []
    for epoch in range(1, EPOCHS + 1):
        sampler.set_epoch(epoch)
        n_batches = sum(1 for _ in loader)
        per_epoch.append(workers_rss(proc))
    assert n_batches == len(loader) > 0
    assert len(proc.children()) >= 2, "the workers should persist across epochs"
    # Epoch 1 warms caches and imports; from epoch 2 on, nothing may accumulate.
    growth = (per_epoch[-1] - per_epoch[1]) / per_epoch[1]
    assert growth <= 0.05, f"worker RSS grew {100 * growth:.1f}% from epoch 2 to {EPOCHS}: {per_epoch}"

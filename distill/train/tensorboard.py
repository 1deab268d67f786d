"""TensorBoard event files next to ``train_log.csv``: watch a run (or a whole sweep) while it trains.

One scalar per ``train_log.csv`` column and epoch, grouped by prefix (``train/total``,
``train/task``, ``val/uar``, ``lr``, ``time/epoch_seconds``), and the test metrics at the end
(``test/eer``, ...) and the test embeddings for the projector tab, labelled by class. The writer
is opened with ``purge_step`` on a resumed run, so the epochs it repeats after a kill replace the
ones logged before, as in train_log.csv. Open with
``tensorboard --logdir RUN_DIR`` (or a sweep's folder, to compare runs).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

#: train_log.csv columns that are not prefixed train_/val_, and their tags.
TAGS = {"lr": "lr", "seconds": "time/epoch_seconds"}


def tag_of(column: str) -> str:
    """``train_total`` -> ``train/total``, ``val_uar`` -> ``val/uar``, ``lr`` -> ``lr``."""
    for prefix in ("train_", "val_", "test_"):
        if column.startswith(prefix):
            return f"{prefix[:-1]}/{column[len(prefix) :]}"
    return TAGS.get(column, column)


class TensorBoardLog:
    """Writes a run's per-epoch rows and final metrics as TensorBoard scalars (rank 0 only)."""

    def __init__(self, out_dir: str | Path, resume_after_epoch: int = 0):
        from torch.utils.tensorboard import SummaryWriter  # tensorboard's import costs ~1 s: only runs that log pay

        purge = resume_after_epoch + 1 if resume_after_epoch else None
        self.writer = SummaryWriter(log_dir=str(out_dir), purge_step=purge)

    @classmethod
    def open(cls, out_dir: str | Path, enabled: bool, resume_after_epoch: int = 0) -> TensorBoardLog | None:
        return cls(out_dir, resume_after_epoch) if enabled else None

    def epoch(self, row: dict) -> None:
        """One train_log.csv row (its ``epoch`` is the step)."""
        step = int(row["epoch"])
        for column, value in row.items():
            if column != "epoch" and _is_number(value):
                self.writer.add_scalar(tag_of(column), float(value), step)
        self.writer.flush()

    def test(self, metrics: dict, step: int) -> None:
        """Final test metrics (a teacher's video-missing ones as ``test_video_missing/...``)."""
        for key, value in metrics.items():
            if isinstance(value, dict):
                for k, v in value.items():
                    if _is_number(v):
                        self.writer.add_scalar(f"test_{key}/{k}", float(v), step)
            elif _is_number(value) and key != "best_epoch":
                self.writer.add_scalar(f"test/{key}", float(value), step)
        self.writer.flush()

    def projector(self, emb, labels: list[str], step: int) -> None:
        """The test embeddings for TensorBoard's projector tab, each labelled with its class."""
        self.writer.add_embedding(
            np.asarray(emb, dtype=np.float32),
            metadata=[str(x) for x in labels],
            tag="test_embeddings",
            global_step=step,
        )
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)

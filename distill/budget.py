"""The one budget rule every run trains under, and the record of how each run's training ended.

Every run, teacher or student, trains until its validation score (the selection metric,
``train.select``) has not improved for ``train.patience`` epochs, or until ``train.epochs``, the
cap, whichever comes first. ``train.min_steps`` keeps patience from ending a run before it has
taken that many optimiser steps: with few labels an epoch is one or two steps, and a dozen steps
judge a teacher on noise. The rule is fixed before a run starts and is the same for every
method, so no method gets a schedule tuned to it. The cap is meant to be rarely reached: a run
that stops at the cap may still have been improving, and the report counts those runs
(``results.md``), so a budget too small for a sweep shows.

A run records how it ended in ``stopping.json`` (:class:`Stopping`), written when training ends
and before evaluation. The state it is derived from (the best epoch, the steps taken, the epochs since an
improvement) is in ``last.pt``, so a run killed and resumed stops where it would have.
"""

from __future__ import annotations

import json
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

from common.files import atomic_write_text

EARLY = "early"  # patience ran out (also when that happened at the cap's epoch)
CAP = "cap"  # train.epochs ended the run while the validation score might still have improved


def patience_spent(bad_epochs: int, patience: int, steps: int = 0, min_steps: int = 0) -> bool:
    """Early stopping's test: ``patience`` epochs without improvement (``patience`` 0: never), once
    the run has taken ``min_steps`` optimiser steps."""
    return bool(patience) and bad_epochs >= patience and steps >= min_steps


@dataclass(frozen=True)
class Stopping:
    """How a run's training ended (``stopping.json``)."""

    stopped: str  # EARLY or CAP
    epochs: int  # epochs trained
    best_epoch: int  # the epoch best.pt is from
    max_epochs: int  # train.epochs: the cap
    patience: int  # train.patience (0: no early stopping, every run ends at the cap)
    select: str  # the validation metric that picked the best epoch and drove the patience
    steps: int = 0  # optimiser steps taken (per process under DDP); 0 in records written before it was kept
    min_steps: int = 0  # train.min_steps: no early stop before this many steps

    @property
    def hit_cap(self) -> bool:
        return self.stopped == CAP

    @classmethod
    def of(
        cls,
        *,
        epochs: int,
        best_epoch: int,
        bad_epochs: int,
        max_epochs: int,
        patience: int,
        select: str,
        steps: int = 0,
        min_steps: int = 0,
    ) -> Stopping:
        stopped = EARLY if patience_spent(bad_epochs, patience, steps, min_steps) else CAP
        return cls(stopped, epochs, best_epoch, max_epochs, patience, select, steps, min_steps)

    def write(self, path: str | Path) -> None:
        atomic_write_text(path, json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, path: str | Path) -> Stopping | None:
        """The record at ``path``; None when the run has none (trained before it was written) or it is unreadable."""
        try:
            raw = json.loads(Path(path).read_text())
            return cls(**{f.name: raw[f.name] for f in fields(cls) if f.name in raw or f.default is MISSING})
        except (OSError, ValueError, KeyError, TypeError):
            return None

"""A run as one object: the directory a teacher or student run lives in, the data it was trained
on, and how a student's config derives from its teacher's.

:class:`RunDir` is the only place that names a run's files; every writer and reader (the
trainer, evaluation, targets, the sweep, inference, export, the report) asks it. Its network
loads from the run alone (config + best checkpoint: weights and input-normalisation statistics),
without a cache or a trainer. :class:`RunData` is what a run derives from its cache and data
config; :func:`load_run` puts a finished run's best network next to it for evaluation.

The report reads run directories through :class:`RunDir` and must not pay for importing torch, so
this module imports the training stack only inside the functions that need it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from common.files import atomic_write_text
from distill.methods import METHODS

if TYPE_CHECKING:
    import torch

    from distill.config import DataConfig, RunConfig
    from distill.data.dataset import Grid, GridDataset, Labels
    from distill.models import DistillNetwork

SPLITS = ("train", "val", "test")


def _file(name: str) -> property:
    """A read-only attribute: the path of the run's file ``name``."""
    return property(lambda self: self.path / name, doc=f"``{name}`` in the run directory")


@dataclass(frozen=True)
class RunDir:
    """A run directory and the names of everything in it (docs/architecture.md lists them).

    The TensorBoard event files are written into the directory itself (:attr:`tensorboard`), so
    ``tensorboard --logdir`` on a sweep's folder shows every run.
    """

    path: Path  # str or PathLike accepted

    CONFIG: ClassVar[str] = "config.yaml"  # the resolved config: the run is fully described by it
    BEST: ClassVar[str] = "best.pt"  # weights (+ normaliser statistics) of the best val epoch, its meta
    LAST: ClassVar[str] = "last.pt"  # full training state after the last completed epoch (resume)
    TRAIN_LOG: ClassVar[str] = "train_log.csv"  # one row per epoch: train terms, val metrics, lr, seconds
    METRICS: ClassVar[str] = "metrics.json"  # test metrics of the best checkpoint; present = finished
    TARGETS: ClassVar[str] = "targets.h5"  # teacher: its outputs on every grid cell (distill.train.targets)
    TRAIN_IDS: ClassVar[str] = "train_ids.txt"  # teacher: its training items, for the students' leakage check
    VERIFICATION: ClassVar[str] = "verification.json"  # speaker: the val EER operating point
    COHORT: ClassVar[str] = "cohort.npy"  # speaker: the AS-norm cohort of training speakers
    CURVES: ClassVar[str] = "curves.png"
    DET: ClassVar[str] = "det.png"  # speaker
    CONFUSION: ClassVar[str] = "confusion.png"  # emotion (and any classification task)
    CONFUSION_CSV: ClassVar[str] = "confusion_matrix.csv"
    EMBEDDINGS: ClassVar[str] = "embeddings.png"
    ERROR: ClassVar[str] = "error.txt"  # a sweep's failed run: the traceback

    def __post_init__(self):
        object.__setattr__(self, "path", Path(self.path))  # accept a str or any os.PathLike

    def __fspath__(self) -> str:
        return str(self.path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    # -- the files (paths)
    config_file = _file(CONFIG)
    best = _file(BEST)
    last = _file(LAST)
    train_log = _file(TRAIN_LOG)
    metrics = _file(METRICS)
    targets = _file(TARGETS)
    train_ids = _file(TRAIN_IDS)
    verification = _file(VERIFICATION)
    cohort = _file(COHORT)
    curves = _file(CURVES)
    det = _file(DET)
    confusion = _file(CONFUSION)
    confusion_csv = _file(CONFUSION_CSV)
    embeddings = _file(EMBEDDINGS)
    error = _file(ERROR)

    @property
    def tensorboard(self) -> Path:
        """Where the TensorBoard event files go: the run directory itself."""
        return self.path

    # -- state
    @property
    def started(self) -> bool:
        """Holds a training state to resume (``last.pt``)."""
        return self.last.is_file()

    @property
    def finished(self) -> bool:
        """Evaluated: ``metrics.json`` is written last, so its presence means the run is complete."""
        return self.metrics.is_file()

    def config(self) -> RunConfig:
        from distill.config import ConfigError, load_config

        if not self.config_file.is_file():
            raise ConfigError(
                f"{self.path} is not a run directory (no {self.CONFIG}): give the --out of a `distill teacher` "
                "or `distill student` run"
            )
        return load_config(self.config_file)

    def write_config(self, cfg: RunConfig) -> None:
        from distill.config import dump_config

        dump_config(cfg, self.config_file)

    def write_metrics(self, metrics: dict) -> None:
        """Atomically: a sweep takes a present ``metrics.json`` for a finished run."""
        atomic_write_text(self.metrics, json.dumps(metrics, indent=2) + "\n")

    def load_network(self, device: str | torch.device = "cpu") -> TrainedNetwork:
        """The best network (eval mode, on ``device``) with its config, checkpoint meta and epoch.

        Sized from what the run saved (its config, and the meta's ``n_mels`` and ``labels``), so it
        loads without the cache it was trained on; its input normalisers come back with the weights.
        """
        from distill.checkpoint import load_checkpoint
        from distill.config import ConfigError
        from distill.models import build_network

        cfg = self.config()
        state = load_checkpoint(self.best, map_location=device)
        meta = state["meta"]
        net = build_network(
            cfg.model,
            role=cfg.role,
            setting=cfg.data.setting,
            n_mels=meta["n_mels"],
            n_classes=len(meta["labels"]),
            face_dim=int(meta.get("face_dim", 512)),
        )
        try:
            net.load_state_dict(state["model"])
        except RuntimeError as exc:
            if not any(".norm." in key for key in state["model"]):
                raise ConfigError(
                    f"{self.path} was trained before input normalisation (its {self.BEST} has no "
                    "normaliser statistics): retrain it"
                ) from exc
            raise
        return TrainedNetwork(net.to(device).eval(), cfg, meta, int(state.get("epoch", 0)))


@dataclass
class TrainedNetwork:
    """A run's best network and what it was trained as: config, checkpoint meta, the epoch it is from."""

    net: DistillNetwork
    config: RunConfig
    meta: dict[str, Any]
    epoch: int


# --------------------------------------------------------------------------- data of a run


@dataclass
class RunData:
    """Everything a run derives from the cache and the data config, once."""

    cache: object
    grid: Grid
    labels: Labels
    ids: dict[str, np.ndarray]  # split -> cache rows, ascending (cache order); arrays, so workers share them
    y: dict[str, np.ndarray]  # split -> class ids (-1: class unseen in training)
    eval_grid: Grid  # val/test evaluation: `grid`, or whole utterances (nonseq, data.eval_span=utterance)
    config: DataConfig  # what the splits, grids, labels and trials were derived from

    @classmethod
    def load(cls, cfg: RunConfig, cache) -> RunData:
        from distill.config import ConfigError
        from distill.data.dataset import Grid, Labels, assign_splits

        index = cache.index
        if len(index) == 0:
            raise ConfigError(
                f"cache {cache.dir} holds no items: extract into it first (`extract run`; its failures.csv says "
                "why items failed)"
            )
        splits = assign_splits(index, cfg.data)
        labels = Labels.from_train(index, splits, cfg.data.label)
        ids = {s: np.flatnonzero((splits == s).to_numpy()) for s in SPLITS}
        for split in SPLITS:
            if not len(ids[split]):
                raise ConfigError(empty_split_message(split, splits, cache.dir, index.columns, cfg.data))
        y = {s: labels.encode(index[cfg.data.label].iloc[ids[s]]) for s in ids}
        return cls(cache, Grid.from_config(cfg.data), labels, ids, y, Grid.for_eval(cfg.data), cfg.data)

    def dataset(
        self, split: str, *, faces: bool, train: bool, seed: int = 0, targets=None, augment=None
    ) -> GridDataset:
        from distill.data.dataset import GridDataset

        grid = self.grid if train else self.eval_grid
        return GridDataset(
            self.cache,
            self.ids[split],
            self.y[split],
            grid,
            faces=faces,
            train=train,
            seed=seed,
            targets=targets,
            augment=augment,
        )

    def utt_ids(self, *splits: str) -> list[str]:
        """Utt ids of the items of these splits (for records and checks, not the loading path)."""
        return [u for split in splits for u in self.cache.utt_ids(self.ids[split])]

    def all_items(self, *, faces: bool) -> GridDataset:
        """Every item of the cache (all splits), for teacher targets."""
        from distill.data.dataset import GridDataset

        rows = np.concatenate([self.ids[s] for s in SPLITS])
        y = np.concatenate([self.y[s] for s in SPLITS])
        return GridDataset(self.cache, rows, y, self.grid, faces=faces, train=False)

    def label_of(self, utt_ids: list[str]) -> np.ndarray:
        """The items' own label values (strings), also for classes unseen in training."""
        return self.cache.index.loc[utt_ids, self.config.label].astype(str).to_numpy()


def empty_split_message(split: str, splits, cache_dir, columns, data: DataConfig) -> str:
    """Why a split came out empty and what to do: the split is fixed by the cache's labels, so the
    remedy is another split column, another fold, or a manifest with that split extracted anew."""
    counts = ", ".join(f"{k} {v}" for k, v in splits.value_counts().sort_index().items()) or "no items"
    text = f"the {split} split of cache {cache_dir} is empty"
    if data.fold_column:
        return (
            f"{text} (fold {data.fold} over data.fold_column {data.fold_column!r} gives {counts}): choose "
            "another data.fold_column, or data.n_folds so that every fold holds items"
        )
    if data.split_column not in columns:
        return (
            f"{text} (the seeded {data.task} split gives {counts}): give the manifest a split column "
            "(`python -m manifests RECIPE ROOT --split KIND`) and extract it into a new --cache-root"
        )
    return (
        f"{text}: its {data.split_column!r} column holds {counts}. A cache keeps the labels it was extracted "
        f"with, so write a manifest with {split} rows and extract it into a new --cache-root (VoxCeleb2: "
        "`python -m manifests voxceleb2 ROOT --out M --val-speakers 0.02` carves a speaker-disjoint val split; "
        "other recipes: --split KIND), or set data.split_column to a column of the cache that holds "
        "train/val/test rows"
    )


# --------------------------------------------------------------------------- students of a teacher

#: The sections a student takes from its teacher: what the targets were computed on (task, setting,
#: grid, split, trial list), the network sizes, and how test scores are normalised (comparable metrics).
INHERITED = ("data", "model", "eval")


def student_config(
    teacher: RunConfig | None,
    method: str,
    overrides: list[str] | dict | None = None,
    *,
    teacher_dir: str | Path | None = None,
    config_file: str | Path | None = None,
    shared: dict | None = None,
) -> RunConfig:
    """The config of a ``method`` student of ``teacher`` (run at ``teacher_dir``): the one rule for
    the CLI and for sweeps.

    Defaults <- ``shared`` (a sweep's ``base``) <- the teacher's ``data``, ``model`` and ``eval``
    sections and cache <- ``config_file`` <- role, method and teacher <- ``overrides`` (``key=value`` strings or a
    dotted dict). Whatever reached the teacher's data (a ``--set data.split_seed=...``, a sweep's
    ``teacher: {data: ...}``) reaches its students too, so they see the teacher's split and grid.
    Without a teacher (``method`` must then need none) the student starts from the defaults.
    """
    from distill.config import load_config, merge

    require_teacher(method, teacher)
    base = dict(shared or {})
    if teacher is not None:
        tree = teacher.to_dict()
        base = merge(base, {**{k: tree[k] for k in INHERITED}, "cache": teacher.cache})
    own = {
        "role": "student",
        "distill.method": method,
        "distill.teacher": None if teacher_dir is None else str(teacher_dir),
    }
    if isinstance(overrides, dict):
        pairs: list[str] | dict = {**own, **overrides}
    else:
        pairs = [f"{k}={'null' if v is None else v}" for k, v in own.items()] + list(overrides or [])
    return load_config(config_file, pairs, base=base)


def require_teacher(method: str, teacher: RunConfig | str | os.PathLike | None) -> RunConfig | None:
    """The one check of a student's teacher, for the CLI, a sweep's plan and the trainer: whether
    ``method`` needs one, that it is a teacher run and, given as a run directory, a finished one
    (its targets and metrics written). Returns the teacher's config (None without a teacher)."""
    from distill.config import ConfigError

    if method not in METHODS:
        raise ConfigError(f"method {method!r} is not one of {', '.join(METHODS)}")
    if teacher is None:
        if METHODS[method].needs_teacher:
            raise ConfigError(f"method {method} needs a teacher run: --teacher RUN_DIR (config: distill.teacher)")
        return None
    run = None
    if isinstance(teacher, (str, os.PathLike)):
        run = RunDir(teacher)
        teacher = run.config()
    if teacher.role != "teacher":
        where = f" {run}" if run else ""
        raise ConfigError(
            f"a student's teacher must be a teacher run; {where or 'this config'} is a {teacher.role} run: "
            "give --teacher the --out of a `distill teacher` run"
        )
    if run is not None and not run.finished:
        raise ConfigError(
            f"teacher {run} has not finished (no {RunDir.METRICS}): rerun its `distill teacher ... --resume`, "
            "or wait for it"
        )
    return teacher

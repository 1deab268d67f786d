"""One training run, teacher or student: epochs, checkpoints, resume, selection on val, test metrics.

The loop is the same for every role and method; what differs lives in :class:`Objective` (which
loss terms) and in what a batch carries (faces for a teacher, cached teacher targets for a
distilling student). Reproducibility rests on three things: every random draw of an epoch is a
function of (seed, epoch) (sampler order, grid cells), the global RNG states are checkpointed at
each epoch end, and a resumed run restarts from the last completed epoch; so a run killed
mid-epoch and resumed ends with the same metrics as one that never stopped.
"""

from __future__ import annotations

import csv
import gc
import json
import math
import random
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler
from tqdm import tqdm

from common.files import atomic_output, sha256_file
from distill.budget import Stopping, patience_spent
from distill.checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from distill.config import ConfigError, RunConfig
from distill.data.augment import build_augmenter
from distill.data.dataset import EpochTaggedSampler, GridDataset, collate
from distill.data.transfer import TRANSFER
from distill.eval.evaluate import LOWER_IS_BETTER, build_trials, selection_metric, validation_scores
from distill.eval.predict import Evaluator, Predictions, eval_batch_size
from distill.eval.run_eval import evaluate_run
from distill.methods import TEACHER_OUTPUTS
from distill.models import build_network
from distill.precision import Precision
from distill.run import RunData, RunDir, require_teacher
from distill.train.distributed import DistEnv, all_reduce_sum, barrier, broadcast_flag, init_distributed, shutdown
from distill.train.input_stats import fit_input_norms
from distill.train.objective import LOG_COUNTS, Objective, StepModule
from distill.train.targets import (
    TARGET_FIELDS,
    TargetStore,
    cache_identity,
    check_heldout,
    compute_targets,
    open_targets,
    targets_key,
    write_targets,
    write_train_ids,
)
from distill.train.tensorboard import TensorBoardLog
from extract import open_cache


class NonFiniteLossError(RuntimeError):
    """The loss became NaN/inf; the run stops and keeps its last good checkpoint."""


# --------------------------------------------------------------------------- teachers for students


class CachedTeacher:
    """Targets read from the teacher run's targets.h5 by the dataset (the normal path)."""

    live = False

    def __init__(self, store: TargetStore, target: str = "fused"):
        self.store, self.levels = store, TARGET_FIELDS[target]  # student level -> stored array
        self.dims = {k: int(store.shapes[f][-1]) for k, f in self.levels.items() if f in store.shapes}

    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        return _as_levels({k[2:]: v for k, v in batch.items() if k.startswith("t_")}, self.levels)


class LiveTeacher:
    """The teacher network run on every batch (the slow path; kept for the benchmark's comparison)."""

    live = True

    def __init__(self, teacher_dir: Path, device: torch.device, target: str = "fused"):
        self.net = RunDir(teacher_dir).load_network(device).net
        self.levels = TARGET_FIELDS[target]
        dims = {**self.net.level_dims, "audio": self.net.encoder.audio.out_dim}
        self.dims = {k: dims[f] for k, f in self.levels.items() if f in dims and k in self.net.level_dims}

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict[str, torch.Tensor]:
        out = self.net(batch["fbank"], face=batch["face"], face_mask=batch["face_mask"], seg_mask=batch.get("seg_mask"))
        return _as_levels({**out.levels(), "audio": out.audio, "logits": out.logits}, self.levels)


def _as_levels(fields: dict[str, torch.Tensor], levels: dict[str, str]) -> dict[str, torch.Tensor]:
    """Teacher outputs by the student level that imitates them (``distill.target``), plus the logits."""
    out = {k: fields[f] for k, f in levels.items() if fields.get(f) is not None}
    return {**out, "logits": fields["logits"]} if "logits" in fields else out


# --------------------------------------------------------------------------- the trainer


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class Trainer:
    """Trains one run into ``out_dir``; rank 0 writes everything. Evaluation of the best weights at
    the end is :func:`distill.eval.run_eval.evaluate_run`'s, which needs no trainer."""

    def __init__(
        self,
        cfg: RunConfig,
        out_dir: str | Path,
        *,
        env: DistEnv | None = None,
        live_teacher: bool = False,
        progress: bool = True,
    ):
        if cfg.cache is None:
            raise ConfigError("no cache given (--cache or cache: in the config)")
        self.cfg, self.run = cfg, RunDir(out_dir)
        self.env = env or init_distributed(cfg.train.device)
        self.device = self.env.device
        self.progress = progress and self.env.is_main
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        seed_everything(cfg.train.seed)
        self.cache = open_cache(cfg.cache)
        self.data = RunData.load(cfg, self.cache)
        self.select, self.val_trials = self._selection()
        self.is_teacher = cfg.role == "teacher"
        self.teacher = self._teacher_source(live_teacher)
        # What it trains on: a teacher, and a student that learns only from labels, the labelled items;
        # a student with a label-free term (distill.methods) the transfer set as well (distill.data.transfer).
        learns_unlabelled = self.teacher is not None and cfg.distill.spec.learns_without_labels
        self.train_splits = ("train", TRANSFER) if learns_unlabelled and len(self.data.ids[TRANSFER]) else ("train",)
        self.net = build_network(
            cfg.model,
            role=cfg.role,
            setting=cfg.data.setting,
            n_mels=self.cache.n_mels,
            n_classes=len(self.data.labels.names),
            face_dim=self.cache.face_dim,
        ).to(self.device)
        teacher_dims = self.teacher.dims if self.teacher else None
        face_dim = self.net.encoder.visual.face_dim if self.is_teacher else None
        audio_dim = self.net.encoder.audio.out_dim if self.is_teacher else None
        self.objective = Objective(
            cfg.distill,
            cfg.role,
            self.net.level_dims,
            teacher_dims,
            face_dim=face_dim,
            audio_dim=audio_dim,
            n_classes=self.net.n_classes,
        ).to(self.device)
        self.step_module: nn.Module = StepModule(self.net, self.objective)
        if self.env.distributed:
            self.step_module = DistributedDataParallel(
                self.step_module, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        self.compiled = compiles(cfg.train.compile, self.device)
        if self.compiled:
            # In place, after the DDP wrap (so DDP's bucketing splits the graph): the module keeps its
            # type and every state_dict key; evaluation and targets run ``self.net`` eagerly.
            self.step_module.compile()
        self.optimizer = self._optimizer()
        self.scheduler = self._scheduler()
        self.precision = Precision.of(cfg.train.amp, self.device, cfg.train.amp_dtype)
        self.evaluator = Evaluator(self.net, self.precision, eval_batch_size(cfg.data), cfg.data.num_workers)
        self.scaler = self.precision.grad_scaler()
        self.epoch = 0  # epochs completed
        self.best: dict = {"metric": -math.inf, "epoch": 0}
        self.bad_epochs = 0
        self.steps = 0  # optimiser steps taken: train.min_steps holds early stopping back until enough
        self.history: list[dict] = []
        self.tb: TensorBoardLog | None = None  # opened by fit() on rank 0

    # -- construction helpers
    def _warn_without_faces(self) -> None:
        """A teacher on a cache without a single found face is an audio-only model under another
        name: say so before hours of training, not after a student fails to gain anything."""
        found, frames = self.cache.count_faces_found()
        if found == 0:
            recon = "; distill.face_recon has nothing to reconstruct" if self.cfg.distill.face_recon else ""
            warnings.warn(
                f"cache {self.cache.dir}: no face found in any item ({frames} face frames sampled), so the "
                f"teacher trains on audio only and has no privileged information to pass on{recon}",
                stacklevel=3,
            )

    def _selection(self) -> tuple[str, pd.DataFrame | None]:
        """The val metric that picks the best checkpoint, and the val trials when it is ``eer``."""
        data = self.cfg.data
        try:
            select = selection_metric(self.cfg.train.select, data.task, self.data.y["val"])
            trials = (
                build_trials(self.cache.index, self.data.utt_ids("val"), data.label, None) if select == "eer" else None
            )
        except ValueError as exc:  # e.g. a val split with one utterance per speaker: no target trial
            raise ConfigError(f"model selection by {self.cfg.train.select}: {exc}") from exc
        if trials is not None and trials["label"].nunique() < 2:
            raise ConfigError(
                "model selection by eer needs target and non-target val trials: at least two val "
                "speakers, one of them with two utterances (VoxCeleb2: a larger --val-speakers in "
                "`python -m manifests voxceleb2`), or set train.select=loss"
            )
        return select, trials

    def _teacher_source(self, live: bool):
        d = self.cfg.distill
        method = d.spec
        if self.is_teacher or not method.needs_teacher:
            return None
        require_teacher(d.method, d.teacher)
        heldout = self.data.utt_ids("val", "test")
        unlabelled = self.data.utt_ids(TRANSFER)  # their labels are hidden from this run: the teacher's too
        if live:
            check_heldout(d.teacher, heldout, unlabelled=unlabelled)
            return LiveTeacher(Path(d.teacher), self.device, d.target)
        levels = TARGET_FIELDS[d.target]  # the stored array each embedding level reads
        fields = tuple(levels.get(f, f) for f in TEACHER_OUTPUTS if f in method.reads)
        store = open_targets(
            d.teacher,
            cache_identity(self.cache),
            self.data.grid,
            self.data.labels.names,
            fields,
            heldout=heldout,
            unlabelled=unlabelled,
        )
        return CachedTeacher(store, d.target)

    def _optimizer(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        params = self.step_module.parameters()
        if t.optimizer == "sgd":
            return torch.optim.SGD(params, lr=t.lr, momentum=0.9, weight_decay=t.weight_decay)
        cls = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        return cls(params, lr=t.lr, weight_decay=t.weight_decay)

    def _scheduler(self):
        t = self.cfg.train
        if t.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(self.optimizer, T_max=t.epochs, eta_min=t.lr * 0.01)
        if t.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(self.optimizer, step_size=max(1, t.epochs // 3), gamma=0.3)
        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda _: 1.0)

    def train_dataset(self) -> GridDataset:
        faces = self.is_teacher or bool(self.teacher and self.teacher.live)
        targets = self.teacher.store if isinstance(self.teacher, CachedTeacher) else None
        augment = build_augmenter(self.cfg.augment, self.cache)
        if augment is not None and self.teacher and self.teacher.live:  # its targets would be of the augmented cell
            raise ConfigError(
                "augmentation needs cached teacher targets (computed on clean cells), not a live teacher: "
                "train on the teacher's targets file, or turn augmentation off"
            )
        return self.data.dataset(
            self.train_splits, faces=faces, train=True, seed=self.cfg.train.seed, targets=targets, augment=augment
        )

    def train_loader(self, dataset: GridDataset) -> tuple[DataLoader, DistributedSampler]:
        # DistributedSampler with one replica is a seeded per-epoch permutation: one code path for both.
        sampler = DistributedSampler(
            dataset, num_replicas=self.env.world_size, rank=self.env.rank, shuffle=True, seed=self.cfg.train.seed
        )
        bs, workers = self.cfg.data.batch_size, self.cfg.data.num_workers
        # Indices carry their epoch, so workers can persist across epochs (no restart cost per epoch).
        loader = DataLoader(
            dataset,
            batch_size=bs,
            sampler=EpochTaggedSampler(sampler),
            num_workers=workers,
            collate_fn=collate,
            drop_last=len(sampler) > bs,  # no size-1 batch for BatchNorm
            pin_memory=self.device.type == "cuda",
            worker_init_fn=_worker_init,
            persistent_workers=workers > 0,
        )
        return loader, sampler

    # -- state
    def state(self) -> dict:
        return {
            "model": self.net.state_dict(),
            "objective": self.objective.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epoch": self.epoch,
            "best": dict(self.best),
            "bad_epochs": self.bad_epochs,
            "steps": self.steps,
            "history": list(self.history),
            "rng": rng_state(),
            "meta": self.meta(),
        }

    def meta(self) -> dict:
        return {
            "role": self.cfg.role,
            "labels": list(self.data.labels.names),
            "n_mels": self.cache.n_mels,
            "face_dim": self.cache.face_dim,
            "cache_id": cache_identity(self.cache),
            "cache_config": json.dumps(self.cache.config, sort_keys=True),
            "setting": self.cfg.data.setting,
            "task": self.cfg.data.task,
        }

    def load_state(self, state: dict) -> None:
        if state["meta"]["cache_id"] != cache_identity(self.cache):
            raise ConfigError(
                f"cannot resume: the checkpoint was trained on cache {state['meta']['cache_id']}, "
                f"this run points at cache {cache_identity(self.cache)}: give --cache the run's own cache, or "
                "train into a new --out"
            )
        self.net.load_state_dict(state["model"])
        self.objective.load_state_dict(state["objective"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch, self.best, self.bad_epochs = state["epoch"], dict(state["best"]), state["bad_epochs"]
        self.steps = state.get("steps", 0)  # checkpoints from before steps were kept: counted from here
        self.history = list(state["history"])
        set_rng_state(state["rng"])

    def resume(self) -> bool:
        """Continue from last.pt if there is one; False when starting fresh."""
        if not self.run.started:
            return False
        self.load_state(load_checkpoint(self.run.last, map_location=self.device))
        return True

    # -- the loop
    def fit(self) -> dict:
        """Train the remaining epochs, then evaluate the best checkpoint; returns metrics (rank 0)."""
        if self.env.is_main:
            self.run.path.mkdir(parents=True, exist_ok=True)
            self.run.write_config(self.cfg)
            if self.is_teacher:
                self._warn_without_faces()
            self.tb = TensorBoardLog.open(self.run.tensorboard, self.cfg.train.tensorboard, self.epoch)
        # Input normalisation from the training split, once (a resumed run restored it with the weights).
        fit_input_norms(self.net, self.cache, self.data.utt_ids(*self.train_splits), self.env)
        dataset = self.train_dataset()
        loader, sampler = self.train_loader(dataset)
        val = self.data.dataset("val", faces=self.is_teacher, train=False)
        stop = self.patience_spent()  # resumed after patience ran out: done
        while self.epoch < self.cfg.train.epochs and not stop:
            epoch = self.epoch + 1
            started = time.perf_counter()
            sampler.set_epoch(epoch)
            losses = self.train_epoch(loader, epoch)
            lr = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            self.epoch = epoch
            if self.env.is_main:
                stop = self.end_epoch(epoch, losses, val, lr, time.perf_counter() - started)
            stop = broadcast_flag(self.env, stop)
            barrier(self.env)
        del loader  # persistent loader workers end here, not at interpreter exit
        self.leave_process_group()
        if not self.env.is_main:
            return {}
        self.stopping().write(self.run.stopping)
        return self.finish()

    def stopping(self) -> Stopping:
        """How training ended, under the budget rule (distill.budget): early, or at the epoch cap."""
        t = self.cfg.train
        return Stopping.of(
            epochs=self.epoch,
            best_epoch=self.best["epoch"],
            bad_epochs=self.bad_epochs,
            max_epochs=t.epochs,
            patience=t.patience,
            select=self.select,
            steps=self.steps,
            min_steps=t.min_steps,
        )

    def patience_spent(self) -> bool:
        t = self.cfg.train
        return patience_spent(self.bad_epochs, t.patience, self.steps, t.min_steps)

    def leave_process_group(self) -> None:
        """End the distributed part of the run: every rank at once, before rank 0 evaluates alone.

        The DDP wrapper (its reducer holds the process group and gloo's work objects) is released
        and collected first, so nothing that can still call into Python from a gloo thread outlives
        ``destroy_process_group``; such a thread reaching for the GIL during interpreter shutdown
        is what aborts a rank with ``terminate called without an active exception``. Evaluation,
        targets and plots need no collective, so rank 0 does them after the group is gone.
        """
        if not self.env.distributed:
            return
        barrier(self.env)
        if isinstance(self.step_module, DistributedDataParallel):
            self.step_module = self.step_module.module
        gc.collect()
        shutdown()

    def train_epoch(self, loader: DataLoader, epoch: int) -> dict[str, float]:
        self.step_module.train()
        sums: dict[str, float] = {}
        weights: dict[str, float] = {}  # per logged term: the items its batch means were over
        clip = self.cfg.train.grad_clip
        bar = tqdm(
            loader,
            desc=f"{self.cfg.role} epoch {epoch}/{self.cfg.train.epochs}",
            disable=not self.progress,
            leave=False,
        )
        for step, batch in enumerate(bar, start=1):
            batch = {
                k: v.to(self.device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
            }
            teacher = self.teacher(batch) if self.teacher else {}
            with self.precision.autocast():
                terms = self.step_module(self._inputs(batch), teacher)
            total = terms["total"]
            if not _all_finite(self.env, total):
                raise NonFiniteLossError(
                    f"non-finite loss ({total.item()}) at epoch {epoch}, step {step}; batch items: "
                    f"{', '.join(batch['utt_id'])}. Stopped; the last good checkpoint ({RunDir.LAST}, epoch "
                    f"{self.epoch}) is kept"
                )
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.step_module.parameters(), clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.steps += 1
            n = len(batch["utt_id"])
            counts = terms.pop(LOG_COUNTS, {})  # a batch with transfer items: label terms are over its labelled ones
            for k, v in terms.items():
                w = float(counts[k]) if k in counts else n
                sums[k] = sums.get(k, 0.0) + float(v.detach()) * w
                weights[k] = weights.get(k, 0.0) + w
            bar.set_postfix(loss=f"{float(total.detach()):.3f}")
        keys = sorted(sums)
        reduced = all_reduce_sum(
            self.env, torch.tensor([sums[k] for k in keys] + [weights[k] for k in keys], dtype=torch.float64)
        )
        n = len(keys)  # a term that no labelled item reached this epoch (weight 0) is not logged
        return {k: float(reduced[i] / reduced[n + i]) for i, k in enumerate(keys) if reduced[n + i] > 0}

    def _inputs(self, batch: dict) -> dict:
        keep = ("fbank", "label", "seg_mask") + (("face", "face_mask") if self.is_teacher else ())
        return {k: batch[k] for k in keep if k in batch}

    def end_epoch(self, epoch: int, losses: dict, val: GridDataset, lr: float, seconds: float) -> bool:
        """Validate, log, checkpoint (rank 0); True when patience says stop."""
        key = self.select
        scores = validation_scores(self.predict(val), self.cfg.data.task, self.val_trials, self.cfg.data.costs)
        row = {
            "epoch": epoch,
            **{f"train_{k}": v for k, v in losses.items()},
            **{f"val_{k}": v for k, v in scores.items()},
            "lr": lr,
            "seconds": round(seconds, 3),
        }
        self.history.append(row)
        signed = -scores[key] if key in LOWER_IS_BETTER else scores[key]  # best["metric"]: higher is better
        improved = signed > self.best["metric"]
        if improved:
            self.best = {"metric": signed, "epoch": epoch}
            self.bad_epochs = 0
            save_checkpoint({"model": self.net.state_dict(), "meta": self.meta(), "epoch": epoch}, self.run.best)
        else:
            self.bad_epochs += 1
        save_checkpoint(self.state(), self.run.last)  # after BEST: a resume never lacks its best
        write_log(self.history, self.run.train_log)
        if self.tb:
            self.tb.epoch(row)
        return self.patience_spent()

    def predict(self, dataset: GridDataset, video: bool = True) -> Predictions:
        return self.evaluator.predict(dataset, video)

    # -- after training
    def finish(self) -> dict:
        """Targets of a teacher, then test metrics of the best checkpoint (+ video missing for a
        teacher) and plots. ``metrics.json`` is written last: a run holding it is finished, so a
        teacher killed while writing its targets is resumed, never taken for done by its students."""
        self.net.load_state_dict(load_checkpoint(self.run.best, map_location=self.device)["model"])
        if self.is_teacher:
            self.write_targets()
        result = evaluate_run(self.evaluator, self.data, self.run, best_epoch=self.best["epoch"], scoring=self.cfg.eval)
        if self.tb:
            self.tb.projector(result.test.emb, self.data.label_of(result.test.utt_ids), self.epoch)
            self.tb.test(result.metrics, self.epoch)
            self.tb.close()
        return result.metrics

    def write_targets(self) -> Path:
        items = self.data.all_items(faces=True)
        # Full precision: targets are every student's regression targets, stored as float32; autocast
        # would round them to bf16's 8 bits and make them depend on the device (docs/training.md).
        arrays = compute_targets(
            self.net,
            items,
            Precision(self.device),
            batch_size=eval_batch_size(self.cfg.data),
            num_workers=self.cfg.data.num_workers,
            progress=self.progress,
        )
        key = targets_key(
            sha256_file(self.run.best), cache_identity(self.cache), self.data.grid, self.data.labels.names
        )
        key["train_ids_sha256"] = write_train_ids(self.run.path, self.data.utt_ids("train"))
        return write_targets(self.run.targets, arrays, items, key)


def compiles(setting: str, device: torch.device) -> bool:
    """``train.compile``: ``on``, or ``auto`` on CUDA (where the step's many small kernels fuse)."""
    return setting == "on" or (setting == "auto" and device.type == "cuda")


def _all_finite(env: DistEnv, loss: torch.Tensor) -> bool:
    """Every rank's loss finite (all ranks stop together, nobody hangs in an all-reduce)."""
    bad = torch.tensor([0.0 if torch.isfinite(loss).item() else 1.0])
    return all_reduce_sum(env, bad).item() == 0


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)  # N loader workers x M threads would oversubscribe the cores


def write_log(history: list[dict], path: Path) -> None:
    """train_log.csv, rewritten whole each epoch (so a resumed run never holds rows twice)."""
    if not history:
        return
    columns = list(dict.fromkeys(k for row in history for k in row))
    with atomic_output(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(history)


def run_training(cfg: RunConfig, out_dir: str | Path, *, resume: bool = False, progress: bool = True) -> dict:
    """Train one run end to end (what the CLI calls); rank 0 returns the test metrics."""
    run = RunDir(out_dir)
    if not resume and run.started:
        raise ConfigError(
            f"{run} already holds a run ({RunDir.LAST}); pass --resume to continue it or choose another --out"
        )
    trainer = Trainer(cfg, run.path, progress=progress)
    if resume:
        trainer.resume()
    return trainer.fit()

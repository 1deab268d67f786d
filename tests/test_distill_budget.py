"""The budget rule: early stopping on the selection metric with patience, the epoch cap, the record of
how a run ended, and a resume that stops where the uninterrupted run would have."""

from __future__ import annotations

import csv
import dataclasses
import json

import pytest

from distill.budget import CAP, EARLY, Stopping
from distill.run import RunDir
from distill.testing import make_lupi_cache, tiny_config
from distill.train import trainer as train_module
from distill.train.trainer import Trainer, run_training

#: Scripted validation accuracy per epoch: best at epoch 2, then two epochs without improvement.
SCORES = [0.30, 0.50, 0.40, 0.45, 0.90, 0.95, 0.97, 0.99]


class Killed(RuntimeError):
    """Stands for SIGKILL: the process ends between two steps of the run."""


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_lupi_cache(tmp_path_factory.mktemp("budget") / "cache", n_classes=3, per_class=8, n_frames=70)


@pytest.fixture
def scripted(monkeypatch):
    """Validation returns SCORES in turn (the selection metric is accuracy here), without predicting."""
    calls = iter(SCORES)
    monkeypatch.setattr(train_module, "validation_scores", lambda *args, **kwargs: {"accuracy": next(calls)})
    monkeypatch.setattr(Trainer, "predict", lambda self, dataset, video=True: None)
    return monkeypatch


@pytest.fixture
def untested(scripted):
    """As ``scripted``, and no test evaluation after training (stopping.json is written before it)."""
    scripted.setattr(Trainer, "finish", lambda self: {})
    return scripted


def config(cache, **train):
    return tiny_config(cache, "student", **{f"train__{k}": v for k, v in train.items()})


def epochs_logged(run) -> list[int]:
    with open(RunDir(run).train_log) as fh:
        return [int(row["epoch"]) for row in csv.DictReader(fh)]


def ended(run) -> Stopping:
    """The run's stopping record without its step count (which the batch size sets)."""
    return dataclasses.replace(Stopping.read(RunDir(run).stopping), steps=0)


def test_patience_stops_the_run_and_records_how(cache, tmp_path, scripted):
    run_training(config(cache, epochs=8, patience=2), tmp_path / "r", progress=False)
    assert epochs_logged(tmp_path / "r") == [1, 2, 3, 4]
    assert ended(tmp_path / "r") == Stopping(EARLY, 4, 2, 8, 2, "accuracy")
    assert json.loads(RunDir(tmp_path / "r").metrics.read_text())["best_epoch"] == 2


def test_a_resumed_run_keeps_its_patience_count(cache, tmp_path, untested):
    original = Trainer.end_epoch

    def killed_after_epoch_3(self, epoch, *args):
        stop = original(self, epoch, *args)
        if epoch == 3:  # last.pt holds epoch 3: best 2, one epoch without improvement
            raise Killed
        return stop

    untested.setattr(Trainer, "end_epoch", killed_after_epoch_3)
    with pytest.raises(Killed):
        run_training(config(cache, epochs=8, patience=2), tmp_path / "r", progress=False)
    untested.setattr(Trainer, "end_epoch", original)
    run_training(config(cache, epochs=8, patience=2), tmp_path / "r", resume=True, progress=False)
    # one more epoch without improvement spends the patience: epoch 4, as without the kill
    assert epochs_logged(tmp_path / "r") == [1, 2, 3, 4]
    record = Stopping.read(RunDir(tmp_path / "r").stopping)
    assert record.stopped == EARLY and record.steps == 4  # one step an epoch, the 3 before the kill kept


def test_a_run_killed_after_its_patience_ran_out_trains_no_further(cache, tmp_path, scripted):
    def killed(self):
        raise Killed

    original = Trainer.finish
    scripted.setattr(Trainer, "finish", killed)
    with pytest.raises(Killed):
        run_training(config(cache, epochs=8, patience=2), tmp_path / "r", progress=False)
    scripted.setattr(Trainer, "finish", original)
    metrics = run_training(config(cache, epochs=8, patience=2), tmp_path / "r", resume=True, progress=False)
    assert epochs_logged(tmp_path / "r") == [1, 2, 3, 4] and metrics["best_epoch"] == 2
    assert ended(tmp_path / "r") == Stopping(EARLY, 4, 2, 8, 2, "accuracy")


@pytest.mark.parametrize("patience,cap,best", [(3, 3, 2), (0, 4, 2)])
def test_a_run_the_cap_ends_is_recorded_as_such(cache, tmp_path, untested, patience, cap, best):
    run_training(config(cache, epochs=cap, patience=patience), tmp_path / "r", progress=False)
    record = ended(tmp_path / "r")
    assert record == Stopping(CAP, cap, best, cap, patience, "accuracy") and record.hit_cap


def test_patience_spent_at_the_cap_counts_as_early(cache, tmp_path, untested):
    run_training(config(cache, epochs=4, patience=2), tmp_path / "r", progress=False)
    assert Stopping.read(RunDir(tmp_path / "r").stopping).stopped == EARLY


def test_min_steps_keeps_patience_from_ending_a_run_of_short_epochs(cache, tmp_path, monkeypatch):
    # best at epoch 2, then only worse: patience 2 would stop after epoch 4
    calls = iter([0.30, 0.50, 0.40, 0.45, 0.44, 0.43, 0.42, 0.41])
    monkeypatch.setattr(train_module, "validation_scores", lambda *args, **kwargs: {"accuracy": next(calls)})
    monkeypatch.setattr(Trainer, "predict", lambda self, dataset, video=True: None)
    monkeypatch.setattr(Trainer, "finish", lambda self: {})
    original = Trainer.train_epoch
    per_epoch: list[int] = []

    def counted(self, loader, epoch):
        before = self.steps
        losses = original(self, loader, epoch)
        per_epoch.append(self.steps - before)
        return losses

    monkeypatch.setattr(Trainer, "train_epoch", counted)
    # a floor of 5 epochs' steps and one more: patience may stop the run after epoch 6, not 4
    steps = 1  # this cache and tiny_config's batch size give one step an epoch (checked below)
    run_training(config(cache, epochs=8, patience=2, min_steps=5 * steps + 1), tmp_path / "r", progress=False)
    assert set(per_epoch) == {steps}
    assert epochs_logged(tmp_path / "r") == [1, 2, 3, 4, 5, 6]
    record = Stopping.read(RunDir(tmp_path / "r").stopping)
    assert record == Stopping(EARLY, 6, 2, 8, 2, "accuracy", steps=6 * steps, min_steps=5 * steps + 1)


def test_a_record_from_before_steps_were_kept_still_reads(tmp_path):
    old = {"stopped": "cap", "epochs": 30, "best_epoch": 9, "max_epochs": 30, "patience": 5, "select": "uar"}
    (tmp_path / "stopping.json").write_text(json.dumps(old))
    assert Stopping.read(tmp_path / "stopping.json") == Stopping(CAP, 30, 9, 30, 5, "uar", steps=0, min_steps=0)


def test_a_run_without_a_record_reads_as_none(tmp_path):
    assert Stopping.read(tmp_path / "stopping.json") is None
    (tmp_path / "stopping.json").write_text("{not json")
    assert Stopping.read(tmp_path / "stopping.json") is None

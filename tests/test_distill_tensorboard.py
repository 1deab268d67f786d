"""distill.train.tensorboard: event files next to train_log.csv, with every logged column, on by default."""

from __future__ import annotations

import pandas as pd
import pytest
from inference_runs import trained_runs

from distill.cli import build_parser, teacher_config_from_args
from distill.train.tensorboard import tag_of


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_every_train_log_column_is_a_scalar_per_epoch(tmp_path_factory):
    runs = trained_runs(tmp_path_factory)
    for run_dir in (runs.speaker, runs.emotion):
        assert list(run_dir.glob("events.out.tfevents.*"))
        log = pd.read_csv(run_dir / "train_log.csv")
        scalars = _scalars(run_dir)
        for column in log.columns.drop("epoch"):
            got = scalars[tag_of(column)]
            assert [s for s, _ in got] == log["epoch"].tolist(), column
            assert [v for _, v in got] == pytest.approx(log[column].tolist(), rel=1e-6), column
        assert "lr" in scalars and "train/total" in scalars
    speaker = _scalars(runs.speaker)
    assert len(speaker["train/total"]) == 2  # two epochs
    import json

    metrics = json.loads((runs.speaker / "metrics.json").read_text())
    assert speaker["test/eer"] == [(2, pytest.approx(metrics["eer"], rel=1e-6))]
    emotion = _scalars(runs.emotion)
    vm = json.loads((runs.emotion / "metrics.json").read_text())["video_missing"]
    assert emotion["test_video_missing/uar"][0][1] == pytest.approx(vm["uar"], rel=1e-6)


def test_tags():
    assert tag_of("train_total") == "train/total" and tag_of("val_uar") == "val/uar"
    assert tag_of("lr") == "lr" and tag_of("seconds") == "time/epoch_seconds"


def test_off_by_flag_or_config(tmp_path):
    from distill.testing import make_lupi_cache, tiny_config
    from distill.train.trainer import run_training

    args = build_parser().parse_args(["teacher", "--cache", "c", "--out", "o", "--no-tensorboard"])
    assert teacher_config_from_args(args).train.tensorboard is False
    args = build_parser().parse_args(["teacher", "--cache", "c", "--out", "o"])
    assert teacher_config_from_args(args).train.tensorboard is True  # on by default
    cache = make_lupi_cache(tmp_path / "cache", n_classes=3, per_class=8, n_frames=90)
    run_training(tiny_config(cache, "student", train__tensorboard=False), tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "train_log.csv").is_file()
    assert not list((tmp_path / "run").glob("events.out.tfevents.*"))


def test_a_resumed_run_continues_its_curves(tmp_path):
    from distill.testing import make_lupi_cache, tiny_config
    from distill.train.trainer import run_training

    cache = make_lupi_cache(tmp_path / "cache", n_classes=3, per_class=8, n_frames=90)
    run_training(tiny_config(cache, "student", train__epochs=1), tmp_path / "run", progress=False)
    run_training(tiny_config(cache, "student", train__epochs=2), tmp_path / "run", resume=True, progress=False)
    scalars = _scalars(tmp_path / "run")
    log = pd.read_csv(tmp_path / "run" / "train_log.csv")
    assert [s for s, _ in scalars["train/total"]] == log["epoch"].tolist() == [1, 2]
    assert [v for _, v in scalars["val/accuracy"]] == pytest.approx(log["val_accuracy"].tolist(), rel=1e-6)


def test_projector_holds_the_test_embeddings(tmp_path_factory):
    runs = trained_runs(tmp_path_factory)
    from distill.eval.run_eval import load_run

    trainer = load_run(runs.speaker)
    ids = trainer.cache.utt_ids(trainer.data.ids["test"])
    [folder] = [p for p in runs.speaker.glob("*/test_embeddings") if p.is_dir()]
    assert folder.parent.name == "00002"  # the step: the last epoch
    import numpy as np

    emb = np.loadtxt(folder / "tensors.tsv", delimiter="\t", ndmin=2)
    want = trainer.predict(trainer.data.dataset("test", faces=False, train=False)).emb
    np.testing.assert_allclose(emb, want, rtol=1e-4, atol=1e-5)
    labels = (folder / "metadata.tsv").read_text().split()
    assert labels == trainer.cache.index.loc[ids, "speaker"].astype(str).tolist()
    assert "test_embeddings" in (runs.speaker / "projector_config.pbtxt").read_text()

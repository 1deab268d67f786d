"""distill.run: the run directory names every file a run writes, loads its network without a
trainer, and derives a student's config by one rule for the CLI and the sweep."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from distill.config import ConfigError, load_config
from distill.eval.run_eval import load_run
from distill.run import RunDir, student_config
from distill.testing import make_lupi_cache, tiny_config
from distill.train.trainer import Trainer

TENSORBOARD = ("events.out.tfevents.", "projector_config.pbtxt")  # written by TensorBoard into RunDir.tensorboard


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A speaker teacher trained in this process: the Trainer (its best weights loaded by fit) and its dir."""
    root = tmp_path_factory.mktemp("run")
    cache = make_lupi_cache(root / "cache", n_classes=3, per_class=8, n_frames=90)
    trainer = Trainer(tiny_config(cache, "teacher", eval__plots=True), root / "teacher", progress=False)
    metrics = trainer.fit()
    return trainer, RunDir(root / "teacher"), metrics


def _names() -> set[str]:
    return {v for k, v in vars(RunDir).items() if k.isupper() and isinstance(v, str)}


def test_every_file_of_a_run_is_named_by_the_run_directory(trained):
    _, run, _ = trained
    written = {p.name for p in run.path.iterdir() if p.is_file() and not p.name.startswith(TENSORBOARD)}
    assert written <= _names()
    speaker_teacher = {
        run.CONFIG,
        run.BEST,
        run.LAST,
        run.TRAIN_LOG,
        run.STOPPING,
        run.METRICS,
        run.TARGETS,
        run.TRAIN_IDS,
        run.VERIFICATION,
        run.COHORT,
        run.CURVES,
        run.DET,
        run.EMBEDDINGS,
    }
    assert written == speaker_teacher  # no confusion matrix for a speaker run, no error file
    assert run.finished and run.started and run.tensorboard == run.path
    assert not RunDir(run.path / "nowhere").started
    with pytest.raises(ConfigError, match="not a run directory"):
        RunDir(run.path / "nowhere").config()


def test_the_loaded_network_predicts_what_the_trained_one_does(trained):
    trainer, run, metrics = trained
    loaded = run.load_network()
    assert loaded.epoch == metrics["best_epoch"] and loaded.meta["labels"] == trainer.data.labels.names
    assert loaded.config == trainer.cfg
    test = trainer.data.dataset("test", faces=True, train=False)
    evaluation = load_run(run.path)  # no Trainer: config + best.pt + the cache's data
    assert not hasattr(evaluation, "optimizer")
    for video in (True, False):
        got = evaluation.predict(test, video=video)
        want = trainer.predict(test, video=video)
        np.testing.assert_allclose(got.emb, want.emb, rtol=0, atol=1e-5)
        np.testing.assert_allclose(got.logits, want.logits, rtol=0, atol=1e-5)
    # The input normalisers' training statistics come back with the weights.
    assert np.array_equal(loaded.net.encoder.audio.norm.mean.numpy(), trainer.net.encoder.audio.norm.mean.cpu().numpy())
    for split in ("train", "val", "test"):
        assert np.array_equal(evaluation.data.ids[split], trainer.data.ids[split])


def test_a_run_on_another_class_list_is_refused(trained, tmp_path):
    _, run, _ = trained
    other = make_lupi_cache(tmp_path / "other", n_classes=4, per_class=6, n_frames=90)
    with pytest.raises(ConfigError, match="trained on classes"):
        load_run(run.path, cache=str(other))


def test_the_cli_and_the_sweep_derive_students_by_student_config(trained, tmp_path):
    from distill.cli import build_parser
    from distill.cli import student_config_from_args as cli_student
    from distill.sweep import SweepSpec

    _, run, _ = trained
    teacher = run.config()
    args = build_parser().parse_args(
        [
            "student",
            "--teacher",
            str(run.path),
            "--method",
            "softlabel",
            "--out",
            "x",
            "--epochs",
            "3",
            "--set",
            "data.batch_size=4",
        ]
    )
    want = student_config(teacher, "softlabel", ["train.epochs=3", "data.batch_size=4"], teacher_dir=run.path)
    assert cli_student(args) == want
    assert (want.role, want.distill.method, want.distill.teacher) == ("student", "softlabel", str(run.path))
    assert want.data.crop == teacher.data.crop and want.model == teacher.model and want.cache == teacher.cache

    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "cache": teacher.cache,
                "seeds": [5],
                "base": {"train": {"epochs": 3}},
                "teacher": {"data": {"split_seed": 7}},
                "variants": [{"name": "kd", "method": "softlabel", "set": {"distill.alpha": 0.2}}],
            }
        )
    )
    spec = SweepSpec.load(sweep)
    got = spec.student_config("speaker", "nonseq", spec.variants[0], 5, tmp_path / "t")
    want = student_config(
        spec.teacher_config("speaker", "nonseq"),
        "softlabel",
        {"train.seed": 5, "distill.alpha": 0.2},
        teacher_dir=tmp_path / "t",
        shared=spec.base,
    )
    assert got == want and got.data.split_seed == 7 and got.train.epochs == 3


def test_student_config_without_a_teacher_only_for_a_method_that_reads_none():
    alone = student_config(None, "none", {"data.task": "emotion"})
    assert (alone.role, alone.distill.teacher, alone.data.task) == ("student", None, "emotion")
    with pytest.raises(ConfigError, match="needs a teacher"):
        student_config(None, "embed")
    with pytest.raises(ConfigError, match="'telepathy' is not one of"):
        student_config(None, "telepathy")
    with pytest.raises(ConfigError, match="must be a teacher run"):
        student_config(load_config(overrides={"role": "student"}), "embed")


def test_metrics_are_written_whole(tmp_path):
    run = RunDir(tmp_path)
    run.write_metrics({"accuracy": 0.5})
    assert json.loads(run.metrics.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == [run.METRICS]  # no temp file left behind


def test_an_empty_split_names_its_counts_and_the_remedy(tmp_path):
    """A VoxCeleb2 manifest built without --val-speakers has train and test rows only: the message says
    what the split column holds and which flag makes a val split (it used to say only "is empty")."""
    from distill.run import RunData
    from distill.testing import make_lupi_items
    from extract.cache import build_cache, open_cache

    items = make_lupi_items(3, 8, n_frames=60)
    for item in items:
        item["split"] = "test" if item["split"] == "test" else "train"
    cache = open_cache(build_cache(tmp_path / "cache", items))
    with pytest.raises(ConfigError) as err:
        RunData.load(tiny_config(cache.dir), cache)
    text = str(err.value)
    assert "the val split of cache" in text and "'split' column holds test 6, train 18" in text
    assert "--val-speakers 0.02" in text and "extract it into a new --cache-root" in text

"""Open-set speaker verification: test (and val) speakers never seen in training (VoxCeleb2 → VoxCeleb1)."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest

from common.ffmpeg import ffmpeg_exe
from distill.cli import main as distill
from distill.config import ConfigError
from distill.eval import metrics as M
from distill.eval.evaluate import Predictions, selection_metric, verification
from distill.testing import TINY, make_lupi_items, tiny_config
from distill.train.trainer import Trainer, run_training
from extract.cache import build_cache
from extract.cli import main as extract
from manifests.cli import main as manifests
from manifests.demo import make_demo_corpus
from manifests.io import read_manifest, write_manifest
from manifests.trials import make_trials

UNSEEN = ("spk4", "spk5")


def test_run_with_only_unseen_test_speakers_reports_verification(tmp_path):
    items = make_lupi_items(6, 12, n_frames=90)
    for item in items:  # spk4 and spk5 only in test; every other speaker only in train/val
        if item["speaker"] in UNSEEN:
            item["split"] = "test"
        elif item["split"] == "test":
            item["split"] = "train"
    cache = build_cache(tmp_path / "cache", items)
    metrics = run_training(tiny_config(cache, "teacher", eval__plots=True), tmp_path / "run", progress=False)
    # identification is undefined when no test speaker is a training class; verification is not
    assert "accuracy" not in metrics and "top5_accuracy" not in metrics
    assert 0.0 <= metrics["eer"] <= 1.0 and 0.0 <= metrics["min_dcf"] <= 1.0
    assert {"eer", "min_dcf"} <= set(metrics["video_missing"])
    assert not {"eer_asnorm", "min_dcf_asnorm", "score_norm"} & set(metrics)  # eval.score_norm: none by default
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["eer"] == metrics["eer"]
    assert (tmp_path / "run" / "det.png").is_file() and (tmp_path / "run" / "embeddings.png").is_file()


# --- model selection on an open-set validation split -------------------------------------------


def _open_set_cache(path, val=("spk2", "spk3")):
    """``val`` speakers only in val, spk4 and spk5 only in test, the rest only in train: VoxCeleb2 dev with
    a speaker-disjoint val carve-out, VoxCeleb1 as test."""
    items = make_lupi_items(6, 12, n_frames=60)
    for item in items:
        item["split"] = "val" if item["speaker"] in val else "test" if item["speaker"] in UNSEEN else "train"
    return build_cache(path, items)


@pytest.mark.parametrize(
    "select, task, labels, expected",
    [
        ("auto", "speaker", [0, 1, 2], "accuracy"),
        ("auto", "speaker", [0, -1], "eer"),
        ("auto", "speaker", [-1, -1], "eer"),
        ("auto", "emotion", [0, 1], "uar"),
        ("loss", "speaker", [0, -1], "loss"),
        ("eer", "speaker", [0, 1], "eer"),
        ("accuracy", "emotion", [1], "accuracy"),
    ],
)
def test_selection_metric_by_task_and_val_classes(select, task, labels, expected):
    assert selection_metric(select, task, np.array(labels)) == expected


@pytest.mark.parametrize(
    "select, task, labels, message",
    [
        ("eer", "emotion", [0], "needs data.task=speaker"),
        ("uar", "speaker", [0], "needs data.task=emotion"),
        ("accuracy", "speaker", [-1, -1], "use train.select=eer"),
        ("loss", "emotion", [-1], "no val item's class"),
    ],
)
def test_selection_metric_refuses_what_cannot_be_measured(select, task, labels, message):
    with pytest.raises(ValueError, match=message):
        selection_metric(select, task, np.array(labels))


def test_open_set_val_selects_the_epoch_of_lowest_val_eer(tmp_path):
    cache = _open_set_cache(tmp_path / "cache")
    metrics = run_training(tiny_config(cache, "teacher", train__epochs=3), tmp_path / "run", progress=False)
    with open(tmp_path / "run" / "train_log.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert "val_accuracy" not in rows[0]  # no val speaker is a training class: nothing to identify
    val_eer = [float(r["val_eer"]) for r in rows]
    assert metrics["best_epoch"] == 1 + int(np.argmin(val_eer))
    assert 0.0 <= metrics["eer"] <= 1.0 and "accuracy" not in metrics
    with pytest.raises(ConfigError, match="use train.select=eer"):
        Trainer(tiny_config(cache, "teacher", train__select="accuracy"), tmp_path / "x", progress=False)
    one = _open_set_cache(tmp_path / "one", val=("spk3",))  # one val speaker: no non-target trial
    with pytest.raises(ConfigError, match="needs target and non-target val trials"):
        Trainer(tiny_config(one, "teacher"), tmp_path / "y", progress=False)


def test_score_norm_asnorm_puts_as_norm_metrics_next_to_the_raw_ones(tmp_path):
    from distill.eval.calibration import training_cohort
    from distill.eval.evaluate import build_trials, verification_asnorm
    from distill.eval.run_eval import load_run
    from distill.serve.model import COHORT

    cache = _open_set_cache(tmp_path / "cache")
    run = tmp_path / "run"
    metrics = run_training(tiny_config(cache, "teacher", eval__score_norm="asnorm", eval__top_k=2), run, progress=False)
    assert metrics["score_norm"] == {"method": "asnorm", "top_k": 2, "cohort_speakers": 2, "cohort_per_speaker": 10}
    trainer = load_run(run)
    test = trainer.data.dataset("test", faces=True, train=False)
    trials = build_trials(trainer.cache.index, trainer.data.utt_ids("test"), "speaker", None)
    for where, video, cohort in [
        (metrics, True, training_cohort(trainer.evaluator, trainer.data, video=True)),
        (metrics["video_missing"], False, np.load(run / COHORT)),
    ]:  # what distill verify uses
        pred = trainer.predict(test, video=video)
        assert where["eer"] == verification(pred, trials)[0]["eer"]  # the raw numbers stay what they were
        expected = verification_asnorm(pred, trials, cohort, top_k=2)
        assert (where["eer_asnorm"], where["min_dcf_asnorm"]) == pytest.approx(
            (expected["eer_asnorm"], expected["min_dcf_asnorm"])
        )


def test_closed_set_run_can_select_by_val_loss(tmp_path):
    cache = build_cache(tmp_path / "cache", make_lupi_items(3, 8, n_frames=60))
    metrics = run_training(
        tiny_config(cache, "teacher", train__epochs=3, train__select="loss"), tmp_path / "run", progress=False
    )
    with open(tmp_path / "run" / "train_log.csv") as fh:
        val_loss = [float(r["val_loss"]) for r in csv.DictReader(fh)]
    assert metrics["best_epoch"] == 1 + int(np.argmin(val_loss))


def test_verification_costs_reach_min_dcf():
    rng = np.random.default_rng(0)
    utts = [f"u{i:02d}" for i in range(20)]
    speakers = [f"s{i % 4}" for i in range(20)]
    trials = make_trials(pd.DataFrame({"utt_id": utts, "speaker": speakers}))
    emb = np.eye(8)[[i % 4 for i in range(20)]] + 0.6 * rng.standard_normal((20, 8))  # partly separable
    pred = Predictions(utts, np.zeros(20, np.int64), emb, np.zeros((20, 2)))
    default, scores, labels = verification(pred, trials)
    costly, _, _ = verification(pred, trials, p_target=0.5, c_miss=2.0, c_fa=1.0)
    assert costly["min_dcf"] == pytest.approx(M.min_dcf(scores, labels, 0.5, 2.0, 1.0)[0])
    assert default["min_dcf"] == pytest.approx(M.min_dcf(scores, labels)[0]) != costly["min_dcf"]
    with pytest.raises(ConfigError, match="data.p_target must lie in"):
        tiny_config("c", data__p_target=1.5)


# --- the quickstart's VoxCeleb2 -> VoxCeleb1 protocol, end to end through the CLIs ---------------


@pytest.mark.slow
def test_voxceleb2_to_voxceleb1_through_the_clis(tmp_path, capsys):
    """Generated talking faces laid out as VoxCeleb2 dev (6 speakers, mp4) and VoxCeleb1 (2
    speakers, wav, an original-format trial list): manifests with a speaker-disjoint val
    carve-out, extraction, a teacher selected by val EER, a student; both scored on the list."""
    gen = read_manifest(
        make_demo_corpus(
            tmp_path / "gen",
            speakers=8,
            utts_per_speaker=4,
            frame_size=96,
            min_duration=1.0,
            max_duration=1.2,
            progress=False,
        )
    )
    vox2, vox1 = tmp_path / "VoxCeleb2", tmp_path / "VoxCeleb1"
    for i, (_spk, rows) in enumerate(gen.groupby("speaker", sort=True)):
        for k, path in enumerate(rows["path"]):
            video = f"vid{i}{'ab'[k % 2]}-YouTube"  # two videos of two clips per speaker
            if i < 6:
                dest = vox2 / "dev" / "mp4" / f"id{i:05d}" / video / f"{k:05d}.mp4"
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(path, dest)
            else:
                dest = vox1 / "wav" / f"id{10270 + i:05d}" / video / f"{k:05d}.wav"
                dest.parent.mkdir(parents=True, exist_ok=True)
                subprocess.run(
                    [ffmpeg_exe(), "-v", "error", "-i", path, "-vn", "-ac", "1", "-ar", "16000", str(dest)], check=True
                )
    clips = sorted(p.relative_to(vox1 / "wav").as_posix() for p in (vox1 / "wav").rglob("*.wav"))
    a, b = [c for c in clips if c.startswith("id10276")], [c for c in clips if c.startswith("id10277")]
    (vox1 / "veri_test.txt").write_text(  # VoxCeleb1-O, original format: file names with .wav
        "".join(f"1 {x} {y}\n" for x, y in [(a[0], a[1]), (a[2], a[3]), (b[0], b[2]), (b[1], b[3])])
        + "".join(f"0 {x} {y}\n" for x, y in [(a[0], b[0]), (a[1], b[1]), (a[2], b[2]), (a[3], b[3])])
    )

    m = tmp_path / "manifests"
    assert manifests(["voxceleb2", str(vox2), "--out", str(m / "vox2.csv"), "--val-speakers", "0.34"]) == 0
    assert manifests(["voxceleb1", str(vox1), "--out", str(m / "vox1.csv")]) == 0
    dev = read_manifest(m / "vox2.csv")
    assert dev.groupby("speaker")["split"].nunique().eq(1).all() and set(dev["split"]) == {"train", "val"}
    test = read_manifest(m / "vox1.csv").assign(split="test")
    write_manifest(pd.concat([dev, test]), m / "vox2+vox1.csv")
    capsys.readouterr()
    assert (
        extract(
            [
                "run",
                "--manifest",
                str(m / "vox2+vox1.csv"),
                "--cache-root",
                str(tmp_path / "cache"),
                "--face-weights",
                "random",
                "--threads",
                "1",
                "--no-progress",
            ]
        )
        == 0
    )
    cache = capsys.readouterr().out.strip().split()[-1]

    sets = [a for k, v in TINY.items() if k != "train.epochs" for a in ("--set", f"{k}={v}")]
    t, s = tmp_path / "runs" / "teacher", tmp_path / "runs" / "embed"
    assert (
        distill(
            [
                "teacher",
                "--cache",
                cache,
                "--task",
                "speaker",
                "--setting",
                "nonseq",
                "--out",
                str(t),
                "--epochs",
                "2",
                "--quiet",
                "--set",
                f"data.trials={vox1 / 'veri_test.txt'}",
                *sets,
            ]
        )
        == 0
    )
    assert (
        distill(["student", "--teacher", str(t), "--method", "embed", "--out", str(s), "--epochs", "2", "--quiet"]) == 0
    )
    for run in (t, s):
        metrics = json.loads((run / "metrics.json").read_text())
        assert 0.0 <= metrics["eer"] <= 1.0 and 0.0 <= metrics["min_dcf"] <= 1.0 and "accuracy" not in metrics
        assert metrics["trials"]["source"] == str(vox1 / "veri_test.txt") and metrics["trials"]["n_trials"] == 8
        with open(run / "train_log.csv") as fh:
            val_eer = [float(r["val_eer"]) for r in csv.DictReader(fh)]  # open-set val: selected by EER
        assert metrics["best_epoch"] == 1 + int(np.argmin(val_eer))

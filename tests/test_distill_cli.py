"""The distill CLI: exit codes, summaries, kill-and-resume equality, eval and embed."""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from distill.cli import main
from distill.testing import TINY, make_lupi_cache, make_lupi_items, tiny_config
from distill.train.trainer import run_training
from extract.cache import build_cache

REPO = Path(__file__).resolve().parents[1]
SETS = [arg for k, v in TINY.items() if k not in ("train.epochs",) for arg in ("--set", f"{k}={v}")]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_lupi_cache(tmp_path_factory.mktemp("cli") / "cache", n_classes=3, per_class=8, n_frames=90)


def test_help_and_usage_errors(capsys, tmp_path):
    with pytest.raises(SystemExit) as exc:
        main(["teacher", "--help"])
    assert exc.value.code == 0 and "--setting" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main(["teacher", "--task", "singing", "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert main(["student", "--method", "embed", "--out", str(tmp_path / "s")]) == 2
    assert "needs a teacher run: --teacher RUN_DIR" in capsys.readouterr().err
    assert main(["teacher", "--out", str(tmp_path / "t"), "--cache", "x", "--set", "distill.distance=hamming"]) == 2
    assert "hamming" in capsys.readouterr().err


@pytest.fixture(scope="module")
def teacher(cache, tmp_path_factory) -> tuple[Path, str]:
    """A finished speaker/seq teacher trained through the CLI, and what it printed."""
    t = tmp_path_factory.mktemp("teacher") / "t"
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "teacher",
                "--cache",
                str(cache),
                "--task",
                "speaker",
                "--setting",
                "seq",
                "--out",
                str(t),
                "--quiet",
                *SETS,
            ]
        )
    assert code == 0
    return t, out.getvalue()


def test_teacher_then_student_through_the_cli(teacher, tmp_path, capsys):
    t, printed = teacher
    s = tmp_path / "s"
    assert printed.strip().splitlines()[-1].startswith("teacher speaker/seq: accuracy=")
    assert (
        main(["student", "--teacher", str(t), "--method", "embed", "--distance", "l1", "--out", str(s), "--quiet"]) == 0
    )
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("student[embed] speaker/seq: accuracy=") and "eer=" in line
    import yaml

    cfg = yaml.safe_load((s / "config.yaml").read_text())
    assert cfg["data"]["setting"] == "seq" and cfg["distill"]["distance"] == "l1"  # inherited / flag
    assert cfg["model"]["emb_dim"] == TINY["model.emb_dim"]
    # a second run into the same directory must be an explicit resume
    assert main(["student", "--teacher", str(t), "--method", "embed", "--out", str(s), "--quiet"]) == 2
    # targets that do not fit the student's grid: a failed run (1), with the reason
    assert (
        main(
            [
                "student",
                "--teacher",
                str(t),
                "--method",
                "embed",
                "--out",
                str(tmp_path / "s2"),
                "--quiet",
                "--set",
                "data.seg_len=20",
            ]
        )
        == 1
    )
    assert "seg_len: teacher 30 vs student 20" in capsys.readouterr().err
    # another split than the teacher's: refused (1), naming how many held-out items leaked and one of them
    assert (
        main(
            [
                "student",
                "--teacher",
                str(t),
                "--method",
                "embed",
                "--out",
                str(tmp_path / "s3"),
                "--quiet",
                "--set",
                "data.split_column=nosuch",
            ]
        )
        == 1
    )
    assert re.search(
        r"\d+ of this run's val/test items were in the teacher's training set \(e\.g\. '", capsys.readouterr().err
    )
    before = json.loads((s / "metrics.json").read_text())
    (s / "metrics.json").unlink()
    assert main(["eval", str(s)]) == 0
    assert json.loads((s / "metrics.json").read_text()) == before


@pytest.mark.slow
def test_killed_mid_epoch_and_resumed_ends_with_the_same_metrics(tmp_path):
    cache = make_lupi_cache(tmp_path / "cache", n_classes=4, per_class=16, n_frames=90)
    audio_only = {
        "face": np.zeros((0, 512), np.float32),
        "face_found": np.zeros(0, bool),
        "frame_times": np.zeros(0, np.float32),
        "has_video": False,
    }
    noise = build_cache(
        tmp_path / "noise", [{**item, **audio_only} for item in make_lupi_items(2, 2, n_frames=150, seed=9)]
    )
    # --face-recon: the objective's own parameters (the face decoder) must resume too; augmentation:
    # its draws too (noise, SNR, masks are functions of seed, epoch and item)
    args = [
        "teacher",
        "--cache",
        str(cache),
        "--task",
        "speaker",
        "--setting",
        "nonseq",
        "--epochs",
        "4",
        "--quiet",
        "--face-recon",
        "1",
        *SETS,
        "--set",
        f"augment.noise={noise}",
        "--set",
        "augment.time_masks=1",
        "--set",
        "augment.freq_masks=1",
    ]
    # The uninterrupted reference and the resume run in this process (same code path as the command,
    # seeded, so bit-identical across processes); only the run that is killed needs its own.
    assert main([*args, "--out", str(tmp_path / "ref")]) == 0

    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "distill", *args, "--out", str(tmp_path / "run")],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    log = tmp_path / "run" / "train_log.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().strip().splitlines()) >= 3:  # header + 2 epochs: now in epoch 3
            break
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "metrics.json").exists()

    assert main([*args, "--out", str(tmp_path / "run"), "--resume"]) == 0
    ref = json.loads((tmp_path / "ref" / "metrics.json").read_text())
    got = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert got == ref
    ref_log = pd.read_csv(tmp_path / "ref" / "train_log.csv").drop(columns="seconds")
    got_log = pd.read_csv(tmp_path / "run" / "train_log.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(got_log, ref_log)
    assert "train_face_recon" in got_log.columns


def test_embed_decodes_new_audio_with_the_extraction_path(tmp_path, clips, capsys):
    from extract.config import ExtractConfig

    record = ExtractConfig(n_mels=20, face_weights="random").to_record("random")
    cache = build_cache(tmp_path / "cache", make_lupi_items(3, 8, n_frames=90), config=record)
    run_training(tiny_config(cache, "student", distill__method="none"), tmp_path / "run", progress=False)
    files = [str(clips["wav"].path), str(clips["mp4"].path)]
    assert main(["embed", str(tmp_path / "run"), *files, "--out", str(tmp_path / "e.npy")]) == 0
    emb = np.load(tmp_path / "e.npy")
    assert emb.shape == (2, TINY["model.emb_dim"]) and np.isfinite(emb).all()
    assert not np.allclose(emb[0], emb[1])
    assert main(["embed", str(tmp_path / "run"), files[0], "--out", str(tmp_path / "e.csv")]) == 0
    table = pd.read_csv(tmp_path / "e.csv")
    assert table["path"].tolist() == files[:1]
    np.testing.assert_allclose(table.drop(columns="path").to_numpy()[0], emb[0], rtol=1e-5, atol=1e-6)
    assert main(["embed", str(tmp_path / "run"), str(tmp_path / "missing.wav"), "--out", str(tmp_path / "x.npy")]) == 1
    assert "missing.wav" in capsys.readouterr().err


def _student_config(*argv: str):
    from distill.cli import build_parser, student_config_from_args

    return student_config_from_args(build_parser().parse_args(["student", "--out", "unused", *argv]))


def test_student_method_and_teacher_follow_config_then_flag_then_set(cache, teacher, tmp_path):
    """Defaults < --config < flags < --set, a flag counting only when given (it used to always say embed)."""
    from distill.config import ConfigError

    none, embed = tmp_path / "none.yaml", tmp_path / "embed.yaml"
    none.write_text("distill: {method: none}\n")
    embed.write_text("distill: {method: embed}\n")
    assert _student_config("--config", str(none), "--cache", str(cache)).distill.method == "none"
    assert _student_config("--config", str(embed), "--method", "none", "--cache", "c").distill.method == "none"
    assert _student_config("--method", "embed", "--set", "distill.method=none", "--cache", "c").distill.method == "none"
    for argv in ([], ["--config", str(none), "--method", "embed"]):  # the CLI's default, and a flag over --config
        with pytest.raises(ConfigError, match="method embed needs a teacher run"):
            _student_config(*argv, "--cache", "c")
    # the teacher too: a --config naming it gives the student the teacher's sections, as --teacher does
    t = teacher[0]
    chosen = tmp_path / "student.yaml"
    chosen.write_text(f"distill: {{method: softlabel, teacher: {t}}}\n")
    cfg = _student_config("--config", str(chosen))
    assert (cfg.distill.method, cfg.distill.teacher, cfg.data.setting) == ("softlabel", str(t), "seq")
    assert cfg.model.emb_dim == TINY["model.emb_dim"] and cfg.cache == str(cache)


@pytest.mark.parametrize(
    "argv, patched, advice",
    [
        (["teacher", "--cache", "c", "--out", "r"], "run_training", "rerun the same command with --resume"),
        (["sweep", "s.yaml"], "run_sweep", "rerun the same command: finished runs are kept"),
        (["embed", "r", "a.wav", "--out", "e.h5"], "_embed", "rerun the same command: the chunks already committed"),
        (["embed", "r", "a.wav", "--out", "e.npy"], "_embed", None),
        (["eval", "r"], "_eval", None),
        (["export", "r", "--out", "m"], "export_run", None),
    ],
)
def test_an_interrupt_says_how_to_continue_only_where_work_is_kept(argv, patched, advice, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(f"distill.cli.{patched}", interrupted)
    if argv[0] == "teacher":
        monkeypatch.setattr("distill.cli.load_config", lambda *a, **k: tiny_config("c"))
    assert main(argv) == 130
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"distill {argv[0]}: interrupted")
    assert (advice in err) if advice else (err == f"distill {argv[0]}: interrupted"), err

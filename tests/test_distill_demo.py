"""`make demo` at tiny size, through the real command lines, and every artefact it promises.

This is the newcomer's first contact with the toolkit: corpus → extract → teacher → students →
table. The test runs the same entry point `make demo` runs (`python -m distill.demo`), shrunk by
its flags, then the inspection commands a user would run next on what it produced.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

pytestmark = pytest.mark.slow

CONTRACT_KEYS = {"accuracy", "top5_accuracy", "eer", "min_dcf", "uar", "war", "macro_f1"}
METHODS = ["none", "softlabel", "embed", "embed-contrastive"]  # configs/demo_sweep.yaml's variants
TASKS = ("speaker",)  # the demo protocol's task (docs/results.md: emotion's test split is too small to report)


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


#: The demo, shrunk: 4 speakers x 16 clips, 2 seeds, 1 epoch; run twice (the second reuses everything).
DEMO = (
    "distill.demo",
    "--data",
    "data",
    "--cache-root",
    "cache",
    "--out",
    "results",
    "--speakers",
    "4",
    "--utts-per-speaker",
    "16",
    "--seeds",
    "0",
    "1",
    "--epochs",
    "1",
    "--workers",
    "2",
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demo")
    run(
        *DEMO,
        cwd=root,
    )
    return root


def assert_png(path: Path) -> None:
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        pixels = np.asarray(img.convert("L"))
    assert pixels.std() > 0, f"{path} is blank"


def check_metrics(path: Path, task: str) -> dict:
    metrics = json.loads(path.read_text())
    expected = (
        {"accuracy", "top5_accuracy", "eer", "min_dcf"} if task == "speaker" else {"accuracy", "uar", "war", "macro_f1"}
    )
    assert expected <= set(metrics), f"{path}: missing {expected - set(metrics)}"
    for key in CONTRACT_KEYS & set(metrics):
        assert 0.0 <= metrics[key] <= 1.0 and math.isfinite(metrics[key]), f"{path}: {key}={metrics[key]}"
    return metrics


def test_every_run_has_its_artefacts(demo):
    results = demo / "results"
    for task in TASKS:
        for setting in ("nonseq", "seq"):
            combo = results / f"{task}-{setting}"
            teacher = check_metrics(combo / "teacher" / "metrics.json", task)
            assert CONTRACT_KEYS & set(teacher["video_missing"]), "teacher lacks its video-missing evaluation"
            assert (combo / "teacher" / "targets.h5").is_file()
            runs = [combo / "teacher"] + [combo / m / f"seed{s}" for m in METHODS for s in (0, 1)]
            for run_dir in runs:
                check_metrics(run_dir / "metrics.json", task)
                config = yaml.safe_load((run_dir / "config.yaml").read_text())
                assert config["data"]["task"] == task and config["data"]["setting"] == setting
                log = pd.read_csv(run_dir / "train_log.csv")
                assert len(log) == 1 and np.isfinite(log.select_dtypes("number").to_numpy()).all()
                state = torch.load(run_dir / "best.pt", weights_only=True)
                assert state, f"{run_dir}/best.pt is empty"
                for png in ("curves.png", "embeddings.png", "det.png" if task == "speaker" else "confusion.png"):
                    assert_png(run_dir / png)
            student = yaml.safe_load((combo / "embed" / "seed1" / "config.yaml").read_text())
            assert student["distill"]["method"] == "embed" and student["train"]["seed"] == 1
            contrastive = yaml.safe_load((combo / "embed-contrastive" / "seed0" / "config.yaml").read_text())["distill"]
            assert (contrastive["method"], contrastive["pointwise"], contrastive["contrastive"]) == ("embed", 0.0, 1.0)


def test_results_table_and_charts(demo):
    results = demo / "results"
    table = pd.read_csv(results / "results.csv")
    # 2 combos × (teacher + teacher-no-video + 4 methods × 2 seeds), and the control: its audio-only
    # teacher + the 3 distilling methods × 2 seeds from it
    controls = [f"{m}@audio_teacher" for m in METHODS if m != "none"]
    assert len(table) == 2 * (2 + len(METHODS) * 2 + 1 + len(controls) * 2)
    assert set(table["method"]) == {"teacher", "teacher-no-video", *METHODS, "audio_teacher", *controls}
    markdown = (results / "results.md").read_text()
    assert "±" in markdown and "embed-contrastive" in markdown and "teacher-no-video" in markdown
    assert "video's share" in markdown and "embed@audio_teacher" in markdown
    for task in TASKS:
        assert_png(results / f"results_{task}.png")
        assert_png(results / f"results_{task}_share.png")
    sweep = yaml.safe_load((results / "sweep.yaml").read_text())
    assert sweep["seeds"] == [0, 1] and Path(sweep["cache"]).is_dir()


def test_cache_inspection_and_second_demo_reuses_everything(demo):
    cache_dir = next((demo / "cache").iterdir())
    info = json.loads(run("extract", "info", str(cache_dir), "--json", cwd=demo).stdout)
    assert info["items"] == 64
    run("extract", "verify", str(cache_dir), cwd=demo)
    before = {p: p.stat().st_mtime_ns for p in (demo / "results").rglob("metrics.json")}
    again = run(
        *DEMO,
        cwd=demo,
    )
    assert "64 already cached" in again.stdout and "0 run(s) trained" in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (demo / "results").rglob("metrics.json")} == before


def test_eval_and_embed_on_a_student(demo):
    student = demo / "results" / "speaker-nonseq" / "embed" / "seed0"
    recorded = json.loads((student / "metrics.json").read_text())
    run("distill", "eval", str(student), cwd=demo)
    again = json.loads((student / "metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(recorded["accuracy"])
    videos = sorted((demo / "data" / "videos").glob("*.mp4"))[:3]
    run("distill", "embed", str(student), *map(str, videos), "--out", "emb.npy", cwd=demo)
    emb = np.load(demo / "emb.npy")
    assert emb.shape[0] == 3 and np.isfinite(emb).all() and emb.std(0).mean() > 0

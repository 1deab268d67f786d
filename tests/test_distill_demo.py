"""`make demo` at tiny size, through the real command lines, and every artefact it promises.

This is the newcomer's first contact with the toolkit: corpus → extract → teacher → students →
table. The test runs the same entry point `make demo` runs (`python -m distill.demo`), shrunk by
its flags, then the inspection commands a user would run next on what it produced.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image

import distill.demo as demo_module
from common.ffmpeg import FFMPEG_ENV
from distill.cli import main as distill_main
from distill.demo import choose_face_weights
from distill.demo import main as demo_main
from extract.cli import main as extract_main

pytestmark = pytest.mark.slow

CONTRACT_KEYS = {"accuracy", "top5_accuracy", "eer", "min_dcf", "uar", "war", "macro_f1"}
METHODS = ["none", "softlabel", "embed"]  # configs/demo_sweep.yaml's variants
CONTROLS = [f"{m}@audio_teacher" for m in METHODS if m != "none"]  # the same students of the audio-only teacher
TASK, SETTING = "speaker", "nonseq"  # the demo protocol's (docs/results.md says why emotion and seq are out)
K = (1, "all")  # the shrunk label-scarcity curve (the protocol's: 1, 2, 4, all)
K_NAMES = tuple(map(str, K))
SEEDS = (0, 1)


REPO = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m ARGS`` with this checkout first on the path (the venv's editable install may be another)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (
        f"{' '.join(args)} exited {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


SPEAKERS, UTTS, FPS = 4, 12, 2  # 2 face frames a second, not 5: dlib embeds each
#: The demo, shrunk: 4 speakers x 12 clips, 2 face frames a second, 2 seeds, a cap of 1 epoch, k = 1
#: and all; the default face embedder (dlib, installed by the lock) and two runs at once, as `make demo`.
#: Run twice (the second reuses everything).
DEMO = (
    "distill.demo",
    "--data",
    "data",
    "--cache-root",
    "cache",
    "--out",
    "results",
    "--speakers",
    str(SPEAKERS),
    "--utts-per-speaker",
    str(UTTS),
    "--seeds",
    "0",
    "1",
    "--epochs",
    "1",
    "--fps",
    str(FPS),
    "--labels-per-class",
    *map(str, K),
    "--workers",
    "2",
    "--sweep-workers",
    "2",
    "--set",
    "train.min_steps=2",  # reaches every run's config; the cap of one epoch still ends each run
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


def combo(demo: Path, k) -> Path:
    return demo / "results" / f"{TASK}-{SETTING}" / f"k{k}"


def test_every_run_has_its_artefacts(demo):
    for k in K:
        folder = combo(demo, k)
        teacher = check_metrics(folder / "teacher" / "metrics.json", TASK)
        assert CONTRACT_KEYS & set(teacher["video_missing"]), "teacher lacks its video-missing evaluation"
        runs = [folder / "teacher", folder / "audio_teacher"]
        runs += [folder / label / f"seed{s}" for label in (*METHODS, *CONTROLS) for s in SEEDS]
        for run_dir in runs:
            check_metrics(run_dir / "metrics.json", TASK)
            config = yaml.safe_load((run_dir / "config.yaml").read_text())
            assert (config["data"]["task"], config["data"]["setting"]) == (TASK, SETTING)
            assert config["data"]["labels_per_class"] == (None if k == "all" else k)
            assert (config["train"]["patience"], config["train"]["epochs"]) == (10, 1)  # the budget rule, cap shrunk
            assert config["train"]["min_steps"] == 2  # --set
            stopping = json.loads((run_dir / "stopping.json").read_text())
            assert (stopping["stopped"], stopping["epochs"]) == ("cap", 1)
            log = pd.read_csv(run_dir / "train_log.csv")
            assert len(log) == 1 and np.isfinite(log.select_dtypes("number").to_numpy()).all()
            state = torch.load(run_dir / "best.pt", weights_only=True)
            assert state, f"{run_dir}/best.pt is empty"
            for png in ("curves.png", "embeddings.png", "det.png"):
                assert_png(run_dir / png)
        for name in ("teacher", "audio_teacher"):
            assert (folder / name / "targets.h5").is_file()
        distill = {
            n: yaml.safe_load((folder / n / "config.yaml").read_text())["distill"] for n in ("teacher", "audio_teacher")
        }
        assert (distill["teacher"]["face_recon"], distill["audio_teacher"]["face_recon"]) == (10.0, 0.0)
        student = yaml.safe_load((folder / "embed" / "seed1" / "config.yaml").read_text())
        assert student["distill"]["method"] == "embed" and student["train"]["seed"] == 1
        assert student["distill"]["encoder_grad"] == "distill-only"
        assert (demo / student["distill"]["teacher"]).resolve() == (folder / "teacher").resolve()  # relative to cwd


def test_results_table_curve_and_charts(demo):
    results = demo / "results"
    table = pd.read_csv(results / "results.csv")
    # per k: teacher + teacher-no-video + audio_teacher, and 3 methods + 2 control students x 2 seeds
    assert len(table) == len(K) * (3 + (len(METHODS) + len(CONTROLS)) * len(SEEDS))
    assert set(table["method"]) == {"teacher", "teacher-no-video", "audio_teacher", *METHODS, *CONTROLS}
    assert sorted(table["labels_per_class"].astype(str).unique()) == ["1", "all"]
    runs = table.drop_duplicates("run_dir")
    assert (runs["stopped"] == "cap").all() and len(runs) == len(K) * (2 + (len(METHODS) + len(CONTROLS)) * len(SEEDS))
    markdown = (results / "results.md").read_text()
    lines = markdown.splitlines()
    assert lines[2].startswith("Faces: dlib's pretrained ResNet") and "the faces-dlib extra is installed" in lines[2]
    assert f"Budget: {len(runs)} of {len(runs)} runs (100 %) hit the epoch cap" in markdown
    curve, rest = markdown.split("## speaker: 1 labelled training item per class")
    assert "## speaker: the label-scarcity curve" in curve and "## speaker: every training label" in rest
    assert curve.index("label-scarcity curve") < curve.index("## The teachers on the transfer set")
    for method in ("softlabel", "embed"):  # a row per method and k in the curve's table, with its share
        rows = [line for line in curve.splitlines() if line.startswith(f"| {SETTING} | {method} | ")]
        k_cells = [row.split(" | ")[2] for row in rows]  # the mean table's cells hold metrics, not k
        assert [k for k in k_cells if k in K_NAMES] == ["1", "all"] * 2  # accuracy, eer
        assert all(("video's share" in row or "video costs" in row) for row in rows if row.split(" | ")[2] in K_NAMES)
    for png in ("results_speaker_curve.png", "results_speaker_k1.png", "results_speaker_kall.png"):
        assert_png(results / png)
    assert_png(results / "results_speaker_k1_share.png")
    sweep = yaml.safe_load((results / "sweep.yaml").read_text())
    assert sweep["seeds"] == list(SEEDS) and sweep["labels_per_class"] == list(K) and Path(sweep["cache"]).is_dir()


def test_the_teachers_are_scored_on_their_transfer_set(demo, capsys):
    from distill.eval.teacher_labels import main as teacher_labels_main
    from distill.eval.teacher_labels import teacher_labels
    from distill.train.targets import TargetStore
    from extract.cache import open_cache

    markdown = (demo / "results" / "results.md").read_text()
    row = next(
        line
        for line in markdown.split("## The teachers on the transfer set")[1].splitlines()
        if line.startswith("| speaker |")
    )
    cells = [c.strip() for c in row.strip("|").split("|")]
    cache = open_cache(yaml.safe_load((demo / "results" / "sweep.yaml").read_text())["cache"])
    train = cache.index[cache.index["split"] == "train"]
    assert cells[:4] == [TASK, SETTING, "1", str(len(train) - train["speaker"].nunique())]  # all but 1 per speaker
    for name, cell in zip(("teacher", "audio_teacher"), cells[4:]):
        run_dir = combo(demo, 1) / name
        score = teacher_labels(run_dir)
        assert cell == f"{score.accuracy:.3f}"
        # the same count, independently: the items the teacher did not train on, its targets read per cell
        trained = set((run_dir / "train_ids.txt").read_text().split())
        hidden = [u for u in train.index if u not in trained]
        store = TargetStore(run_dir / "targets.h5")
        with h5py.File(run_dir / "targets.h5", "r") as h5:
            n_cells = dict(zip(h5["utt_id"].asstr()[:], h5["n_cells"][:]))
        classes, correct = store.key["labels"], 0
        for utt in hidden:
            logits = np.mean([store.lookup(utt, c)["logits"] for c in range(n_cells[utt])], axis=0)
            correct += classes[int(logits.argmax())] == train.loc[utt, "speaker"]
        assert (score.items, score.correct) == (len(hidden), correct)
    assert len(trained) == train["speaker"].nunique()
    assert teacher_labels_main([str(combo(demo, 1) / "teacher")]) == 0  # the command line prints the same
    assert f"accuracy {teacher_labels(combo(demo, 1) / 'teacher').accuracy:.3f}" in capsys.readouterr().out
    assert teacher_labels_main([str(combo(demo, 1) / "none" / "seed0")]) == 1  # a student: refused, named
    assert "not a finished teacher run" in capsys.readouterr().err


def test_cache_inspection_and_second_demo_reuses_everything(demo, capsys, monkeypatch):
    """What a user runs next, in this process (the first run above went through the real entry point)."""
    monkeypatch.chdir(demo)
    monkeypatch.setenv(FFMPEG_ENV, "bundled")  # the demo sets it for its workers; restored after the test
    cache_dir = next((demo / "cache").iterdir())
    capsys.readouterr()
    assert extract_main(["info", str(cache_dir), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["items"] == SPEAKERS * UTTS and info["settings"]["fps"] == FPS
    assert info["settings"]["face_dim"] == 128  # dlib's faces
    assert extract_main(["verify", str(cache_dir)]) == 0
    before = {p: p.stat().st_mtime_ns for p in (demo / "results").rglob("metrics.json")}
    capsys.readouterr()
    assert demo_main(list(DEMO[1:])) == 0
    again = capsys.readouterr().out
    assert f"{SPEAKERS * UTTS} already cached" in again and "0 run(s) trained" in again
    assert {p: p.stat().st_mtime_ns for p in (demo / "results").rglob("metrics.json")} == before


# The shrunk corpus's val split holds one clip per speaker: no target trial to set a threshold on.
@pytest.mark.filterwarnings("ignore:.*no verification threshold:UserWarning")
def test_eval_and_embed_on_a_student(demo, monkeypatch):
    monkeypatch.chdir(demo)
    student = combo(demo, 1) / "embed" / "seed0"
    recorded = json.loads((student / "metrics.json").read_text())
    assert distill_main(["eval", str(student)]) == 0
    again = json.loads((student / "metrics.json").read_text())
    assert again["accuracy"] == pytest.approx(recorded["accuracy"])
    videos = sorted((demo / "data" / "videos").glob("*.mp4"))[:3]
    assert distill_main(["embed", str(student), *map(str, videos), "--out", "emb.npy"]) == 0
    emb = np.load(demo / "emb.npy")
    assert emb.shape[0] == 3 and np.isfinite(emb).all() and emb.std(0).mean() > 0


def test_a_bad_fps_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        demo_main(["--fps", "0", "--data", str(tmp_path / "data"), "--face-weights", "random"])
    assert exc.value.code == 2 and "--fps 0.0: invalid extraction config" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # no corpus was generated


def test_a_bad_override_is_refused_before_any_work(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        demo_main(["--set", "train.min_step=150", "--data", str(tmp_path / "data"), "--face-weights", "random"])
    assert exc.value.code == 2 and "--set: unknown key(s) train.min_step" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_corpus_seed_draws_another_corpus_of_the_same_design(tmp_path, monkeypatch):
    class Stop(Exception):
        """Ends the demo after its corpus: extraction and training are the demo test's."""

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(demo_module, "run_extraction", stop)
    monkeypatch.setenv(FFMPEG_ENV, "bundled")  # the demo sets it for its workers; restored after the test
    for seed in (0, 3):
        data = tmp_path / f"data{seed}"
        with pytest.raises(Stop):
            demo_main(["--data", str(data), "--speakers", "2", "--utts-per-speaker", "2", "--corpus-seed", str(seed)])
        assert json.loads((data / "corpus.json").read_text())["config"]["seed"] == seed
    first, second = (pd.read_csv(tmp_path / f"data{s}" / "manifest.csv") for s in (0, 3))
    assert list(first.columns) == list(second.columns) and len(first) == len(second) == 4
    assert not first["snr_db"].equals(second["snr_db"])  # another draw of the same design


def test_the_demo_falls_back_to_random_faces_without_dlib(monkeypatch):
    """`--face-weights auto` takes dlib here (the lock installs it); where dlib cannot be imported, random."""
    assert choose_face_weights("auto")[0] == "dlib"
    monkeypatch.setitem(sys.modules, "dlib", None)  # `import dlib` now fails as an uninstalled package does
    weights, why = choose_face_weights("auto")
    assert weights == "random" and "faces-dlib" in why, why

"""The staged recipes (examples/<dataset>/run.sh) end to end on small fake trees in each dataset's
published layout (tests/fake_datasets.py), with tiny networks through the scripts' own --set option;
and, fast, their option parsing, usage errors and the open-set VoxCeleb manifest."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from fake_datasets import demo_clips, make_fake_tree

from distill.testing import TINY
from extract import open_cache

REPO = Path(__file__).resolve().parents[1]

#: Tiny networks, one epoch, no loader workers or TensorBoard files: a run takes about a second.
SETS = [
    a for k, v in {**TINY, "data.num_workers": 0, "train.tensorboard": False}.items() for a in ("--set", f"{k}={v}")
]
EXTRACT = "--face-weights random --frame-size 96 --fps 2 --threads 1 --no-progress"


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    """Six speakers' talking-face clips, four emotions each, that every fake tree is made of."""
    return demo_clips(tmp_path_factory.mktemp("corpus"))


def fake_data(root: Path, clips, *datasets: str) -> Path:
    """A --data folder holding the fake trees of ``datasets`` (CREMA-D/, VoxCeleb2/, ...)."""
    for dataset in datasets:
        make_fake_tree(dataset, root, clips)
    return root


def small_sweep(source: Path, out: Path, **changes) -> Path:
    """The recipe's own sweep file with fewer seeds/folds/variants: its protocol, at test size."""
    tree = yaml.safe_load(source.read_text())
    tree.update(changes)
    out.write_text(yaml.safe_dump(tree))
    return out


def recipe(dataset: str, data: Path, work: Path, sweep: Path, *args: str) -> str:
    """Run examples/DATASET/run.sh on CPU; its stdout (the stage lines and the tools' summaries)."""
    cmd = ["bash", str(REPO / "examples" / dataset / "run.sh"), "--data", str(data), "--work", str(work)]
    cmd += ["--ngpu", "0", "--nj", "1", "--extract-args", EXTRACT, "--sweep", str(sweep), *SETS, *args]
    proc = run(cmd)
    assert proc.returncode == 0, f"{dataset} run.sh exited {proc.returncode}\n{proc.stdout}\n{proc.stderr[-3000:]}"
    return proc.stdout


def run(cmd: list[str], **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, **kwargs)


# --- options and usage errors (no data needed) --------------------------------------------------


def test_parse_options_sets_variables_appends_arrays_and_names_unknown_options(tmp_path):
    script = tmp_path / "opts.sh"
    script.write_text(
        "stop_stage=5; data=/data; set=()\n"
        f'. "{REPO}/examples/common/parse_options.sh"\n'
        'echo "stop=$stop_stage data=$data set=${#set[@]}:${set[*]} rest=$*"\n'
    )
    out = run(["bash", str(script), "--stop-stage", "3", "--data=/x y", "--set", "a=1", "--set=b=2", "pos"])
    assert out.returncode == 0 and out.stdout.strip() == "stop=3 data=/x y set=2:a=1 b=2 rest=pos"
    for bad, message in [
        (["--stopstage", "3"], "unknown option --stopstage"),
        (["--PATH", "/evil"], "unknown option --PATH"),
        (["--data"], "option --data needs a value"),
    ]:
        out = run(["bash", str(script), *bad])
        assert out.returncode == 2 and message in out.stderr, (bad, out.stderr)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--stage", "4", "--stop-stage", "2"], "--stage 4 is after --stop-stage 2"),
        (["--ngpu", "two"], "--ngpu must be a whole number, got 'two'"),
        (["--sweep", "missing.yaml"], "--sweep missing.yaml: no such file"),
        (["--ngpu", "0", "--nproc", "0"], "--nproc must be >= 1"),
        (["extra"], "unexpected argument 'extra'"),
    ],
)
def test_recipe_usage_errors_stop_before_any_work(tmp_path, args, message):
    out = run(["bash", str(REPO / "examples" / "cremad" / "run.sh"), "--work", str(tmp_path / "w"), *args])
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert not (tmp_path / "w" / "manifests").exists()


def test_recipe_refuses_gpus_torch_does_not_see(tmp_path):
    import torch

    n = torch.cuda.device_count() + 1
    out = run(["bash", str(REPO / "examples" / "iemocap" / "run.sh"), "--work", str(tmp_path), "--ngpu", str(n)])
    assert out.returncode == 2 and f"--ngpu {n}, but torch sees {n - 1} CUDA device(s)" in out.stderr


def test_help_lists_the_stages_and_options():
    out = run(["bash", str(REPO / "examples" / "voxceleb" / "run.sh"), "--help"])
    assert out.returncode == 0
    for text in ("1 manifests", "5 report", "--stage N --stop-stage M", "--trials NAME", "--ngpu N", "--set KEY=VALUE"):
        assert text in out.stdout


def _open_set():
    import importlib.util

    path = REPO / "examples" / "voxceleb" / "local" / "open_set_manifest.py"
    spec = importlib.util.spec_from_file_location("open_set_manifest", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.open_set


def test_open_set_manifest_keeps_dev_and_the_trial_clips():
    open_set = _open_set()
    vox2 = pd.DataFrame(
        {
            "utt_id": ["id00001/a/00001", "id00002/b/00001", "id00003/c/00001"],
            "speaker": ["id00001", "id00002", "id00003"],
            "split": ["train", "val", "test"],  # the VoxCeleb2 test subset: not trained, not tested
        }
    )
    vox1 = pd.DataFrame(
        {
            "utt_id": ["id10270/x/00001", "id10270/y/00001", "id10271/z/00001", "id10272/w/00001"],
            "speaker": ["id10270", "id10270", "id10271", "id10272"],
            "split": ["train", "test", "val", "train"],
        }
    )
    trials = pd.DataFrame(
        {"label": [1, 0], "enrol": ["id10270/x/00001.wav"] * 2, "test": ["id10270/y/00001.wav", "id10271/z/00001"]}
    )
    df = open_set(vox2, vox1, trials).set_index("utt_id")["split"].to_dict()
    assert df == {
        "id00001/a/00001": "train",
        "id00002/b/00001": "val",
        "id10270/x/00001": "test",
        "id10270/y/00001": "test",
        "id10271/z/00001": "test",
    }
    with pytest.raises(
        ValueError, match=r"names 1 utterance\(s\) not in the VoxCeleb1 manifest, e.g. 'id10299/q/00001'"
    ):
        open_set(
            vox2,
            vox1,
            pd.concat(
                [
                    trials,
                    pd.DataFrame({"label": [0], "enrol": ["id10299/q/00001.wav"], "test": ["id10270/x/00001.wav"]}),
                ]
            ),
        )
    with pytest.raises(ValueError, match=r"1 speaker\(s\) in both training and test, e.g. 'id10270': not open-set"):
        open_set(pd.concat([vox2, vox1.iloc[:1].assign(utt_id="id10270/dev/00001")]), vox1, trials)


def test_fake_iemocap_dialog_shows_each_speaker_in_their_half(tmp_path, clips):
    """The fake IEMOCAP the recipe test runs on is what the iemocap recipe assumes: the marked (F) actor
    on the left, every turn's voice and face its speaker's, every emotion in each session."""
    from fake_datasets import by_speaker

    from extract.decode import decode_audio, decode_frames
    from manifests.recipes import run_recipe

    base = make_fake_tree("iemocap", tmp_path, clips, sessions=1)
    df = run_recipe("iemocap", base, split=None).manifest.set_index("utt_id")
    assert len(df) == 8 and df["emotion"].nunique() == 4
    marked, other = by_speaker(clips)[:2]
    for utt, talker, listener in (
        ("Ses01F_impro01_F001", marked[1], other[1]),
        ("Ses01F_impro01_M002", other[2], marked[2]),
    ):
        turn = df.loc[utt]
        half = decode_frames(Path(turn["path"]), 10.0, 96, crop=turn["crop"], start=turn["start"], end=turn["end"])[0]
        own, theirs = (decode_frames(c.path, 10.0, 96)[0][: len(half)].astype(float) for c in (talker, listener))
        assert np.abs(half - own).mean() < 0.5 * np.abs(half - theirs).mean()
        assert turn["emotion"] == talker.emotion
        voice = decode_audio(Path(turn["path"]), 16000, turn["start"], turn["end"])
        clip = decode_audio(talker.path, 16000)
        n = min(len(voice), len(clip)) - 800
        assert np.corrcoef(voice[400:n], clip[400:n])[0, 1] > 0.9  # its audio is the talker's clip


def stage_lines(out: str) -> list[int]:
    return sorted({int(line.split()[2].rstrip(":")) for line in out.splitlines() if line.split()[1:2] == ["stage"]})


def snapshot(exp: Path) -> dict[str, float]:
    """Every run file that a rerun must leave alone when it has nothing to do: path -> mtime."""
    return {str(p.relative_to(exp)): p.stat().st_mtime_ns for p in exp.rglob("*") if p.name in RUN_FILES}


RUN_FILES = {"best.pt", "last.pt", "train_log.csv", "metrics.json", "targets.h5"}


# --- CREMA-D: folds, a teacher stage reused by the student stage, every stage resumable ---------


@pytest.mark.slow
def test_cremad_recipe_stages_reuse_and_resume(tmp_path, clips):
    data = fake_data(tmp_path / "data", clips, "cremad")
    sweep = small_sweep(
        REPO / "examples" / "cremad" / "sweep.yaml",
        tmp_path / "sweep.yaml",
        seeds=[0],
        folds={"column": "speaker", "k": 3},
        controls=[],
        variants=[{"name": "embed", "method": "embed"}],
    )
    work = tmp_path / "work"
    exp = work / "exp" / "emotion-nonseq"
    out = recipe("cremad", data, work, sweep, "--stop-stage", "3")
    assert stage_lines(out) == [1, 2, 3]
    manifest = pd.read_csv(work / "manifests" / "cremad.csv")
    assert len(manifest) == 6 * 4 and manifest["path"].str.endswith(".flv").all()  # 6 actors x 4 emotions
    cache = open_cache((work / "cache.path").read_text().strip())
    assert len(cache) == 24 and set(cache.index["speaker"].astype(str)) == {str(a) for a in range(1001, 1007)}
    for f in range(3):
        teacher = yaml.safe_load((exp / f"fold{f}" / "teacher" / "config.yaml").read_text())
        assert (teacher["data"]["fold_column"], teacher["data"]["fold"]) == ("speaker", f)
        assert (exp / f"fold{f}" / "teacher" / "targets.h5").is_file()
    assert not (exp / "fold0" / "embed").exists()  # stage 3 trains no student
    trained = snapshot(work / "exp")

    out = recipe("cremad", data, work, sweep, "--stage", "4")
    assert stage_lines(out) == [4, 5]
    assert "teachers 3 (3 done), students 3 (3 new)" in out
    assert {k: v for k, v in snapshot(work / "exp").items() if k in trained} == trained  # teachers reused
    for f in range(3):
        student = exp / f"fold{f}" / "embed" / "seed0"
        cfg = yaml.safe_load((student / "config.yaml").read_text())
        assert (cfg["data"]["fold_column"], cfg["data"]["fold"]) == ("speaker", f)
        assert cfg["distill"]["teacher"] == str(exp / f"fold{f}" / "teacher")
        teacher = yaml.safe_load((exp / f"fold{f}" / "teacher" / "config.yaml").read_text())
        assert all(cfg[k] == teacher[k] for k in ("data", "model", "eval"))  # the very teacher it distils
        assert cfg["model"]["audio_channels"] == TINY["model.audio_channels"]  # --set reached every run
        assert 0 <= json.loads((student / "metrics.json").read_text())["uar"] <= 1
    assert "skipped  emotion-nonseq/fold0/teacher" in out  # the student stage's sweep reused it
    assert "results.md is up to date with every finished run" in out  # written by stage 4's sweep
    assert "| nonseq | embed | 3 |" in out

    # A teacher killed while writing its targets, a student killed before its evaluation: rerunning the
    # training stages finishes both and touches nothing else.
    (exp / "fold1" / "teacher" / "targets.h5").unlink()
    (exp / "fold2" / "embed" / "seed0" / "metrics.json").unlink()
    before = snapshot(work / "exp")
    out = recipe("cremad", data, work, sweep, "--stage", "3", "--stop-stage", "4")
    assert stage_lines(out) == [3, 4]
    assert "repaired emotion-nonseq/fold1/teacher" in out  # by distill teacher --resume
    assert "every teacher is finished, with its targets: nothing to train" in out
    assert "resumed  emotion-nonseq/fold2/embed/seed0" in out
    assert (exp / "fold1" / "teacher" / "targets.h5").is_file()
    assert (exp / "fold2" / "embed" / "seed0" / "metrics.json").is_file()
    after = snapshot(work / "exp")
    changed = sorted(k for k in before if after[k] != before[k])
    assert changed == ["emotion-nonseq/fold1/teacher/metrics.json"], changed  # re-evaluated, not retrained


# --- IEMOCAP: turns cut from dialog videos, leave-one-session-out -------------------------------


@pytest.mark.slow
def test_iemocap_recipe_leave_one_session_out(tmp_path, clips):
    data = tmp_path / "data"
    make_fake_tree("iemocap", data, clips, sessions=3)  # 3 folds, the fewest cross-validation takes
    sweep = small_sweep(
        REPO / "configs" / "paper" / "emotion-nonseq.yaml",
        tmp_path / "sweep.yaml",
        seeds=[0],
        controls=[],
        variants=[{"name": "embed", "method": "embed"}],
    )
    work = tmp_path / "work"
    out = recipe("iemocap", data, work, sweep)
    assert stage_lines(out) == [1, 2, 3, 4, 5]
    manifest = pd.read_csv(work / "manifests" / "iemocap.csv")
    assert len(manifest) == 3 * 8 and set(manifest["crop"]) == {"left", "right"}  # 8 turns per session
    cache = open_cache((work / "cache.path").read_text().strip())
    assert len(cache) == len(manifest)
    found = [cache[u]["face_found"].mean() for u in cache]
    assert min(found) > 0.5, found  # each turn's half of the frame shows its speaker's face
    exp = work / "exp" / "emotion-nonseq"
    for f in range(3):  # one fold per session; fold f tests Session f+1
        cfg = yaml.safe_load((exp / f"fold{f}" / "embed" / "seed0" / "config.yaml").read_text())
        assert (cfg["data"]["fold_column"], cfg["data"]["fold"]) == ("session", f)
    assert "skipped  emotion-nonseq/fold2/teacher" in out  # stage 4 reuses stage 3's teachers
    assert "| nonseq | 2 | embed | 1 |" in (work / "exp" / "results.md").read_text()


# --- VoxCeleb: VoxCeleb2 dev trains, VoxCeleb1-O tests; then the torchrun path ----------------


@pytest.fixture(scope="module")
def voxceleb(tmp_path_factory, clips):
    """One full VoxCeleb run: (data folder, work dir, stdout)."""
    tmp = tmp_path_factory.mktemp("voxceleb")
    data = fake_data(tmp / "data", clips, "voxceleb2", "voxceleb1")
    sweep = small_sweep(
        REPO / "configs" / "paper" / "speaker-nonseq.yaml",
        tmp / "sweep.yaml",
        seeds=[0],
        variants=[{"name": "none", "method": "none"}, {"name": "embed", "method": "embed"}],
    )
    work = tmp / "work"
    out = recipe("voxceleb", data, work, sweep, "--val-speakers", "0.34", "--verify-runs", "embed")
    return data, work, out


@pytest.mark.slow
def test_voxceleb_recipe_open_set(voxceleb):
    data, work, out = voxceleb
    assert stage_lines(out) == [1, 2, 3, 4, 5]
    df = pd.read_csv(work / "manifests" / "vox2+vox1.csv")
    trials = pd.read_csv(data / "VoxCeleb1" / "veri_test2.txt", sep=" ", names=["label", "enrol", "test"])
    named = set(pd.concat([trials["enrol"], trials["test"]]).str.removesuffix(".wav"))
    test = df[df["split"] == "test"]
    assert set(test["utt_id"]) == named and test["path"].str.endswith(".wav").all()
    train = df[df["split"] != "test"]
    assert set(train["split"]) == {"train", "val"} and train["path"].str.endswith(".mp4").all()
    assert not set(train["speaker"]) & set(test["speaker"])  # open set
    assert not set(df.loc[df["split"] == "val", "speaker"]) & set(df.loc[df["split"] == "train", "speaker"])
    exp = work / "exp" / "speaker-nonseq"
    for run in ("teacher", "audio_teacher", "none/seed0", "embed/seed0", "embed@audio_teacher/seed0"):
        metrics = json.loads((exp / run / "metrics.json").read_text())
        assert metrics["trials"]["n_trials"] == len(trials) and "accuracy" not in metrics  # verification only
        assert metrics["trials"]["source"] == str(work / "manifests" / "vox1.veri_test2.txt")
    control = yaml.safe_load((exp / "audio_teacher" / "config.yaml").read_text())
    assert control["model"]["face_dropout"] == 1.0  # the control: the same teacher, its faces hidden
    student = yaml.safe_load((exp / "embed@audio_teacher" / "seed0" / "config.yaml").read_text())
    assert student["distill"]["teacher"] == str(exp / "audio_teacher")
    assert "| nonseq | embed@audio_teacher | 1 |" in out and "video's share" in out
    scores = pd.read_csv(work / "exp" / "verify" / "speaker-nonseq_embed_seed0.csv")
    assert len(scores) == len(trials) and scores["score"].notna().all()
    assert f"verify: {len(trials)} of {len(trials)} pair(s) scored" in out
    assert "| nonseq | embed | 1 |" in (work / "exp" / "results.md").read_text()


@pytest.mark.slow
def test_recipe_torchrun_path_trains_what_the_sweep_plans(voxceleb, tmp_path):
    """--nproc 2: each run under torchrun (2 gloo processes on CPU), configs as `distill sweep` plans them."""
    data, vox_work, _ = voxceleb
    work = tmp_path / "work"
    (work / "exp" / "speaker-nonseq").mkdir(parents=True)
    (work / "cache.path").write_text((vox_work / "cache.path").read_text())  # stages 1-3 as done there
    (work / "manifests").symlink_to(vox_work / "manifests")
    shutil.copytree(vox_work / "exp" / "speaker-nonseq" / "teacher", work / "exp" / "speaker-nonseq" / "teacher")
    sweep = small_sweep(
        REPO / "configs" / "paper" / "speaker-nonseq.yaml",
        tmp_path / "sweep.yaml",
        seeds=[0],
        controls=[],
        variants=[{"name": "softlabel", "method": "softlabel"}],  # not the CLI's default method
    )
    out = recipe("voxceleb", data, work, sweep, "--stage", "4", "--nproc", "2")
    assert "2 process(es) per training run" in out
    assert "reused   speaker-nonseq/teacher" in out and "trained  speaker-nonseq/softlabel/seed0" in out
    student = work / "exp" / "speaker-nonseq" / "softlabel" / "seed0"
    assert 0 <= json.loads((student / "metrics.json").read_text())["eer"] <= 1
    planned = yaml.safe_load((work / "plan" / "speaker-nonseq__softlabel__seed0.yaml").read_text())
    trained = yaml.safe_load((student / "config.yaml").read_text())
    assert trained == planned and trained["distill"]["method"] == "softlabel"
    assert "results over 2 of 2 planned run(s)" in out and "| nonseq | softlabel | 1 |" in out  # stage 5

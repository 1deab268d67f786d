"""Sweeps: one teacher per task x setting shared by all students, finished runs reused."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import yaml

from distill.cli import main
from distill.config import ConfigError
from distill.sweep import Folds, SweepSpec, run_sweep, set_for_every_run
from distill.testing import TINY, make_lupi_cache

REPO = Path(__file__).resolve().parents[1]


def nested(dotted: dict) -> dict:
    tree: dict = {}
    for key, value in dotted.items():
        section, name = key.split(".")
        tree.setdefault(section, {})[name] = value
    return tree


@pytest.fixture
def sweep_file(tmp_path):
    cache = make_lupi_cache(tmp_path / "cache", n_classes=3, per_class=8, n_frames=70)
    spec = {
        "cache": str(cache),
        "out": str(tmp_path / "out"),
        "seeds": [0, 1],
        "combos": [{"task": "emotion", "setting": "nonseq"}],
        "base": nested(TINY),
        "variants": [
            {"name": "none", "method": "none"},
            {"name": "embed-cosine", "method": "embed", "set": {"distill.distance": "cosine"}},
        ],
    }
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_sweep_trains_one_teacher_reuses_it_and_skips_finished_runs(sweep_file, tmp_path, capsys):
    result = run_sweep(sweep_file, progress=False)
    assert not result.failed and [r.status for r in result.runs] == ["trained"] * 5
    out = tmp_path / "out"
    teacher = out / "emotion-nonseq" / "teacher"
    student_cfg = yaml.safe_load((out / "emotion-nonseq" / "embed-cosine" / "seed1" / "config.yaml").read_text())
    assert student_cfg["distill"]["teacher"] == str(teacher) and student_cfg["distill"]["distance"] == "cosine"
    assert student_cfg["train"]["seed"] == 1
    table = pd.read_csv(out / "results.csv")
    assert set(table["method"]) == {"teacher", "teacher-no-video", "none", "embed-cosine"}
    assert (table["method"] == "embed-cosine").sum() == 2
    assert "embed-cosine" in (out / "results.md").read_text() and (out / "results_emotion.png").is_file()

    stamp = (teacher / "best.pt").stat().st_mtime_ns
    assert main(["sweep", str(sweep_file), "--quiet"]) == 0  # the rerun does nothing but the tables
    assert "0 run(s) trained" in capsys.readouterr().out
    assert (teacher / "best.pt").stat().st_mtime_ns == stamp


def test_sweep_file_errors_name_the_problem(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"cache": "c", "variants": [{"name": "x", "method": "telepathy"}]}))
    with pytest.raises(ConfigError, match="telepathy"):
        SweepSpec.load(path)
    path.write_text(yaml.safe_dump({"variants": [{"method": "none"}]}))
    with pytest.raises(ConfigError, match="no cache"):
        SweepSpec.load(path)


@pytest.mark.parametrize("path", sorted((REPO / "configs").glob("*sweep*.yaml")), ids=lambda p: p.name)
def test_shipped_sweeps_resolve_to_valid_run_configs(path, tmp_path):
    """A typo in a shipped sweep (a key, a method, a value) fails here, not hours into a user's run."""
    spec = SweepSpec.load(path, cache=str(tmp_path / "cache"), out=str(tmp_path / "out"))
    assert spec.variants and spec.combos
    for task, setting in spec.combos:
        teacher = spec.teacher_config(task, setting)
        assert (teacher.role, teacher.data.task, teacher.data.setting) == ("teacher", task, setting)
        for variant in spec.variants:
            student = spec.student_config(task, setting, variant, spec.seeds[0], tmp_path / "teacher")
            assert student.role == "student" and student.distill.method == variant.method


def test_noisy_labels_sweep_is_the_recipe_of_the_docs():
    spec = SweepSpec.load(REPO / "configs" / "noisy_labels_sweep.yaml", cache="c")
    task, setting = spec.combos[0]
    assert spec.teacher_config(task, setting).distill.face_recon == 10.0
    # its audio-only control must not see the faces as reconstruction targets either
    assert spec.teacher_config(task, setting, "audio_teacher").distill.face_recon == 0.0
    grads = {v.name: spec.student_config(task, setting, v, 0, REPO).distill.encoder_grad for v in spec.variants}
    assert grads["embed-distill-only"] == "distill-only" and grads["embed-joint"] == "joint"


def test_controls_train_an_audio_only_teacher_and_distil_every_variant_from_it(sweep_file, tmp_path):
    spec = yaml.safe_load(sweep_file.read_text())
    spec.update(seeds=[0], controls=["audio_teacher"])
    sweep_file.write_text(yaml.safe_dump(spec))
    result = run_sweep(sweep_file, progress=False)
    assert not result.failed
    combo = tmp_path / "out" / "emotion-nonseq"
    assert [r.name for r in result.runs] == [
        "emotion-nonseq/teacher",
        "emotion-nonseq/audio_teacher",
        "emotion-nonseq/none/seed0",
        "emotion-nonseq/embed-cosine/seed0",
        "emotion-nonseq/embed-cosine@audio_teacher/seed0",
    ]
    control = yaml.safe_load((combo / "audio_teacher" / "config.yaml").read_text())
    teacher = yaml.safe_load((combo / "teacher" / "config.yaml").read_text())
    assert control["model"]["face_dropout"] == 1.0 and teacher["model"]["face_dropout"] == 0.0
    assert control["distill"]["face_recon"] == 0.0
    assert {k: v for k, v in control["model"].items() if k != "face_dropout"} == {
        k: v for k, v in teacher["model"].items() if k != "face_dropout"
    }
    student = yaml.safe_load((combo / "embed-cosine@audio_teacher" / "seed0" / "config.yaml").read_text())
    assert student["distill"]["teacher"] == str(combo / "audio_teacher")
    assert set(pd.read_csv(tmp_path / "out" / "results.csv")["method"]) == {
        "teacher",
        "teacher-no-video",
        "audio_teacher",
        "none",
        "embed-cosine",
        "embed-cosine@audio_teacher",
    }
    assert "video's share" in (tmp_path / "out" / "results.md").read_text()


def test_unknown_controls_are_refused(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"cache": "c", "controls": ["blindfold"], "variants": [{"method": "none"}]}))
    with pytest.raises(ConfigError, match="blindfold"):
        SweepSpec.load(path)


def test_the_demo_sweep_runs_the_audio_teacher_control():
    spec = SweepSpec.load(REPO / "configs" / "demo_sweep.yaml", cache="c")
    assert spec.controls == ["audio_teacher"]
    task, setting = spec.combos[0]
    assert spec.teacher_config(task, setting, "audio_teacher").model.face_dropout == 1.0
    assert spec.teacher_config(task, setting).model.face_dropout == 0.0


def test_a_teacher_data_override_reaches_its_students(tmp_path):
    """One rule derives a student from its teacher (distill.run.student_config), in sweeps as in
    the CLI: a split set in the sweep's teacher section is the students' split too."""
    path = tmp_path / "sweep.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cache": "c",
                "seeds": [0],
                "combos": [{"task": "speaker", "setting": "nonseq"}],
                "base": {"train": {"epochs": 3}},
                "teacher": {"data": {"split_seed": 7}, "train": {"epochs": 9}},
                "variants": [{"name": "embed", "method": "embed"}],
                "controls": ["audio_teacher"],
            }
        )
    )
    spec = SweepSpec.load(path)
    for control in (None, "audio_teacher"):
        student = spec.student_config("speaker", "nonseq", spec.variants[0], 0, tmp_path / "t", control)
        assert student.data.split_seed == 7
        assert student.train.epochs == 3  # the teacher's own training schedule stays its own


@pytest.fixture
def session_cache(tmp_path):
    """An emotion corpus recorded in three sessions, every emotion in each (IEMOCAP-like)."""
    from distill.testing import make_lupi_items
    from extract.cache import build_cache

    items = make_lupi_items(n_classes=3, per_class=9, n_frames=70, with_split=False)
    for i, item in enumerate(items):
        item["session"] = f"Session{i % 9 % 3 + 1}"
    return build_cache(tmp_path / "cache", items, shard_size=32)


@pytest.mark.slow
def test_fold_sweep_trains_a_teacher_per_fold_and_reports_per_fold_and_mean_rows(session_cache, tmp_path):
    from distill.config import load_config
    from distill.data.dataset import assign_splits
    from distill.run import RunDir
    from distill.train.targets import TargetMismatchError
    from distill.train.trainer import run_training
    from extract.cache import open_cache

    path = tmp_path / "cv.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "cache": str(session_cache),
                "out": str(tmp_path / "out"),
                "seeds": [0],
                "folds": {"column": "session"},
                "combos": [{"task": "emotion", "setting": "nonseq"}],
                "base": nested(TINY),
                "variants": [{"name": "none", "method": "none"}, {"name": "embed", "method": "embed"}],
            }
        )
    )
    result = run_sweep(path, progress=False)
    assert not result.failed and len(result.runs) == 3 * 3
    index = open_cache(session_cache).index
    tested = []
    for fold, session in enumerate(["Session1", "Session2", "Session3"]):
        fold_dir = tmp_path / "out" / "emotion-nonseq" / f"fold{fold}"
        teacher_cfg = RunDir(fold_dir / "teacher").config()
        assert (teacher_cfg.data.fold_column, teacher_cfg.data.fold) == ("session", fold)
        # the run's own config says its split: recomputing it gives the teacher's recorded training set
        splits = assign_splits(index, teacher_cfg.data)
        trained = set((fold_dir / "teacher" / "train_ids.txt").read_text().split())
        assert trained == set(splits.index[splits == "train"])
        test = set(splits.index[splits == "test"])
        assert set(index.loc[list(test), "session"]) == {session} and not test & trained
        student = RunDir(fold_dir / "embed" / "seed0").config()
        assert student.distill.teacher == str(fold_dir / "teacher") and student.data.fold == fold
        tested.append(test)
    assert sorted(u for t in tested for u in t) == sorted(index.index)  # every item tested exactly once
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert sorted(table.loc[table["method"] == "embed", "fold"]) == [0, 1, 2]
    md = (tmp_path / "out" / "results.md").read_text()
    overall, per_fold = md.split("### Per fold")
    assert "n = folds" in md and any(line.startswith("| nonseq | embed | 3 |") for line in overall.splitlines())
    for fold in range(3):
        assert any(line.startswith(f"| nonseq | {fold} | embed | 1 |") for line in per_fold.splitlines())
    # the leakage guard still holds across folds: fold 1's student cannot read fold 0's teacher, which
    # trained on Session3, fold 1's val session
    folds_dir = tmp_path / "out" / "emotion-nonseq"
    crossed = load_config(
        folds_dir / "fold1" / "embed" / "seed0" / "config.yaml",
        overrides={"distill.teacher": str(folds_dir / "fold0" / "teacher")},
    )
    with pytest.raises(TargetMismatchError, match="were in the teacher's training set"):
        run_training(crossed, tmp_path / "crossed", progress=False)


def test_folds_are_checked_when_the_sweep_is_read_and_planned(session_cache, tmp_path):
    path = tmp_path / "s.yaml"
    bad = (({"col": "session"}, "folds must be a mapping"), ({"column": "speaker", "k": 2}, "k must be"))
    for folds, message in bad:
        path.write_text(yaml.safe_dump({"cache": "c", "folds": folds, "variants": [{"method": "none"}]}))
        with pytest.raises(ConfigError, match=message):
            SweepSpec.load(path)
    path.write_text(
        yaml.safe_dump({"cache": str(session_cache), "folds": {"column": "take"}, "variants": [{"method": "none"}]})
    )
    with pytest.raises(ConfigError, match="no column 'take'"):
        SweepSpec.load(path).fold_ids()
    spec = SweepSpec.load(path)
    spec.folds = Folds("speaker", 3)  # 3 folds of the 3 speakers, counted without reading the cache
    assert spec.fold_ids() == [0, 1, 2]
    assert spec.teacher_config("emotion", "seq", fold=2).data.fold == 2


def test_labels_per_class_plans_a_teacher_and_its_students_per_k(tmp_path):
    """A label-scarcity curve: every k has its own teacher (and control) on the same k labelled items,
    its students inherit that k, and `all` is every label."""
    from distill.run import RunDir
    from distill.sweep import plan_sweep, write_sweep_results

    path = tmp_path / "scarce.yaml"
    spec = {
        "cache": "c",
        "seeds": [0, 1],
        "combos": [{"task": "speaker", "setting": "nonseq"}],
        "labels_per_class": [1, 5, "all"],
        "controls": ["audio_teacher"],
        "variants": [{"name": "none", "method": "none"}, {"name": "embed", "method": "embed"}],
    }
    path.write_text(yaml.safe_dump(spec))
    tasks = {t.name: t for t in plan_sweep(SweepSpec.load(path), tmp_path / "out")}
    per_k = ["teacher", "audio_teacher", "none/seed0", "none/seed1", "embed/seed0", "embed/seed1"]
    per_k += ["embed@audio_teacher/seed0", "embed@audio_teacher/seed1"]
    assert list(tasks) == [f"speaker-nonseq/k{k}/{run}" for k in (1, 5, "all") for run in per_k]
    for k, value in ((1, 1), (5, 5), ("all", None)):
        combo = f"speaker-nonseq/k{k}"
        for run in per_k:
            assert tasks[f"{combo}/{run}"].config.data.labels_per_class == value
        for label, teacher in (("embed", "teacher"), ("embed@audio_teacher", "audio_teacher")):
            student = tasks[f"{combo}/{label}/seed1"]
            assert student.depends_on == f"{combo}/{teacher}"
            assert student.config.distill.teacher == str(tmp_path / "out" / combo / teacher)
        assert tasks[f"{combo}/none/seed0"].depends_on is None
    # the tables name students by variant and group them by k (run directories stand in for trained runs)
    spec["variants"][1]["name"] = "embed-cos"
    path.write_text(yaml.safe_dump(spec))
    for task in plan_sweep(SweepSpec.load(path), tmp_path / "out"):
        RunDir(task.run_dir).path.mkdir(parents=True)
        RunDir(task.run_dir).write_config(task.config)
        RunDir(task.run_dir).write_metrics({"accuracy": 0.5})
    table = pd.read_csv(write_sweep_results(SweepSpec.load(path), tmp_path / "out")["csv"])
    students = table[table["method"].isin(["embed-cos", "embed-cos@audio_teacher", "none"])]
    assert len(students) == 3 * 3 * 2 and set(table["method"]) >= {"embed-cos", "embed-cos@audio_teacher"}
    assert students.groupby("labels_per_class").size().to_dict() == {"1": 6, "5": 6, "all": 6}
    for bad in ([0], [2, 2], ["most"], []):
        path.write_text(yaml.safe_dump({**spec, "labels_per_class": bad}))
        with pytest.raises(ConfigError, match="labels_per_class must be a list of distinct integers >= 1"):
            SweepSpec.load(path)


def test_an_override_for_every_run_wins_over_the_teacher_section_but_not_a_variants_own():
    tree = yaml.safe_load(
        """
        shared: &shared {train: {epochs: 20, lr: 0.01}}
        base: *shared
        teacher: {train: {epochs: 30}}
        variants: [{name: short, method: none, set: {train.epochs: 2}}]
        """
    )
    set_for_every_run(tree, ["train.epochs=3", "train.min_steps=150"])
    assert tree["base"]["train"] == {"epochs": 3, "lr": 0.01, "min_steps": 150}
    assert tree["teacher"]["train"] == {"epochs": 3, "min_steps": 150}  # the teacher's own 30 is overridden
    assert tree["variants"][0]["set"] == {"train.epochs": 2}  # what makes that variant what it is
    assert tree["shared"] == {"train": {"epochs": 20, "lr": 0.01}}  # the anchor's other users keep theirs
    with pytest.raises(ConfigError, match="is not a section"):
        set_for_every_run(tree, ["train.lr.x=1"])

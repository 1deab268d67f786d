"""distill.eval.report over run directories written here as real config.yaml / metrics.json files."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from distill.budget import CAP, EARLY, Stopping
from distill.eval import report


def _run(root, name, config, metrics):
    run_dir = root / name
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def _sectioned(role, task, setting, method, seed):
    """The trainer's layout: sections, top-level role, a teacher's method left at its default."""
    return {
        "role": role,
        "data": {"task": task, "setting": setting, "crop": 100},
        "model": {"audio_encoder": "ecapa"},
        "train": {"seed": seed, "epochs": 2},
        "distill": {"method": method, "distance": "mse"},
    }


EER = {  # (method, seed) -> eer of a speaker nonseq run
    ("none", 0): 0.30,
    ("none", 1): 0.34,
    ("none", 2): 0.29,
    ("embed", 0): 0.20,
    ("embed", 1): 0.26,
}


@pytest.fixture
def runs(tmp_path):
    root = tmp_path / "runs"
    for (method, seed), eer in EER.items():
        _run(
            root,
            f"spk-nonseq-{method}-s{seed}",
            _sectioned("student", "speaker", "nonseq", method, seed),
            {"accuracy": 1 - eer, "top5_accuracy": 0.9, "eer": eer, "min_dcf": 2 * eer, "best_epoch": 3},
        )
    for seed, (acc, missing_acc) in enumerate([(0.95, 0.40), (0.91, 0.44)]):
        _run(
            root,
            f"teachers/spk-nonseq-teacher-s{seed}",
            _sectioned("teacher", "speaker", "nonseq", "none", seed),
            {"accuracy": acc, "eer": 0.05, "video_missing": {"accuracy": missing_acc, "eer": 0.45}},
        )
    # Flat layout, as a hand-made or older run might have it.
    _run(
        root,
        "emo-seq-gkd",
        {"task": "emotion", "setting": "seq", "method": "gkd", "seed": 7},
        {"uar": 0.5, "war": 0.6, "macro_f1": 0.45, "accuracy": 0.6},
    )
    (root / "unfinished").mkdir()
    (root / "unfinished" / "config.yaml").write_text("role: student\n")
    return root


def test_collect_runs_reads_every_layout(runs):
    df = report.collect_runs(runs)
    assert len(df) == len(EER) + 2 * 2 + 1  # the unfinished run is skipped
    assert list(df.columns[:5]) == ["run", "task", "setting", "method", "seed"]
    teacher = df[df["run"] == "teachers/spk-nonseq-teacher-s1"].set_index("method")
    assert teacher.loc["teacher", "accuracy"] == 0.91
    assert teacher.loc["teacher-no-video", "accuracy"] == 0.44
    assert teacher.loc["teacher-no-video", "eer"] == 0.45
    assert math.isnan(teacher.loc["teacher", "top5_accuracy"])
    emo = df[df["run"] == "emo-seq-gkd"].iloc[0]
    assert (emo["task"], emo["setting"], emo["method"], emo["seed"]) == ("emotion", "seq", "gkd", 7)
    assert "best_epoch" in df.columns  # non-contract numbers are kept too
    # A run named directly and again through its parent folder is one run.
    assert len(report.collect_runs([runs, runs / "emo-seq-gkd"])) == len(df)


def test_summarize_means_and_sample_stds(runs):
    df = report.collect_runs(runs)
    summary = report.summarize(df[df["task"] == "speaker"], ["eer", "accuracy"])
    assert summary["method"].tolist() == ["teacher", "teacher-no-video", "none", "embed"]
    by_method = summary.set_index("method")
    none = [EER[("none", s)] for s in range(3)]
    assert by_method.loc["none", "n"] == 3
    assert by_method.loc["none", "eer_mean"] == pytest.approx(np.mean(none))
    assert by_method.loc["none", "eer_std"] == pytest.approx(np.std(none, ddof=1))
    assert by_method.loc["embed", "eer_std"] == pytest.approx(np.std([0.20, 0.26], ddof=1))
    assert by_method.loc["teacher-no-video", "accuracy_mean"] == pytest.approx(0.42)
    assert by_method.loc["teacher", "accuracy_std"] == pytest.approx(np.std([0.95, 0.91], ddof=1))


def test_summarize_single_run_has_no_std_and_rejects_unknown_metric(runs):
    df = report.collect_runs(runs)
    summary = report.summarize(df[df["task"] == "emotion"], ["uar"])
    assert summary["n"].tolist() == [1] and math.isnan(summary["uar_std"].iloc[0])
    with pytest.raises(ValueError, match="no run reports nonsense"):
        report.summarize(df, ["nonsense"])


def test_write_results(runs, tmp_path):
    df = report.collect_runs(runs)
    written = report.write_results(df, tmp_path / "out")
    assert set(written) == {"csv", "md", "bar:speaker", "bar:emotion"}
    back = pd.read_csv(written["csv"])
    assert len(back) == len(df) and back["eer"].sum() == pytest.approx(df["eer"].sum())
    md = written["md"].read_text()
    speaker = md.split("## speaker")[1]
    none_row = next(line for line in speaker.splitlines() if "| none |" in line)
    mean, std = np.mean([0.30, 0.34, 0.29]), np.std([0.30, 0.34, 0.29], ddof=1)
    assert f"{mean:.3f} ± {std:.3f}" in none_row
    # embed has the lowest EER among audio-only rows; the teacher's lower one is not bolded.
    embed_row = next(line for line in speaker.splitlines() if "| embed |" in line)
    assert "**0.230 ± 0.042**" in embed_row
    assert "**" not in next(line for line in speaker.splitlines() if "| teacher |" in line)
    # top5_accuracy is 0.9 for every student: a tie singles nothing out, so nothing is bold.
    assert "**0.900" not in speaker
    emotion = md.split("## emotion")[1].split("## speaker")[0]  # tasks in alphabetical order
    assert "uar ↑" in emotion and "eer" not in emotion
    for png in (written["bar:speaker"], written["bar:emotion"]):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_collect_runs_errors_name_the_run(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        report.collect_runs(tmp_path)
    bad = _run(tmp_path, "bad", {"role": "student"}, {})
    (bad / "metrics.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"bad/metrics.json: not valid JSON"):
        report.collect_runs([bad])
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    (unfinished / "config.yaml").write_text("role: student\n")
    with pytest.raises(ValueError, match="unfinished: not a finished run directory"):
        report.collect_runs([unfinished])
    (bad / "config.yaml").unlink()
    (bad / "metrics.json").write_text("{}")
    with pytest.raises(ValueError, match="bad: not a finished run directory \\(no config.yaml\\)"):
        report.collect_runs([bad])


def test_main_cli(runs, tmp_path, capsys):
    assert report.main([str(runs / "emo-seq-gkd"), "--out", str(tmp_path / "cli")]) == 0
    out = capsys.readouterr().out
    assert "| seq | gkd | 1 |" in out
    assert out.strip().splitlines()[-1].startswith("1 rows from 1 runs in 1 groups")
    assert (tmp_path / "cli" / "results.md").is_file()
    assert report.main([str(tmp_path / "nowhere"), "--out", str(tmp_path / "cli2")]) == 1
    assert "nowhere: no such run directory" in capsys.readouterr().err


# accuracy per seed of a speaker nonseq sweep with the privileged-information control
CONTROL = {
    "none": [0.50, 0.55, 0.52],
    "embed": [0.60, 0.66, 0.61],
    "embed@audio_teacher": [0.59, 0.64, 0.62],
    "softlabel": [0.70, 0.74, 0.72],
    "softlabel@audio_teacher": [0.52, 0.55, 0.53],
}


@pytest.fixture
def control_runs(tmp_path):
    root = tmp_path / "sweep"
    teacher = _sectioned("teacher", "speaker", "nonseq", "none", 0)
    _run(root, "teacher", teacher, {"accuracy": 0.9, "video_missing": {"accuracy": 0.3}})
    audio = {**teacher, "model": {"audio_encoder": "ecapa", "face_dropout": 1.0}}
    _run(root, "audio_teacher", audio, {"accuracy": 0.6, "video_missing": {"accuracy": 0.6}})
    for label, accs in CONTROL.items():
        method, _, control = label.partition("@")
        for seed, acc in enumerate(accs):
            config = _sectioned("student", "speaker", "nonseq", method, seed)
            config["distill"]["teacher"] = str(root / (control or "teacher")) if method != "none" else None
            _run(root, f"{label}/seed{seed}", config, {"accuracy": acc, "eer": 1 - acc})
    return root


def test_the_control_teacher_and_its_students_are_named_apart(control_runs):
    df = report.collect_runs(control_runs)
    assert sorted(df["method"].unique()) == sorted(["teacher", "teacher-no-video", "audio_teacher", *CONTROL])
    assert (df["method"] == "teacher-no-video").sum() == 1  # the audio teacher's would repeat its own row
    order = report.summarize(df, ["accuracy"])["method"].tolist()
    assert order == [
        "teacher",
        "teacher-no-video",
        "audio_teacher",
        "none",
        "softlabel",
        "softlabel@audio_teacher",
        "embed",
        "embed@audio_teacher",
    ]


def test_video_shares_are_paired_by_seed_and_match_scipy(control_runs):
    from scipy import stats

    shares = report.video_shares(report.collect_runs(control_runs), "accuracy").set_index("method")
    assert sorted(shares.index) == ["embed", "softlabel"]
    for method in ("embed", "softlabel"):
        for name, reference in (("gain", "none"), ("share", f"{method}@audio_teacher")):
            ref = stats.ttest_rel(CONTROL[method], CONTROL[reference])
            ci = ref.confidence_interval()
            row = shares.loc[method]
            assert row[f"{name}_n"] == 3
            assert row[f"{name}_mean"] == pytest.approx(np.mean(np.subtract(CONTROL[method], CONTROL[reference])))
            assert (row[f"{name}_low"], row[f"{name}_high"], row[f"{name}_p"]) == pytest.approx(
                (ci.low, ci.high, ref.pvalue)
            )
    # EER: lower is better, so a better method still has a positive gain
    eer = report.video_shares(report.collect_runs(control_runs), "eer").set_index("method")
    assert eer.loc["softlabel", "gain_mean"] == pytest.approx(shares.loc["softlabel", "gain_mean"])


def test_results_md_says_in_words_when_the_share_is_not_significant(control_runs, tmp_path):
    written = report.write_results(report.collect_runs(control_runs), tmp_path / "out")
    md = written["md"].read_text()
    assert "video's share" in md and written["share:speaker"].read_bytes()[:4] == b"\x89PNG"
    embed = next(line for line in md.splitlines() if line.startswith("| nonseq | embed |") and "share" in line)
    soft = next(line for line in md.splitlines() if line.startswith("| nonseq | softlabel |") and "share" in line)
    assert "**not significant**" in embed and "gain over none significant" in embed
    assert "the video's share is significant" in soft


# uar of emotion nonseq runs over 3 folds x 2 seeds (fold -> seeds), and each fold's teacher
FOLDS = {"none": [[0.40, 0.44], [0.50, 0.52], [0.60, 0.66]], "embed": [[0.46, 0.50], [0.55, 0.55], [0.61, 0.71]]}


@pytest.fixture
def fold_runs(tmp_path):
    root = tmp_path / "cv"
    for fold in range(3):
        data = {"task": "emotion", "setting": "nonseq", "fold_column": "session", "n_folds": 0, "fold": fold}
        teacher = {**_sectioned("teacher", "emotion", "nonseq", "none", 0), "data": data}
        _run(root, f"emotion-nonseq/fold{fold}/teacher", teacher, {"uar": 0.8 + fold / 100})
        for method, per_fold in FOLDS.items():
            for seed, uar in enumerate(per_fold[fold]):
                config = {**_sectioned("student", "emotion", "nonseq", method, seed), "data": data}
                _run(root, f"emotion-nonseq/fold{fold}/{method}/seed{seed}", config, {"uar": uar})
    return root


def test_folds_give_per_fold_rows_and_mean_and_std_over_folds(fold_runs, tmp_path):
    df = report.collect_runs(fold_runs)
    assert list(df.columns[:6]) == ["run", "task", "setting", "method", "seed", "fold"]
    assert sorted(df.loc[df["method"] == "embed", "fold"].unique()) == [0, 1, 2]
    md = report.write_results(df, tmp_path / "out")["md"].read_text()
    overall, per_fold = md.split("### Per fold")
    for method, per_seed in FOLDS.items():
        fold_means = [np.mean(seeds) for seeds in per_seed]  # std over folds, not over the 6 runs
        row = next(line for line in overall.splitlines() if f"| {method} |" in line).replace("**", "")
        assert f"| 3 | {np.mean(fold_means):.3f} ± {np.std(fold_means, ddof=1):.3f}" in row
        for fold, seeds in enumerate(per_seed):
            row = next(line for line in per_fold.splitlines() if line.startswith(f"| nonseq | {fold} | {method} |"))
            row = row.replace("**", "")
            assert f"| 2 | {np.mean(seeds):.3f} ± {np.std(seeds, ddof=1):.3f}" in row
    assert "| nonseq | 2 | teacher | 1 | 0.820 |" in per_fold
    # gains over none are paired by (fold, seed): six pairs
    gains = report.video_shares(df, "uar").set_index("method")
    diffs = np.subtract(FOLDS["embed"], FOLDS["none"]).ravel()
    assert gains.loc["embed", "gain_n"] == 6 and gains.loc["embed", "gain_mean"] == pytest.approx(diffs.mean())


# uar of emotion nonseq students per labels_per_class value (None: every label) and seed
SCARCE = {1: {"none": [0.30, 0.34], "embed": [0.50, 0.56]}, None: {"none": [0.70, 0.72], "embed": [0.71, 0.75]}}


@pytest.fixture
def scarce_runs(tmp_path):
    """A label-scarcity sweep's runs, with their stopping records: the k=1 embed seed 1 hit the cap."""
    root = tmp_path / "scarce"
    for k, methods in SCARCE.items():
        data = {"task": "emotion", "setting": "nonseq", "labels_per_class": k}
        for method, per_seed in methods.items():
            for seed, uar in enumerate(per_seed):
                config = {**_sectioned("student", "emotion", "nonseq", method, seed), "data": data}
                run = _run(root, f"k{k or 'all'}/{method}/seed{seed}", config, {"uar": uar})
                capped = (k, method, seed) == (1, "embed", 1)
                steps = 60 if capped else 24 if seed == 0 else 0  # seed 1's record predates step counts
                stopping = Stopping(CAP if capped else EARLY, 30 if capped else 12, 9, 30, 5, "uar", steps=steps)
                stopping.write(run / "stopping.json")
        teacher = {**_sectioned("teacher", "emotion", "nonseq", "none", 0), "data": data}
        _run(root, f"k{k or 'all'}/teacher", teacher, {"uar": 0.9, "video_missing": {"uar": 0.3}})  # no record
    return root


def test_runs_are_grouped_by_labels_per_class(scarce_runs, tmp_path):
    df = report.collect_runs(scarce_runs)
    assert list(df.columns[:6]) == ["run", "task", "setting", "method", "seed", "labels_per_class"]
    assert df.groupby("labels_per_class")["run_dir"].nunique().to_dict() == {1: 5, "all": 5}
    written = report.write_results(df, tmp_path / "out")
    md = written["md"].read_text()
    curve, scarce = md.split("## emotion: 1 labelled training item per class")  # the curve comes first
    scarce, every = scarce.split("## emotion: every training label")
    assert "## emotion: the label-scarcity curve" in curve
    for section, k in ((scarce, 1), (every, None)):
        for method, per_seed in SCARCE[k].items():
            row = next(line for line in section.splitlines() if f"| {method} |" in line).replace("**", "")
            assert f"| 2 | {np.mean(per_seed):.3f} ± {np.std(per_seed, ddof=1):.3f}" in row
        gains = report.video_shares(df[df["labels_per_class"] == (k or "all")], "uar").set_index("method")
        diff = np.subtract(SCARCE[k]["embed"], SCARCE[k]["none"]).mean()
        assert gains.loc["embed", "gain_mean"] == pytest.approx(diff)
        assert f"{diff:+.3f}" in section  # each section's gain is its own k's
    assert {"bar:emotion_k1", "bar:emotion_kall"} <= set(written)


def test_the_report_counts_the_runs_that_hit_the_epoch_cap(scarce_runs, tmp_path):
    df = report.collect_runs(scarce_runs)
    runs = df.drop_duplicates("run_dir").set_index("run")
    assert runs.loc["k1/embed/seed1", "stopped"] == "cap" and runs.loc["k1/embed/seed1", "epochs_trained"] == 30
    assert runs.loc["kall/none/seed0", "stopped"] == "early" and pd.isna(runs.loc["k1/teacher", "stopped"])
    assert runs.loc["k1/embed/seed1", "steps_trained"] == 60 and runs.loc["kall/none/seed0", "steps_trained"] == 24
    assert pd.isna(runs.loc["kall/none/seed1", "steps_trained"])  # a record without a step count
    md = report.write_results(df, tmp_path / "out")["md"].read_text()
    assert "Budget: 1 of 8 runs (12 %) hit the epoch cap" in md
    assert "At the cap: `k1/embed/seed1`." in md and "2 run(s) record no stopping" in md
    assert report.budget_lines(df.drop(columns=["stopped", "epochs_trained", "steps_trained"])) == []  # no records


# accuracy of speaker nonseq students per labels_per_class value (None: every label), method and seed,
# with the privileged-information control at every value
CURVE = {
    1: {"none": [0.20, 0.24, 0.22], "embed": [0.50, 0.58, 0.52], "embed@audio_teacher": [0.21, 0.27, 0.20]},
    2: {"none": [0.30, 0.33, 0.35], "embed": [0.55, 0.57, 0.60], "embed@audio_teacher": [0.36, 0.30, 0.33]},
    None: {"none": [0.60, 0.62, 0.61], "embed": [0.61, 0.60, 0.64], "embed@audio_teacher": [0.60, 0.63, 0.61]},
}


@pytest.fixture
def curve_runs(tmp_path):
    """A label-scarcity sweep with its control, in the sweep's layout (k2 after kall on disk: order is the report's)."""
    root = tmp_path / "curve"
    for k in (None, 2, 1):
        data = {"task": "speaker", "setting": "nonseq", "labels_per_class": k}
        folder = root / f"k{k or 'all'}"
        teacher = {**_sectioned("teacher", "speaker", "nonseq", "none", 0), "data": data}
        _run(folder, "teacher", teacher, {"accuracy": 0.9, "video_missing": {"accuracy": 0.2}})
        audio = {**teacher, "model": {"audio_encoder": "ecapa", "face_dropout": 1.0}}
        _run(folder, "audio_teacher", audio, {"accuracy": 0.3})
        for label, accs in CURVE[k].items():
            method, _, control = label.partition("@")
            for seed, acc in enumerate(accs):
                config = {**_sectioned("student", "speaker", "nonseq", method, seed), "data": data}
                config["distill"]["teacher"] = str(folder / (control or "teacher")) if method != "none" else None
                _run(folder, f"{label}/seed{seed}", config, {"accuracy": acc, "eer": 1 - acc})
    return root


def test_the_label_curve_gives_every_values_gain_and_share_in_order(curve_runs, tmp_path):
    df = report.collect_runs(curve_runs)
    curve = report.label_curve(df, "accuracy")
    assert curve[["method", "labels_per_class"]].values.tolist() == [["embed", 1], ["embed", 2], ["embed", "all"]]
    for _, row in curve.iterrows():
        per = CURVE[None if row["labels_per_class"] == "all" else row["labels_per_class"]]
        assert row["gain_mean"] == pytest.approx(np.mean(np.subtract(per["embed"], per["none"])))
        assert row["share_mean"] == pytest.approx(np.mean(np.subtract(per["embed"], per["embed@audio_teacher"])))
        assert row["gain_n"] == row["share_n"] == 3
    table = report.format_curve(curve).splitlines()
    assert [line.split(" | ")[2] for line in table[2:]] == ["1", "2", "all"]
    with pytest.raises(ValueError, match="no run hides labels"):
        report.label_curve(df.drop(columns="labels_per_class"), "accuracy")


def test_results_md_opens_a_label_sweep_with_its_curve_and_plots_it(curve_runs, tmp_path):
    written = report.write_results(report.collect_runs(curve_runs), tmp_path / "out")
    md = written["md"].read_text()
    head, rest = md.split("## speaker: 1 labelled training item per class")
    assert "## speaker: the label-scarcity curve" in head and "## speaker: every training label" in rest
    means = next(line for line in head.splitlines() if line.startswith("| nonseq | embed |"))
    cells = [c.strip() for c in means.strip("|").split("|")][2:]
    expected = [CURVE[k]["embed"] for k in (1, 2, None)]
    assert cells == [f"{np.mean(v):.3f} ± {np.std(v, ddof=1):.3f}" for v in expected]
    teacher = next(line for line in head.splitlines() if line.startswith("| nonseq | teacher |"))
    assert teacher.count("0.900") == 3
    assert "along the curve: accuracy ↑" in head and "along the curve: eer ↓" in head
    with Image.open(written["curve:speaker"]) as img:
        assert img.size[0] > 1000 and np.asarray(img.convert("L")).std() > 0
    # one value of k: no curve
    one = report.collect_runs(curve_runs / "k1")
    assert "label-scarcity curve" not in report.write_results(one, tmp_path / "one")["md"].read_text()


def test_a_comparison_with_no_spread_over_seeds_is_reported_untestable_not_certain():
    # every seed's gain is 0.2 (to float rounding), the share control differs by seed: the gain has
    # no interval and no t-test, and the table says why instead of printing p < 0.001
    accs = {"none": [0.1, 0.5], "embed": [0.3, 0.7], "embed@audio_teacher": [0.25, 0.5]}
    df = pd.DataFrame(
        [
            {"task": "speaker", "setting": "nonseq", "method": m, "seed": s, "accuracy": a}
            for m, values in accs.items()
            for s, a in enumerate(values)
        ]
    )
    row = report.video_shares(df, "accuracy").set_index("method").loc["embed"]
    assert row["gain_mean"] == pytest.approx(0.2) and np.isnan(row["gain_p"]) and np.isnan(row["gain_low"])
    assert not np.isnan(row["share_p"])
    line = next(x for x in report.format_shares(report.video_shares(df, "accuracy")).splitlines() if "| embed |" in x)
    assert "+0.200 (the same on all 2 seeds: no interval)" in line
    assert "gain over none untested (the same on all 2 seeds)" in line and "< 0.001" not in line

"""The manifests CLI and manifest I/O: files written, paths portable, exit codes meaningful."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from manifests.cli import main
from manifests.io import read_manifest, write_manifest
from manifests.trials import read_trials


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def ravdess_root(tmp_path: Path) -> Path:
    root = tmp_path / "data" / "RAVDESS"
    for actor in range(1, 7):
        for emotion in ("01", "03", "04", "05"):
            for rep in ("01", "02"):
                touch(root / f"Actor_{actor:02d}" / f"01-01-{emotion}-01-01-{rep}-{actor:02d}.mp4")
    touch(root / "Actor_01" / "01-01-01-01-01-01.mp4")  # six fields: malformed
    return root


def test_cli_writes_manifest_skip_report_and_trials(tmp_path, ravdess_root, capsys):
    out = tmp_path / "out" / "ravdess.csv"
    rc = main(
        [
            "ravdess",
            str(ravdess_root),
            "--out",
            str(out),
            "--split",
            "speaker-disjoint",
            "--ratios",
            "0.5",
            "0.17",
            "0.33",
            "--trials",
            "5",
            "--seed",
            "1",
        ]
    )
    assert rc == 0
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    assert summary.startswith(f"{out}: 48 items, 6 speakers, emotion angry=12 happy=12 neutral=12 sad=12")
    assert summary.endswith("10 trials in trials.txt, 1 skipped")
    df = read_manifest(out)
    assert len(df) == 48 and df["speaker"].nunique() == 6
    assert all(Path(p).is_file() for p in df["path"])
    assert df.groupby("split")["speaker"].nunique().to_dict() == {"test": 2, "train": 3, "val": 1}
    skipped = pd.read_csv(tmp_path / "out" / "ravdess.skipped.csv")
    assert skipped["item"].str.endswith("01-01-01-01-01-01.mp4").all()
    trials = read_trials(tmp_path / "out" / "ravdess.trials.txt")
    assert trials["label"].value_counts().to_dict() == {1: 5, 0: 5}
    test_utts = set(df.loc[df["split"] == "test", "utt_id"])
    assert set(trials["enrol"]) | set(trials["test"]) <= test_utts


def test_cli_parquet_with_default_split(tmp_path, ravdess_root):
    out = tmp_path / "ravdess.parquet"
    assert main(["ravdess", str(ravdess_root), "--out", str(out), "--n-folds", "3", "--fold", "2"]) == 0
    df = read_manifest(out)
    assert df.groupby("split")["speaker"].nunique().to_dict() == {"test": 2, "train": 2, "val": 2}


def test_cli_exit_codes(tmp_path, ravdess_root, capsys):
    assert main(["cremad", str(ravdess_root), "--out", str(tmp_path / "m.csv")]) == 1
    assert "is not a cremad root" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["ravdess", str(ravdess_root), "--out", str(tmp_path / "m.csv"), "--labels", "x.csv"])
    assert exc.value.code == 2 and "--labels does not apply to recipe ravdess" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["ravdess", str(ravdess_root), "--out", str(tmp_path / "m.txt")])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main(["ravdess", str(ravdess_root), "--out", str(tmp_path / "m.csv"), "--split", "none", "--trials", "3"])
    assert exc.value.code == 2 and "--trials needs a test split" in capsys.readouterr().err
    assert not (tmp_path / "m.csv").exists()


def test_python_dash_m_entry_point(tmp_path, ravdess_root):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "manifests",
            "ravdess",
            str(ravdess_root),
            "--out",
            str(tmp_path / "r.csv"),
            "--split",
            "none",
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "split" not in pd.read_csv(tmp_path / "r.csv").columns
    assert "48 items" in proc.stdout


def test_manifest_paths_relative_inside_absolute_outside(tmp_path):
    inside, outside = touch(tmp_path / "corpus" / "videos" / "a.mp4"), touch(tmp_path / "elsewhere" / "b.mp4")
    df = pd.DataFrame({"utt_id": ["a", "b"], "path": [str(inside), str(outside)], "speaker": ["0012", "0013"]})
    out = write_manifest(df, tmp_path / "corpus" / "manifest.csv")
    raw = pd.read_csv(out, dtype=str)
    assert raw["path"].tolist() == ["videos/a.mp4", str(outside)]
    back = read_manifest(out)
    assert back["path"].tolist() == [str(inside), str(outside)]
    assert back["speaker"].tolist() == ["0012", "0013"]  # identifiers keep their spelling
    with pytest.raises(ValueError, match=r"1 duplicate utt_id\(s\), e.g. 'a'"):
        write_manifest(pd.concat([df, df.iloc[:1]]), tmp_path / "dup.csv")
    (tmp_path / "dup.csv").write_text("utt_id,path\na,x.mp4\na,y.mp4\n")
    with pytest.raises(ValueError, match=r"dup.csv: 1 duplicate utt_id\(s\), e.g. 'a'"):
        read_manifest(tmp_path / "dup.csv")
    with pytest.raises(ValueError, match=r"lacks required column\(s\) path"):
        write_manifest(df.drop(columns="path"), tmp_path / "x.csv")

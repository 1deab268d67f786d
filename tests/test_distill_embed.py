"""distill.serve.embed and `distill embed`: .npy/.csv, and .h5 files that resume after a kill."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from inference_runs import assert_close, trained_runs

from distill.cli import main
from distill.serve.embed import read_h5
from distill.serve.model import Model

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return trained_runs(tmp_path_factory)


def _manifest(path: Path, runs, n: int, bad: bool = False) -> Path:
    files = [runs.wavs[i % len(runs.wavs)] for i in range(n)]
    rows = [{"utt_id": f"u{i:03d}", "path": str(f)} for i, f in enumerate(files)]
    if bad:
        rows.insert(2, {"utt_id": "broken", "path": str(runs.not_audio)})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_h5_resumes_from_what_it_holds(runs, tmp_path, capsys):
    run = str(runs.speaker)
    part = _manifest(tmp_path / "part.csv", runs, 3)
    full = _manifest(tmp_path / "full.csv", runs, 7, bad=True)
    out = tmp_path / "e.h5"
    assert main(["embed", run, "--manifest", str(part), "--out", str(out), "--quiet"]) == 0
    assert read_h5(out)[0] == ["u000", "u001", "u002"]
    capsys.readouterr()
    # the full manifest: the 3 stored are skipped, the broken file gets its line, the rest are added
    assert main(["embed", run, "--manifest", str(full), "--out", str(out), "--quiet", "--chunk", "2"]) == 1
    captured = capsys.readouterr()
    assert captured.out.startswith("embedded 4 file(s), 3 already stored, 1 failed; 7 x 16 in")
    assert "broken" in captured.err and captured.err.count("error:") == 1
    ids, emb = read_h5(out)
    assert sorted(ids) == [f"u{i:03d}" for i in range(7)]
    want = Model.from_run(run).embed([str(runs.wavs[int(u[1:]) % len(runs.wavs)]) for u in ids])
    assert_close(emb, want)
    assert not (tmp_path / "e.h5.parts").exists()
    # another model's embeddings never go into this file
    assert main(["embed", str(runs.emotion), "--manifest", str(full), "--out", str(out), "--quiet"]) == 2
    assert "another model" in capsys.readouterr().err


@pytest.mark.slow
def test_h5_killed_mid_run_resumes_to_the_same_file(runs, tmp_path, capsys):
    manifest = _manifest(tmp_path / "m.csv", runs, 60)
    out, parts = tmp_path / "e.h5", tmp_path / "e.h5.parts"
    args = ["embed", str(runs.speaker), "--manifest", str(manifest), "--out", str(out), "--chunk", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    proc = subprocess.Popen([sys.executable, "-m", "distill", *args], cwd=REPO, env=env, **quiet)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and len(list(parts.glob("part-*.npz"))) < 3:
        time.sleep(0.01)
    assert proc.poll() is None, "the run finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists()
    committed = len(list(parts.glob("part-*.npz")))
    capsys.readouterr()
    assert main(args) == 0  # the same command again, in this process
    assert f"{committed} already stored" in capsys.readouterr().out
    ids, emb = read_h5(out)
    assert ids == [f"u{i:03d}" for i in range(60)]
    want = Model.from_run(runs.speaker).embed([str(runs.wavs[i % len(runs.wavs)]) for i in range(4)])
    assert_close(emb, np.tile(want, (15, 1)))


def test_npy_and_csv_outputs(runs, tmp_path, capsys):
    files = [str(p) for p in runs.wavs[:2]]
    assert main(["embed", str(runs.emotion), *files, "--out", str(tmp_path / "e.npy"), "--quiet"]) == 0
    emb = np.load(tmp_path / "e.npy")
    assert_close(emb, Model.from_run(runs.emotion).embed(files))
    assert (
        main(["embed", str(runs.emotion), files[0], str(runs.too_short), "--out", str(tmp_path / "e.csv"), "--quiet"])
        == 1
    )
    table = pd.read_csv(tmp_path / "e.csv")
    assert table["path"].tolist() == files[:1]
    assert "blip.wav" in capsys.readouterr().err
    assert main(["embed", str(runs.emotion), str(runs.not_audio), "--out", str(tmp_path / "y.npy"), "--quiet"]) == 1
    assert capsys.readouterr().out.strip() == "embedded 0 file(s), 1 failed: nothing written"
    assert not (tmp_path / "y.npy").exists()
    assert main(["embed", str(runs.emotion), "--out", str(tmp_path / "x.npy")]) == 2  # no input

"""DDP under torchrun with 2 CPU processes (gloo): it runs, rank 0 writes, metrics close to 1 process.

The two processes also compile their step (``train.compile=on``, what CUDA runs get by default), so
the wrap order (DDP first, then compile) is exercised. torch's backend override sends the captured
graphs to its ``eager`` backend: dynamo traces the step through DDP's forward as it would for
inductor, without code generation (inductor's C++ build costs minutes on this CPU; AOTAutograd's
backward graphs are tested in test_distill_compile.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from distill.cli import main
from distill.testing import TINY, make_lupi_cache

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_process_training_matches_one_process(tmp_path):
    cache = make_lupi_cache(tmp_path / "cache", n_classes=3, per_class=16, n_frames=90)
    sets = [a for k, v in {**TINY, "train.epochs": 3}.items() if k != "data.batch_size" for a in ("--set", f"{k}={v}")]
    # --face-recon: the objective's own parameters (the face decoder) are synchronised too
    common = [
        "teacher",
        "--cache",
        str(cache),
        "--task",
        "speaker",
        "--setting",
        "nonseq",
        "--quiet",
        "--face-recon",
        "1",
        *sets,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    # The same 8 items per optimiser step: one process with batch 8 (this one), or two with 4 each.
    assert main([*common, "--set", "data.batch_size=8", "--out", str(tmp_path / "one")]) == 0
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "distill",
            *common,
            "--set",
            "data.batch_size=4",
            "--set",
            "train.compile=on",
            "--out",
            str(tmp_path / "two"),
        ],
        capture_output=True,
        text=True,
        env={**env, "TORCH_COMPILE_OVERRIDE_BACKENDS": ">=0:eager"},
        timeout=240,
    )
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count("teacher speaker/nonseq:") == 1  # only rank 0 reports
    one, two = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("one", "two"))
    for key in ("accuracy", "top5_accuracy", "eer"):
        assert abs(one[key] - two[key]) <= 0.2, (key, one[key], two[key])
    log1, log2 = (pd.read_csv(tmp_path / d / "train_log.csv") for d in ("one", "two"))
    assert len(log1) == len(log2) == 3
    assert (abs(log1["train_total"] - log2["train_total"]) / log1["train_total"]).max() < 0.15
    assert (tmp_path / "two" / "targets.h5").is_file()

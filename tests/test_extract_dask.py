"""The same extraction on dask (issue 6): a LocalCluster, and a scheduler + two workers started as
separate processes on loopback, one of them killed mid-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from processes import start_scheduler, start_worker, stop_group

from extract import open_cache
from extract.cache import read_index_rows
from extract.config import ExtractConfig
from extract.run import RunOptions, run_extraction
from extract.verify import verify_cache
from tests.conftest import write_manifest

pytest.importorskip("distributed")

CFG = ExtractConfig(face_weights="random", frame_size=128)
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def manifest(clips, tmp_path_factory) -> Path:
    names = ["mp4", "noface", "wav", "webm", "mkv", "m4a", "flv", "avi"]
    rows = [{"utt_id": f"d{i}", "path": str(clips[n].path), "speaker": f"s{i % 2}"} for i, n in enumerate(names)]
    return write_manifest(tmp_path_factory.mktemp("dask") / "manifest.csv", rows)


@pytest.fixture(scope="module")
def loky_cache(manifest, tmp_path_factory) -> Path:
    options = RunOptions(shard_size=3, threads=1, progress=False)
    return run_extraction(manifest, tmp_path_factory.mktemp("loky"), CFG, options).cache_dir


def assert_same_cache(got: Path, want: Path) -> None:
    a, b = open_cache(got), open_cache(want)
    assert a.cache_id == b.cache_id and sorted(a) == sorted(b)
    for utt in b:
        x, y = a[utt], b[utt]
        for key in ("fbank", "face", "face_found", "frame_times"):
            np.testing.assert_array_equal(x[key], y[key], err_msg=f"{utt}.{key}")
        assert x["speaker"] == y["speaker"] and x["has_video"] == y["has_video"]


@pytest.mark.slow
def test_local_cluster_equals_loky(manifest, loky_cache, tmp_path):
    options = RunOptions(workers=2, backend="dask", shard_size=3, threads=1, progress=False)
    summary = run_extraction(manifest, tmp_path, CFG, options)
    assert summary.extracted == 8 and not summary.failures
    assert summary.cache_dir.name == loky_cache.name  # the backend is not a feature setting
    assert_same_cache(summary.cache_dir, loky_cache)


@pytest.mark.slow
def test_separate_scheduler_and_workers_survive_a_killed_worker(manifest, loky_cache, tmp_path):
    scheduler, address = start_scheduler(tmp_path)
    procs = [scheduler]
    try:
        procs += [start_worker(address, f"w{i}", tmp_path) for i in range(2)]
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)

        cache_root = tmp_path / "cache"
        driver = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "extract",
                "run",
                "--manifest",
                str(manifest),
                "--cache-root",
                str(cache_root),
                "--backend",
                "dask",
                "--scheduler",
                address,
                "--shard-size",
                "1",
                "--face-weights",
                "random",
                "--frame-size",
                "128",
                "--no-progress",
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        index = cache_root / loky_cache.name / "index.jsonl"
        deadline = time.monotonic() + 180
        while not (index.exists() and index.stat().st_size):  # first shard committed: both workers busy
            assert driver.poll() is None and time.monotonic() < deadline, driver.stderr.read()
            time.sleep(0.02)
        os.killpg(procs[1].pid, signal.SIGKILL)
        committed_at_kill = len(read_index_rows(cache_root / loky_cache.name))

        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        assert out.strip().splitlines()[-1].split()[-1] == str(cache_root / loky_cache.name)
        assert committed_at_kill < 8, "the worker was killed after the run had finished"
        assert verify_cache(cache_root / loky_cache.name).ok
        assert_same_cache(cache_root / loky_cache.name, loky_cache)
    finally:
        for proc in reversed(procs):
            stop_group(proc)


def test_local_cluster_workers_keep_glibc_malloc_defaults():
    """dask's nannies set MALLOC_TRIM_THRESHOLD_ (a training run then takes 1.5x the time, page-faulting
    every large tensor in); the toolkit's LocalCluster leaves it out and keeps dask's other settings."""
    import dask

    from extract.cluster import PRE_SPAWN_ENVIRON, dask_client

    assert "MALLOC_TRIM_THRESHOLD_" in dask.config.get(PRE_SPAWN_ENVIRON)  # dask's default, which we undo
    # two at once (two runs on one machine): the second's scheduler takes a free port of its own
    # instead of warning that dask's fixed 8787 is in use
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with dask_client(None, 1) as client, dask_client(None, 1):
            env = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")})
    assert list(env.values()) == [{"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}]
    assert not [w for w in caught if "already in use" in str(w.message)], [str(w.message) for w in caught]
    assert "MALLOC_TRIM_THRESHOLD_" in dask.config.get(PRE_SPAWN_ENVIRON)  # the global config untouched

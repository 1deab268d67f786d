"""Faults during extraction (issue 6): corrupt shards and --repair, disk full, SIGKILL and resume,
two runs at once."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from extract import open_cache
from extract.cache import read_index_rows
from extract.cli import EXIT_BUSY, EXIT_FAILURES, EXIT_OK, EXIT_STORAGE, main
from extract.config import ExtractConfig
from extract.faces import resolve_face_weights
from extract.run import RunOptions, run_extraction
from extract.verify import verify_cache
from tests.conftest import write_manifest

CFG = ExtractConfig(face_weights="random", frame_size=128)
ARGS = ["--face-weights", "random", "--frame-size", "128", "--threads", "1", "--no-progress"]
CACHE_ID = CFG.hash(resolve_face_weights("random", 0).identity)


@pytest.fixture(scope="module")
def manifest(clips, tmp_path_factory) -> Path:
    """12 items (clips reused under several ids) so runs span several shards."""
    names = ["mp4", "mkv", "avi", "webm", "flv", "noface", "wav", "m4a"]
    rows = [
        {"utt_id": f"u{i:02d}", "path": str(clips[names[i % len(names)]].path), "speaker": f"s{i % 3}"}
        for i in range(12)
    ]
    return write_manifest(tmp_path_factory.mktemp("faults") / "manifest.csv", rows)


@pytest.fixture(scope="module")
def reference(manifest, tmp_path_factory) -> dict[str, dict]:
    options = RunOptions(shard_size=4, threads=1, progress=False)
    summary = run_extraction(manifest, tmp_path_factory.mktemp("ref"), CFG, options)
    cache = open_cache(summary.cache_dir)
    return {utt: cache[utt] for utt in cache}


def assert_same_features(cache_dir: Path, reference: dict[str, dict]) -> None:
    cache = open_cache(cache_dir)
    assert sorted(cache) == sorted(reference)
    for utt, want in reference.items():
        got = cache[utt]
        for key in ("fbank", "face", "face_found", "frame_times"):
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{utt}.{key}")


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "extract", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: a kill takes the whole run down, like a lost node
        **kwargs,
    )


def test_flipped_bytes_and_truncated_shard_are_named_and_repaired(manifest, reference, tmp_path, capsys):
    cache_root = tmp_path / "cache"
    assert main(["run", "--manifest", str(manifest), "--cache-root", str(cache_root), "--shard-size", "4", *ARGS]) == 0
    cache_dir = cache_root / CACHE_ID
    rows = {r["utt_id"]: r for r in read_index_rows(cache_dir)}
    flipped, cut, intact = sorted({r["shard"] for r in rows.values()})
    members = lambda shard: sorted(u for u, r in rows.items() if r["shard"] == shard)  # noqa: E731

    with h5py.File(cache_dir / "shards" / flipped, "r") as h5:
        info = h5["fbank"].id.get_chunk_info(0)  # the first fbank chunk holds every item of the shard
    with open(cache_dir / "shards" / flipped, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        chunk = bytearray(fh.read(8))
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    path = cache_dir / "shards" / cut
    os.truncate(path, path.stat().st_size * 6 // 10)

    report = verify_cache(cache_dir)
    assert set(report.bad_shards) == {flipped, cut}
    assert sorted(report.bad_items) == sorted(members(flipped) + members(cut))
    assert main(["verify", str(cache_dir)]) == EXIT_FAILURES
    out = capsys.readouterr().out
    assert flipped in out and cut in out and intact not in out and f"'{members(cut)[0]}'" in out

    assert main(["run", "--manifest", str(manifest), "--cache-root", str(cache_root), "--repair", *ARGS]) == EXIT_OK
    assert "8 extracted, 4 already cached, 0 failed, 8 repaired" in capsys.readouterr().out
    assert main(["verify", str(cache_dir)]) == EXIT_OK
    after = {r["utt_id"]: r for r in read_index_rows(cache_dir)}
    assert all(after[u]["shard"] == intact for u in members(intact))  # the intact shard was left alone
    assert not (cache_dir / "shards" / flipped).exists() and not (cache_dir / "shards" / cut).exists()
    assert_same_features(cache_dir, reference)


def _limit_file_size(limit: int):
    return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def test_disk_full_stops_cleanly_and_rerun_completes(manifest, reference, tmp_path):
    cache_root = tmp_path / "cache"
    first = write_manifest(tmp_path / "first.csv", [r for r in _rows(manifest)[:4]])
    assert main(["run", "--manifest", str(first), "--cache-root", str(cache_root), *ARGS]) == EXIT_OK
    cache_dir = cache_root / CACHE_ID
    index_before = (cache_dir / "index.jsonl").read_bytes()

    # Every file this run writes is capped at 20 kB: a shard cannot be completed (Python ignores
    # SIGXFSZ, so the write fails with EFBIG as it would with ENOSPC on a full disk).
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "extract",
            "run",
            "--manifest",
            str(manifest),
            "--cache-root",
            str(cache_root),
            "--shard-size",
            "2",
            *ARGS,
        ],
        capture_output=True,
        text=True,
        timeout=180,
        preexec_fn=_limit_file_size(20_000),
    )
    assert proc.returncode == EXIT_STORAGE, proc.stderr
    assert "cannot write shard" in proc.stderr and "free space" in proc.stderr
    assert (cache_dir / "index.jsonl").read_bytes() == index_before  # the commit log is untouched
    assert not [p for p in (cache_dir / "shards").iterdir() if p.name.startswith(".tmp-")]
    assert verify_cache(cache_dir).ok

    assert main(["run", "--manifest", str(manifest), "--cache-root", str(cache_root), *ARGS]) == EXIT_OK
    assert_same_features(cache_dir, reference)


def _rows(manifest: Path) -> list[dict]:
    import pandas as pd

    return pd.read_csv(manifest).to_dict("records")


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_equals_uninterrupted(manifest, reference, tmp_path):
    cache_root = tmp_path / "cache"
    cache_dir = cache_root / CACHE_ID
    run = ["run", "--manifest", str(manifest), "--cache-root", str(cache_root), "--shard-size", "2", *ARGS]

    # An uninterrupted run in a subprocess, its work timed from taking the lock (after imports and
    # model loading); while it holds the lock, a second run must refuse.
    def wait_for_lock(proc: subprocess.Popen, cache: Path) -> bool:
        lock = cache / ".lock"
        while not (lock.exists() and lock.read_text() == str(proc.pid)):  # the holder writes its pid
            if proc.poll() is not None:
                return False
            time.sleep(0.01)
        return True

    timing = _cli(*run[:4], str(tmp_path / "timing"), *run[5:])
    assert wait_for_lock(timing, tmp_path / "timing" / CACHE_ID), timing.stderr.read()
    began = time.monotonic()
    assert main([*run[:4], str(tmp_path / "timing"), *run[5:]]) == EXIT_BUSY
    assert timing.wait(timeout=180) == EXIT_OK, timing.stderr.read()
    work = time.monotonic() - began
    assert verify_cache(tmp_path / "timing" / CACHE_ID).ok

    # Five SIGKILLs, each at a random moment of the work the killed run had left; every other run
    # uses two loky worker processes, so kills also land while workers (not the driver) write shards.
    rng = np.random.default_rng(6)
    progress = []
    for k in range(5):
        left = len(reference) - (len(read_index_rows(cache_dir)) if cache_dir.exists() else 0)
        proc = _cli(*run, "--workers", str(1 + k % 2))
        if wait_for_lock(proc, cache_dir):
            time.sleep(rng.uniform(0.05, 0.9) * work * left / len(reference))
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        progress.append(len(read_index_rows(cache_dir)))
    print(f"items committed after each kill: {progress}")  # shown with -s; figures in docs/extract.md
    assert main(run) == EXIT_OK  # the resume, in this process
    assert min(progress) < len(reference), f"no kill landed before the end: {progress}"

    lines = (cache_dir / "index.jsonl").read_text().splitlines()
    ids = [json.loads(line)["utt_id"] for line in lines]
    assert len(ids) == len(set(ids)) == len(reference)  # no duplicate, no missing item
    named = {json.loads(line)["shard"] for line in lines}
    assert {p.name for p in (cache_dir / "shards").iterdir()} == named  # no orphan left behind
    assert verify_cache(cache_dir).ok
    assert_same_features(cache_dir, reference)


def test_verify_and_repair_work_on_a_compacted_cache(manifest, reference, tmp_path, capsys):
    cache_root = tmp_path / "cache"
    assert main(["run", "--manifest", str(manifest), "--cache-root", str(cache_root), "--shard-size", "2", *ARGS]) == 0
    cache_dir = cache_root / CACHE_ID
    total = sum(p.stat().st_size for p in (cache_dir / "shards").glob("*.h5"))
    target_mb = str(total / 2.5 / 2**20)  # the six 2-item shards become two or three
    assert main(["compact", str(cache_dir), "--target-mb", target_mb, "--no-progress"]) == EXIT_OK
    assert "shards merged into" in capsys.readouterr().out
    rows = {r["utt_id"]: r for r in read_index_rows(cache_dir)}
    shards = sorted({r["shard"] for r in rows.values()})
    assert 2 <= len(shards) <= 3 and sorted(p.name for p in (cache_dir / "shards").iterdir()) == shards
    assert_same_features(cache_dir, reference)

    bad = max(shards, key=lambda s: sum(r["shard"] == s for r in rows.values()))  # the largest compacted shard
    with h5py.File(cache_dir / "shards" / bad, "r") as h5:
        info = h5["fbank"].id.get_chunk_info(0)
    with open(cache_dir / "shards" / bad, "r+b") as fh:
        fh.seek(info.byte_offset + info.size // 2)
        chunk = bytearray(fh.read(8))
        fh.seek(info.byte_offset + info.size // 2)
        fh.write(bytes(b ^ 0xFF for b in chunk))
    report = verify_cache(cache_dir)
    assert list(report.bad_shards) == [bad] and report.bad_items
    assert all(rows[u]["shard"] == bad for u in report.bad_items)

    assert main(["run", "--manifest", str(manifest), "--cache-root", str(cache_root), "--repair", *ARGS]) == EXIT_OK
    assert f"{len(report.bad_items)} repaired" in capsys.readouterr().out
    assert main(["verify", str(cache_dir)]) == EXIT_OK
    assert_same_features(cache_dir, reference)

"""``extract compact``: small shards merged into large ones, atomically, and readable as before."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import extract.compact as compact_mod
from extract.cache import (
    INDEX_FILE,
    SHARD_DIR,
    build_cache,
    open_cache,
    read_index_rows,
)
from extract.cli import main
from extract.compact import compact_cache
from extract.verify import verify_cache

N_ITEMS = 40
TARGET_MB = 0.1  # a bin holds about four of the ~30 KB two-item shards


def make_item(i: int) -> dict:
    rng = np.random.default_rng(i)
    n_face = 3 + i % 4
    found = rng.random(n_face) > 0.3
    item = {
        "utt_id": f"id{i % 5:05d}/vid{i:03d}/00001",
        "fbank": rng.standard_normal((80 + 3 * i, 40)).astype(np.float32),
        "face": rng.standard_normal((n_face, 512)).astype(np.float32) * found[:, None],
        "face_found": found,
        "frame_times": np.arange(n_face, dtype=np.float32) / 5,
        "speaker": f"id{i % 5:05d}",
        "path": f"dev/mp4/id{i % 5:05d}/vid{i:03d}/00001.mp4",
        "has_video": i % 7 != 0,
    }
    if i % 7 == 0:  # audio only
        item.update(
            face=np.zeros((0, 512), np.float32), face_found=np.zeros(0, bool), frame_times=np.zeros(0, np.float32)
        )
    return item


def snapshot_of(cache_dir: Path) -> dict:
    """Every item's labels and arrays, exactly as read."""
    cache = open_cache(cache_dir)
    out = {}
    for utt in cache:
        item = cache[utt]
        out[utt] = {k: v for k, v in item.items()}
    cache.close()
    return out


def assert_same_items(got: dict, expected: dict) -> None:
    assert list(got) == list(expected)
    for utt, item in expected.items():
        assert set(got[utt]) == set(item), utt
        for key, value in item.items():
            if isinstance(value, np.ndarray):
                assert got[utt][key].dtype == value.dtype, (utt, key)
                np.testing.assert_array_equal(got[utt][key], value, err_msg=f"{utt} {key}")
            else:
                assert got[utt][key] == value, (utt, key)


@pytest.fixture
def small_shards(tmp_path) -> Path:
    return build_cache(tmp_path / "cache", [make_item(i) for i in range(N_ITEMS)], shard_size=2)


def test_compaction_merges_small_shards_and_keeps_every_item_identical(small_shards):
    before = snapshot_of(small_shards)
    summary = compact_cache(small_shards, target_mb=TARGET_MB)
    shards = sorted((small_shards / SHARD_DIR).iterdir())
    assert summary.shards_before == N_ITEMS // 2 and summary.shards_after == len(shards) < N_ITEMS // 4
    assert summary.items == 2 * summary.merged and summary.written == summary.shards_after - (
        N_ITEMS // 2 - summary.merged
    )
    assert_same_items(snapshot_of(small_shards), before)
    assert verify_cache(small_shards).ok and not verify_cache(small_shards).orphans
    # Every current row names a new shard; the old rows stay in the log, superseded.
    assert {r["shard"] for r in read_index_rows(small_shards)} == {p.name for p in shards}
    assert (small_shards / INDEX_FILE).read_bytes().count(b"\n") == N_ITEMS + summary.items
    again = compact_cache(small_shards, target_mb=TARGET_MB)  # nothing small left to pair up
    assert again.written <= 1 and again.shards_after <= summary.shards_after


def test_an_exception_mid_compaction_leaves_the_same_items(small_shards, monkeypatch):
    before = snapshot_of(small_shards)
    real_commit, calls = compact_mod.commit_rows, []

    def commit_then_die(cache_dir, rows):
        if len(calls) == 2:
            raise RuntimeError("injected: killed after two merged shards")
        calls.append(len(rows))
        real_commit(cache_dir, rows)

    monkeypatch.setattr(compact_mod, "commit_rows", commit_then_die)
    with pytest.raises(RuntimeError, match="injected"):
        compact_cache(small_shards, target_mb=TARGET_MB)
    assert_same_items(snapshot_of(small_shards), before)
    referenced = {r["shard"] for r in read_index_rows(small_shards)}
    assert {p.name for p in (small_shards / SHARD_DIR).iterdir()} == referenced  # no orphan, no temp file
    monkeypatch.setattr(compact_mod, "commit_rows", real_commit)
    compact_cache(small_shards, target_mb=TARGET_MB)  # a rerun finishes the job
    assert_same_items(snapshot_of(small_shards), before)


COMPACT_SCRIPT = """
import sys, time
from extract.compact import compact_cache
print("ready", flush=True)
began = time.perf_counter()
compact_cache(sys.argv[1], target_mb=float(sys.argv[2]))
print(time.perf_counter() - began, flush=True)
"""


def test_sigkill_at_random_moments_of_compaction_leaves_the_same_items(small_shards, tmp_path):
    before = snapshot_of(small_shards)
    log_size = (small_shards / INDEX_FILE).stat().st_size
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1]), os.environ.get("PYTHONPATH", "")]),
    }

    def start(cache_dir: Path) -> subprocess.Popen:
        proc = subprocess.Popen(
            [sys.executable, "-c", COMPACT_SCRIPT, str(cache_dir), str(TARGET_MB)],
            env=env,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout.readline().strip() == "ready"  # imports done: the kill lands in compaction
        return proc

    reference = tmp_path / "reference"
    shutil.copytree(small_shards, reference)
    proc = start(reference)
    seconds = float(proc.stdout.readline())
    assert proc.wait(timeout=60) == 0
    partial = 0
    for trial, when in enumerate([None, *np.linspace(0.05, 0.95, 5)]):
        victim = tmp_path / f"killed{trial}"
        shutil.copytree(small_shards, victim)
        proc = start(victim)
        if when is None:  # right after the first merged shard is committed
            while (victim / INDEX_FILE).stat().st_size == log_size and proc.poll() is None:
                time.sleep(0.0005)
        else:
            time.sleep(when * seconds)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=60)
        rows = read_index_rows(victim)
        old = {r["shard"] for r in read_index_rows(small_shards)}
        partial += 0 < sum(r["shard"] not in old for r in rows) < len(rows)
        assert_same_items(snapshot_of(victim), before)
        compact_cache(victim, target_mb=TARGET_MB)
        assert_same_items(snapshot_of(victim), before)
        assert verify_cache(victim).ok and not verify_cache(victim).orphans
    assert partial >= 1, "no kill landed between the first and the last merged shard"


def test_a_corrupt_shard_is_left_alone_named_and_verify_still_finds_it(small_shards, capsys):
    cache = open_cache(small_shards)
    bad = cache.shard_paths()[3]
    bad_items = [u for i, u in enumerate(cache) if cache.shard_name(i) == bad.name]
    data = bytearray(bad.read_bytes())
    start = len(data) // 3
    data[start : start + 2048] = bytes(b ^ 0xFF for b in data[start : start + 2048])
    bad.write_bytes(bytes(data))
    assert main(["compact", str(small_shards), "--target-mb", str(TARGET_MB), "--no-progress"]) == 1
    captured = capsys.readouterr()
    assert f"unreadable: shard {bad.name}" in captured.err and "compact:" in captured.out
    assert bad.exists()
    report = verify_cache(small_shards)
    assert sorted(report.bad_items) == sorted(bad_items) and list(report.bad_shards) == [bad.name]


def test_verify_finds_corruption_in_a_compacted_shard(small_shards):
    compact_cache(small_shards, target_mb=TARGET_MB)
    cache = open_cache(small_shards)
    big = cache.shard_paths()[0]
    data = bytearray(big.read_bytes())
    start = len(data) // 2
    data[start : start + 4096] = bytes(b ^ 0xFF for b in data[start : start + 4096])
    big.write_bytes(bytes(data))
    report = verify_cache(small_shards)
    assert not report.ok and list(report.bad_shards) == [big.name]


def test_index_and_compact_commands(small_shards, capsys):
    (small_shards / "index.parquet").unlink()
    assert main(["index", str(small_shards)]) == 0
    assert f"snapshot of {N_ITEMS} items" in capsys.readouterr().out
    assert (small_shards / "index.parquet").exists()
    assert main(["compact", str(small_shards), "--target-mb", str(TARGET_MB), "--no-progress"]) == 0
    assert "shards merged into" in capsys.readouterr().out
    assert main(["compact", str(small_shards.parent / "nope")]) == 2
    assert main(["compact", str(small_shards), "--target-mb", "0"]) == 2

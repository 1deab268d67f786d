"""extract.schedule: items costed from their probe and dealt into tasks that finish together."""

from __future__ import annotations

import heapq
from pathlib import Path

import numpy as np
import pytest

from extract.config import ExtractConfig
from extract.decode import MediaInfo, decode
from extract.pipeline import ManifestItem
from extract.schedule import cost_tasks, estimate_cost, plan_tasks, probe_items

CFG = ExtractConfig(face_weights="random")


def makespan(tasks: list[list[int]], costs: list[float], workers: int) -> float:
    """Workers take tasks in the given order as they free up (what loky's queue does)."""
    free = [0.0] * workers
    for task in tasks:
        heapq.heappush(free, heapq.heappop(free) + sum(costs[i] for i in task))
    return max(free)


def test_tasks_hold_every_item_once_and_respect_the_item_cap():
    costs = list(np.random.default_rng(0).uniform(0.1, 10, 203))
    tasks = plan_tasks(costs, workers=3, max_items=16)
    assert sorted(i for t in tasks for i in t) == list(range(203))
    assert max(len(t) for t in tasks) <= 16
    totals = [sum(costs[i] for i in t) for t in tasks]
    assert totals == sorted(totals, reverse=True)  # costliest first: the last to start are small


@pytest.mark.parametrize("workers", [1, 2, 4])
def test_mixed_costs_finish_together(workers):
    # The corpus shape: 24 clips of three sizes; 16-item tasks gave one worker two thirds.
    costs = [8.0] * 8 + [3.0] * 8 + [1.0] * 8
    tasks = plan_tasks(costs, workers, max_items=16)
    ideal = sum(costs) / workers
    assert makespan(tasks, costs, workers) <= 1.1 * ideal
    by_count = [list(range(i, min(i + 16, 24))) for i in range(0, 24, 16)]
    if workers == 2:
        assert makespan(by_count, costs, workers) > 1.5 * ideal  # the failure this fixes


def test_cost_grows_with_duration_and_pixels_and_respects_cuts():
    small = MediaInfo(True, True, 4.0, 224, 224, 25.0)
    large = MediaInfo(True, True, 4.0, 1280, 720, 25.0)
    audio = MediaInfo(True, False, 4.0)
    assert estimate_cost(large, CFG) > estimate_cost(small, CFG) > estimate_cost(audio, CFG) > 0
    fixed = estimate_cost(MediaInfo(True, True, 0.0, 224, 224, 25.0), CFG)  # per item, whatever its length
    assert estimate_cost(small, CFG, start=1.0, end=3.0) - fixed == pytest.approx(
        (estimate_cost(small, CFG) - fixed) / 2
    )
    assert 0 < estimate_cost(None, CFG) < estimate_cost(audio, CFG)  # unreadable items fail fast


def test_probe_is_attached_and_reused_by_decode(clips, tmp_path):
    items = [ManifestItem("v", str(clips["mp4"].path)), ManifestItem("gone", str(tmp_path / "gone.mp4"))]
    probed = probe_items(items)
    assert [p.utt_id for p in probed] == ["v", "gone"]
    info = probed[0].info
    assert (info.width, info.height, info.frame_rate, info.has_video) == (128, 96, 10.0, True)
    assert probed[1].info is None  # left for its worker to fail with the full reason
    plain, reused = (
        decode(clips["mp4"].path, fps=5, frame_size=64),
        decode(clips["mp4"].path, fps=5, frame_size=64, info=info),
    )
    assert np.array_equal(plain.audio, reused.audio) and np.array_equal(plain.frames, reused.frames)


def test_windows_cover_the_manifest_lazily(clips):
    items = [ManifestItem(f"u{i}", str(clips[k].path)) for i, k in enumerate(["mp4", "wav", "mkv", "avi", "m4a"])]
    tasks = cost_tasks(iter(items), CFG, workers=2, max_items=2, window=2)
    first = next(tasks)  # planned from the first window only
    assert {it.utt_id for it in first} <= {"u0", "u1"}
    rest = [it.utt_id for t in tasks for it in t]
    assert sorted([it.utt_id for it in first] + rest) == [f"u{i}" for i in range(5)]
    assert all(Path(it.path).exists() for it in first)

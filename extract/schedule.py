"""Deal extraction work out by estimated cost, not by item count, so parallel workers finish together.

A 12 s 1280×720 clip costs many times a 2 s 224² one: tasks of a fixed number of items leave one
worker with most of the work at the end of a run. Every item is probed first (one ``ffmpeg -i``
banner parse; the probe is handed on to the decoder so no file is probed twice), costed as
duration × (face frames + native pixels decoded), and packed into tasks of near-equal cost, each
holding at most ``max_items`` items so that a kill still loses little.

Planning happens in windows of the manifest, so probing the next window overlaps the extraction
of this one and a million-item run starts at once.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from itertools import islice
from pathlib import Path

from extract.config import ExtractConfig
from extract.decode import DecodeError, MediaInfo, check_readable, probe
from extract.pipeline import ManifestItem

#: Single-thread CPU seconds that an item costs (rough figures measured on the bench_extract
#: corpus on a busy 2-core machine; only their ratios matter): the face models per sampled frame,
#: decoding a native pixel at its native frame rate, the audio path per media second, and a fixed
#: part per item (three ffmpeg processes: probe, audio, video; the shard's share of a write).
FACE_FRAME_S = 0.08  # MTCNN + InceptionResnetV1 on one 256² frame
NATIVE_PIXEL_S = 5e-10  # decode + scale of one native pixel (h264 720p at 25 fps ≈ 0.01 s per media second)
AUDIO_S = 0.005  # per media second
ITEM_S = 0.3  # per item, whatever its length
UNKNOWN_DURATION_S = 10.0  # an item whose length cannot be told costs like a 10 s clip
UNREADABLE_S = 0.01  # an item the probe cannot read fails in its worker as fast
TASKS_PER_WORKER = 4  # per window: enough tasks that near-equal ones even out across workers
WINDOW = 1024  # items probed and planned together


def estimate_cost(
    info: MediaInfo | None, cfg: ExtractConfig, start: float | None = None, end: float | None = None
) -> float:
    """Estimated single-thread seconds to extract one item (only comparisons between items matter)."""
    if info is None:  # unreadable now: it fails fast in its worker
        return UNREADABLE_S
    duration = info.duration if info.duration is not None else UNKNOWN_DURATION_S
    if end is not None:
        duration = min(duration, end)
    duration = max(0.0, duration - (start or 0.0))
    per_second = AUDIO_S
    if info.has_video:
        frame_cost = FACE_FRAME_S * (cfg.frame_size / 256) ** 2
        per_second += cfg.fps * frame_cost + NATIVE_PIXEL_S * info.pixels * (info.frame_rate or 25.0)
    return ITEM_S + duration * per_second


def probe_items(items: Sequence[ManifestItem], threads: int | None = None) -> list[ManifestItem]:
    """The items with their probe attached (``info``); an item that cannot be probed keeps None and
    fails with its reason in its worker, where every other check runs too."""

    def one(item: ManifestItem) -> ManifestItem:
        try:
            check_readable(Path(item.path))  # ffmpeg describes a missing file as one without streams
            return replace(item, info=probe(Path(item.path)))
        except (DecodeError, OSError):
            return item

    if not items:
        return []
    threads = threads or min(32, 4 * (os.cpu_count() or 1))  # ffmpeg processes: mostly waiting on I/O
    with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix="probe") as pool:
        return list(pool.map(one, items))


def plan_tasks(costs: Sequence[float], workers: int, max_items: int) -> list[list[int]]:
    """Indices of ``costs`` packed into tasks of near-equal total cost, costliest task first.

    ``max(ceil(n / max_items), TASKS_PER_WORKER × workers)`` tasks (never more than n; one worker
    has nobody to balance against, so it gets full tasks: fewer shards); items go, costliest first,
    to the cheapest task with room (longest-processing-time-first, capped at ``max_items`` a task).
    Workers take tasks in that order, so the last ones to start are small.
    """
    n = len(costs)
    if n == 0:
        return []
    spread = TASKS_PER_WORKER * workers if workers > 1 else 1
    n_tasks = min(n, max(math.ceil(n / max_items), spread))
    heap = [(0.0, t) for t in range(n_tasks)]  # (cost so far, task) among the tasks with room
    tasks: list[list[int]] = [[] for _ in range(n_tasks)]
    totals = [0.0] * n_tasks
    for i in sorted(range(n), key=lambda i: -costs[i]):
        total, t = heapq.heappop(heap)
        tasks[t].append(i)
        totals[t] = total + costs[i]
        if len(tasks[t]) < max_items:
            heapq.heappush(heap, (totals[t], t))
    order = sorted(range(n_tasks), key=lambda t: -totals[t])
    return [tasks[t] for t in order if tasks[t]]


def cost_tasks(
    items: Iterable[ManifestItem], cfg: ExtractConfig, workers: int, max_items: int, window: int = WINDOW
) -> Iterator[list[ManifestItem]]:
    """Tasks (lists of probed items) for ``items``, planned a window at a time; lazy."""
    items = iter(items)
    while chunk := list(islice(items, window)):
        probed = probe_items(chunk)
        costs = [estimate_cost(it.info, cfg, it.start, it.end) for it in probed]
        for task in plan_tasks(costs, workers, max_items):
            yield [probed[i] for i in task]

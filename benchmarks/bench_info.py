"""`extract info`'s face count: one read of `face_found` per shard vs one slice per item.

Both contenders run in this process on the same synthetic cache (packed shards, every item with
video); the figure is their time ratio, and both must count the same frames.

    python benchmarks/bench_info.py                      # 3,000 items x 200 face frames
    python benchmarks/bench_info.py --items 20000 --shard-size 1024
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from extract.cache import build_cache, open_cache


def per_item(cache) -> tuple[int, int]:
    """The way `extract info` counted before: one HDF5 slice per item."""
    found = frames = 0
    for utt in cache:
        mask = cache.read(utt, fields=("face_found",))["face_found"]
        found, frames = found + int(mask.sum()), frames + len(mask)
    return found, frames


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--items", type=int, default=3000, help="items in the synthetic cache")
    p.add_argument("--frames", type=int, default=200, help="face frames per item (8 s at 25 fps)")
    p.add_argument("--shard-size", type=int, default=256, help="items per shard")
    args = p.parse_args()
    rng = np.random.default_rng(0)
    items = (
        {
            "utt_id": f"u{i:06d}",
            "fbank": np.zeros((10, 40), np.float32),
            "face": np.zeros((args.frames, 512), np.float32),
            "face_found": rng.random(args.frames) > 0.2,
            "frame_times": np.arange(args.frames, dtype=np.float32),
            "split": "train",
        }
        for i in range(args.items)
    )
    with tempfile.TemporaryDirectory() as root:
        build_cache(root, items, shard_size=args.shard_size)
        cache = open_cache(root)
        started = time.perf_counter()
        slow = per_item(cache)
        t_item = time.perf_counter() - started
        started = time.perf_counter()
        fast = cache.count_faces_found()
        t_shard = time.perf_counter() - started
        cache.close()
    if slow != fast:
        print(f"MISMATCH: per item {slow}, per shard {fast}")
        return 1
    print(
        f"{args.items} items, {fast[1]} face frames: per item {t_item:.3f} s, per shard {t_shard:.3f} s, "
        f"ratio {t_item / t_shard:.0f}x"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

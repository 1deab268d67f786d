"""One training run with and without dask's worker malloc setting (MALLOC_TRIM_THRESHOLD_=65536).

dask's nannies put that variable in every worker's environment; it also switches off glibc's
adaptive mmap threshold, so every large tensor is a fresh mmap that is page-faulted in. This runs the
same run (a run directory's config.yaml, retrained into a temporary folder) in a fresh interpreter
each way, alternating, and prints wall, user and system time and the ratio.

    python benchmarks/bench_malloc_env.py RUN_DIR [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN = (
    "import sys, torch; torch.set_num_threads(1); from distill.config import load_config; "
    "from distill.train.trainer import run_training; "
    "run_training(load_config(sys.argv[1]), sys.argv[2], progress=False)"
)


def one(config: Path, env: dict[str, str]) -> tuple[float, float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        subprocess.run([sys.executable, "-c", TRAIN, str(config), out], env=env, check=True, cwd=REPO)
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path, help="a finished run directory (its config.yaml is retrained)")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds of the two settings")
    args = p.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    base["PYTHONPATH"] = str(REPO)
    settings = {
        "glibc defaults": base,
        "dask's MALLOC_TRIM_THRESHOLD_=65536": {**base, "MALLOC_TRIM_THRESHOLD_": "65536"},
    }
    best = {}
    for _ in range(args.rounds):
        for name, env in settings.items():
            wall, user, system = one(args.run_dir / "config.yaml", env)
            print(f"{name:38s} wall {wall:6.1f} s  user {user:6.1f} s  system {system:6.1f} s", flush=True)
            best[name] = min(best.get(name, (wall, user, system)), (wall, user, system))
    (w0, _, s0), (w1, _, s1) = best.values()
    print(f"dask's setting / defaults (best of {args.rounds}): wall {w1 / w0:.2f}x, system time {s1 / s0:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

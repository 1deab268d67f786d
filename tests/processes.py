"""Helpers for tests that start real processes (a dask scheduler and workers) and kill them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: docs/cluster.md's setting for dask workers one starts oneself: large blocks stay on the heap.
WORKER_MALLOC = {
    "DASK_DISTRIBUTED__NANNY__PRE_SPAWN_ENVIRON": repr(
        {"MALLOC_TRIM_THRESHOLD_": 1073741824, "MALLOC_MMAP_THRESHOLD_": 33554432, "MALLOC_TOP_PAD_": 268435456}
    )
}


def spawn_module(*args: str, log: Path) -> subprocess.Popen:
    """``python -m ARGS`` in its own session (killpg takes a dask worker's nanny and its process
    down together), output to ``log``, this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **WORKER_MALLOC}
    return subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=REPO,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process's session, SIGKILL it if it has not ended 20 s later."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def start_scheduler(folder: Path) -> tuple[subprocess.Popen, str]:
    """A dask scheduler on loopback (random port); returns it and its address once it listens."""
    import json
    import time

    sched_file, log = folder / "scheduler.json", folder / "scheduler.log"
    proc = spawn_module(
        "distributed.cli.dask_scheduler",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--no-dashboard",
        "--scheduler-file",
        str(sched_file),
        log=log,
    )
    deadline = time.monotonic() + 60
    while not sched_file.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            stop_group(proc)
            raise RuntimeError(f"the dask scheduler did not start: {log.read_text()}")
        time.sleep(0.1)
    time.sleep(0.2)  # the file is written in one go, but give the writer a moment to close it
    return proc, json.loads(sched_file.read_text())["address"]


def start_worker(address: str, name: str, folder: Path) -> subprocess.Popen:
    """A one-thread dask worker called ``name`` on loopback, joined to the scheduler at ``address``."""
    return spawn_module(
        "distributed.cli.dask_worker",
        address,
        "--nthreads",
        "1",
        "--host",
        "127.0.0.1",
        "--no-dashboard",
        "--name",
        name,
        log=folder / f"worker-{name}.log",
    )

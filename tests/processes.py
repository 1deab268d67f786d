"""Helpers for tests that start real processes (a dask scheduler and workers) and kill them."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def spawn_module(*args: str, log: Path) -> subprocess.Popen:
    """``python -m ARGS`` in its own session (killpg takes a dask worker's nanny and its process
    down together), output to ``log``, this checkout first on the path."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-m", *args], cwd=REPO, env=env, stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process's session, SIGKILL it if it has not ended 20 s later."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

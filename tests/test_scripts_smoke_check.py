"""scripts/smoke_check.py: passes on this environment, names the package when a compiled piece fails."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "smoke_check.py"


def _run(extra_path: Path | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if extra_path is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(extra_path), env.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, str(SCRIPT)], capture_output=True, text=True, env=env, timeout=300)


def test_passes_on_the_installed_environment():
    proc = _run()
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("smoke check ok: torch ")


def test_a_library_that_does_not_load_is_named_with_its_cause(tmp_path):
    # An h5py whose compiled part cannot load, put in front of the real one.
    fake = tmp_path / "h5py"
    fake.mkdir()
    (fake / "__init__.py").write_text("raise ImportError('libhdf5.so.310: cannot open shared object file')\n")
    proc = _run(tmp_path)
    assert proc.returncode == 1
    lines = [line for line in proc.stderr.splitlines() if line.startswith("smoke check FAILED")]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("smoke check FAILED: h5py ")
    assert "libhdf5.so.310" in lines[0] and "likely cause" in lines[0]

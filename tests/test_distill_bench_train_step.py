"""benchmarks/bench_train_step.py runs on CPU at tiny size and reports what gpu_check.sh reads."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_train_step.py"


def test_the_step_benchmark_runs_tiny_on_cpu(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("bench_train_step", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    args = ["--device", "cpu", "--tiny", "--role", "teacher", "--steps", "2", "--warmup", "0"]
    assert bench.main([*args, "--contenders", "eager", "--json", str(tmp_path / "step.json")]) == 0
    (result,) = json.loads((tmp_path / "step.json").read_text())["results"]
    assert result["contender"] == "eager" and result["median_ms"] > 0 and result["items_per_s"] > 0
    assert "teacher step on CPU" in capsys.readouterr().out

"""distill sweep on dask.distributed (issue 14, item 6): the same tables as the sequential sweep,
students after their teachers, and a run whose worker is killed resumed on another worker."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from processes import start_scheduler, start_worker, stop_group

from distill.cli import main
from distill.sweep import run_sweep
from distill.testing import TINY, make_lupi_cache

pytest.importorskip("distributed")


def _sweep_file(tmp_path: Path, cache: Path, out: Path, **extra) -> Path:
    tree: dict = {}
    for key, value in TINY.items():
        section, name = key.split(".")
        tree.setdefault(section, {})[name] = value
    spec = {
        "cache": str(cache),
        "out": str(out),
        "seeds": [0],
        "combos": [{"task": "emotion", "setting": "nonseq"}],
        "base": tree,
        "variants": [
            {"name": "none", "method": "none"},
            {"name": "embed-cosine", "method": "embed", "set": {"distill.distance": "cosine"}},
        ],
        **extra,
    }
    path = tmp_path / f"sweep-{out.name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    return make_lupi_cache(tmp_path_factory.mktemp("sweepdask") / "cache", n_classes=3, per_class=8, n_frames=70)


def _metrics(out: Path) -> dict[str, dict]:
    return {str(p.parent.relative_to(out)): json.loads(p.read_text()) for p in sorted(out.rglob("metrics.json"))}


@pytest.mark.slow
def test_dask_sweep_gives_the_sequential_tables_and_runs_students_after_their_teachers(cache, tmp_path):
    # Teachers train longer than students, and a third worker is free once the `none` student is
    # done: without the dependency on its teacher's task, embed-cosine would start there at once.
    extra = {"controls": ["audio_teacher"], "teacher": {"train": {"epochs": 4}}}
    local = run_sweep(_sweep_file(tmp_path, cache, tmp_path / "local", **extra), progress=False)
    dask = run_sweep(
        _sweep_file(tmp_path, cache, tmp_path / "dask", **extra), progress=False, backend="dask", workers=3
    )
    assert not local.failed and not dask.failed
    assert [r.name for r in dask.runs] == [r.name for r in local.runs]
    assert len({r.host for r in dask.runs}) >= 2 and os.getpid() not in {int(r.host.split(":")[1]) for r in dask.runs}

    # Seeded CPU training is deterministic across processes: every metric is bit-identical.
    assert _metrics(tmp_path / "dask") == _metrics(tmp_path / "local")
    table = {name: pd.read_csv(tmp_path / name / "results.csv").drop(columns="run_dir") for name in ("local", "dask")}
    pd.testing.assert_frame_equal(table["dask"], table["local"])
    assert (tmp_path / "dask" / "results.md").read_text() == (tmp_path / "local" / "results.md").read_text()

    by_name = {r.name: r for r in dask.runs}
    for student, teacher in [("embed-cosine/seed0", "teacher"), ("embed-cosine@audio_teacher/seed0", "audio_teacher")]:
        assert by_name[f"emotion-nonseq/{student}"].started >= by_name[f"emotion-nonseq/{teacher}"].finished


def test_sweep_backend_options_are_checked(cache, tmp_path):
    path = _sweep_file(tmp_path, cache, tmp_path / "out")
    assert main(["sweep", str(path), "--scheduler", "tcp://127.0.0.1:1", "--quiet"]) == 2
    assert main(["sweep", str(path), "--backend", "dask", "--workers", "0", "--quiet"]) == 2
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_killed_workers_run_resumes_on_another_worker(cache, tmp_path):
    scheduler, address = start_scheduler(tmp_path)
    procs = [scheduler]
    try:
        workers = {f"w{i}": start_worker(address, f"w{i}", tmp_path) for i in range(2)}
        procs += workers.values()
        from distributed import Client

        with Client(address, timeout="60s") as client:
            client.wait_for_workers(2, timeout=120)
            names = {addr: info["name"] for addr, info in client.scheduler_info()["workers"].items()}

            out = tmp_path / "out"
            # a long teacher (30 epochs, no early stopping) to kill mid-run
            path = _sweep_file(tmp_path, cache, out, teacher={"train": {"epochs": 30, "patience": 0}})
            result: dict = {}
            driver = threading.Thread(
                target=lambda: result.update(sweep=run_sweep(path, progress=False, backend="dask", scheduler=address))
            )
            driver.start()
            teacher = out / "emotion-nonseq" / "teacher"
            deadline = time.monotonic() + 120
            while not (teacher / "last.pt").is_file():  # one epoch checkpointed: kill the teacher's worker
                assert driver.is_alive() and time.monotonic() < deadline
                time.sleep(0.02)
            busy = [names[addr] for addr, keys in client.processing().items() if any("/teacher" in k for k in keys)]
            assert len(busy) == 1
            os.killpg(workers[busy[0]].pid, signal.SIGKILL)
            killed_at = time.time()
            assert not (teacher / "metrics.json").exists(), "the teacher finished before its worker was killed"
            driver.join(timeout=300)
        sweep = result["sweep"]
        assert not sweep.failed
        by_name = {r.name: r for r in sweep.runs}
        assert by_name["emotion-nonseq/teacher"].status == "resumed"
        assert by_name["emotion-nonseq/teacher"].started >= killed_at
        log = pd.read_csv(teacher / "train_log.csv")
        assert log["epoch"].tolist() == list(range(1, 31))  # every epoch once: resumed, not restarted
        assert by_name["emotion-nonseq/embed-cosine/seed0"].started >= by_name["emotion-nonseq/teacher"].finished
        # Resumed from its checkpoint, the run ends as an uninterrupted sequential sweep does.
        long_teacher = {"train": {"epochs": 30, "patience": 0}}
        local = run_sweep(_sweep_file(tmp_path, cache, tmp_path / "local", teacher=long_teacher), progress=False)
        assert not local.failed and _metrics(out) == _metrics(tmp_path / "local")
        assert (out / "results.md").read_text() == (tmp_path / "local" / "results.md").read_text()
    finally:
        for proc in reversed(procs):
            stop_group(proc)

"""The shared face consumer with what a GPU run uses (two consumer threads on one model, batches
spanning items, detection every k-th frame, autocast), run on CPU: it stores what the face models
give on each item's own frames."""

from __future__ import annotations

import threading

import numpy as np

import extract.run as run
from extract import open_cache
from extract.config import ExtractConfig
from extract.decode import decode
from extract.faces import FaceEmbedder, resolve_face_weights
from extract.run import RunOptions, run_extraction
from tests.conftest import write_manifest

NAMES = ["mp4", "mkv", "webm", "noface", "wav"]
CFG = ExtractConfig(face_weights="random", frame_size=96, face_batch=4, face_detect_every=2, face_precision="bfloat16")


def test_two_consumers_per_device_store_what_the_face_models_give(clips, tmp_path, monkeypatch):
    assert run.CONSUMERS["cpu"] == 1  # --face-consumers 2 asks for the CUDA layout on CPU
    threads: list[str] = []
    both_in = threading.Barrier(2, timeout=30)
    consume = run.consume_chunk

    def consume_together(*args, **kwargs):
        threads.append(threading.current_thread().name)
        if len(threads) <= 2:
            both_in.wait()  # the first two chunks are embedded at the same time, by two threads
        return consume(*args, **kwargs)

    monkeypatch.setattr(run, "consume_chunk", consume_together)
    manifest = write_manifest(tmp_path / "m.csv", [{"utt_id": n, "path": str(clips[n].path)} for n in NAMES])
    options = RunOptions(
        workers=1,
        face_models="shared",
        consumers=2,
        device="cpu",
        schedule="count",
        shard_size=2,
        threads=1,
        progress=False,
    )
    summary = run_extraction(manifest, tmp_path / "cache", CFG, options)
    assert (summary.extracted, summary.failures) == (len(NAMES), [])
    assert len(threads) == 3 and len(set(threads[:2])) == 2

    cache = open_cache(summary.cache_dir)
    assert cache.config["face_detect_every"] == 2 and cache.config["face_precision"] == "bfloat16"
    faces = FaceEmbedder(CFG, resolve_face_weights("random"))
    for name in NAMES:
        item = cache[name]
        frames = decode(str(clips[name].path), CFG.sample_rate, CFG.fps, CFG.frame_size).frames
        face, found = faces(frames)
        assert np.array_equal(item["face_found"], found)
        assert found.any() == clips[name].faces
        np.testing.assert_allclose(item["face"], face, atol=2e-3)  # float16 storage


def test_each_consumer_thread_runs_the_shared_model_on_a_stream_of_its_own():
    faces = FaceEmbedder(CFG, resolve_face_weights("random"))
    seen: dict[str, list[object]] = {}

    def consumer(name: str) -> None:
        for _ in range(2):  # one stream per thread, kept from one chunk to the next
            with faces._own_stream():
                seen.setdefault(name, []).append(faces._streams.stream)

    workers = [threading.Thread(target=consumer, args=(f"t{i}",)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert all(first is again for first, again in seen.values())
    assert seen["t0"][0] is not seen["t1"][0]


def test_the_cli_refuses_no_consumers_before_any_work(tmp_path, capsys):
    from extract.cli import main

    assert main(["run", "--manifest", str(tmp_path / "none.csv"), "--face-consumers", "0"]) == 2
    assert "--face-consumers must be ≥ 1" in capsys.readouterr().err

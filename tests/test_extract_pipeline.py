"""extract.pipeline and the run's two face paths: the shared consumer (the GPU path, run here on CPU)
stores what the per-worker path stores; prefetching changes nothing but the timing."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from extract import open_cache
from extract.config import ExtractConfig
from extract.faces import resolve_face_weights
from extract.pipeline import ItemExtractor, Loaded, ManifestItem, embed_many, load_item
from extract.run import RunOptions, run_extraction
from tests.conftest import write_manifest

CFG = ExtractConfig(face_weights="random", frame_size=128, face_batch=8)
WEIGHTS = resolve_face_weights("random")
NAMES = ["mp4", "mkv", "noface", "wav", "webm"]


@pytest.fixture(scope="module")
def extractor() -> ItemExtractor:
    return ItemExtractor(CFG, WEIGHTS)


def _items(clips) -> list[ManifestItem]:
    return [ManifestItem(n, str(clips[n].path), labels={"path": str(clips[n].path)}) for n in NAMES]


def test_prefetch_changes_nothing_but_the_timing(clips, extractor, tmp_path):
    items = [*_items(clips)[:3], ManifestItem("gone", str(tmp_path / "gone.mp4"))]
    ahead, inline = list(extractor.extract(items, prefetch=True)), list(extractor.extract(items, prefetch=False))
    assert [r.utt_id for r in ahead] == [r.utt_id for r in inline] == [it.utt_id for it in items]  # in order
    assert ahead[-1].stage == "input"
    for a, b in zip(ahead[:3], inline[:3]):
        assert np.array_equal(a.fbank, b.fbank) and np.array_equal(a.face_found, b.face_found)
        np.testing.assert_allclose(a.face, b.face, atol=1e-5)


def test_one_bad_item_in_a_batch_fails_alone(clips, extractor):
    loaded = [load_item(it, CFG, extractor.logmel) for it in _items(clips)[:2]]
    assert all(isinstance(x, Loaded) for x in loaded)
    media = loaded[1].media
    broken = Loaded(
        loaded[1].item, type(media)(media.audio, media.frames[..., :2], media.frame_times, True), loaded[1].fbank, 1.0
    )
    out = embed_many(extractor.faces, [loaded[0], broken])
    assert out[0].utt_id == "mp4" and out[0].face_found.any()
    assert out[1].utt_id == "mkv" and out[1].stage == "faces" and "uint8 RGB" in out[1].reason


def test_batched_faces_match_per_item_faces(clips, extractor):
    loaded = [load_item(it, CFG, extractor.logmel) for it in _items(clips)]
    together = embed_many(extractor.faces, loaded[::-1])  # an order the frames cannot follow by accident
    assert [t.utt_id for t in together] == NAMES[::-1]
    for x, t in zip(loaded[::-1], together):
        face, found = extractor.faces(x.media.frames)
        assert np.array_equal(found, t.face_found)
        np.testing.assert_allclose(face, t.face, atol=1e-4)


def test_shared_consumer_stores_what_the_worker_path_stores(clips, tmp_path):
    rows = [{"utt_id": n, "path": str(clips[n].path), "speaker": f"s{i % 2}"} for i, n in enumerate(NAMES)]
    rows.append({"utt_id": "gone", "path": str(tmp_path / "gone.mp4"), "speaker": "s9"})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    common = dict(device="cpu", threads=1, progress=False)
    per_worker = run_extraction(manifest, tmp_path / "a", CFG, RunOptions(workers=1, face_models="worker", **common))
    # Tasks of 3 items: the consumer embeds several items' frames in one pass.
    shared = run_extraction(
        manifest,
        tmp_path / "b",
        CFG,
        RunOptions(workers=2, face_models="shared", schedule="count", shard_size=3, **common),
    )
    assert per_worker.cache_dir.name == shared.cache_dir.name  # the path is not a feature setting
    assert (shared.extracted, len(shared.failures)) == (per_worker.extracted, 1) == (len(NAMES), 1)
    a, b = open_cache(per_worker.cache_dir), open_cache(shared.cache_dir)
    assert sorted(a) == sorted(b) == sorted(NAMES)
    for utt in NAMES:
        x, y = a[utt], b[utt]
        assert x["speaker"] == y["speaker"]
        assert np.array_equal(x["fbank"], y["fbank"]) and np.array_equal(x["face_found"], y["face_found"])
        assert np.array_equal(x["frame_times"], y["frame_times"])
        np.testing.assert_allclose(x["face"], y["face"], atol=2e-3)  # float16 storage of batched vs per-item sums
    failures = pd.read_csv(shared.cache_dir / "failures.csv")
    assert failures.to_dict("records") == [
        {"utt_id": "gone", "path": str(tmp_path / "gone.mp4"), "stage": "input", "reason": "file not found"}
    ]


def _chunk_pid(chunk: list[int]) -> tuple[list[int], int]:
    import os

    if chunk == [-1]:
        raise OSError("disk full")
    return chunk, os.getpid()


def test_the_driver_works_beside_the_pool_and_each_task_runs_once():
    import os

    from extract.run import _driver_helps

    chunks = [[i] for i in range(40)]
    results = list(_driver_helps(iter(chunks), 2, _chunk_pid))
    assert sorted(c for c, _ in results) == chunks
    pids = {pid for _, pid in results}
    assert os.getpid() in pids  # the driver took tasks while the pool process started


def test_an_error_in_any_worker_stops_the_run_and_is_raised():
    from extract.run import _driver_helps

    taken = []

    def tasks():
        for i in range(1000):
            taken.append(i)
            yield [-1] if i == 3 else [i]

    with pytest.raises(OSError, match="disk full"):
        list(_driver_helps(tasks(), 2, _chunk_pid))
    assert len(taken) < 1000  # nobody took new tasks after the error

"""The cache storage layer: durability, resume bookkeeping, corruption detection, process safety."""

from __future__ import annotations

import multiprocessing as mp
import pickle

import numpy as np
import pytest
from cache_items import make_item

from extract.cache import (
    INDEX_FILE,
    SHARD_DIR,
    CacheBusyError,
    ItemFeatures,
    ShardWriter,
    build_cache,
    cache_lock,
    commit_rows,
    committed_utt_ids,
    open_cache,
    remove_orphan_shards,
)


def test_items_are_in_utt_id_order_whatever_the_commit_order(tmp_path):
    items = [make_item(i) for i in (5, 1, 3, 0)]
    build_cache(tmp_path / "a", items, shard_size=1)
    build_cache(tmp_path / "b", items[::-1], shard_size=3)
    assert (
        list(open_cache(tmp_path / "a")) == list(open_cache(tmp_path / "b")) == ["utt000", "utt001", "utt003", "utt005"]
    )
    assert open_cache(tmp_path / "a").index["utt_id"].tolist() == ["utt000", "utt001", "utt003", "utt005"]


def test_round_trip_within_float16_precision(tmp_path):
    items = [make_item(i) for i in range(7)]
    build_cache(tmp_path / "c", items, shard_size=3)
    cache = open_cache(tmp_path / "c")
    assert len(cache) == 7 and list(cache) == [it["utt_id"] for it in items]
    assert len(cache.shard_paths()) == 3  # 3 + 3 + 1
    for src in items:
        got = cache[src["utt_id"]]
        assert got["fbank"].dtype == np.float32 and got["fbank"].shape == src["fbank"].shape
        np.testing.assert_allclose(got["fbank"], src["fbank"], rtol=1e-3, atol=1e-3)
        np.testing.assert_allclose(got["face"], src["face"], rtol=1e-3, atol=1e-3)
        np.testing.assert_array_equal(got["face_found"], src["face_found"])
        np.testing.assert_array_equal(got["frame_times"], src["frame_times"])
        assert got["speaker"] == src["speaker"] and got["score"] == pytest.approx(src["score"])
    assert set(cache.index.columns) >= {"utt_id", "speaker", "split", "shard", "n_fbank"}
    assert cache.n_mels == 40 and cache.cache_id


def test_audio_only_item_has_zero_face_frames(tmp_path):
    item = make_item(0, n_face=0)
    item["has_video"] = False
    build_cache(tmp_path, [item, make_item(1)])
    got = open_cache(tmp_path)["utt000"]
    assert got["face"].shape == (0, 512) and got["face_found"].shape == (0,) and not got["has_video"]
    assert open_cache(tmp_path)["utt001"]["has_video"]


def test_read_selected_fields_only(tmp_path):
    build_cache(tmp_path, [make_item(0)])
    got = open_cache(tmp_path).read("utt000", fields=("fbank",))
    assert "fbank" in got and "face" not in got and got["speaker"] == "spk0"
    with pytest.raises(KeyError, match="nope"):
        open_cache(tmp_path)["nope"]


def test_uncommitted_shard_is_an_orphan_and_items_are_redone(tmp_path):
    build_cache(tmp_path, [make_item(0)])
    # A worker finished a shard but the driver died before committing its rows.
    writer = ShardWriter(tmp_path)
    writer.add(make_item(1))
    writer.close()
    # Another worker died mid-write.
    (tmp_path / SHARD_DIR / ".tmp-dead.h5").write_bytes(b"partial")
    assert committed_utt_ids(tmp_path) == {"utt000"}
    removed = {p.name for p in remove_orphan_shards(tmp_path)}
    assert removed == {writer.name, ".tmp-dead.h5"}
    assert len(open_cache(tmp_path).shard_paths()) == 1
    assert [p.name for p in (tmp_path / SHARD_DIR).iterdir()] == [open_cache(tmp_path).shard_paths()[0].name]


def test_torn_index_line_is_ignored_then_cut_on_next_commit(tmp_path):
    build_cache(tmp_path, [make_item(0)])
    with open(tmp_path / INDEX_FILE, "ab") as fh:
        fh.write(b'{"utt_id": "utt001", "sha')  # killed mid-append
    assert committed_utt_ids(tmp_path) == {"utt000"}
    writer = ShardWriter(tmp_path)
    writer.add(make_item(2))
    commit_rows(tmp_path, writer.close())
    assert committed_utt_ids(tmp_path) == {"utt000", "utt002"}
    assert (tmp_path / INDEX_FILE).read_bytes().count(b"\n") == 2


def test_count_faces_found_counts_only_current_rows_of_video_items(tmp_path):
    items = [make_item(i, n_face=3 + i) for i in range(7)]
    items[2]["has_video"] = False  # its face rows, had it any, are no evidence
    items[2].update(
        face=np.zeros((0, 512), np.float32), face_found=np.zeros(0, bool), frame_times=np.zeros(0, np.float32)
    )
    build_cache(tmp_path, items, shard_size=3)
    writer = ShardWriter(tmp_path)  # utt004 re-extracted: its old rows stay in the old shard
    writer.add(make_item(4, n_face=20, rng=np.random.default_rng(7)))
    commit_rows(tmp_path, writer.close())
    cache = open_cache(tmp_path)
    masks = [cache.read(u, fields=("face_found",))["face_found"] for u in cache]
    assert cache.count_faces_found() == (sum(int(m.sum()) for m in masks), sum(len(m) for m in masks))
    assert cache.count_faces_found()[1] == sum(3 + i for i in range(7) if i not in (2, 4)) + 20


def test_later_row_supersedes_and_old_shard_becomes_orphan(tmp_path):
    build_cache(tmp_path, [make_item(0)])
    old_shard = open_cache(tmp_path).shard_paths()[0]
    replacement = make_item(0, rng=np.random.default_rng(99))
    writer = ShardWriter(tmp_path)
    writer.add(replacement)
    commit_rows(tmp_path, writer.close())
    cache = open_cache(tmp_path)
    assert len(cache) == 1
    np.testing.assert_allclose(cache["utt000"]["fbank"], replacement["fbank"], atol=1e-2)
    assert [p.name for p in remove_orphan_shards(tmp_path)] == [old_shard.name]


def test_flipped_bytes_are_detected_by_checksum(tmp_path):
    build_cache(tmp_path, [make_item(i) for i in range(2)])
    shard = open_cache(tmp_path).shard_paths()[0]
    blob = bytearray(shard.read_bytes())
    # Flip bytes in the middle of the fbank payload (the largest dataset), not in HDF5 metadata.
    needle = np.float16(open_cache(tmp_path)["utt000"]["fbank"][5, 0]).tobytes()
    needle += np.float16(open_cache(tmp_path)["utt000"]["fbank"][5, 1]).tobytes()
    at = blob.find(needle)
    assert at > 0
    blob[at] ^= 0xFF
    shard.write_bytes(bytes(blob))
    cache = open_cache(tmp_path)
    reason = cache.check("utt000")
    assert reason is not None and "OSError" in reason


def test_truncated_shard_is_detected(tmp_path):
    build_cache(tmp_path, [make_item(0)])
    shard = open_cache(tmp_path).shard_paths()[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    assert open_cache(tmp_path).check("utt000") is not None


def test_non_finite_features_are_refused_naming_the_item(tmp_path):
    item = make_item(0)
    item["fbank"][3, 3] = 1e6  # overflows float16
    with pytest.raises(ValueError, match="utt000: fbank"):
        build_cache(tmp_path, [item])
    bad = make_item(1)
    bad["frame_times"] = bad["frame_times"][:-1]
    with pytest.raises(ValueError, match="utt001"):
        ShardWriter(tmp_path).add(bad)


def test_second_writer_is_refused(tmp_path):
    with cache_lock(tmp_path):
        with pytest.raises(CacheBusyError, match="another `extract run`"):
            with cache_lock(tmp_path):
                pass
    with cache_lock(tmp_path):  # released on exit
        pass


def _read_in_child(args):
    cache, utt = args
    return float(cache[utt]["fbank"].sum())


def test_cache_pickles_without_handles_and_reads_in_worker_processes(tmp_path):
    build_cache(tmp_path, [make_item(i) for i in range(4)], shard_size=2)
    cache = open_cache(tmp_path)
    expected = [float(cache[u]["fbank"].sum()) for u in cache]  # opens handles in the parent
    assert cache._handles
    assert not pickle.loads(pickle.dumps(cache))._handles
    with mp.get_context("spawn").Pool(2) as pool:
        got = pool.map(_read_in_child, [(cache, u) for u in cache])
    assert got == pytest.approx(expected)
    with mp.get_context("fork").Pool(2) as pool:
        assert pool.map(_read_in_child, [(cache, u) for u in cache]) == pytest.approx(expected)


def test_item_features_from_dict_defaults():
    item = ItemFeatures.from_dict({"utt_id": "a", "fbank": np.zeros((30, 8)), "speaker": "s"})
    assert item.face.shape == (0, 512) and not item.has_video and item.duration == pytest.approx(0.3)
    assert item.labels == {"speaker": "s"}

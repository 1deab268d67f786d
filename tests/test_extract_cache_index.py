"""The committed index as readers load it: the parquet snapshot plus the log after it, and the columns they give."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from cache_items import make_item

from extract.cache import (
    INDEX_FILE,
    SNAPSHOT_FILE,
    CacheError,
    ShardWriter,
    build_cache,
    commit_rows,
    open_cache,
    read_index_rows,
    write_snapshot,
)


def _snapshot_meta(cache_dir) -> dict:
    return json.loads(pq.read_schema(cache_dir / SNAPSHOT_FILE).metadata[b"avpi.index"])


def _append(cache_dir, *items) -> None:
    writer = ShardWriter(cache_dir)
    for item in items:
        writer.add(item)
    commit_rows(cache_dir, writer.close())


def _as_log_says(cache_dir) -> list[dict]:
    """What the commit log holds (the reference reader), in the shape ``cache.labels_at`` + locations give."""
    return read_index_rows(cache_dir)


def _as_cache_says(cache) -> list[dict]:
    rows = []
    for i in range(len(cache)):
        fb_off, n_fb, face_off, n_face = (int(v) for v in cache.table.locations[i])
        rows.append(
            {
                **cache.labels_at(i),
                "shard": cache.shard_name(i),
                "fbank_offset": fb_off,
                "n_fbank": n_fb,
                "face_offset": face_off,
                "n_face": n_face,
            }
        )
    return rows


def test_snapshot_is_read_and_only_the_log_after_it_is_parsed(tmp_path):
    build_cache(tmp_path, [make_item(i) for i in range(5)], shard_size=2)
    assert _snapshot_meta(tmp_path)["log_bytes"] == (tmp_path / INDEX_FILE).stat().st_size
    # Doctor a label inside the snapshot (metadata kept): if open_cache re-parsed the log, it would not show.
    table = pq.read_table(tmp_path / SNAPSHOT_FILE)
    speakers = table.column("speaker").to_pylist()
    speakers[1] = "from-the-snapshot"
    table = table.set_column(table.column_names.index("speaker"), "speaker", pa.array(speakers))
    pq.write_table(table, tmp_path / SNAPSHOT_FILE)
    _append(tmp_path, make_item(7), make_item(6))  # the tail: rows committed after the snapshot
    cache = open_cache(tmp_path)
    assert list(cache) == ["utt000", "utt001", "utt002", "utt003", "utt004", "utt006", "utt007"]
    assert cache["utt001"]["speaker"] == "from-the-snapshot"
    assert cache.labels_at(cache.position("utt007"))["speaker"] == "spk1" and cache["utt006"]["fbank"].shape == (56, 40)
    assert _snapshot_meta(tmp_path)["log_bytes"] < (tmp_path / INDEX_FILE).stat().st_size  # small tail: not rewritten
    write_snapshot(tmp_path)
    assert _snapshot_meta(tmp_path)["log_bytes"] == (tmp_path / INDEX_FILE).stat().st_size


def test_a_tail_row_supersedes_the_snapshot_row_of_its_item(tmp_path):
    build_cache(tmp_path, [make_item(i) for i in range(4)], shard_size=2)
    replacement = make_item(2, rng=np.random.default_rng(99))
    replacement["speaker"] = "new"
    _append(tmp_path, replacement)
    cache = open_cache(tmp_path)
    assert list(cache) == ["utt000", "utt001", "utt002", "utt003"]
    np.testing.assert_allclose(cache["utt002"]["fbank"], replacement["fbank"], atol=1e-2)
    assert cache["utt002"]["speaker"] == "new" and cache.index.loc["utt002", "speaker"] == "new"
    assert _as_cache_says(cache) == _as_log_says(tmp_path)


def test_snapshot_and_log_agree_through_random_commits_and_snapshots(tmp_path):
    rng = np.random.default_rng(0)
    build_cache(tmp_path, [make_item(0)])
    for step in range(12):
        ids = rng.choice(20, size=rng.integers(1, 4), replace=False)
        _append(tmp_path, *(make_item(int(i), rng=np.random.default_rng(step * 100 + int(i))) for i in ids))
        if rng.random() < 0.4:
            write_snapshot(tmp_path)
        cache = open_cache(tmp_path)
        assert _as_cache_says(cache) == _as_log_says(tmp_path)
        assert list(cache) == sorted(cache)


def test_a_cache_without_snapshot_opens_and_gets_one(tmp_path):
    build_cache(tmp_path, [make_item(i) for i in range(3)])
    (tmp_path / SNAPSHOT_FILE).unlink()  # a cache from before snapshots
    assert list(open_cache(tmp_path)) == ["utt000", "utt001", "utt002"]
    assert _snapshot_meta(tmp_path)["log_bytes"] == (tmp_path / INDEX_FILE).stat().st_size


@pytest.mark.parametrize("damage", ["log-shrunk", "log-rewritten", "garbage", "truncated"])
def test_a_stale_or_corrupt_snapshot_is_detected_and_rebuilt(tmp_path, damage):
    build_cache(tmp_path, [make_item(i) for i in range(5)])
    log, snap = tmp_path / INDEX_FILE, tmp_path / SNAPSHOT_FILE
    lines = log.read_bytes().splitlines(keepends=True)
    if damage == "log-shrunk":  # the snapshot covers more bytes than the log has
        log.write_bytes(b"".join(lines[:2]))
    elif damage == "log-rewritten":  # as long as before, other rows: only the fingerprint tells
        rows = [json.loads(line) for line in lines]
        for row in rows:
            row["speaker"] = row["speaker"].replace("spk", "SPK")
        log.write_bytes("".join(json.dumps(row) + "\n" for row in rows).encode())
    elif damage == "garbage":
        snap.write_bytes(b"PAR1 not really")
    else:
        snap.write_bytes(snap.read_bytes()[: snap.stat().st_size // 2])
    cache = open_cache(tmp_path)
    assert _as_cache_says(cache) == _as_log_says(tmp_path)
    assert len(cache) == (2 if damage == "log-shrunk" else 5)
    assert _snapshot_meta(tmp_path)["log_bytes"] == log.stat().st_size  # rewritten


def test_a_torn_log_line_is_not_covered_by_the_snapshot(tmp_path):
    build_cache(tmp_path, [make_item(0)])
    with open(tmp_path / INDEX_FILE, "ab") as fh:
        fh.write(b'{"utt_id": "utt001", "sha')  # killed mid-append
    (tmp_path / SNAPSHOT_FILE).unlink()
    assert list(open_cache(tmp_path)) == ["utt000"]
    _append(tmp_path, make_item(2))  # cuts the torn line, appends
    assert list(open_cache(tmp_path)) == ["utt000", "utt002"]


def test_a_killed_snapshot_write_leaves_a_temp_file_that_is_ignored_then_removed(tmp_path):
    build_cache(tmp_path, [make_item(0), make_item(1)])
    dead = subprocess_pid_that_exited()
    tmp = tmp_path / f".tmp-{SNAPSHOT_FILE}.{dead}"
    tmp.write_bytes(b"half a parquet file")
    assert list(open_cache(tmp_path)) == ["utt000", "utt001"]
    write_snapshot(tmp_path)
    assert not tmp.exists()


def subprocess_pid_that_exited() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only directories")
def test_a_read_only_cache_without_snapshot_still_opens(tmp_path):
    build_cache(tmp_path / "c", [make_item(i) for i in range(3)])
    (tmp_path / "c" / SNAPSHOT_FILE).unlink()
    os.chmod(tmp_path / "c", 0o555)
    try:
        assert list(open_cache(tmp_path / "c")) == ["utt000", "utt001", "utt002"]
        assert not (tmp_path / "c" / SNAPSHOT_FILE).exists()
    finally:
        os.chmod(tmp_path / "c", 0o755)


def test_a_read_only_snapshot_write_failure_is_not_an_open_failure(tmp_path, monkeypatch):
    """Root ignores directory permissions, so the read-only case is also checked by failing the write."""
    build_cache(tmp_path, [make_item(i) for i in range(3)])
    (tmp_path / SNAPSHOT_FILE).unlink()

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Read-only file system")

    monkeypatch.setattr(pq, "write_table", refuse)
    assert list(open_cache(tmp_path)) == ["utt000", "utt001", "utt002"]
    assert not (tmp_path / SNAPSHOT_FILE).exists() and not list(tmp_path.glob(".tmp-*"))


def test_unicode_ids_sort_like_python_and_are_found(tmp_path):
    names = ["Zoë/1", "zoe/1", "ärger/2", "a/3", "日本/1", "a/10"]
    items = []
    for i, name in enumerate(names):
        item = make_item(i)
        item["utt_id"] = name
        items.append(item)
    build_cache(tmp_path, items, shard_size=4)
    cache = open_cache(tmp_path)
    assert list(cache) == sorted(names) == cache.index["utt_id"].tolist()
    for name in names:
        assert name in cache and cache[name]["utt_id"] == name
    assert "Zoe/1" not in cache and "a/1" not in cache
    np.testing.assert_array_equal(
        cache.positions(["日本/1", "a/3"]), [sorted(names).index("日本/1"), sorted(names).index("a/3")]
    )
    with pytest.raises(KeyError, match="nope"):
        cache.positions(["a/3", "nope"])


def test_labels_arrow_cannot_type_as_one_column_round_trip(tmp_path):
    items = [make_item(i) for i in range(4)]
    items[0]["age"], items[1]["age"], items[2]["age"] = 31, "unknown", [1, 2]  # utt003 has none
    build_cache(tmp_path, items)
    (tmp_path / SNAPSHOT_FILE).unlink()
    for _ in range(2):  # built from the log, then read from the snapshot
        cache = open_cache(tmp_path)
        assert [cache[u]["age"] for u in cache] == [31, "unknown", [1, 2], None]
        assert cache.index["age"].tolist() == [31, "unknown", [1, 2], None]


def test_the_cache_holds_no_python_object_per_item(tmp_path):
    """Loader workers copy pages of Python objects they touch (reference counts): none may be per item."""
    n = 40
    build_cache(tmp_path, [make_item(i) for i in range(n)], shard_size=8)
    cache = open_cache(tmp_path)
    _ = cache.index  # built in the parent; must not travel to workers
    state = pickle.loads(pickle.dumps(cache)).__dict__
    assert state["_frame"] is None
    for value in [*state.values(), *vars(state["table"]).values(), *state["table"].labels.values()]:
        if isinstance(value, (list, tuple, dict, set)):
            assert len(value) < n, f"a per-item Python container of {len(value)} entries"
        if isinstance(value, np.ndarray):
            assert value.dtype != object


def test_date_like_and_nested_labels_keep_the_values_json_gave(tmp_path):
    """Arrow's JSON reader would turn ISO dates into timestamps: such logs go through json.loads."""
    items = [make_item(i) for i in range(3)]
    for i, item in enumerate(items):
        item["recorded"], item["tags"] = f"2020-01-0{i + 1}", {"take": i}
    build_cache(tmp_path, items)
    (tmp_path / SNAPSHOT_FILE).unlink()
    for _ in range(2):  # from the log, then from the snapshot
        cache = open_cache(tmp_path)
        assert [cache[u]["recorded"] for u in cache] == ["2020-01-01", "2020-01-02", "2020-01-03"]
        assert [cache.labels_at(cache.position(u))["tags"] for u in cache] == [{"take": 0}, {"take": 1}, {"take": 2}]


def test_a_corrupt_log_line_is_named(tmp_path):
    build_cache(tmp_path, [make_item(i) for i in range(3)], shard_size=1)
    lines = (tmp_path / INDEX_FILE).read_bytes().splitlines(keepends=True)
    (tmp_path / INDEX_FILE).write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
    (tmp_path / SNAPSHOT_FILE).unlink()
    with pytest.raises(CacheError, match="line 2 is not valid JSON"):
        open_cache(tmp_path)


def test_a_tail_with_new_and_missing_label_columns_merges_with_the_snapshot(tmp_path):
    build_cache(tmp_path, [make_item(i) for i in range(4)])
    later = make_item(9)
    del later["score"]
    later["gender"] = "f"
    replaced = make_item(1)
    replaced["speaker"] = "renamed"
    _append(tmp_path, later, replaced)
    cache = open_cache(tmp_path)
    assert (
        cache.labels_at(cache.position("utt009"))["gender"] == "f"
        and cache.labels_at(cache.position("utt009"))["score"] is None
    )
    assert (
        cache.labels_at(cache.position("utt000"))["gender"] is None
        and cache.labels_at(cache.position("utt000"))["score"] == 0.0
    )
    assert cache.labels_at(cache.position("utt001"))["speaker"] == "renamed"
    assert cache.index["speaker"].tolist() == ["spk0", "renamed", "spk2", "spk0", "spk0"]
    assert list(cache.column("score")[:4]) == [0.0, 0.1, 0.2, 0.3] and np.isnan(cache.column("score")[4])

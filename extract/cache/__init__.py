"""The cache API, re-exported from its modules: layout, writer, commit_log, index_table, index, lock, reader, build."""

from extract.cache.build import build_cache
from extract.cache.commit_log import commit_rows, read_index_rows
from extract.cache.index import (
    SNAPSHOT_REFRESH_ROWS,
    SNAPSHOT_VERSION,
    committed_utt_ids,
    load_index,
    remove_orphan_shards,
    write_snapshot,
)
from extract.cache.index_table import IndexTable
from extract.cache.layout import (
    ARRAY_FIELDS,
    CONFIG_FILE,
    FACE_DIM,
    INDEX_FILE,
    LOCATION_COLUMNS,
    LOCK_FILE,
    SHARD_DIR,
    SNAPSHOT_FILE,
    CacheError,
    config_hash,
    write_config,
)
from extract.cache.lock import CacheBusyError, cache_lock
from extract.cache.reader import Cache, open_cache
from extract.cache.writer import ItemFeatures, ShardWriter, _check_item  # noqa: F401 (imported from here before the split)

__all__ = [
    "ARRAY_FIELDS",
    "CONFIG_FILE",
    "FACE_DIM",
    "INDEX_FILE",
    "LOCATION_COLUMNS",
    "LOCK_FILE",
    "SHARD_DIR",
    "SNAPSHOT_FILE",
    "SNAPSHOT_REFRESH_ROWS",
    "SNAPSHOT_VERSION",
    "Cache",
    "CacheBusyError",
    "CacheError",
    "IndexTable",
    "ItemFeatures",
    "ShardWriter",
    "build_cache",
    "cache_lock",
    "commit_rows",
    "committed_utt_ids",
    "config_hash",
    "load_index",
    "open_cache",
    "read_index_rows",
    "remove_orphan_shards",
    "write_config",
    "write_snapshot",
]

"""``extract run``: validate the manifest, then extract every item not yet in the cache, in parallel.

The driver is the only process that touches the index: workers extract a chunk of items into one
shard of their own (:class:`ShardWriter`) and return its rows; the driver commits them
(:func:`commit_rows`) as chunks finish. A killed run therefore leaves, at worst, an orphan shard and
a torn index line, both of which the next run discards before it skips what the index holds.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import joblib
import pandas as pd
from tqdm.auto import tqdm

from extract.cache import (
    CONFIG_FILE,
    ItemFeatures,
    ShardWriter,
    cache_lock,
    commit_rows,
    committed_utt_ids,
    remove_orphan_shards,
    write_config,
    write_snapshot,
)
from extract.config import ExtractConfig
from extract.decode import CROPS
from extract.faces import FaceWeights, resolve_device, resolve_face_weights
from extract.pipeline import Failure, ItemExtractor, ManifestItem, manifest_items
from manifests.io import REQUIRED, ManifestError, read_manifest

FAILURES_FILE = "failures.csv"
BACKENDS = ("loky", "dask")


class StorageError(OSError):
    """A shard could not be written (disk full, file-size limit, I/O error): the run stops."""


# --------------------------------------------------------------------------- manifest


def load_manifest(path: str | os.PathLike) -> tuple[pd.DataFrame, Path]:
    """Read and validate a CSV/parquet manifest; returns the table and the folder paths are relative to.

    ``manifests.io.read_manifest`` reads it (identifier columns as text, the manifest contract
    checked); what is checked here is what extraction needs on top: no blank ids or paths, and
    usable ``crop``/``start``/``end`` values.
    """
    path = Path(path)
    table = read_manifest(path, absolute=False)
    if table.empty:
        raise ManifestError(f"manifest {path} has no rows")
    for column in REQUIRED:
        blank = table[column].isna() | (table[column].astype(str).str.strip() == "")
        if blank.any():
            rows = ", ".join(str(i + 2) for i in table.index[blank][:5])  # +2: header line, 1-based
            raise ManifestError(f"manifest {path}: empty {column} on line(s) {rows}")
    if "crop" in table.columns:
        bad = ~table["crop"].isna() & ~table["crop"].astype(str).isin([*CROPS, ""])
        if bad.any():
            raise ManifestError(
                f"manifest {path}: crop must be one of {sorted(CROPS)}; "
                f"utt_id {table.loc[bad, 'utt_id'].iloc[0]!r} has {table.loc[bad, 'crop'].iloc[0]!r}"
            )
    for column in ("start", "end"):
        if column in table.columns:
            values = pd.to_numeric(table[column], errors="coerce")
            bad = values.isna() & ~table[column].isna()
            if bad.any():
                raise ManifestError(
                    f"manifest {path}: {column} must be seconds; utt_id "
                    f"{table.loc[bad, 'utt_id'].iloc[0]!r} has {table.loc[bad, column].iloc[0]!r}"
                )
            table[column] = values
    return table, path.parent.resolve()


# --------------------------------------------------------------------------- worker side

_EXTRACTORS: dict[tuple[ExtractConfig, str, str], ItemExtractor] = {}


def _extractor(cfg: ExtractConfig, weights: FaceWeights, device: str) -> ItemExtractor:
    """Models are built once per worker process and reused by every chunk it runs."""
    key = (cfg, weights.identity, device)
    if key not in _EXTRACTORS:
        _EXTRACTORS[key] = ItemExtractor(cfg, weights, device)
    return _EXTRACTORS[key]


def _threads_per_worker(options: "RunOptions") -> int:
    """Torch threads per worker so workers do not oversubscribe the cores.

    Local workers share this machine's cores. On a remote dask cluster the driver cannot see the
    worker hosts, so the default is 1 (right for the usual one-process-per-core `dask worker`
    setup); pass --threads for fewer, fatter workers.
    """
    if options.threads:
        return options.threads
    if options.backend == "dask" and options.scheduler:
        return 1
    return max(1, (os.cpu_count() or 1) // options.workers)


def extract_chunk(
    items: Sequence[ManifestItem],
    cfg: ExtractConfig,
    weights: FaceWeights,
    cache_dir: str,
    threads: int = 1,
    device: str = "cpu",
) -> tuple[list[dict], list[Failure]]:
    """Extract items into one new shard; return its index rows (uncommitted) and the failures."""
    import torch

    torch.set_num_threads(threads)
    extractor = _extractor(cfg, weights, device)
    failures: list[Failure] = []
    with ShardWriter(cache_dir, dtype=cfg.dtype) as writer:
        for item in items:
            result = extractor(item)
            if isinstance(result, ItemFeatures):
                writer.add(result)
            else:
                failures.append(result)
        try:
            rows = writer.close()
        # HDF5 reports a failed write (ENOSPC, EFBIG, EIO) as OSError or, from inside its own
        # flush/close, as RuntimeError; close() only writes, so either means the shard is lost.
        except (OSError, RuntimeError) as err:
            raise StorageError(
                getattr(err, "errno", None),
                f"cannot write shard {writer.tmp_path}: {_io_reason(err)} — free space (or raise the "
                "limit) and rerun; everything committed so far is kept and skipped",
            ) from None
    return rows, failures


def _io_reason(err: BaseException) -> str:
    """The OS-level cause in an h5py/OS error ("No space left on device"), else the whole message."""
    found = re.search(r"error message = '([^']+)'", str(err))
    if found:
        return found.group(1)
    return getattr(err, "strerror", None) or str(err).splitlines()[0]


# --------------------------------------------------------------------------- driver


@dataclass
class RunOptions:
    workers: int = 1
    backend: str = "loky"
    scheduler: str | None = None  # dask scheduler address; None with --backend dask: a LocalCluster
    shard_size: int = 16  # items per shard (= per task): small enough to lose little to a kill
    threads: int | None = None  # torch threads per worker; None: see _threads_per_worker
    device: str = "auto"  # face models on: auto (cuda if the worker has it) | cpu | cuda[:k]; not hashed
    repair: bool = False
    progress: bool = True


@dataclass
class RunSummary:
    cache_dir: Path
    total: int  # items in the manifest
    extracted: int = 0
    skipped: int = 0  # already in the cache
    repaired: int = 0
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.extracted / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.extracted} extracted", f"{self.skipped} already cached", f"{len(self.failures)} failed"]
        if self.repaired:
            parts.append(f"{self.repaired} repaired")
        failed = f" (reasons in {FAILURES_FILE})" if self.failures else ""
        return f"extract: {', '.join(parts)}{failed} in {self.seconds:.1f} s ({rate:.2f} items/s) → {self.cache_dir}"

    def exit_code(self, strict: bool = False) -> int:
        """0 when the cache holds something of this manifest; 1 when every item failed, or any did with strict."""
        if self.failures and (strict or self.extracted + self.skipped == 0):
            return 1
        return 0


def _write_failures(cache_dir: Path, failures: list[Failure]) -> None:
    tmp = cache_dir / f".tmp-{FAILURES_FILE}"
    pd.DataFrame([f.as_row() for f in failures], columns=["utt_id", "path", "stage", "reason"]).to_csv(tmp, index=False)
    os.replace(tmp, cache_dir / FAILURES_FILE)


def _ensure_config(cache_dir: Path, record: dict) -> None:
    """Write config.json once; on later runs warn if the libraries that made it have changed."""
    path = cache_dir / CONFIG_FILE
    if not path.exists():
        write_config(cache_dir, record)
        return
    old = json.loads(path.read_text()).get("versions", {})
    changed = {k: (old.get(k), v) for k, v in record["versions"].items() if old.get(k) != v}
    if changed:
        print(f"extract: warning: library versions differ from the ones this cache was made with: {changed}", file=sys.stderr)


@contextlib.contextmanager
def _backend(options: RunOptions) -> Iterator[int]:
    """Configure joblib for the chosen backend; yields n_jobs."""
    if options.backend == "loky":
        with joblib.parallel_config(backend="loky", n_jobs=options.workers):
            yield options.workers
        return
    if options.backend != "dask":
        raise ValueError(f"backend must be one of {BACKENDS}, got {options.backend!r}")
    from dask.distributed import Client, LocalCluster

    with contextlib.ExitStack() as stack:
        if options.scheduler:
            client = stack.enter_context(Client(options.scheduler, timeout="30s"))
        else:
            cluster = stack.enter_context(
                LocalCluster(n_workers=options.workers, threads_per_worker=1, processes=True, dashboard_address=None)
            )
            client = stack.enter_context(Client(cluster))
        stack.enter_context(joblib.parallel_config(backend="dask", n_jobs=-1))
        yield max(1, len(client.scheduler_info().get("workers", {})))


def run_extraction(
    manifest: str | os.PathLike,
    cache_root: str | os.PathLike,
    cfg: ExtractConfig = ExtractConfig(),
    options: RunOptions = RunOptions(),
) -> RunSummary:
    """Extract every manifest item not yet in ``cache_root/<config hash>``; see the module docstring."""
    began = time.perf_counter()
    table, root = load_manifest(manifest)
    items = manifest_items(table, root)
    weights = resolve_face_weights(cfg.face_weights, cfg.face_seed)  # fails here, before any work
    if options.backend == "loky":
        resolve_device(options.device)  # local workers see this machine's devices: check them now
    cache_dir = Path(cache_root).resolve() / cfg.hash(weights.identity)
    summary = RunSummary(cache_dir, total=len(items))

    with cache_lock(cache_dir):
        _ensure_config(cache_dir, cfg.to_record(weights.identity))
        remove_orphan_shards(cache_dir)
        done = committed_utt_ids(cache_dir)
        redo: set[str] = set()
        if options.repair:
            from extract.verify import verify_cache

            corrupt = set(verify_cache(cache_dir).bad_items)
            redo = corrupt & {it.utt_id for it in items}
            for utt in sorted(corrupt - redo):
                print(f"extract: cannot repair {utt!r}: it is not in this manifest", file=sys.stderr)
        todo = [it for it in items if it.utt_id not in done or it.utt_id in redo]
        summary.skipped = len(items) - len(todo)
        chunks = [todo[i : i + options.shard_size] for i in range(0, len(todo), options.shard_size)]

        if chunks:
            with _backend(options) as n_jobs, tqdm(
                total=len(todo), unit="item", desc="extract", disable=not options.progress, smoothing=0.1
            ) as bar:
                threads = _threads_per_worker(options)
                tasks = (
                    joblib.delayed(extract_chunk)(chunk, cfg, weights, str(cache_dir), threads, options.device)
                    for chunk in chunks
                )
                for rows, failures in joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered")(tasks):
                    commit_rows(cache_dir, rows)
                    summary.extracted += len(rows)
                    summary.repaired += sum(row["utt_id"] in redo for row in rows)
                    summary.failures.extend(failures)
                    bar.update(len(rows) + len(failures))
        _write_failures(cache_dir, summary.failures)
        # Shards written by tasks that were retried elsewhere, or fully superseded by a repair.
        remove_orphan_shards(cache_dir)
        write_snapshot(cache_dir, strict=False)  # index.parquet: later opens parse only what is committed after this
    summary.seconds = time.perf_counter() - began
    return summary

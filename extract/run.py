"""``extract run``: validate the manifest, then extract every item not yet in the cache, in parallel.

The driver is the only process that touches the index: workers extract a chunk of items into one
shard of their own (:class:`ShardWriter`) and return its rows; the driver commits them
(:func:`commit_rows`) as chunks finish. A killed run therefore leaves, at worst, an orphan shard and
a torn index line, both of which the next run discards before it skips what the index holds.

Chunks (tasks) are dealt by estimated cost (:mod:`extract.schedule`). Face models run either in
every worker (the CPU path) or, with ``face_models="shared"`` (the default on CUDA), in one
consumer per device in the driver, fed decoded items by the workers in large batches; the
consumer writes the shard, so the commit contract is the same on both paths.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import queue
import re
import sys
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

import joblib
import pandas as pd
from tqdm.auto import tqdm

from common.device import resolve_device
from common.files import atomic_output
from extract.cache.commit_log import commit_rows
from extract.cache.index import committed_utt_ids, remove_orphan_shards, write_snapshot
from extract.cache.layout import CONFIG_FILE, write_config
from extract.cache.lock import cache_lock
from extract.cache.writer import ItemFeatures, ShardWriter
from extract.config import ExtractConfig
from extract.decode import CROPS
from extract.faces import FaceEmbedder, FaceWeights, check_face_config, resolve_face_weights
from extract.fbank import LogMel
from extract.pipeline import Failure, ItemExtractor, Loaded, ManifestItem, embed_many, load_items, manifest_items
from extract.schedule import cost_tasks
from extract.spool import frame_spool, stash, unstashed
from manifests.io import REQUIRED, ManifestError, read_manifest

FAILURES_FILE = "failures.csv"
BACKENDS = ("loky", "dask")
FACE_MODELS = ("auto", "worker", "shared")
#: Consumer threads of the shared face path per device, by device type.
CONSUMERS = {"cuda": 2, "cpu": 1}
SCHEDULES = ("cost", "count")


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
            raise ManifestError(f"manifest {path}: empty {column} on line(s) {rows}: fill them in or drop those rows")
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
_LOGMELS: dict[ExtractConfig, LogMel] = {}
_EMBEDDERS: dict[tuple[ExtractConfig, str, str], FaceEmbedder] = {}
_BUILD = threading.Lock()  # threads of one process (driver + pool relay, shared consumers) build models


def _extractor(cfg: ExtractConfig, weights: FaceWeights, device: str) -> ItemExtractor:
    """Models are built once per worker process and reused by every chunk it runs."""
    key = (cfg, weights.identity, device)
    with _BUILD:  # the driver's thread and a one-process pool's thread may ask at the same moment
        if key not in _EXTRACTORS:
            _EXTRACTORS[key] = ItemExtractor(cfg, weights, device)
    return _EXTRACTORS[key]


def _logmel(cfg: ExtractConfig) -> LogMel:
    if cfg not in _LOGMELS:
        _LOGMELS[cfg] = LogMel(cfg)
    return _LOGMELS[cfg]


def _embedder(cfg: ExtractConfig, weights: FaceWeights, device: str) -> FaceEmbedder:
    """One face model per device in the driver, for the shared path's consumers."""
    key = (cfg, weights.identity, device)
    with _BUILD:
        if key not in _EMBEDDERS:
            _EMBEDDERS[key] = FaceEmbedder(cfg, weights, device)
    return _EMBEDDERS[key]


def _threads_per_worker(options: RunOptions) -> int:
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
    prefetch: bool = True,
) -> tuple[list[dict], list[Failure]]:
    """Extract items into one new shard; return its index rows (uncommitted) and the failures."""
    import torch

    torch.set_num_threads(threads)
    extractor = _extractor(cfg, weights, device)
    return _write_shard(extractor.extract(items, prefetch), cfg, cache_dir, weights.face_dim)


def decode_chunk(
    items: Sequence[ManifestItem], cfg: ExtractConfig, prefetch: bool = True, spool: str | None = None
) -> list[Loaded | Failure]:
    """The shared path's worker half: decode + log-mel, faces left to the device's consumer; with
    ``spool`` the frames travel through a file there (extract.spool), not the result pipe."""
    import torch

    torch.set_num_threads(1)  # the log-mel is light; the cores are for ffmpeg and the consumer
    loaded = list(load_items(items, cfg, _logmel(cfg), prefetch))
    return stash(loaded, spool) if spool else loaded


def consume_chunk(
    loaded: list[Loaded | Failure], cfg: ExtractConfig, weights: FaceWeights, cache_dir: str, device: str
) -> tuple[list[dict], list[Failure]]:
    """The shared path's device half: faces of a whole decoded chunk in large batches, then its shard."""
    faces = _embedder(cfg, weights, device)
    with unstashed(loaded) as loaded:
        ready = [x for x in loaded if isinstance(x, Loaded)]
        results = [*embed_many(faces, ready), *(x for x in loaded if isinstance(x, Failure))]
    return _write_shard(results, cfg, cache_dir, weights.face_dim)


def _write_shard(
    results: Iterable[ItemFeatures | Failure], cfg: ExtractConfig, cache_dir: str, face_dim: int
) -> tuple[list[dict], list[Failure]]:
    failures: list[Failure] = []
    with ShardWriter(cache_dir, dtype=cfg.dtype, face_dim=face_dim) as writer:
        for result in results:
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
    # face models: worker: each worker runs its own | shared: one consumer per device | auto: shared on CUDA
    face_models: str = "auto"
    # shared path: consumer threads per device, sharing its one copy of the face models; None: CONSUMERS
    # by device type (2 on CUDA: while one waits on the GPU or writes its shard, the other's batch runs)
    consumers: int | None = None
    schedule: str = "cost"  # cost: tasks of near-equal estimated cost | count: shard_size items a task, in order
    prefetch: bool = True  # decode the next item while the face models run on this one
    # shared path, local workers: decoded frames reach the consumer through files (in /dev/shm where
    # it has room) instead of pickled through the result pipe; off: through the pipe (for comparison)
    frame_spool: bool = True
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
    # the first committed chunk: its items and when (start-up included), so that the rate after
    # start-up (models built, workers spawned) can be told from the whole run's
    first_items: int = 0
    first_seconds: float | None = None

    def line(self) -> str:
        rate = self.extracted / self.seconds if self.seconds > 0 else 0.0
        parts = [f"{self.extracted} extracted", f"{self.skipped} already cached", f"{len(self.failures)} failed"]
        if self.repaired:
            parts.append(f"{self.repaired} repaired")
        failed = f" (reasons in {FAILURES_FILE})" if self.failures else ""
        first = f"; first {self.first_items} after {self.first_seconds:.1f} s" if self.first_seconds is not None else ""
        timing = f"{self.seconds:.1f} s ({rate:.2f} items/s{first})"
        return f"extract: {', '.join(parts)}{failed} in {timing} → {self.cache_dir}"

    def exit_code(self, strict: bool = False) -> int:
        """0 when the cache holds something of this manifest; 1 when every item failed, or any did with strict."""
        if self.failures and (strict or self.extracted + self.skipped == 0):
            return 1
        return 0


def _write_failures(cache_dir: Path, failures: list[Failure]) -> None:
    with atomic_output(cache_dir / FAILURES_FILE) as tmp:
        pd.DataFrame([f.as_row() for f in failures], columns=["utt_id", "path", "stage", "reason"]).to_csv(
            tmp, index=False
        )


def _ensure_config(cache_dir: Path, record: dict) -> None:
    """Write config.json once; on later runs warn if the libraries that made it have changed."""
    path = cache_dir / CONFIG_FILE
    if not path.exists():
        write_config(cache_dir, record)
        return
    old = json.loads(path.read_text()).get("versions", {})
    changed = {k: (old.get(k), v) for k, v in record["versions"].items() if old.get(k) != v}
    if changed:
        print(
            f"extract: warning: library versions differ from the ones this cache was made with: {changed}",
            file=sys.stderr,
        )


@contextlib.contextmanager
def _backend(options: RunOptions) -> Iterator[int]:
    """Configure joblib for the chosen backend; yields n_jobs."""
    if options.backend == "loky":
        with joblib.parallel_config(backend="loky", n_jobs=options.workers):
            yield options.workers
        return
    if options.backend != "dask":
        raise ValueError(f"backend must be one of {BACKENDS}, got {options.backend!r}")
    from extract.cluster import dask_client

    with dask_client(options.scheduler, options.workers) as client, joblib.parallel_config(backend="dask", n_jobs=-1):
        yield max(1, len(client.scheduler_info().get("workers", {})))


def _parallel(n_jobs: int, pre_dispatch: str = "2 * n_jobs") -> joblib.Parallel:
    # batch_size=1: joblib's auto-batching would glue the planned tasks back together.
    return joblib.Parallel(n_jobs=n_jobs, return_as="generator_unordered", batch_size=1, pre_dispatch=pre_dispatch)


class _SharedTasks:
    """One task iterator for two consumers (the driver's thread and joblib's dispatcher)."""

    def __init__(self, tasks: Iterable[list[ManifestItem]]) -> None:
        self._tasks = iter(tasks)
        self._lock = threading.Lock()
        self.stopped = False

    def __iter__(self) -> _SharedTasks:
        return self

    def __next__(self) -> list[ManifestItem]:
        with self._lock:
            if self.stopped:
                raise StopIteration
            return next(self._tasks)


def _driver_helps(
    chunks: Iterable[list[ManifestItem]], n_jobs: int, run_chunk
) -> Iterator[tuple[list[dict], list[Failure]]]:
    """n_jobs workers = this process (a thread) + n_jobs - 1 pool processes, sharing one task list.

    (With n_jobs = 2 the "pool" of one runs in a second thread of this process: joblib runs
    n_jobs=1 in-process. Models are therefore built under a lock, and with generators of their own.)

    A pool worker spends seconds starting (imports, models, kernels) before its first item; the
    driver has paid that already, so it works meanwhile instead of waiting. Results come back to
    the calling thread, which alone commits them. On an error both stop taking tasks; what is in
    flight finishes, and the error is raised here.
    """
    tasks = _SharedTasks(chunks)
    out: queue.Queue = queue.Queue()

    def relay(produce) -> None:
        try:
            for result in produce():
                out.put((True, result))
        except BaseException as err:  # handed to the calling thread, which raises it
            tasks.stopped = True
            out.put((False, err))
        finally:
            out.put((None, None))

    here = lambda: (run_chunk(chunk) for chunk in tasks)  # noqa: E731
    # pre_dispatch n_jobs: the pool holds no queue of tasks the driver's thread could have taken.
    pool = lambda: _parallel(n_jobs - 1, pre_dispatch="n_jobs")(joblib.delayed(run_chunk)(c) for c in tasks)  # noqa: E731
    threads = [threading.Thread(target=relay, args=(fn,), daemon=True) for fn in (here, pool)]
    for thread in threads:
        thread.start()
    running, error = len(threads), None
    try:
        while running:
            ok, value = out.get()
            if ok is None:
                running -= 1
            elif ok:
                yield value
            elif error is None:
                error = value
    finally:
        tasks.stopped = True
        for thread in threads:
            thread.join()
    if error is not None:
        raise error


def _chunks(
    todo: list[ManifestItem], cfg: ExtractConfig, options: RunOptions, n_jobs: int
) -> Iterator[list[ManifestItem]]:
    if options.schedule == "cost":
        return cost_tasks(todo, cfg, n_jobs, options.shard_size)
    if options.schedule == "count":
        return (todo[i : i + options.shard_size] for i in range(0, len(todo), options.shard_size))
    raise ValueError(f"schedule must be one of {SCHEDULES}, got {options.schedule!r}")


def _consumer_devices(options: RunOptions, embedder_on_device: bool = True) -> list[str]:
    """The devices of the shared path's consumers, or [] for the per-worker path.

    Local workers see this machine's devices, so the device is checked now (an explicit ``cuda``
    without CUDA is a usage error). ``auto`` without CUDA falls back to the CPU path and says so.
    An embedder that runs on CPU whatever the device (dlib) gets the per-worker path from ``auto``:
    one consumer thread would run every face of the run on one core.
    """
    if options.face_models not in FACE_MODELS:
        raise ValueError(f"face_models must be one of {FACE_MODELS}, got {options.face_models!r}")
    local = options.backend == "loky" or not options.scheduler
    if not local and options.face_models != "shared":
        return []  # remote workers resolve `auto` on their own hardware
    device = resolve_device(options.device)
    if options.device == "auto" and device.type == "cpu" and options.face_models == "auto":
        print("extract: --device auto: no CUDA device here, face models run on CPU in every worker", file=sys.stderr)
    shared = options.face_models == "shared" or (
        options.face_models == "auto" and device.type == "cuda" and embedder_on_device
    )
    if not shared:
        return []
    if device.type == "cuda" and (options.device == "auto" or device.index is None):  # every GPU of this machine
        import torch

        return [f"cuda:{k}" for k in range(torch.cuda.device_count())]
    return [str(device)]


def _shared_faces(
    chunks: Iterable[list[ManifestItem]],
    cfg: ExtractConfig,
    weights: FaceWeights,
    cache_dir: str,
    devices: list[str],
    n_jobs: int,
    threads: int,
    prefetch: bool,
    spool: str | None = None,
    consumers: int | None = None,
) -> Iterator[tuple[list[dict], list[Failure]]]:
    """Workers decode; consumer threads (``consumers`` per device, else :data:`CONSUMERS` by device
    type) run the faces and write the shard.

    Two consumers share a GPU's one model: while one writes its shard or waits for a result, the
    other's batches keep the device busy. At most two decoded chunks per consumer are in flight
    (one being embedded, one waiting), so a slow device holds back the main thread rather than
    filling memory with frames.
    """
    import torch

    if any(d == "cpu" for d in devices):
        torch.set_num_threads(threads)
    free = [d for d in reversed(devices) for _ in range(consumers or CONSUMERS.get(d.split(":")[0], 1))]
    slots = len(free)
    lock = threading.Lock()

    def consume(loaded: list[Loaded | Failure]) -> tuple[list[dict], list[Failure]]:
        with lock:
            device = free.pop()
        try:
            return consume_chunk(loaded, cfg, weights, cache_dir, device)
        finally:
            with lock:
                free.append(device)

    decoded = _parallel(n_jobs)(joblib.delayed(decode_chunk)(chunk, cfg, prefetch, spool) for chunk in chunks)
    pending: set[Future] = set()
    with ThreadPoolExecutor(slots, thread_name_prefix="faces") as pool:
        for loaded in decoded:
            while len(pending) >= 2 * slots:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                yield from (f.result() for f in done)
            pending.add(pool.submit(consume, loaded))
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            yield from (f.result() for f in done)


def run_extraction(
    manifest: str | os.PathLike,
    cache_root: str | os.PathLike,
    cfg: ExtractConfig = ExtractConfig(),
    options: RunOptions | None = None,
) -> RunSummary:
    """Extract every manifest item not yet in ``cache_root/<config hash>``; see the module docstring."""
    began = time.perf_counter()
    options = options or RunOptions()
    table, root = load_manifest(manifest)
    items = manifest_items(table, root)
    weights = resolve_face_weights(cfg.face_weights, cfg.face_seed)  # fails here, before any work
    check_face_config(cfg, weights)
    devices = _consumer_devices(options, weights.model.runs_on_device)  # fails here (bad device) before any work
    cache_dir = Path(cache_root).resolve() / cfg.hash(weights.identity)
    summary = RunSummary(cache_dir, total=len(items))

    with cache_lock(cache_dir):
        _ensure_config(cache_dir, cfg.to_record(weights.identity, weights.face_dim, weights.versions()))
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

        if todo:
            with (
                contextlib.ExitStack() as stack,
                _backend(options) as n_jobs,
                tqdm(total=len(todo), unit="item", desc="extract", disable=not options.progress, smoothing=0.1) as bar,
            ):
                threads = _threads_per_worker(options)
                chunks = _chunks(todo, cfg, options, n_jobs)
                run_chunk = functools.partial(
                    extract_chunk,
                    cfg=cfg,
                    weights=weights,
                    cache_dir=str(cache_dir),
                    threads=threads,
                    device=options.device,
                    prefetch=options.prefetch,
                )
                if devices:
                    local = options.backend == "loky" or not options.scheduler  # workers see this machine's files
                    spool = stack.enter_context(frame_spool(cache_dir)) if options.frame_spool and local else None
                    results = _shared_faces(
                        chunks,
                        cfg,
                        weights,
                        str(cache_dir),
                        devices,
                        n_jobs,
                        threads,
                        options.prefetch,
                        spool,
                        options.consumers,
                    )
                elif options.backend == "loky" and n_jobs > 1 and weights.model.releases_gil:
                    results = _driver_helps(chunks, n_jobs, run_chunk)
                # An embedder that holds the GIL (dlib) would serialise threads of one process, so
                # its N workers are N pool processes and the driver only commits.
                else:
                    results = _parallel(n_jobs)(joblib.delayed(run_chunk)(chunk) for chunk in chunks)
                for rows, failures in results:
                    commit_rows(cache_dir, rows)
                    if summary.first_seconds is None:
                        summary.first_items, summary.first_seconds = len(rows), time.perf_counter() - began
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

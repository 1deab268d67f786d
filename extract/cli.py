"""``extract run | info | verify | index | compact`` (also ``python -m extract``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields

from common.cli import HelpFormatter
from extract.cache import CacheBusyError, CacheError, open_cache, write_snapshot
from extract.compact import DEFAULT_TARGET_MB
from extract.config import FACE_PRECISIONS, ExtractConfig
from extract.detect import FACE_DETECTORS
from extract.faces import FaceWeightsError
from extract.run import BACKENDS, FACE_MODELS, SCHEDULES, ManifestError, RunOptions, StorageError, run_extraction

#: Exit codes, so scripts can tell "some items failed" from "could not run at all".
EXIT_OK, EXIT_FAILURES, EXIT_USAGE, EXIT_BUSY, EXIT_STORAGE = 0, 1, 2, 3, 4

_DEFAULTS = {f.name: f.default for f in fields(ExtractConfig)}


def _parser() -> argparse.ArgumentParser:
    fmt = HelpFormatter
    parser = argparse.ArgumentParser(
        prog="extract",
        description="Decode audio-visual videos into a sharded HDF5 feature cache (log-mel + face embeddings).",
        epilog=f"exit codes: {EXIT_OK} ok, {EXIT_FAILURES} items failed (all, or any with --strict) / verify "
        f"found corruption, {EXIT_USAGE} bad manifest or arguments, {EXIT_BUSY} cache in use, "
        f"{EXIT_STORAGE} cannot write (disk full)",
        formatter_class=fmt,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser(
        "run",
        help="extract every manifest item not yet cached",
        description="Extract every manifest item not yet in CACHE_ROOT/<config hash>/ (rerun to resume). "
        "The last word printed is the cache directory.",
        formatter_class=fmt,
    )
    run.add_argument("--manifest", required=True, help="CSV or parquet with at least utt_id,path")
    run.add_argument("--cache-root", default="cache", help="features go to CACHE_ROOT/<config hash>/")
    run.add_argument("--workers", type=int, default=1, help="parallel worker processes (dask: local cluster size)")
    run.add_argument("--backend", choices=BACKENDS, default="loky", help="joblib backend")
    run.add_argument("--scheduler", help="dask scheduler address (tcp://HOST:PORT); default: a LocalCluster")
    run.add_argument("--shard-size", type=int, default=RunOptions.shard_size, help="most items per shard and per task")
    run.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=RunOptions.schedule,
        help="cost: tasks of near-equal estimated cost (duration × pixels, probed); count: --shard-size items a task",
    )
    run.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads per worker (default: cores // workers, or 1 on a remote dask cluster)",
    )
    run.add_argument(
        "--device", default=RunOptions.device, help="face models on auto (CUDA if present) | cpu | cuda[:K]; not hashed"
    )
    run.add_argument(
        "--face-models",
        choices=FACE_MODELS,
        default=RunOptions.face_models,
        help="worker: every worker runs its own face models; shared: workers only decode, one consumer "
        "per device runs the faces in large batches (the GPU path); auto: shared on CUDA, else worker",
    )
    run.add_argument(
        "--face-consumers",
        type=int,
        default=RunOptions.consumers,
        metavar="N",
        help="shared path: consumer threads per device sharing its face models (default: 2 on CUDA, 1 on CPU); "
        "speed only, not hashed",
    )
    run.add_argument(
        "--no-frame-spool",
        dest="frame_spool",
        action="store_false",
        help="shared path: send decoded frames to the consumer through the result pipe instead of files "
        "in /dev/shm (slower; for comparison)",
    )
    run.add_argument("--strict", action="store_true", help="exit non-zero if any item failed")
    run.add_argument("--repair", action="store_true", help="re-extract the items `extract verify` finds corrupt")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    features = run.add_argument_group("feature settings (each changes the cache directory)")
    features.add_argument("--sample-rate", type=int, default=_DEFAULTS["sample_rate"], help="Hz")
    features.add_argument("--n-mels", type=int, default=_DEFAULTS["n_mels"], help="log-mel bands")
    features.add_argument("--win-ms", type=float, default=_DEFAULTS["win_ms"], help="analysis window")
    features.add_argument("--hop-ms", type=float, default=_DEFAULTS["hop_ms"], help="frame hop")
    features.add_argument("--fps", type=float, default=_DEFAULTS["fps"], help="video frames sampled per second")
    features.add_argument(
        "--frame-size", type=int, default=_DEFAULTS["frame_size"], help="frames letterboxed to this square, in ffmpeg"
    )
    features.add_argument(
        "--face-weights",
        default=_DEFAULTS["face_weights"],
        help="vggface2 | casia-webface (torch hub cache, else download) | random (seeded) | PATH to a state dict "
        "(InceptionResnetV1, 512-d) | dlib (dlib's ResNet, 128-d; the faces-dlib extra, no download)",
    )
    features.add_argument(
        "--face-seed", type=int, default=_DEFAULTS["face_seed"], help="seed for --face-weights random"
    )
    features.add_argument(
        "--face-detector",
        choices=sorted(FACE_DETECTORS),
        default=_DEFAULTS["face_detector"],
        help="mtcnn: MTCNN batched over frames on the device; mtcnn-facenet: facenet-pytorch's own MTCNN "
        "(the reference; box-by-box crops in Python)",
    )
    features.add_argument(
        "--face-detect-every",
        type=int,
        default=_DEFAULTS["face_detect_every"],
        help="detect faces on every k-th frame of a clip (and its last) and carry the boxes to the frames between",
    )
    features.add_argument(
        "--face-precision",
        choices=FACE_PRECISIONS,
        default=_DEFAULTS["face_precision"],
        help="the face embedding network's precision (bfloat16/float16: autocast; torch embedders only)",
    )
    features.add_argument(
        "--min-face-size", type=int, default=_DEFAULTS["min_face_size"], help="MTCNN smallest face (px)"
    )
    features.add_argument(
        "--dtype", choices=("float16", "float32"), default=_DEFAULTS["dtype"], help="stored precision"
    )
    run.add_argument(
        "--face-batch", type=int, default=_DEFAULTS["face_batch"], help="frames per face-model batch (speed only)"
    )

    info = sub.add_parser(
        "info",
        help="summarise a cache",
        description="Summarise CACHE_DIR: items, hours of audio, shards, bytes per hour, failures by reason, "
        "face-found rate, and the extraction settings it was made with.",
        formatter_class=fmt,
    )
    info.add_argument("cache_dir", help="a cache directory (the last word `extract run` prints)")
    info.add_argument("--json", action="store_true", help="print the summary as JSON")

    verify = sub.add_parser(
        "verify",
        help="read everything back; exit 0 only if every item is whole and finite",
        description="Read every item of CACHE_DIR back and check it against the index: HDF5 checksums, "
        "lengths, missing shards, non-finite values. Names each corrupt item; exit 0 only if there is none "
        "(`extract run --repair` re-extracts them).",
        formatter_class=fmt,
    )
    verify.add_argument("cache_dir", help="a cache directory")

    index = sub.add_parser(
        "index",
        help="write the index snapshot (index.parquet) now",
        description="Bring CACHE_DIR/index.parquet up to the whole committed index.jsonl. `extract run` does this "
        "at its end and every open refreshes a missing or stale snapshot; use this for a cache written otherwise.",
        formatter_class=fmt,
    )
    index.add_argument("cache_dir")

    compact = sub.add_parser(
        "compact",
        help="merge small shards into large ones (atomic; safe to kill and rerun)",
        description="Pack shards under half of --target-mb into new shards of about --target-mb; index rows are "
        "rewritten as superseding rows, old shards removed last. Exit 1 if a shard could not be read.",
        formatter_class=fmt,
    )
    compact.add_argument("cache_dir")
    compact.add_argument("--target-mb", type=float, default=DEFAULT_TARGET_MB, help="size of a compacted shard")
    compact.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _config(args: argparse.Namespace) -> ExtractConfig:
    names = {f.name for f in fields(ExtractConfig)}
    return ExtractConfig(**{k: v for k, v in vars(args).items() if k in names})


def _run(args: argparse.Namespace) -> int:
    counts = (args.workers, args.shard_size, args.threads, args.face_consumers)
    if any(n is not None and n < 1 for n in counts):
        raise ValueError("--workers, --shard-size, --threads and --face-consumers must be ≥ 1")
    if args.scheduler and args.backend != "dask":
        raise ValueError("--scheduler needs --backend dask")
    options = RunOptions(
        workers=args.workers,
        backend=args.backend,
        scheduler=args.scheduler,
        shard_size=args.shard_size,
        threads=args.threads,
        device=args.device,
        face_models=args.face_models,
        consumers=args.face_consumers,
        schedule=args.schedule,
        frame_spool=args.frame_spool,
        repair=args.repair,
        progress=not args.no_progress,
    )
    summary = run_extraction(args.manifest, args.cache_root, _config(args), options)
    for failure in summary.failures[:20]:
        print(f"failed {failure.utt_id} [{failure.stage}] {failure.reason}", file=sys.stderr)
    if len(summary.failures) > 20:
        print(f"... and {len(summary.failures) - 20} more in {summary.cache_dir / 'failures.csv'}", file=sys.stderr)
    print(summary.line(), flush=True)
    return summary.exit_code(args.strict)


def _info(args: argparse.Namespace) -> int:
    from extract.info import cache_info, format_info

    info = cache_info(args.cache_dir)
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return EXIT_OK


def _verify(args: argparse.Namespace) -> int:
    from extract.verify import verify_cache

    report = verify_cache(args.cache_dir)
    for utt, reason in report.bad_items.items():
        print(f"corrupt: item {utt!r}: {reason}")
    print(report.line())
    return EXIT_OK if report.ok else EXIT_FAILURES


def _index(args: argparse.Namespace) -> int:
    open_cache(args.cache_dir)  # CacheError if it is not a cache
    path = write_snapshot(args.cache_dir)
    n = len(open_cache(args.cache_dir))
    print(f"index: snapshot of {n} items → {path}" if path else f"index: empty index, no snapshot → {args.cache_dir}")
    return EXIT_OK


def _compact(args: argparse.Namespace) -> int:
    from extract.compact import compact_cache

    open_cache(args.cache_dir)  # CacheError if it is not a cache
    summary = compact_cache(args.cache_dir, args.target_mb, progress=not args.no_progress)
    for shard, reason in summary.unreadable.items():
        print(f"unreadable: shard {shard}: {reason}", file=sys.stderr)
    print(summary.line())
    return EXIT_FAILURES if summary.unreadable else EXIT_OK


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handler = {"run": _run, "info": _info, "verify": _verify, "index": _index, "compact": _compact}[args.command]
    try:
        return handler(args)
    except (ManifestError, FaceWeightsError, CacheError, ValueError) as err:
        print(f"extract {args.command}: error: {err}", file=sys.stderr)
        return EXIT_USAGE
    except CacheBusyError as err:
        print(f"extract {args.command}: error: {err}", file=sys.stderr)
        return EXIT_BUSY
    except StorageError as err:
        print(f"extract {args.command}: error: {err.strerror}", file=sys.stderr)
        return EXIT_STORAGE


if __name__ == "__main__":
    raise SystemExit(main())

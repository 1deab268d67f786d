"""``distill``: train teachers and students on a feature cache, evaluate, sweep, embed.

Exit codes: 0 success, 2 usage or configuration error, 1 the run failed (non-finite loss, targets
that do not match, unreadable input). Also ``python -m distill`` and under
``torchrun --nproc_per_node N -m distill teacher|student ...`` (rank 0 prints and writes).
"""
from __future__ import annotations

import argparse
import sys
import time

from distill.config import METHODS, SETTINGS, TASK_LABEL_COLUMNS, ConfigError, RunConfig, load_config, read_run_config
from distill.metrics import METRIC_KEYS

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2

EPILOG = """examples:
  distill teacher --cache cache/3f2a --task speaker --setting seq --out runs/t
  distill teacher --cache cache/3f2a --task emotion --face-recon 10 --out runs/t-recon
  distill student --cache cache/3f2a --teacher runs/t --method embed --out runs/s --set distill.distance=cosine
  torchrun --nproc_per_node 2 -m distill teacher --cache cache/3f2a --task emotion --setting nonseq --out runs/t2
  distill eval runs/s
  distill sweep configs/sweep_demo.yaml --cache cache/3f2a --out results/demo
  distill embed runs/s clip1.wav clip2.mp4 --out emb.npy
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return argparse.ArgumentDefaultsHelpFormatter(prog, max_help_position=32)


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="feature cache directory written by `extract run` (default: cache: in --config)")
    p.add_argument("--out", required=True, help="run directory to create (config.yaml, checkpoints, metrics.json, plots)")
    p.add_argument("--epochs", type=int, help="training epochs (train.epochs)")
    p.add_argument("--seed", type=int, help="seed of initialisation, sampling and crops (train.seed)")
    p.add_argument("--config", help="YAML config (sections data/model/train/distill); flags and --set override it")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, repeatable, applied last, e.g. --set distill.distance=cosine")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Audio representation learning with video as privileged information: an audio-visual "
                    "teacher, and audio-only students distilled from its cached embeddings.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("teacher", formatter_class=_formatter, help="train the audio+faces teacher and write its targets",
                       description="Train the audio-visual teacher, evaluate it (also with its video missing) and "
                                   "write its targets for every grid cell, for the students to read.")
    p.add_argument("--task", choices=sorted(TASK_LABEL_COLUMNS), help="label column to learn (data.task)")
    p.add_argument("--setting", choices=SETTINGS, help="one crop (nonseq) or segments + aggregation (seq)")
    p.add_argument("--face-recon", type=float, metavar="WEIGHT",
                   help="weight of the face reconstruction term that keeps the faces in the teacher's targets "
                        "(distill.face_recon; config default 0 = cross-entropy only; see docs/method.md)")
    _run_options(p)

    p = sub.add_parser("student", formatter_class=_formatter, help="train an audio-only student",
                       description="Train an audio-only student. It takes the teacher's task, setting, grid and "
                                   "model sections and reads the teacher's cached targets; it never runs the teacher. "
                                   "--method none is the audio-only baseline (a --teacher given then only supplies "
                                   "those config sections).")
    p.add_argument("--teacher", help="teacher run directory (needed unless --method none)")
    p.add_argument("--method", choices=METHODS, default="embed", help="how the student learns from the teacher")
    p.add_argument("--distance", choices=("mse", "cosine", "l1", "smooth_l1"), help="embedding distance (distill.distance)")
    p.add_argument("--encoder-grad", choices=("joint", "distill-only"),
                   help="does the task loss reach the student encoder? (distill.encoder_grad)")
    p.add_argument("--task", choices=sorted(TASK_LABEL_COLUMNS), help="only without --teacher (data.task)")
    p.add_argument("--setting", choices=SETTINGS, help="only without --teacher (data.setting)")
    _run_options(p)

    p = sub.add_parser("eval", formatter_class=_formatter, help="recompute a run's metrics.json and plots",
                       description="Evaluate a run's best checkpoint on the test split again.")
    p.add_argument("run", help="run directory")
    p.add_argument("--cache", help="cache to evaluate on (default: the run's own)")

    p = sub.add_parser("sweep", formatter_class=_formatter, help="teachers + student variants x seeds, then results tables",
                       description="Run a SWEEP.yaml: one teacher per task x setting, reused by every student variant "
                                   "and seed; finished runs (metrics.json present) are skipped; then results.csv/.md "
                                   "and bar charts.")
    p.add_argument("sweep", help="sweep file (see configs/sweep_demo.yaml)")
    p.add_argument("--cache", help="cache directory (overrides cache: in the sweep file)")
    p.add_argument("--out", help="output directory (overrides out: in the sweep file)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser("embed", formatter_class=_formatter, help="audio-only embeddings of new audio/video files",
                       description="Decode the audio track of each file with the extraction code path and embed it "
                                   "with the run's best network (audio only: no faces needed).")
    p.add_argument("run", help="run directory (a student; a teacher runs with its video missing)")
    p.add_argument("files", nargs="+", help="audio or video files")
    p.add_argument("--out", required=True, help="output .npy (N x D) or .csv (path + D columns)")
    return parser


def _overrides(args: argparse.Namespace, flags: dict) -> list[str]:
    pairs = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return pairs + list(args.overrides)


def _common_flags(args: argparse.Namespace) -> dict:
    return {"cache": args.cache, "train.epochs": args.epochs, "train.seed": args.seed}


def teacher_config(args: argparse.Namespace) -> RunConfig:
    flags = {**_common_flags(args), "role": "teacher", "data.task": args.task, "data.setting": args.setting,
             "distill.face_recon": args.face_recon}
    return load_config(args.config, _overrides(args, flags))


def student_config(args: argparse.Namespace) -> RunConfig:
    """Teacher's data + model sections <- --config <- flags <- --set."""
    base: dict = {}
    if args.teacher:
        tcfg = read_run_config(args.teacher)
        if tcfg.role != "teacher":
            raise ConfigError(f"--teacher {args.teacher} is a {tcfg.role} run, not a teacher")
        base = {"data": tcfg.to_dict()["data"], "model": tcfg.to_dict()["model"], "cache": tcfg.cache}
        if args.task or args.setting:
            raise ConfigError("--task/--setting come from the teacher; drop them or drop --teacher")
    elif args.method != "none":
        raise ConfigError(f"--method {args.method} needs --teacher RUN_DIR")
    flags = {**_common_flags(args), "role": "student", "distill.method": args.method, "distill.teacher": args.teacher,
             "distill.distance": args.distance, "distill.encoder_grad": args.encoder_grad,
             "data.task": args.task, "data.setting": args.setting}
    return load_config(args.config, _overrides(args, flags), base=base)


def _summary(cfg: RunConfig, metrics: dict, seconds: float, out: str) -> str:
    keys = [k for k in METRIC_KEYS if k in metrics]
    text = " ".join(f"{k}={metrics[k]:.3f}" for k in keys)
    if "video_missing" in metrics:
        vm = metrics["video_missing"]
        text += " | video missing: " + " ".join(f"{k}={vm[k]:.3f}" for k in keys if k in vm)
    who = cfg.role if cfg.role == "teacher" else f"student[{cfg.distill.method}]"
    return f"{who} {cfg.data.task}/{cfg.data.setting}: {text} ({seconds:.1f} s) -> {out}"


def _train(args: argparse.Namespace, cfg: RunConfig) -> int:
    from distill.train import run_training

    started = time.perf_counter()
    metrics = run_training(cfg, args.out, resume=args.resume, progress=not args.quiet)
    if metrics:  # rank 0
        print(_summary(cfg, metrics, time.perf_counter() - started, args.out), flush=True)
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    from distill.train import evaluate_run

    cfg = read_run_config(args.run)
    started = time.perf_counter()
    metrics = evaluate_run(args.run, cache=args.cache)
    print(_summary(cfg, metrics, time.perf_counter() - started, args.run))
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    from distill.sweep import run_sweep

    result = run_sweep(args.sweep, cache=args.cache, out=args.out, progress=not args.quiet)
    print(result.summary())
    return EXIT_OK if not result.failed else EXIT_FAIL


def _embed(args: argparse.Namespace) -> int:
    from distill.embed import embed_files, write_embeddings

    emb = embed_files(args.run, args.files)
    path = write_embeddings(emb, args.files, args.out)
    print(f"embedded {len(args.files)} file(s), {emb.shape[1]}-d, from {args.run} -> {path}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    from distill.distributed import shutdown

    try:
        if args.command == "teacher":
            return _train(args, teacher_config(args))
        if args.command == "student":
            return _train(args, student_config(args))
        if args.command == "eval":
            return _eval(args)
        if args.command == "sweep":
            return _sweep(args)
        return _embed(args)
    except ConfigError as exc:
        print(f"distill {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted; rerun with --resume to continue", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed run: say what and why in one line, no traceback wall
        from distill.targets import TargetMismatchError
        from distill.train import NonFiniteLossError

        known = (NonFiniteLossError, TargetMismatchError, FileNotFoundError, ValueError, RuntimeError, OSError)
        if not isinstance(exc, known):
            raise
        print(f"distill {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        shutdown()

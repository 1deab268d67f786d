"""``distill``: train teachers and students on a feature cache, evaluate, sweep, embed.

Exit codes: 0 success, 2 usage or configuration error, 1 the run failed (non-finite loss, targets
that do not match, unreadable input). Also ``python -m distill`` and under
``torchrun --nproc_per_node N -m distill teacher|student ...`` (rank 0 prints and writes).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from common.cli import HelpFormatter
from distill.config import ConfigError, RunConfig, load_config, option_choices, parse_override
from distill.eval.metrics import METRIC_KEYS
from distill.eval.run_eval import reevaluate
from distill.run import RunDir, require_teacher, student_config
from distill.serve.embed import H5_SUFFIXES, embed_to_h5, write_embeddings
from distill.serve.export import export_run
from distill.serve.model import Model, Prediction, run_items, softmax, sources_from
from distill.serve.verification import ensure_threshold, score_pairs, trial_items, trial_metrics
from distill.sweep import run_sweep
from distill.train.distributed import shutdown
from distill.train.targets import TargetMismatchError
from distill.train.trainer import NonFiniteLossError, run_training
from manifests.trials import read_trials

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2
#: ``distill student``'s method when neither --method, --config nor --set names one.
STUDENT_METHOD = "embed"
_ABSENT = object()

EPILOG = """examples:
  distill teacher --cache cache/3f2a --task speaker --setting seq --out runs/t
  distill teacher --cache cache/3f2a --task emotion --face-recon 10 --out runs/t-recon
  distill student --cache cache/3f2a --teacher runs/t --method embed --out runs/s --set distill.distance=cosine
  torchrun --nproc_per_node 2 -m distill teacher --cache cache/3f2a --task emotion --setting nonseq --out runs/t2
  distill eval runs/s
  distill sweep configs/demo_sweep.yaml --cache cache/3f2a --out results/demo
  distill sweep configs/demo_sweep.yaml --cache /shared/cache/3f2a --out /shared/results/demo \\
      --backend dask --scheduler tcp://head:8786
  distill embed runs/s clip1.wav clip2.mp4 --out emb.npy
  distill embed runs/s --manifest test.csv --out emb.h5          # resumable
  distill predict runs/s clip1.wav clip2.mp4 --out pred.csv
  distill verify runs/s a.wav b.wav
  distill verify runs/s --trials trials.txt --out scores.csv
  distill verify runs/s --trials VoxCeleb1/veri_test2.txt --audio-root VoxCeleb1/wav
  distill export runs/s --format onnx --out models/s
"""


def _formatter(prog: str) -> argparse.HelpFormatter:
    return HelpFormatter(prog, max_help_position=32)


def _key(dotted: str) -> str:
    """How a flag's absence reads in --help: the config key it sets and where its value then comes from."""
    value = load_config()
    for part in dotted.split("."):
        value = getattr(value, part)
    return f"{dotted}; default: --config's, else {value}"


def _run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", help="feature cache directory written by `extract run` (default: cache: in --config)")
    p.add_argument(
        "--out", required=True, help="run directory to create (config.yaml, checkpoints, metrics.json, plots)"
    )
    p.add_argument("--epochs", type=int, help=f"training epochs ({_key('train.epochs')})")
    p.add_argument("--seed", type=int, help=f"seed of initialisation, sampling and crops ({_key('train.seed')})")
    p.add_argument("--config", help="YAML config (sections data/model/train/distill); flags and --set override it")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable, applied last, e.g. --set distill.distance=cosine",
    )
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument(
        "--no-tensorboard",
        action="store_true",
        help="write no TensorBoard event files (train.tensorboard=false; default: written next to train_log.csv)",
    )


def _use_options(p: argparse.ArgumentParser, files: bool = True) -> None:
    """Options of the commands that use a trained model on new audio."""
    p.add_argument("run", help="run directory, or a folder written by `distill export`")
    if files:
        p.add_argument("files", nargs="*", help="audio or video files (or use --manifest)")
        p.add_argument("--manifest", help="CSV/parquet with utt_id,path (start,end honoured) instead of FILES")
    p.add_argument("--batch-size", type=int, default=64, help="grid cells (crops/windows) per forward pass")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="distill",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=EPILOG,
        description="Audio representation learning with video as privileged information: an audio-visual "
        "teacher, and audio-only students distilled from its cached embeddings.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "teacher",
        formatter_class=_formatter,
        help="train the audio+faces teacher and write its targets",
        description="Train the audio-visual teacher, evaluate it (also with its video missing) and "
        "write its targets for every grid cell, for the students to read.",
    )
    p.add_argument("--task", choices=option_choices("data.task"), help=f"label column to learn ({_key('data.task')})")
    p.add_argument(
        "--setting",
        choices=option_choices("data.setting"),
        help=f"one crop (nonseq) or segments + aggregation (seq) ({_key('data.setting')})",
    )
    p.add_argument(
        "--face-recon",
        type=float,
        metavar="WEIGHT",
        help="weight of the face reconstruction term that keeps the faces in the teacher's targets "
        "(distill.face_recon; config default 0 = cross-entropy only; see docs/method.md)",
    )
    _run_options(p)

    p = sub.add_parser(
        "student",
        formatter_class=_formatter,
        help="train an audio-only student",
        description="Train an audio-only student. It takes the teacher's task, setting, grid and "
        "model sections and reads the teacher's cached targets; it never runs the teacher. "
        "--method none is the audio-only baseline (a --teacher given then only supplies "
        "those config sections).",
    )
    p.add_argument(
        "--teacher", help="teacher run directory (needed unless --method none; default: distill.teacher of --config)"
    )
    p.add_argument(
        "--method",
        choices=option_choices("distill.method"),
        help="how the student learns from the teacher (docs/method.md; distill.methods declares each); "
        f"default: distill.method of --config, else {STUDENT_METHOD}",
    )
    p.add_argument(
        "--distance",
        choices=option_choices("distill.distance"),
        help=f"embedding distance ({_key('distill.distance')})",
    )
    p.add_argument(
        "--encoder-grad",
        choices=option_choices("distill.encoder_grad"),
        help=f"does the task loss reach the student encoder? ({_key('distill.encoder_grad')})",
    )
    p.add_argument("--task", choices=option_choices("data.task"), help=f"only without --teacher ({_key('data.task')})")
    p.add_argument(
        "--setting", choices=option_choices("data.setting"), help=f"only without --teacher ({_key('data.setting')})"
    )
    _run_options(p)

    p = sub.add_parser(
        "eval",
        formatter_class=_formatter,
        help="recompute a run's metrics.json and plots",
        description="Evaluate a run's best checkpoint on the test split again.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--cache", help="cache to evaluate on (default: the run's own)")

    p = sub.add_parser(
        "sweep",
        formatter_class=_formatter,
        help="teachers + student variants x seeds, then results tables",
        description="Run a SWEEP.yaml: one teacher per task x setting, reused by every student variant "
        "and seed; finished runs (metrics.json present) are skipped; then results.csv/.md "
        "and bar charts.",
    )
    p.add_argument("sweep", help="sweep file (see configs/demo_sweep.yaml)")
    p.add_argument("--cache", help="cache directory (overrides cache: in the sweep file)")
    p.add_argument("--out", help="output directory (overrides out: in the sweep file)")
    p.add_argument(
        "--backend",
        choices=("local", "dask"),
        default="local",
        help="local: the runs one after another in this process; dask: each run a task on a "
        "dask.distributed cluster, students after their teacher (docs/cluster.md)",
    )
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="with --backend dask: the cluster's scheduler, e.g. tcp://HEAD:8786; without it, a local "
        "cluster of --workers processes",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=2,
        help="with --backend dask and no --scheduler: local worker processes, one run each at a time",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bars")

    p = sub.add_parser(
        "embed",
        formatter_class=_formatter,
        help="audio-only embeddings of new audio/video files",
        description="Decode the audio track of each file with the extraction code path and embed it "
        "with the run's best network (audio only: no faces needed; a teacher runs with "
        "its video missing). A .h5 output is resumable: rerun the same command after a "
        "kill and the ids already stored are skipped. Exit 1 if any file failed.",
    )
    _use_options(p)
    p.add_argument("--out", required=True, help="output .npy (N x D), .csv (path + D columns) or .h5 (resumable)")
    p.add_argument("--chunk", type=int, default=256, help=".h5: files decoded and committed per step")

    p = sub.add_parser(
        "predict",
        formatter_class=_formatter,
        help="class probabilities and top class per file",
        description="Class probabilities (softmax of the cell-averaged logits) and the top class of "
        "each file: emotion, or closed-set speaker identity. Exit 1 if any file failed.",
    )
    _use_options(p)
    p.add_argument("--out", help="output .csv or .json, a row per file; without it, one line per file on stdout")

    p = sub.add_parser(
        "verify",
        formatter_class=_formatter,
        help="same speaker? cosine scores of file pairs",
        description="Cosine score of two files, or of every pair of a trial list, with the decision "
        "at the run's validation EER threshold (verification.json, recorded by "
        "evaluation; computed from the run's cache when missing); a labelled trial list "
        "also gets EER and minDCF. Exit 1 if any file failed.",
    )
    _use_options(p, files=False)
    p.add_argument("pair", nargs="*", metavar="FILE", help="two files A B (or use --trials)")
    p.add_argument(
        "--trials",
        help="trial list 'label enrol test' (VoxCeleb style); entries are paths under --audio-root, or "
        "utt_ids of --manifest",
    )
    p.add_argument(
        "--audio-root",
        action="append",
        default=[],
        metavar="DIR",
        help="folder the trial entries are paths in, e.g. VoxCeleb1's wav/ (repeatable: the first that holds "
        "an entry; default: the trial file's folder)",
    )
    p.add_argument(
        "--manifest",
        help="CSV/parquet with utt_id,path whose utt_ids the trial entries are (matched with or without "
        "their extension: VoxCeleb's .wav names fit the recipe's ids)",
    )
    p.add_argument(
        "--norm",
        choices=("auto", "none", "asnorm"),
        default="auto",
        help="score: cosine (none) or AS-norm against the run's cohort of training speakers; auto = "
        "asnorm when the run has a cohort (cohort.npy)",
    )
    p.add_argument(
        "--out", help="write label,enrol,test,score,decision as .csv; without it, one line per pair on stdout"
    )

    p = sub.add_parser(
        "export",
        formatter_class=_formatter,
        help="a self-contained TorchScript/ONNX model folder",
        description="Write the run's audio-only network (log-mel cells -> embedding, logits) with its "
        "feature settings, classes, verification threshold and a model card to a folder "
        "that `Model.load` reads without the run or its cache. Checked against the run "
        "before it is kept.",
    )
    p.add_argument("run", help="run directory")
    p.add_argument("--format", choices=("torchscript", "onnx"), default="torchscript", help="network file format")
    p.add_argument("--out", required=True, help="folder to write")
    p.add_argument("--cells", type=int, default=32, help="grid cells per call of the exported graph (fixed)")
    return parser


def _overrides(args: argparse.Namespace, flags: dict) -> list[str]:
    pairs = [f"{k}={v}" for k, v in flags.items() if v is not None]
    return pairs + list(args.overrides)


def _common_flags(args: argparse.Namespace) -> dict:
    return {
        "cache": args.cache,
        "train.epochs": args.epochs,
        "train.seed": args.seed,
        "train.tensorboard": False if args.no_tensorboard else None,
    }


def teacher_config_from_args(args: argparse.Namespace) -> RunConfig:
    flags = {
        **_common_flags(args),
        "role": "teacher",
        "data.task": args.task,
        "data.setting": args.setting,
        "distill.face_recon": args.face_recon,
    }
    return load_config(args.config, _overrides(args, flags))


def _chosen(args: argparse.Namespace, key: str, flag, default):
    """The value of config key ``key`` by the CLI's precedence: ``default`` <- --config <- the flag
    (when given) <- --set (the last one naming ``key``)."""
    value = default
    if args.config:
        try:
            node = yaml.safe_load(Path(args.config).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {args.config}: {exc}") from exc
        for part in key.split("."):
            node = node.get(part, _ABSENT) if isinstance(node, dict) else _ABSENT
        value = value if node is _ABSENT else node
    if flag is not None:
        value = flag
    for text in args.overrides:
        name, given = parse_override(text)
        if name == key:
            value = given
    return value


def student_config_from_args(args: argparse.Namespace) -> RunConfig:
    """Teacher's data + model sections <- --config <- flags <- --set (:func:`distill.run.student_config`).

    The method and the teacher follow the same order, so a --config or --set can choose them; without
    any of the three the method is ``embed`` (:data:`STUDENT_METHOD`)."""
    method = _chosen(args, "distill.method", args.method, STUDENT_METHOD)
    teacher_dir = _chosen(args, "distill.teacher", args.teacher, None)
    teacher = require_teacher(method, teacher_dir)
    if teacher is not None and (args.task or args.setting):
        raise ConfigError("--task/--setting come from the teacher; drop them or drop --teacher")
    flags = {
        **_common_flags(args),
        "distill.distance": args.distance,
        "distill.encoder_grad": args.encoder_grad,
        "data.task": args.task,
        "data.setting": args.setting,
    }
    return student_config(teacher, method, _overrides(args, flags), teacher_dir=teacher_dir, config_file=args.config)


def _summary(cfg: RunConfig, metrics: dict, seconds: float, out: str) -> str:
    keys = [k for k in METRIC_KEYS if k in metrics]
    text = " ".join(f"{k}={metrics[k]:.3f}" for k in keys)
    if "video_missing" in metrics:
        vm = metrics["video_missing"]
        text += " | video missing: " + " ".join(f"{k}={vm[k]:.3f}" for k in keys if k in vm)
    who = cfg.role if cfg.role == "teacher" else f"student[{cfg.distill.method}]"
    return f"{who} {cfg.data.task}/{cfg.data.setting}: {text} ({seconds:.1f} s) -> {out}"


def _train(args: argparse.Namespace, cfg: RunConfig) -> int:
    started = time.perf_counter()
    metrics = run_training(cfg, args.out, resume=args.resume, progress=not args.quiet)
    if metrics:  # rank 0
        print(_summary(cfg, metrics, time.perf_counter() - started, args.out), flush=True)
    return EXIT_OK


def _eval(args: argparse.Namespace) -> int:
    cfg = RunDir(args.run).config()
    started = time.perf_counter()
    metrics = reevaluate(args.run, cache=args.cache)
    print(_summary(cfg, metrics, time.perf_counter() - started, args.run))
    return EXIT_OK


def _sweep(args: argparse.Namespace) -> int:
    result = run_sweep(
        args.sweep,
        cache=args.cache,
        out=args.out,
        progress=not args.quiet,
        backend=args.backend,
        scheduler=args.scheduler,
        workers=args.workers,
    )
    print(result.summary())
    return EXIT_OK if not result.failed else EXIT_FAIL


def _sources(args: argparse.Namespace) -> list:
    if bool(args.files) == bool(args.manifest):
        raise ConfigError("give FILES or --manifest (one of the two)")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    return sources_from(args.files, args.manifest)


def _report_failures(command: str, failures: list) -> int:
    for failure in failures:
        print(f"distill {command}: error: {failure.line()}", file=sys.stderr)
    return EXIT_FAIL if failures else EXIT_OK


def _embed(args: argparse.Namespace) -> int:
    sources = _sources(args)
    model = Model.load(args.run, args.device)
    if args.out.endswith(H5_SUFFIXES):
        res = embed_to_h5(
            model, sources, args.out, batch_size=args.batch_size, chunk=args.chunk, progress=not args.quiet
        )
        print(
            f"embedded {res.embedded} file(s), {res.skipped} already stored, {len(res.failures)} failed; "
            f"{res.total} x {res.emb_dim} in {res.out}"
        )
        return _report_failures("embed", res.failures)
    ids, embs, failures = [], [], []
    for chunk_ids, emb, _, chunk_failures in run_items(
        model, sources, batch_size=args.batch_size, progress=not args.quiet
    ):
        ids += chunk_ids
        embs += [emb] if chunk_ids else []
        failures += chunk_failures
    if ids:
        emb = np.concatenate(embs)
        path = write_embeddings(emb, ids, args.out)
        print(f"embedded {len(ids)} file(s), {len(failures)} failed, {emb.shape[1]}-d, from {args.run} -> {path}")
    else:
        print(f"embedded 0 file(s), {len(failures)} failed: nothing written")
    return _report_failures("embed", failures)


def _predict(args: argparse.Namespace) -> int:
    sources = _sources(args)
    if args.out and not args.out.endswith((".csv", ".json")):
        raise ConfigError(f"--out {args.out}: use a .csv or .json file name")
    model = Model.load(args.run, args.device)
    paths = dict(sources)
    tables, failures = [], []
    for ids, _, logits, chunk_failures in run_items(
        model, sources, batch_size=args.batch_size, progress=not args.quiet, desc="predict"
    ):
        failures += chunk_failures
        if ids:
            table = Prediction(model.classes, softmax(logits)).table(ids)
            table.insert(1, "path", [getattr(paths[u], "path", paths[u]) for u in ids])
            tables.append(table)
    if tables:
        table = pd.concat(tables, ignore_index=True)
        if args.out is None:
            for row in table.itertuples(index=False):
                print(f"{row.utt_id}\t{row.top}\t{row.top_prob:.4f}")
        else:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            if args.out.endswith(".csv"):
                table.to_csv(args.out, index=False)
            else:
                table.to_json(args.out, orient="records", indent=2)
        counts = table["top"].value_counts()
        shown = ", ".join(f"{k} {v}" for k, v in counts.items())
        print(
            f"predicted {len(table)} file(s) ({model.task}: {shown}), {len(failures)} failed"
            + (f" -> {args.out}" if args.out else "")
        )
    else:
        print(f"predicted 0 file(s), {len(failures)} failed: nothing written")
    return _report_failures("predict", failures)


def _verify(args: argparse.Namespace) -> int:
    if bool(args.pair) == bool(args.trials) or (args.pair and len(args.pair) != 2):
        raise ConfigError("give two files A B, or --trials T")
    if (args.manifest or args.audio_root) and not args.trials:
        raise ConfigError("--manifest and --audio-root say where the entries of --trials are; with two files drop them")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be >= 1, got {args.batch_size}")
    if args.trials:  # before the model loads: a list that names nothing fails at once
        pairs = read_trials(args.trials)
        items = trial_items(pairs, args.trials, args.manifest, args.audio_root)
    else:
        pairs = pd.DataFrame({"enrol": [args.pair[0]], "test": [args.pair[1]]})
        items = {p: p for p in args.pair}
    model = Model.load(args.run, args.device)
    ensure_threshold(model, args.run)
    norm = model.resolve_norm(args.norm)
    scored, failures = score_pairs(
        model, pairs, items, norm=norm, batch_size=args.batch_size, progress=not args.quiet and len(items) > 2
    )
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        scored.to_csv(args.out, index=False)
    else:
        for row in scored.to_dict("records"):
            label = f"{row['label']} " if "label" in row else ""
            print(
                f"{label}{row['enrol']} {row['test']} {row['score']:.4f}"
                + (f" {row['decision']}" if "decision" in row else "")
            )
    point = (model.threshold or {}).get("asnorm") if norm == "asnorm" else model.threshold
    threshold = f"threshold {point['threshold']:.4f} (val EER point)" if point else "no threshold"
    if model.task != "speaker":
        threshold += f" ({model.task} runs have none: decisions need a speaker run)"
    scoring = "AS-norm" if norm == "asnorm" else "cosine"
    summary = f"verify: {len(scored)} of {len(pairs)} pair(s) scored ({scoring}), {threshold}"
    found = trial_metrics(scored)
    if found:
        summary += f"; EER={found['eer']:.3f} minDCF={found['min_dcf']:.3f}"
        if "decision_accuracy" in found:
            summary += f" decision accuracy={found['decision_accuracy']:.3f}"
    print(summary + (f" -> {args.out}" if args.out else ""))
    return _report_failures("verify", failures)


def _export(args: argparse.Namespace) -> int:
    out, diff = export_run(args.run, args.format, args.out, cells=args.cells)
    print(f"exported {args.run} as {args.format} -> {out} (max abs difference to the run: {diff:.1e})")
    return EXIT_OK


def _how_to_continue(args: argparse.Namespace) -> str:
    """What an interrupted command keeps, said after "interrupted" (only commands that keep work)."""
    if args.command in ("teacher", "student"):
        return "; rerun the same command with --resume to continue from the last completed epoch"
    if args.command == "sweep":
        return "; rerun the same command: finished runs are kept, unfinished ones resume"
    if args.command == "embed" and args.out.endswith(H5_SUFFIXES):
        return "; rerun the same command: the chunks already committed are kept"
    return ""


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)

    try:
        if args.command == "teacher":
            return _train(args, teacher_config_from_args(args))
        if args.command == "student":
            return _train(args, student_config_from_args(args))
        if args.command == "eval":
            return _eval(args)
        if args.command == "sweep":
            return _sweep(args)
        if args.command == "predict":
            return _predict(args)
        if args.command == "verify":
            return _verify(args)
        if args.command == "export":
            return _export(args)
        return _embed(args)
    except ConfigError as exc:
        print(f"distill {args.command}: configuration error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"distill {args.command}: interrupted{_how_to_continue(args)}", file=sys.stderr)
        return 130
    except Exception as exc:  # a failed run: say what and why in one line, no traceback wall
        known = (NonFiniteLossError, TargetMismatchError, FileNotFoundError, ValueError, RuntimeError, OSError)
        if not isinstance(exc, known):
            raise
        print(f"distill {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_FAIL
    finally:
        shutdown()

"""``make demo``: the whole pipeline on the generated demo corpus, then one comparison table.

corpus (manifests.demo) → ``extract run`` → ``distill sweep configs/demo_sweep.yaml`` → results.md

Every stage reuses what an earlier run finished (the corpus, the cache, each teacher and student
run), so a second ``make demo`` or one after a crash only does the missing work. The protocol (corpus
size, seeds, the label-scarcity curve, the budget rule, selection on val, report on test) lives in
the sweep file and docs/results.md; the flags here shrink it for a quick look or a test, and the
resolved sweep actually used is saved as ``OUT/sweep.yaml`` next to the results.

The faces are embedded by dlib's pretrained network when the ``faces-dlib`` extra is installed
(``make setup`` installs it from the lock), else by a seeded random InceptionResnetV1: nothing is
downloaded. results.md names the one that ran, and says how well each teacher labels its transfer
set (:mod:`distill.eval.teacher_labels`).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import yaml

from common.cli import HelpFormatter
from common.ffmpeg import FFMPEG_ENV, ffmpeg_exe, ffmpeg_version
from common.files import atomic_write_text
from distill.config import ConfigError, load_config
from distill.eval.report import ALL_LABELS, AUDIO_TEACHER
from distill.sweep import BACKENDS, SweepLayout, SweepSpec, parse_label_counts, run_sweep, set_for_every_run
from extract.config import ExtractConfig
from extract.faces import FaceWeightsError, resolve_face_weights
from extract.run import RunOptions, run_extraction
from manifests.demo import DemoConfig, make_demo_corpus

DEFAULT_SWEEP = Path(__file__).resolve().parents[1] / "configs" / "demo_sweep.yaml"
#: The demo corpus is 160×160 video, so letterboxing to 160 loses nothing and MTCNN runs on a quarter
#: of the default 256² pixels.
DEMO_EXTRACT = {"frame_size": 160}
#: ``--face-weights auto``: the pretrained offline embedder when installed, else seeded random weights.
AUTO, DLIB, RANDOM = "auto", "dlib", "random"
FACE_EMBEDDERS = {
    DLIB: "dlib's pretrained ResNet face recogniser, 128-d (`--face-weights dlib`)",
    RANDOM: "InceptionResnetV1 with seeded random weights, 512-d (`--face-weights random`)",
}


def choose_face_weights(requested: str) -> tuple[str, str]:
    """The face embedder to extract with, and why: ``auto`` takes dlib when it can be loaded."""
    if requested != AUTO:
        return requested, "as asked"
    try:
        resolve_face_weights(DLIB)
    except FaceWeightsError as exc:
        return RANDOM, f"the fallback: {exc}"
    return DLIB, "the faces-dlib extra is installed"


def _stage(n: int, text: str) -> None:
    print(f"\n[{n}/4] {text}", flush=True)


def resolved_sweep(
    path: Path,
    cache_dir: Path,
    out: Path,
    seeds: list[int] | None,
    epochs: int | None,
    labels_per_class: list[int | str] | None = None,
    overrides: Sequence[str] = (),
) -> dict:
    """The sweep file with this run's cache and output, and any shrinking flags, applied (``epochs``:
    the budget rule's cap); ``overrides`` (``key=value``, as ``distill --set``) go to every run."""
    spec = yaml.safe_load(path.read_text()) or {}
    spec["cache"], spec["out"] = str(cache_dir), str(out)
    if seeds is not None:
        spec["seeds"] = seeds
        spec["teacher_seed"] = seeds[0]
    if labels_per_class is not None:
        spec["labels_per_class"] = labels_per_class
    return set_for_every_run(spec, [*overrides, *([f"train.epochs={epochs}"] if epochs is not None else [])])


def _label_count(text: str) -> int | str:
    return text if text == ALL_LABELS else int(text)


def transfer_table(sweep_file: Path) -> list[str]:
    """results.md lines: each teacher's and its audio-only control's accuracy on its transfer set."""
    from distill.eval.teacher_labels import teacher_labels  # reads the cache: only after the sweep

    spec = SweepSpec.load(sweep_file)
    layout = SweepLayout(Path(spec.out))
    controls = [None, *spec.controls]
    rows = []
    for task, setting in spec.combos:
        for k in spec.label_counts():
            if k in (None, ALL_LABELS):
                continue  # every label used: no transfer set
            cells = []
            for control in controls:
                run_dir = layout.teacher(task, setting, control, k=k)
                try:
                    score = teacher_labels(run_dir)
                except (ConfigError, OSError) as exc:
                    print(f"distill.demo: cannot score {run_dir} on its transfer set: {exc}", file=sys.stderr)
                    cells.append(None)
                    continue
                cells.append(score)
            items = next((c.items for c in cells if c is not None), 0)
            text = ["–" if c is None else f"{c.accuracy:.3f}" for c in cells]
            rows.append(f"| {task} | {setting} | {k} | {items} | " + " | ".join(text) + " |")
    if not rows:
        return []
    names = ["teacher", *(c for c in controls if c)]
    return [
        "",
        "## The teachers on the transfer set",
        "",
        "Accuracy of each teacher's own prediction (its cached targets' logits, the mean over an item's "
        "grid cells: what the students read) on the training clips whose labels were hidden from the run; "
        f"`{AUDIO_TEACHER}` is the control that never sees faces. Chance is 1 / classes.",
        "",
        "| task | setting | labels / class | transfer items | " + " | ".join(names) + " |",
        "|" + "---|" * (4 + len(names)),
        *rows,
    ]


def annotate_results(md: Path, faces: str, why: str, cache_dir: Path, extra: list[str]) -> None:
    """Name the face embedder that ran at the top of results.md, and put the demo's own tables (``extra``)
    after the label-scarcity curve, before the per-k sections."""
    lines = md.read_text().splitlines()
    note = f"Faces: {FACE_EMBEDDERS.get(faces, f'`--face-weights {faces}`')}; {why}. Cache `{cache_dir}`."
    sections = [i for i, line in enumerate(lines) if line.startswith("## ") and "label-scarcity curve" not in line]
    at = sections[0] if sections else len(lines)
    if extra and at < len(lines):
        extra = [*extra[1:], ""]  # its leading blank line stands before the next heading instead
    atomic_write_text(md, "\n".join([*lines[:1], "", note, *lines[1:at], *extra, *lines[at:]]) + "\n")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill.demo",
        description="Generate the synthetic audio-visual demo corpus, extract it, train one teacher (and its "
        "audio-only control) per point of the label-scarcity curve and every student method over several seeds, "
        "and print the comparison table.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("--data", type=Path, default=Path("demo_data"), help="where the corpus is generated")
    parser.add_argument("--cache-root", type=Path, default=Path("cache"), help="extract's cache root")
    parser.add_argument("--out", type=Path, default=Path("results/demo"), help="sweep output and results table")
    parser.add_argument("--sweep", type=Path, default=DEFAULT_SWEEP, help="the protocol: a distill sweep file")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1), help="extraction workers")
    parser.add_argument("--speakers", type=int, default=DemoConfig.speakers, help="corpus speakers")
    parser.add_argument(
        "--utts-per-speaker", type=int, default=DemoConfig.utts_per_speaker, help="corpus utterances per speaker"
    )
    parser.add_argument(
        "--corpus-seed",
        type=int,
        default=DemoConfig.seed,
        help="draw of the corpus (manifests.demo's seed): another value is another corpus of the same design, "
        "for a run whose protocol was fixed before its data existed",
    )
    parser.add_argument("--seeds", type=int, nargs="+", help="override the sweep's student seeds (quick runs)")
    parser.add_argument("--epochs", type=int, help="override every run's epoch cap (quick runs)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted run-config override for every run, repeatable, e.g. --set train.min_steps=150",
    )
    parser.add_argument(
        "--fps",
        type=float,
        default=ExtractConfig.fps,
        help="face frames extracted per second of video (quick runs: fewer frames to embed)",
    )
    parser.add_argument(
        "--labels-per-class",
        nargs="+",
        type=_label_count,
        metavar="K",
        help="override the sweep's label-scarcity curve, e.g. 1 all (quick runs)",
    )
    parser.add_argument(
        "--face-weights",
        default=AUTO,
        help="face embedder: auto (dlib when the faces-dlib extra is installed, else random), dlib, random, "
        "or any extract --face-weights value",
    )
    parser.add_argument(
        "--sweep-workers",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="training runs at once (one thread each); 1 trains them one after another in this process",
    )
    parser.add_argument(
        "--ffmpeg",
        default="bundled",
        help="ffmpeg that writes the corpus and decodes it: bundled (imageio-ffmpeg's build, pinned "
        "by requirements.lock; docs/results.md's numbers come from it), system, auto or a path",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.labels_per_class is not None:
        try:
            parse_label_counts(args.labels_per_class, "--labels-per-class")
        except ConfigError as exc:
            parser.error(str(exc))
    if args.sweep_workers < 1:
        parser.error(f"--sweep-workers must be >= 1, got {args.sweep_workers}")
    try:  # a wrong key or value fails here, not after the corpus and its extraction
        load_config(overrides=args.overrides)  # validated as it is built
    except ConfigError as exc:
        parser.error(f"--set: {exc}")
    faces, why = choose_face_weights(args.face_weights)
    try:  # the extraction config checks its own values (here: --fps), before any work
        extract_cfg = ExtractConfig(**DEMO_EXTRACT, fps=args.fps, face_weights=faces)
    except ValueError as exc:
        parser.error(f"--fps {args.fps}: {exc}")
    began = time.perf_counter()
    os.environ[FFMPEG_ENV] = args.ffmpeg  # extraction workers inherit it
    print(f"ffmpeg: {ffmpeg_exe()} ({ffmpeg_version()})")
    print(f"faces: {faces} ({why})")

    _stage(1, f"demo corpus → {args.data}")
    manifest = make_demo_corpus(
        args.data, speakers=args.speakers, utts_per_speaker=args.utts_per_speaker, seed=args.corpus_seed
    )
    print(f"manifest: {manifest}")

    _stage(2, f"extract run → {args.cache_root}/<config hash>")
    summary = run_extraction(manifest, args.cache_root, extract_cfg, RunOptions(workers=args.workers))
    print(summary.line())
    if summary.failures:
        for failure in summary.failures:
            print(f"failed {failure.utt_id} [{failure.stage}] {failure.reason}", file=sys.stderr)
        return 1

    _stage(3, "distill sweep: teachers, cached targets, audio-only students")
    args.out.mkdir(parents=True, exist_ok=True)
    spec = resolved_sweep(
        args.sweep, summary.cache_dir, args.out, args.seeds, args.epochs, args.labels_per_class, args.overrides
    )
    sweep_file = args.out / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    backend = BACKENDS[0] if args.sweep_workers == 1 else "dask"  # dask: a LocalCluster of one-thread processes
    try:
        result = run_sweep(sweep_file, backend=backend, workers=args.sweep_workers)
    except ConfigError as exc:
        print(f"distill.demo: {exc}", file=sys.stderr)
        return 2

    _stage(4, "results (mean ± std over seeds; test split)")
    table = result.results.get("md")
    if table and Path(table).is_file():
        annotate_results(Path(table), faces, why, summary.cache_dir, transfer_table(sweep_file))
        print(Path(table).read_text())
    print(result.summary())
    minutes = (time.perf_counter() - began) / 60
    print(f"demo: done in {minutes:.1f} min; table, bar charts and every run under {args.out}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

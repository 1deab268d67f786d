"""``make demo``: the whole pipeline on the generated demo corpus, then one comparison table.

corpus (manifests.demo) → ``extract run`` → ``distill sweep configs/demo_sweep.yaml`` → results.md

Every stage reuses what an earlier run finished (the corpus, the cache, each teacher and student
run), so a second ``make demo`` or one after a crash only does the missing work. The protocol (corpus
size, seeds, epochs, selection on val, report on test) lives in the sweep file and docs/results.md;
the flags here shrink it for a quick look or a test, and the resolved sweep actually used is saved as
``OUT/sweep.yaml`` next to the results.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import yaml

from common.ffmpeg import FFMPEG_ENV, ffmpeg_exe, ffmpeg_version
from distill.config import ConfigError
from distill.sweep import run_sweep
from extract.config import ExtractConfig
from extract.run import RunOptions, run_extraction
from manifests.demo import DemoConfig, make_demo_corpus

DEFAULT_SWEEP = Path(__file__).resolve().parents[1] / "configs" / "demo_sweep.yaml"
#: The demo corpus is 160×160 video, so letterboxing to 160 loses nothing and MTCNN runs on a quarter
#: of the default 256² pixels. The face embedder is random (seeded): nothing can be downloaded here,
#: and docs/demo-corpus.md says what that means for the numbers.
DEMO_EXTRACT = {"frame_size": 160, "face_weights": "random"}


def _stage(n: int, text: str) -> None:
    print(f"\n[{n}/4] {text}", flush=True)


def resolved_sweep(path: Path, cache_dir: Path, out: Path, seeds: list[int] | None, epochs: int | None) -> dict:
    """The sweep file with this run's cache and output, and any shrinking flags, applied."""
    spec = yaml.safe_load(path.read_text()) or {}
    spec["cache"], spec["out"] = str(cache_dir), str(out)
    if seeds is not None:
        spec["seeds"] = seeds
        spec["teacher_seed"] = seeds[0]
    if epochs is not None:
        for section in ("base", "teacher"):
            spec.setdefault(section, {}).setdefault("train", {})["epochs"] = epochs
    return spec


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m distill.demo",
        description="Generate the synthetic audio-visual demo corpus, extract it, train one teacher per "
        "task x setting and every student method over several seeds, and print the comparison table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
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
    parser.add_argument("--seeds", type=int, nargs="+", help="override the sweep's student seeds (quick runs)")
    parser.add_argument("--epochs", type=int, help="override every run's epochs (quick runs)")
    parser.add_argument(
        "--ffmpeg",
        default="bundled",
        help="ffmpeg that writes the corpus and decodes it: bundled (imageio-ffmpeg's build, pinned "
        "by requirements.lock; docs/results.md's numbers come from it), system, auto or a path",
    )
    args = parser.parse_args(argv)
    began = time.perf_counter()
    os.environ[FFMPEG_ENV] = args.ffmpeg  # extraction workers inherit it
    print(f"ffmpeg: {ffmpeg_exe()} ({ffmpeg_version()})")

    _stage(1, f"demo corpus → {args.data}")
    manifest = make_demo_corpus(args.data, speakers=args.speakers, utts_per_speaker=args.utts_per_speaker)
    print(f"manifest: {manifest}")

    _stage(2, f"extract run → {args.cache_root}/<config hash>")
    summary = run_extraction(manifest, args.cache_root, ExtractConfig(**DEMO_EXTRACT), RunOptions(workers=args.workers))
    print(summary.line())
    if summary.failures:
        for failure in summary.failures:
            print(f"failed {failure.utt_id} [{failure.stage}] {failure.reason}", file=sys.stderr)
        return 1

    _stage(3, "distill sweep: teachers, cached targets, audio-only students")
    args.out.mkdir(parents=True, exist_ok=True)
    spec = resolved_sweep(args.sweep, summary.cache_dir, args.out, args.seeds, args.epochs)
    sweep_file = args.out / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    try:
        result = run_sweep(sweep_file)
    except ConfigError as exc:
        print(f"distill.demo: {exc}", file=sys.stderr)
        return 2

    _stage(4, "results (mean ± std over seeds; test split)")
    table = result.results.get("md")
    if table and Path(table).is_file():
        print(Path(table).read_text())
    print(result.summary())
    minutes = (time.perf_counter() - began) / 60
    print(f"demo: done in {minutes:.1f} min; table, bar charts and every run under {args.out}")
    return 1 if result.failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

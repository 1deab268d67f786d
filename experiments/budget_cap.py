"""How often the budget rule's epoch cap, not early stopping, ends a run (docs/training.md, "The budget rule").

Per corpus draw: a demo-shaped synthetic cache (distill.testing.make_lupi_cache: 10 classes x 16
items of 1.5-2.5 s, 80 log-mels, split 0.3/0.1/0.6 like the demo), the CPU-default networks, one
teacher and its audio-only control, then each student method x seed from the teacher's targets (and
the distilling ones from the control's), all under ``train.patience`` and the cap ``train.epochs``.
Prints one line per run (how it stopped, epochs trained, best epoch) and the share that hit the cap.

    python experiments/budget_cap.py --patience 5 --cap 40 --draws 0 1 --seeds 0 1 2
    python experiments/budget_cap.py --setting seq --draws 0
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from distill.budget import Stopping
from distill.config import load_config
from distill.run import RunDir
from distill.testing import make_lupi_cache
from distill.train.trainer import run_training

STUDENTS = ("none", "softlabel", "embed")
CONTROL = {"model.face_dropout": 1.0}


def train(cache: Path, out: Path, overrides: dict) -> Stopping:
    cfg = load_config(overrides={"cache": str(cache), "train.threads": 1, **overrides})
    run_training(cfg, out, progress=False)
    record = Stopping.read(RunDir(out).stopping)
    assert record is not None, out
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patience", type=int, default=5)
    parser.add_argument("--cap", type=int, default=40)
    parser.add_argument("--draws", type=int, nargs="+", default=[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--setting", choices=("nonseq", "seq"), default="nonseq")
    parser.add_argument("--task", choices=("speaker", "emotion"), default="speaker")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here (default: a temp dir)")
    args = parser.parse_args(argv)
    root = args.out or Path(tempfile.mkdtemp(prefix="budget_cap_"))
    budget = {"train.patience": args.patience, "train.epochs": args.cap}
    common = {"data.task": args.task, "data.setting": args.setting, **budget}
    records: list[tuple[str, Stopping, float]] = []

    def run(name: str, cache: Path, out: Path, overrides: dict) -> None:
        started = time.perf_counter()
        r = train(cache, out, overrides)
        records.append((name, r, time.perf_counter() - started))
        seconds = records[-1][2]
        print(f"{name:40s} {r.stopped:5s} epochs {r.epochs:3d} best {r.best_epoch:3d}  {seconds:.0f} s", flush=True)

    for draw in args.draws:
        cache = make_lupi_cache(
            root / f"draw{draw}" / "cache",
            n_classes=10,
            per_class=16,
            n_frames=200,
            length_jitter=50,
            n_mels=80,
            seed=draw,
            split_ratios=(0.3, 0.1, 0.6),
        )
        teachers = {}
        for name, extra in (("teacher", {}), ("audio_teacher", CONTROL)):
            teachers[name] = root / f"draw{draw}" / name
            run(f"draw{draw}/{name}", cache, teachers[name], {**common, **extra})
        for method in STUDENTS:
            for teacher in ("teacher", "audio_teacher") if method != "none" else ("teacher",):
                for seed in args.seeds:
                    label = method if teacher == "teacher" else f"{method}@{teacher}"
                    overrides = {
                        **common,
                        "role": "student",
                        "distill.method": method,
                        "distill.teacher": str(teachers[teacher]) if method != "none" else None,
                        "train.seed": seed,
                    }
                    name = f"draw{draw}/{label}/seed{seed}"
                    run(name, cache, root / name, overrides)
    capped = [name for name, r, _ in records if r.hit_cap]
    epochs = sorted(r.epochs for _, r, _ in records)
    print(
        f"patience {args.patience}, cap {args.cap}, {args.task} {args.setting}: {len(capped)} of {len(records)} runs "
        f"hit the cap ({100 * len(capped) / len(records):.0f} %); epochs trained: median {epochs[len(epochs) // 2]}, "
        f"max {epochs[-1]}; total {sum(s for _, _, s in records):.0f} s"
    )
    for name in capped:
        print(f"  at the cap: {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

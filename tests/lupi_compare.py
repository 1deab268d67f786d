"""The LUPI measurements of docs/method.md, reproducible: students against `none` on fresh corpus draws.

Per draw: build the corpus of tests/lupi_data.py, train one teacher (the test's settings), then
each student variant from its targets; print test accuracy and EER per draw and each variant's
gain over `none`. One thread, about 10 s a run.

    python tests/lupi_compare.py --draws 0 1 2 3 4 5                          # the asserted setting
    python tests/lupi_compare.py --draws 0 1 2 --face-recon 0                 # cross-entropy-only teacher
    python tests/lupi_compare.py --variants embed-joint softlabel gkd         # the other students
    python tests/lupi_compare.py --label-noise 0 --train-per-class 4          # the clean-label design
    python tests/lupi_compare.py --setting seq                                # segments + aggregation
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.train import run_training  # noqa: E402
from lupi_data import LupiDesign, make_lupi_cache  # noqa: E402
from synthetic import tiny_config  # noqa: E402
from test_lupi import SCHEDULE, TEACHER  # noqa: E402

#: Student variants by name: the overrides each adds to the test's schedule.
VARIANTS = {
    "embed": {"distill__method": "embed", "distill__encoder_grad": "distill-only"},
    "embed-joint": {"distill__method": "embed", "distill__encoder_grad": "joint"},
    "softlabel": {"distill__method": "softlabel"},
    "gkd": {"distill__method": "gkd"},
    "embed+softlabel": {"distill__method": "embed+softlabel", "distill__encoder_grad": "distill-only"},
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="corpus seeds")
    p.add_argument("--face-recon", type=float, default=10.0, help="the teacher's distill.face_recon")
    p.add_argument("--variants", nargs="+", default=["embed"], choices=sorted(VARIANTS), help="students besides none")
    p.add_argument("--setting", choices=("nonseq", "seq"), default="nonseq", help="data.setting of every run")
    p.add_argument("--seed", type=int, default=0, help="student seed")
    p.add_argument("--label-noise", type=float, default=LupiDesign.label_noise)
    p.add_argument("--train-per-class", type=int, default=LupiDesign.train_per_class)
    p.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    args = p.parse_args(argv)
    design = dataclasses.replace(LupiDesign(), label_noise=args.label_noise, train_per_class=args.train_per_class)
    root = Path(args.out or tempfile.mkdtemp(prefix="lupi-"))
    names = ["none", *args.variants]
    acc = {n: [] for n in names}
    print(f"design {design}\n{args.setting}; teacher face_recon={args.face_recon}; runs in {root}")
    for draw in args.draws:
        run = root / f"draw{draw}"
        cache = make_lupi_cache(run / "cache", design, seed=draw)
        teacher = run_training(tiny_config(cache, "teacher", distill__face_recon=args.face_recon,
                                           data__setting=args.setting, **TEACHER), run / "teacher", progress=False)
        cells = [f"draw {draw}: teacher {teacher['accuracy']:.2f} (video missing {teacher['video_missing']['accuracy']:.2f})"]
        for name in names:
            extra = {"distill__method": "none"} if name == "none" else VARIANTS[name]
            cfg = tiny_config(cache, "student", distill__teacher=str(run / "teacher"), train__seed=args.seed,
                              data__setting=args.setting, **{**SCHEDULE, **extra})
            m = run_training(cfg, run / name, progress=False)
            acc[name].append(m["accuracy"])
            cells.append(f"{name} {m['accuracy']:.3f} / EER {m['eer']:.3f}")
        print(" | ".join(cells), flush=True)
    for name in args.variants:
        gain = np.array(acc[name]) - np.array(acc["none"])
        print(f"{name}: gain over none per draw {gain.round(3).tolist()}, mean {gain.mean():+.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The LUPI measurements of docs/method.md, reproducible: students against `none` on fresh corpus draws.

Per draw: build the corpus of distill/testing/lupi.py, train one teacher (the test's settings), then
each student variant from its targets; print test accuracy and EER per draw and each variant's
gain over `none`. One thread, about 10 s a run.

    python experiments/lupi_compare.py --draws 0 1 2 3 4 5                          # the asserted setting
    python experiments/lupi_compare.py --draws 0 1 2 --face-recon 0                 # cross-entropy-only teacher
    python experiments/lupi_compare.py --variants embed-joint softlabel gkd         # the other students
    python experiments/lupi_compare.py --label-noise 0 --train-per-class 4          # the clean-label design
    python experiments/lupi_compare.py --setting seq                                # segments + aggregation
    python experiments/lupi_compare.py --control                                    # + the audio-only teacher
    python experiments/lupi_compare.py --audio-aux 1 --variants embed embed-audio   # the teacher's audio branch

The study tests/test_distill_methods_lupi.py asserts on one draw (draw 0), over three draws, with the
test's raw inputs: ``--probe`` adds the cross-entropy-only teacher and the linear probes it compares.

    python experiments/lupi_compare.py --draws 0 1 2 --probe --set model.fbank_norm=none model.face_norm=none
    python experiments/lupi_compare.py --draws 0 1 2 --setting seq --set model.fbank_norm=none model.face_norm=none

``--control`` also trains the same teacher with its faces hidden (``model.face_dropout: 1.0``, and
``distill.face_recon: 0``: no faces as reconstruction targets either) and
distils every variant from it: the video's share of a gain is the gain over that control, given
as the mean over draws with a 95 % t-interval and a paired t-test (pairs: the draws).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from distill.eval.probe import probe
from distill.eval.stats import paired_difference
from distill.testing import tiny_config
from distill.testing.lupi import SCHEDULE, TEACHER, LupiDesign, make_lupi_cache
from distill.train.trainer import run_training

#: Student variants by name: the overrides each adds to the test's schedule.
VARIANTS = {
    "embed": {"distill__method": "embed", "distill__encoder_grad": "distill-only"},
    "embed-joint": {"distill__method": "embed", "distill__encoder_grad": "joint"},
    "softlabel": {"distill__method": "softlabel"},
    "gkd": {"distill__method": "gkd"},
    "embed+softlabel": {"distill__method": "embed+softlabel", "distill__encoder_grad": "distill-only"},
    # what of the teacher's embedding is imitated (docs/method.md): relations within a batch, or
    # which teacher embedding is one's own among the batch's (InfoNCE), instead of the point itself
    "embed-relational": {
        "distill__method": "embed",
        "distill__encoder_grad": "distill-only",
        "distill__pointwise": 0.0,
        "distill__relational": 1.0,
    },
    "embed-contrastive": {
        "distill__method": "embed",
        "distill__encoder_grad": "distill-only",
        "distill__pointwise": 0.0,
        "distill__contrastive": 1.0,
    },
    "embed+relational": {
        "distill__method": "embed",
        "distill__encoder_grad": "distill-only",
        "distill__relational": 1.0,
    },
    # the teacher's own audio branch (before fusion) as the target, instead of its fused embedding
    "embed-audio": {"distill__method": "embed", "distill__encoder_grad": "distill-only", "distill__target": "audio"},
    "embed-audio-contrastive": {
        "distill__method": "embed",
        "distill__encoder_grad": "distill-only",
        "distill__target": "audio",
        "distill__pointwise": 0.0,
        "distill__contrastive": 1.0,
    },
}


def train_or_read(cfg, out: Path) -> dict:
    """A finished run in ``out`` (same --out, another variant list) is read, not retrained; a killed one resumed."""
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    return run_training(cfg, out, resume=(out / "last.pt").is_file(), progress=False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    p.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="corpus seeds")
    p.add_argument("--face-recon", type=float, default=10.0, help="the teacher's distill.face_recon")
    p.add_argument("--audio-aux", type=float, default=0.0, help="the teacher's distill.audio_aux (and its control's)")
    p.add_argument("--face-dropout", type=float, default=0.0, help="the teacher's model.face_dropout")
    p.add_argument("--variants", nargs="+", default=["embed"], choices=sorted(VARIANTS), help="students besides none")
    p.add_argument("--setting", choices=("nonseq", "seq"), default="nonseq", help="data.setting of every run")
    p.add_argument("--seed", type=int, default=0, help="student seed")
    p.add_argument("--label-noise", type=float, default=LupiDesign.label_noise)
    p.add_argument("--train-per-class", type=int, default=LupiDesign.train_per_class)
    p.add_argument("--control", action="store_true", help="also distil every variant from an audio-only teacher")
    p.add_argument(
        "--probe",
        action="store_true",
        help="also train a cross-entropy-only teacher (face_recon 0) and print the linear probes of both (nonseq)",
    )
    p.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="dotted overrides for every run, e.g. model.face_norm=none",
    )
    p.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    args = p.parse_args(argv)
    if args.probe and args.setting != "nonseq":
        p.error("--probe: the linear probe reads nonseq teachers only")
    design = dataclasses.replace(LupiDesign(), label_noise=args.label_noise, train_per_class=args.train_per_class)
    root = Path(args.out or tempfile.mkdtemp(prefix="lupi-"))
    names = ["none", *args.variants]
    controls = [f"{v}@audio_teacher" for v in args.variants] if args.control else []
    acc = {n: [] for n in names + controls}
    eer = {n: [] for n in names + controls}
    extra_set = {k.replace(".", "__"): v for k, v in (_parse(o) for o in args.set)}
    print(
        f"design {design}\n{args.setting}; teacher face_recon={args.face_recon} audio_aux={args.audio_aux} "
        f"face_dropout={args.face_dropout}; runs in {root}"
    )
    for draw in args.draws:
        run = root / f"draw{draw}"
        cache = (
            run / "cache"
            if (run / "cache" / "config.json").is_file()
            else make_lupi_cache(run / "cache", design, seed=draw)
        )
        teachers = {"teacher": {}}
        if args.control:
            teachers["audio_teacher"] = {"model__face_dropout": 1.0, "distill__face_recon": 0.0}
        if args.probe:
            teachers["ce_teacher"] = {"distill__face_recon": 0.0}  # the paper's teacher: labels only
        cells = [f"draw {draw}:"]
        for tname, hide in teachers.items():
            overrides = {
                "distill__face_recon": args.face_recon,
                "distill__audio_aux": args.audio_aux,
                "model__face_dropout": args.face_dropout,
                **TEACHER,
                **extra_set,
                **hide,
            }
            t = train_or_read(tiny_config(cache, "teacher", data__setting=args.setting, **overrides), run / tname)
            cells.append(f"{tname} {t['accuracy']:.2f} (video missing {t['video_missing']['accuracy']:.2f})")
            if args.probe and tname in ("teacher", "ce_teacher"):
                found = probe(cache, run / tname)
                cells.append(
                    f"{tname} probe: targets {found['probe_fused']:.2f}, faces {found['probe_faces']:.2f}, "
                    f"one-hot {found['probe_onehot']:.2f}"
                )
        for name in names + controls:
            method, _, control = name.partition("@")
            extra = {"distill__method": "none"} if name == "none" else VARIANTS[method]
            cfg = tiny_config(
                cache,
                "student",
                distill__teacher=str(run / (control or "teacher")),
                train__seed=args.seed,
                data__setting=args.setting,
                **{**SCHEDULE, **extra_set, **extra},
            )
            m = train_or_read(cfg, run / name)
            acc[name].append(m["accuracy"])
            eer[name].append(m["eer"])
            cells.append(f"{name} {m['accuracy']:.3f} / EER {m['eer']:.3f}")
        print(" | ".join(cells), flush=True)
    for name in args.variants:
        for reference in ["none"] + ([f"{name}@audio_teacher"] if args.control else []):
            d = paired_difference(acc[name], acc[reference])
            what = "gain over none" if reference == "none" else "video's share (gain over the audio-only teacher's)"
            print(
                f"{name}: {what} per draw {np.subtract(acc[name], acc[reference]).round(3).tolist()}, "
                f"mean {d.mean:+.3f} [95 % CI {d.ci_low:+.3f}, {d.ci_high:+.3f}], paired t-test p {d.p_value:.3f}"
            )
        print(f"{name}: EER change over none per draw {np.subtract(eer[name], eer['none']).round(3).tolist()}")
    return 0


def _parse(text: str):
    from distill.config import parse_override

    return parse_override(text)


if __name__ == "__main__":
    raise SystemExit(main())

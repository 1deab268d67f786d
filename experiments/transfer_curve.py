"""A label-scarcity curve with the transfer set (docs/method.md, "Few labels, many unlabelled clips").

Per corpus draw: the LUPI corpus of distill/testing/lupi.py with clean labels and 16 training items
per class; for each k of ``--k``, ``data.labels_per_class: k`` keeps the labels of k items per
class and the other training items become the transfer set. Per k: one teacher (the LUPI test's,
``face_recon`` 10) on the k labelled items, then `none` (the k labelled items only) and the
distilling students (labelled items + transfer set) from its targets; every run under the budget
rule (``--patience``, ``--cap``). ``--without-transfer`` adds the same k without the transfer set:
a cache from which the hidden items are removed (the same labelled items, so the same teacher
training set, order and seed), its teacher, and the distilling students on the labelled items
alone, so the transfer set's own share shows. Prints test accuracy per run and each student's gain
over `none` per k, as the mean over draws with a 95 % t-interval (pairs: the draws).

    python experiments/transfer_curve.py --draws 0 1 2 --k 1 2 4 16 --without-transfer
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from pathlib import Path

import numpy as np

from distill.config import DataConfig
from distill.eval.stats import paired_difference
from distill.testing import tiny_config
from distill.testing.lupi import SCHEDULE, TEACHER, LupiDesign, make_lupi_cache, make_lupi_items
from distill.train.trainer import run_training
from distill.transfer import TRANSFER, assign_roles
from extract.cache import build_cache, open_cache

STUDENTS = {
    "none": {"distill__method": "none"},
    "embed": {"distill__method": "embed", "distill__encoder_grad": "distill-only"},
    "softlabel": {"distill__method": "softlabel"},
}


def train_or_read(cfg, out: Path) -> dict:
    if (out / "metrics.json").is_file():
        return json.loads((out / "metrics.json").read_text())
    return run_training(cfg, out, resume=(out / "last.pt").is_file(), progress=False)


def labelled_only_cache(cache: Path, design: LupiDesign, draw: int, k: int, out: Path) -> Path:
    """The draw's corpus without the items that ``labels_per_class: k`` hides (the transfer set)."""
    if (out / "config.json").is_file():
        return out
    roles = assign_roles(open_cache(cache).index, DataConfig(task="speaker", labels_per_class=k))
    hidden = set(roles.index[roles == TRANSFER])
    return build_cache(out, [i for i in make_lupi_items(design, draw) if i["utt_id"] not in hidden], shard_size=64)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--draws", type=int, nargs="+", default=[0, 1, 2], help="corpus seeds")
    p.add_argument("--k", type=int, nargs="+", default=[1, 2, 4, 16], help="labelled training items per class")
    p.add_argument("--train-per-class", type=int, default=16)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--cap", type=int, default=60)
    p.add_argument("--without-transfer", action="store_true", help="also each k without the transfer set")
    p.add_argument("--out", help="keep the runs here (default: a temporary directory)")
    args = p.parse_args(argv)
    design = dataclasses.replace(LupiDesign(), label_noise=0.0, train_per_class=args.train_per_class)
    root = Path(args.out or tempfile.mkdtemp(prefix="transfer-"))
    budget = {"train__epochs": args.cap, "train__patience": args.patience}
    acc: dict[tuple[int, str], list[float]] = {}
    print(f"design {design}; patience {args.patience}, cap {args.cap}; runs in {root}")
    for draw in args.draws:
        cache = root / f"draw{draw}" / "cache"
        if not (cache / "config.json").is_file():
            make_lupi_cache(cache, design, seed=draw)
        for k in args.k:
            arms = [("", cache, {"data__labels_per_class": k})]
            if args.without_transfer and k < args.train_per_class:
                alone = labelled_only_cache(cache, design, draw, k, root / f"draw{draw}" / f"cache-k{k}")
                arms.append(("/labelled", alone, {}))  # every item of that cache is labelled: no transfer set
            for arm, arm_cache, scarce in arms:
                run = root / f"draw{draw}" / f"k{k}{arm.replace('/', '-')}"
                teacher = tiny_config(arm_cache, "teacher", distill__face_recon=10.0, **{**TEACHER, **budget, **scarce})
                t = train_or_read(teacher, run / "teacher")
                cells = [f"draw {draw} k {k:2d}{arm}: teacher {t['accuracy']:.2f}"]
                for name, extra in STUDENTS.items():
                    if arm and name == "none":
                        continue  # the same run as the transfer arm's none: the same labelled items
                    cfg = tiny_config(
                        arm_cache,
                        "student",
                        distill__teacher=str(run / "teacher"),
                        **{**SCHEDULE, **budget, **scarce, **extra},
                    )
                    m = train_or_read(cfg, run / name)
                    acc.setdefault((k, name + arm), []).append(m["accuracy"])
                    cells.append(f"{name} {m['accuracy']:.3f}")
                print(" | ".join(cells), flush=True)
    for k in args.k:
        for name in [n + arm for arm in ("", "/labelled") for n in STUDENTS if n != "none"]:
            if (k, name) not in acc:
                continue
            ours, base = acc[k, name], acc[k, "none"]
            line = f"k {k:2d} {name}: accuracy {np.mean(ours):.3f} vs none {np.mean(base):.3f}"
            if len(ours) > 1:
                d = paired_difference(ours, base)
                line += f", gain {d.mean:+.3f} [95 % CI {d.ci_low:+.3f}, {d.ci_high:+.3f}], p {d.p_value:.3f}"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

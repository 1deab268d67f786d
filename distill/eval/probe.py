"""Linear probe: how much of what a teacher's embedding holds a student could learn from its audio.

For each level of a trained teacher (visual branch, fusion hidden layer, fused embedding, logits),
for the item's mean face embedding (what the teacher could pass on at best) and for one-hot
labels, fit a ridge regression from a crop's mean log-mel (the audio a student sees) to that
target on the train crops; classify test crops by the nearest train-class mean of the predicted
target. A target that probes better than one-hot labels gives a student more to
learn from than its labels; the faces themselves probe at 0.98-1.00 on the LUPI corpora
(distill/testing/lupi.py; tests/test_distill_methods_lupi.py asserts on it).
Also prints each level's within-class share of variance (low: the teacher collapsed its classes).

    python -m distill.eval.probe CACHE_DIR TEACHER_RUN_DIR

Nonseq teachers only. Crops are the run's ``crop`` frames every ``crop_hop`` frames, whole crops only
(unlike the training grid: no extra crop aligned with the end, and an utterance shorter than a crop
gives none); the visual branch sees the item's whole face track, an approximation of the crop's
frames that is exact for constant faces.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from common.cli import HelpFormatter
from distill.run import RunDir
from extract.cache import open_cache


def ridge(x: np.ndarray, y: np.ndarray, lam: float = 0.1):
    """Centred ridge regression; returns the predictor."""
    xm, ym = x.mean(0), y.mean(0)
    w = np.linalg.solve((x - xm).T @ (x - xm) + lam * np.eye(x.shape[1]), (x - xm).T @ (y - ym))
    return lambda z: (z - xm) @ w + ym


def within_class_share(y: np.ndarray, labels: np.ndarray) -> float:
    within = sum(((y[labels == k] - y[labels == k].mean(0)) ** 2).sum() for k in np.unique(labels))
    return float(within / ((y - y.mean(0)) ** 2).sum())


@torch.no_grad()
def probe(cache_dir: str | Path, teacher_dir: str | Path, label_column: str = "speaker") -> dict[str, float]:
    cache = open_cache(cache_dir)
    trained = RunDir(teacher_dir).load_network()
    net, cfg, meta = trained.net, trained.config, trained.meta
    if cfg.role != "teacher" or cfg.data.setting != "nonseq":
        raise ValueError(f"{teacher_dir}: the probe reads nonseq teachers, this is a {cfg.data.setting} {cfg.role}")
    names, av = meta["labels"], net.encoder
    rows: dict[str, list] = {k: [] for k in ("audio", "faces", "visual", "hidden", "fused", "logits")}
    split, label = [], []
    for utt in cache:
        item = cache.read(utt)
        fbank, face = torch.from_numpy(item["fbank"]), torch.from_numpy(item["face"])[None]
        mask = torch.from_numpy(item["face_found"])[None]
        visual, faces = av.visual(face, mask), face[:, mask[0]].mean(1)  # the whole track: one per item
        for start in range(0, len(fbank) - cfg.data.crop + 1, cfg.data.crop_hop):
            crop = fbank[start : start + cfg.data.crop][None]
            audio = av.audio(crop)
            fused = av.fusion(audio, visual)
            hidden = av.fusion.mlp[0](torch.cat([audio, visual], -1)) if hasattr(av.fusion, "mlp") else fused
            for key, value in (
                ("audio", crop.mean(1)),
                ("faces", faces),
                ("visual", visual),
                ("hidden", hidden),
                ("fused", fused),
                ("logits", net.head(fused)),
            ):
                rows[key].append(value[0].numpy())
            split.append(item["split"])
            label.append(names.index(str(item[label_column])))
    arrays = {k: np.stack(v) for k, v in rows.items()}
    split_a, y = np.array(split), np.array(label)
    train, test = split_a == "train", split_a == "test"
    x = arrays.pop("audio")
    out = {}
    for key, target in {**arrays, "onehot": np.eye(len(names))[y]}.items():
        predicted = ridge(x[train], target[train])(x[test])
        means = np.stack([target[train][y[train] == k].mean(0) for k in range(len(names))])
        nearest = ((predicted[:, None] - means[None]) ** 2).sum(-1).argmin(1)
        out[f"probe_{key}"] = round(float((nearest == y[test]).mean()), 3)
        if key != "onehot":
            out[f"within_{key}"] = round(within_class_share(target, y), 3)
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill.eval.probe",
        description=__doc__.split("\n\n")[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("cache", help="feature cache the teacher was trained on")
    parser.add_argument("teacher", help="nonseq teacher run directory")
    parser.add_argument("--label-column", default="speaker", help="label column of the cache")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for key, value in probe(args.cache, args.teacher, args.label_column).items():
        print(f"{key:16s} {value:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

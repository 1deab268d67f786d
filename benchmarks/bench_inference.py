"""Inference-side benchmark (``python benchmarks/bench_inference.py``), all in one process:

(a) the network over many items' cells batched (``Model.forward_fbanks(all, batch_size)``) vs one
    item at a time, on the same log-mels;
(b) the same batched pass through the exported TorchScript and ONNX (onnxruntime) folders vs the
    run's PyTorch module;
(c) where a file's time goes: decode + log-mel (the Python front-end) vs the network;
(d) the resumable .h5 writer (chunks committed as parts, then merged) vs embedding the same files
    without writing anything;
(e) the TensorBoard logger: one epoch's row vs the epoch it logs;
(f) what a speaker run's evaluation now also does (val thresholds, AS-norm cohort) vs the run.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from distill.config import load_config
from distill.serve.embed import embed_to_h5
from distill.serve.export import export_run
from distill.serve.model import Model, run_items, sources_from
from distill.testing import make_lupi_items
from distill.train.tensorboard import TensorBoardLog
from distill.train.trainer import run_training
from extract.cache import build_cache
from extract.config import ExtractConfig


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--files", type=int, default=40, help="audio files of 1-4 s")
    p.add_argument("--batch-size", type=int, default=64, help="cells per forward pass, batched")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument("--repeat", type=int, default=3, help="best of N for each timing")
    return p.parse_args()


def best_of(n: int, fn) -> float:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    from conftest import tone

    from manifests.media import write_video

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        record = ExtractConfig(face_weights="random").to_record("random")  # 80 mels, 16 kHz
        cache = build_cache(tmp / "cache", make_lupi_items(4, 12, n_frames=300, n_mels=80), config=record)
        cfg = load_config(
            overrides={
                "cache": str(cache),
                "role": "student",
                "train.epochs": 1,
                "data.crop": 200,
                "data.crop_hop": 100,
                "train.threads": args.threads,
                "train.tensorboard": False,
            }
        )
        run_training(cfg, tmp / "run", progress=False)
        rng = np.random.default_rng(0)
        files = [
            str(write_video(tmp / f"f{i}.wav", None, audio=tone(float(rng.uniform(1, 4)), 16000, 150 + 7 * i, i)))
            for i in range(args.files)
        ]
        model = Model.from_run(tmp / "run")
        started = time.perf_counter()
        fbanks = [model.fbank(f) for f in files]
        front = time.perf_counter() - started
        cells = sum(model.grid.n_cells(len(fb)) for fb in fbanks)
        print(
            f"{len(files)} files, {sum(len(fb) for fb in fbanks) / 100:.0f} s of audio, {cells} cells of "
            f"{model.grid.crop} frames; ECAPA 64 channels, {args.threads} torch thread(s)"
        )

        batched = best_of(args.repeat, lambda: model.forward_fbanks(fbanks, args.batch_size))
        single = best_of(args.repeat, lambda: [model.forward_fbanks([fb], args.batch_size) for fb in fbanks])
        print(
            f"(a) network, batched ({args.batch_size} cells/pass) vs one item at a time: {batched:.3f} s vs "
            f"{single:.3f} s = {batched / single:.2f}x the time"
        )

        for fmt in ("torchscript", "onnx"):
            folder, diff = export_run(tmp / "run", fmt, tmp / fmt, cells=args.batch_size)
            exported = Model.load(folder)
            t = best_of(args.repeat, lambda m=exported: m.forward_fbanks(fbanks, args.batch_size))
            print(f"(b) {fmt}: {t:.3f} s vs PyTorch {batched:.3f} s = {t / batched:.2f}x (max abs diff {diff:.1e})")

        print(
            f"(c) decode + log-mel {front:.3f} s vs network (batched) {batched:.3f} s: "
            f"front-end {front / (front + batched):.0%} of a file's time"
        )

        sources = sources_from(files)
        plain = best_of(1, lambda: list(run_items(model, sources, batch_size=args.batch_size, chunk=8)))
        out = tmp / "emb.h5"
        h5 = best_of(1, lambda: embed_to_h5(model, sources, out, batch_size=args.batch_size, chunk=8, progress=False))
        print(
            f"(d) embed to .h5 (chunk 8: {len(files) // 8} parts + merge) vs no output: {h5:.3f} s vs {plain:.3f} s "
            f"= {h5 / plain:.2f}x"
        )

        tb = TensorBoardLog(tmp / "tb")
        row = {
            "epoch": 1,
            "train_total": 1.0,
            "train_task": 1.0,
            "val_accuracy": 0.5,
            "val_top5_accuracy": 1.0,
            "lr": 1e-3,
            "seconds": 1.0,
        }
        log = best_of(args.repeat, lambda: tb.epoch(row))
        tb.close()
        epoch = best_of(1, lambda: run_training(cfg, tmp / "again", progress=False))
        print(
            f"(e) TensorBoard: one epoch's row {log * 1000:.1f} ms vs one training run of 1 epoch + evaluation "
            f"{epoch:.2f} s = {log / epoch:.4f}x"
        )

        from distill.eval.calibration import write_verification
        from distill.eval.run_eval import load_run

        run = load_run(tmp / "run")
        record = best_of(args.repeat, lambda: write_verification(run.evaluator, run.data, run.dir))
        print(
            f"(f) recording the verification threshold + AS-norm cohort at evaluation: {record:.2f} s vs the "
            f"1-epoch run with evaluation {epoch:.2f} s = {record / epoch:.2f}x"
        )


if __name__ == "__main__":
    main()

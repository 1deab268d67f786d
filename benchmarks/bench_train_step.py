"""One training step at the paper's size, eager vs ``torch.compile``, side by side in one process.

The step is the trainer's: ``StepModule`` (network + objective) under the run's ``Precision``
(autocast, gradient scaler), then backward and an optimizer step. Paper size (configs/paper/
speaker-nonseq.yaml): ECAPA-TDNN with 1024 channels and a 192-d embedding, an AAM header over
VoxCeleb2's 5,994 training speakers, batches of 128 crops of 300 frames x 80 mels, bf16 autocast,
Adam. Random inputs on the device (no loader: what the network costs). Each contender warms up
(a compiled one compiles on its first step, timed apart), then the median of ``--steps`` steps.

    python benchmarks/bench_train_step.py                          # paper size, CUDA
    python benchmarks/bench_train_step.py --role teacher           # + the face branch (8 frames per crop)
    python benchmarks/bench_train_step.py --device cpu --tiny      # a smoke run of this script
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from distill.config import DistillConfig
from distill.models import ModelConfig, build_network
from distill.precision import Precision
from distill.train.objective import Objective, StepModule

PAPER = {"channels": 1024, "emb_dim": 192, "visual_dim": 256, "classes": 5994, "batch": 128, "frames": 300}
TINY = {"channels": 16, "emb_dim": 16, "visual_dim": 16, "classes": 50, "batch": 8, "frames": 100}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda")
    p.add_argument("--tiny", action="store_true", help="tiny widths and batch (smoke run; CPU)")
    p.add_argument("--role", choices=("student", "teacher"), default="student")
    p.add_argument("--amp-dtype", choices=("bf16", "fp16", "off"), default="bf16", help="autocast dtype; off: fp32")
    p.add_argument("--n-mels", type=int, default=80)
    p.add_argument("--max-faces", type=int, default=8, help="face frames per crop (teacher)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per contender (the median is reported)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps before timing (after compiling)")
    p.add_argument("--contenders", nargs="+", choices=("eager", "compiled"), default=["eager", "compiled"])
    p.add_argument("--compile-backend", default="inductor", help="torch.compile backend (eager/aot_eager: no codegen)")
    p.add_argument("--json", type=Path, help="also write the figures here")
    return p.parse_args(argv)


def build(args: argparse.Namespace, size: dict, device: torch.device) -> tuple[StepModule, torch.optim.Optimizer]:
    torch.manual_seed(0)
    model = ModelConfig(
        audio_encoder="ecapa",
        audio_channels=size["channels"],
        emb_dim=size["emb_dim"],
        visual_dim=size["visual_dim"],
        res2net_scale=8 if size["channels"] % 8 == 0 else 4,
        header="aam",
    )
    net = build_network(model, role=args.role, setting="nonseq", n_mels=args.n_mels, n_classes=size["classes"])
    objective = Objective(DistillConfig(), args.role, net.level_dims, n_classes=size["classes"])
    step = StepModule(net, objective).to(device).train()
    return step, torch.optim.Adam(step.parameters(), lr=1e-3)


def batch_on(args: argparse.Namespace, size: dict, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    b = size["batch"]
    batch = {
        "fbank": torch.randn(b, size["frames"], args.n_mels, generator=g),
        "label": torch.randint(0, size["classes"], (b,), generator=g),
    }
    if args.role == "teacher":
        batch["face"] = torch.randn(b, args.max_faces, 512, generator=g)
        batch["face_mask"] = torch.rand(b, args.max_faces, generator=g) > 0.2
    return {k: v.to(device) for k, v in batch.items()}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_contender(name: str, args: argparse.Namespace, size: dict, device: torch.device) -> dict:
    step, optimizer = build(args, size, device)
    precision = Precision.of("off" if args.amp_dtype == "off" else "on", device, args.amp_dtype.replace("off", "auto"))
    scaler = precision.grad_scaler()
    batch = batch_on(args, size, device)

    def one() -> float:
        started = time.perf_counter()
        with precision.autocast():
            total = step(batch, {})["total"]
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        sync(device)
        return time.perf_counter() - started

    out: dict = {"contender": name}
    if name == "compiled":
        step.compile(backend=args.compile_backend)  # as the trainer does: in place, the state_dict keys unchanged
        out["first_step_s"] = one()  # compiles forward and backward
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        one()
    times = [one() for _ in range(args.steps)]
    out["median_ms"] = 1000 * statistics.median(times)
    out["items_per_s"] = size["batch"] / statistics.median(times)
    if device.type == "cuda":
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return out


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_train_step: error: no CUDA here (--device cpu --tiny is a smoke run)", file=sys.stderr)
        return 2
    size = TINY if args.tiny else PAPER
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(
        f"{args.role} step on {where} (torch {torch.__version__}): ECAPA {size['channels']} ch, "
        f"{size['emb_dim']}-d, AAM over {size['classes']:,} classes, batch {size['batch']} x {size['frames']} x "
        f"{args.n_mels}, autocast {args.amp_dtype}, Adam; median of {args.steps} steps"
    )
    results = [time_contender(name, args, size, device) for name in args.contenders]
    for r in results:
        extra = f", first step (compile) {r['first_step_s']:.1f} s" if "first_step_s" in r else ""
        memory = f", peak {r['peak_gib']:.1f} GiB" if "peak_gib" in r else ""
        print(f"  {r['contender']:<9} {r['median_ms']:8.1f} ms/step  {r['items_per_s']:9,.0f} items/s{memory}{extra}")
    if len(results) == 2:
        print(f"  compiled / eager: {results[1]['median_ms'] / results[0]['median_ms']:.2f}x the step time")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "results": results}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

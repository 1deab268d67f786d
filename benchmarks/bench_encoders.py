"""Audio encoders side by side: one training step (forward, backward, Adam) of a nonseq student.

Every registered encoder at the same ModelConfig width, in one process, on the same batch; the
figure is each one's time as a ratio of ECAPA's (the default). Best of `--steps` after a warm-up.

    python benchmarks/bench_encoders.py                  # (32, 200, 80), default widths, 2 threads
    python benchmarks/bench_encoders.py --set audio_channels=16 --set resnet_blocks=[1,1,1,1]
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import torch
import torch.nn.functional as F
import yaml

from distill.models import AUDIO_ENCODERS, ModelConfig, build_network


def step_seconds(cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor, steps: int) -> tuple[float, int]:
    torch.manual_seed(0)
    net = build_network(cfg, role="student", setting="nonseq", n_mels=x.shape[-1], n_classes=int(y.max()) + 1).train()
    opt = torch.optim.Adam(net.parameters())
    times = []
    for _ in range(steps + 1):  # the first is a warm-up
        started = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(net(x, labels=y).logits, y).backward()
        opt.step()
        times.append(time.perf_counter() - started)
    return min(times[1:]), sum(p.numel() for p in net.parameters())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--mels", type=int, default=80)
    p.add_argument("--steps", type=int, default=2, help="timed steps per encoder (best is reported)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="ModelConfig override")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    overrides = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.set)}
    base = replace(ModelConfig(), **overrides)
    x = torch.randn(args.batch, args.frames, args.mels)
    y = torch.arange(args.batch) % 20
    results = {name: step_seconds(replace(base, audio_encoder=name), x, y, args.steps) for name in AUDIO_ENCODERS}
    reference = results["ecapa"][0]
    for name, (seconds, params) in results.items():
        print(
            f"{name:8s} {params / 1e6:6.2f} M params  {seconds * 1000:9.0f} ms/step  {seconds / reference:6.1f}x ecapa"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Face batches on a GPU (``python benchmarks/bench_face_gpu.py``; < 1 min on one H200): the batched
MTCNN (extract/detect.py, ``mtcnn``) vs facenet-pytorch's (``mtcnn-facenet``) on the same frames.

Prints frames/s of detection alone (frames already on the device), of the embedding network alone
(float32, bfloat16, float16 autocast; crops/s), and end to end as the shared consumer runs it
(``FaceEmbedder.embed_clips`` on clips in host memory: pinned copies, detection, batched crops,
embedding, results back), with one consumer thread, with two sharing the model (the layout
``extract run --face-models shared`` uses per GPU) and with three and four (``--face-consumers``),
and with ``face_detect_every`` 2 and 5. GPU
utilisation comes from NVML (``torch.cuda.utilization``, needs pynvml) or else by sampling
``nvidia-smi``; and, for the end-to-end rows, the time kernels ran over the wall time (torch
profiler), when it is available. Also prints how far the two detectors agree on these frames.

Frames: demo-corpus faces (manifests.demo: LFW faces, tinted, moving, letterboxed to --size) and
a quarter of random noise / blank frames. ``random`` face weights unless --face-weights says
otherwise (same network and cost as vggface2). ``--device cpu`` runs the same steps slowly on a
tiny batch: a check that the script works, not a figure.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from common.device import resolve_device
from extract.config import ExtractConfig
from extract.detect import FACE_DETECTORS
from extract.faces import PRECISIONS, FaceEmbedder, resolve_face_weights
from manifests.demo import EMOTIONS, FACE, DemoConfig, make_speakers, render_frames
from manifests.media import lfw_faces


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda | cuda:K | cpu (cpu: a smoke run)")
    p.add_argument("--batch", type=int, default=512, help="frames per batch (--face-batch)")
    p.add_argument("--batches", type=int, default=4, help="batches timed for the batched detector and end to end")
    p.add_argument("--ref-batches", type=int, default=2, help="batches timed for facenet's detector")
    p.add_argument("--size", type=int, default=256, help="frame side (extract's frame_size)")
    p.add_argument("--clip", type=int, default=40, help="frames per clip in the end-to-end rows (8 s at 5 fps)")
    p.add_argument("--face-weights", default="random", help="as extract run --face-weights")
    p.add_argument("--out", type=Path, default=Path(".bench/face_gpu.json"), help="figures as JSON")
    return p.parse_args(argv)


def make_frames(n: int, size: int, seed: int = 0) -> np.ndarray:
    """(n, size, size, 3) uint8: 3/4 demo faces, 1/8 noise, 1/8 blank, shuffled."""
    cfg = DemoConfig(frame_size=max(size, 64))
    faces, cast = lfw_faces(), make_speakers(cfg)
    n_faces = n - n // 4
    per = -(-n_faces // (len(cast) * len(EMOTIONS)))
    groups = []
    for s, speaker in enumerate(cast):
        for e, emotion in enumerate(EMOTIONS):
            rng = np.random.default_rng([seed, s, e])
            groups.append(render_frames(cfg, faces[speaker.face], FACE[emotion], per, rng, speaker.tint))
    rendered = np.concatenate(groups)[:n_faces]
    if rendered.shape[1] != size:  # --size below the demo's minimum of 64
        rendered = rendered[:, :size, :size]
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 256, (n // 8, size, size, 3), dtype=np.uint8)
    blank = np.full((n // 4 - n // 8, size, size, 3), 96, np.uint8)
    frames = np.concatenate([rendered, noise, blank])
    return np.ascontiguousarray(frames[rng.permutation(len(frames))])


# --------------------------------------------------------------------------- GPU utilisation


class Utilisation:
    """Mean GPU utilisation (%) while the block runs: NVML through torch, else nvidia-smi sampled
    every 100 ms, else None. NVML's figure is the share of time a kernel was running."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.how = device, None
        if device.type != "cuda":
            return
        try:
            torch.cuda.utilization(device)
            self.how = "nvml"
        except Exception:  # pynvml missing, or NVML not usable
            if shutil.which("nvidia-smi"):
                self.how = "nvidia-smi"

    @contextmanager
    def measure(self):
        out: dict = {"percent": None}
        if self.how is None:
            yield out
            return
        samples: list[float] = []
        stop = threading.Event()
        if self.how == "nvml":

            def sample() -> None:
                while not stop.wait(0.05):
                    samples.append(float(torch.cuda.utilization(self.device)))

            thread = threading.Thread(target=sample, daemon=True)
            thread.start()
            try:
                yield out
            finally:
                stop.set()
                thread.join()
        else:
            index = self.device.index if self.device.index is not None else torch.cuda.current_device()
            cmd = ["nvidia-smi", f"--id={index}", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits"]
            proc = subprocess.Popen([*cmd, "-lms", "100"], stdout=subprocess.PIPE, text=True)

            def read() -> None:
                for line in proc.stdout:
                    if line.strip().isdigit():
                        samples.append(float(line))

            thread = threading.Thread(target=read, daemon=True)
            thread.start()
            try:
                yield out
            finally:
                proc.terminate()
                thread.join(timeout=2)
        out["percent"] = float(np.mean(samples[1:] or samples)) if samples else None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def kernel_share(device: torch.device, fn) -> float | None:
    """Time kernels ran / wall time of ``fn()``, from the torch profiler (CUDA only; None if unavailable)."""
    if device.type != "cuda":
        return None
    try:
        from torch.profiler import ProfilerActivity, profile

        sync(device)
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            began = time.perf_counter()
            fn()
            sync(device)
            wall = time.perf_counter() - began
        kernels = sum(e.self_device_time_total for e in prof.key_averages()) / 1e6  # microseconds → s
        return kernels / wall
    except Exception as err:  # CUPTI missing or an API change: the figure is optional
        print(f"(kernel share unavailable: {type(err).__name__}: {err})")
        return None


# --------------------------------------------------------------------------- the rows


def timed(device: torch.device, util: Utilisation, fn) -> tuple[float, float | None]:
    sync(device)
    with util.measure() as u:
        began = time.perf_counter()
        fn()
        sync(device)
        seconds = time.perf_counter() - began
    return seconds, u["percent"]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = False  # shapes vary batch to batch (candidates)
    began = time.perf_counter()
    n, n_ref = args.batch * args.batches, args.batch * args.ref_batches
    frames = make_frames(max(n, n_ref), args.size)
    weights = resolve_face_weights(args.face_weights)
    cfg = ExtractConfig(face_weights=args.face_weights, frame_size=args.size, face_batch=args.batch)
    util = Utilisation(device)
    print(
        f"device {device} ({torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}), "
        f"batch {args.batch}, {args.size}² frames, GPU utilisation from {util.how or 'nothing (unavailable)'}"
    )
    results: dict = {"device": str(device), "batch": args.batch, "size": args.size, "utilisation_from": util.how}
    rows = results["rows"] = {}

    def row(name: str, count: int, seconds: float, percent: float | None, unit: str = "frames/s", **extra) -> None:
        rows[name] = {"per_s": count / seconds, "seconds": seconds, "gpu_percent": percent, **extra}
        gpu = f"{percent:5.1f} %" if percent is not None else "   n/a"
        more = "".join(f"  {k} {v:.5f}" for k, v in extra.items() if v is not None)
        print(f"{name:46} {count / seconds:10.1f} {unit:9} GPU {gpu}{more}")

    # detection alone, frames already on the device
    on_device = torch.tensor(frames).to(device)
    detected = {}
    for name, batches in (("mtcnn-facenet", args.ref_batches), ("mtcnn", args.batches)):
        det = FACE_DETECTORS[name](cfg, device)
        det.detect(on_device[: min(args.batch, 64)])  # warm-up
        chunks = [on_device[lo : lo + args.batch] for lo in range(0, batches * args.batch, args.batch)]
        out = []
        seconds, percent = timed(device, util, lambda: out.extend(det.detect(c) for c in chunks))  # noqa: B023
        row(f"detect {name}", batches * args.batch, seconds, percent)
        detected[name] = (torch.cat([b for b, _ in out]).cpu(), torch.cat([f for _, f in out]).cpu())
    (ref_boxes, ref_found), (boxes, found) = detected["mtcnn-facenet"], detected["mtcnn"]
    m = min(len(ref_found), len(found))  # the frames both detectors saw
    both = ref_found[:m] & found[:m]
    results["agreement"] = agreement = {
        "frames": m,
        "found_ref": int(ref_found[:m].sum()),
        "found_batched": int(found[:m].sum()),
        "disagree": int((ref_found[:m] != found[:m]).sum()),
        "box_max_px": float((ref_boxes[:m][both] - boxes[:m][both]).abs().max()) if both.any() else None,
    }
    print(f"{'agreement on the same frames':46} {agreement}")

    # the embedding network alone
    models = {name: FaceEmbedder(replace(cfg, face_detector=name), weights, str(device)) for name in FACE_DETECTORS}
    faces = models["mtcnn"]
    keep = found.nonzero()[:, 0][: args.batch * 2].to(device)
    crops = faces.embedder.crop_batch(on_device[keep], boxes.to(device)[keep], 0)
    embedded = {}
    for precision in ("float32", "bfloat16", "float16"):
        faces.embedder.autocast = PRECISIONS[precision]  # what face_precision sets (one network built, not three)
        faces.embedder.embed(crops[:32])

        def embed(precision: str = precision) -> None:
            embedded[precision] = faces.embedder.embed(crops)

        seconds, percent = timed(device, util, embed)
        cosine = (embedded[precision] * embedded["float32"]).sum(1)
        row(f"embed {precision}", len(crops), seconds, percent, unit="crops/s", cos_min_vs_fp32=float(cosine.min()))

    # end to end, as the shared consumer runs it: clips in host memory
    host = frames[:n]
    clips = [host[lo : lo + args.clip] for lo in range(0, len(host), args.clip)]
    ref_clips = [frames[:n_ref][lo : lo + args.clip] for lo in range(0, n_ref, args.clip)]
    settings = [
        ("mtcnn-facenet", "float32", 1, 1),
        ("mtcnn", "float32", 1, 1),
        ("mtcnn", "bfloat16", 1, 1),
        ("mtcnn", "float32", 1, 2),
        ("mtcnn", "float32", 1, 3),  # --face-consumers 3 and 4: does a third thread fill the GPU's gaps?
        ("mtcnn", "float32", 1, 4),
        ("mtcnn", "bfloat16", 1, 2),
        ("mtcnn", "bfloat16", 2, 2),
        ("mtcnn", "bfloat16", 5, 2),
    ]
    for detector, precision, every, threads in settings:
        model = models[detector]
        model.embedder.autocast, model.every = PRECISIONS[precision], every  # face_precision, face_detect_every
        todo = ref_clips if detector == "mtcnn-facenet" else clips
        model.embed_clips(todo[:2])  # warm-up
        shares = [todo[k::threads] for k in range(threads)]  # one consumer thread's chunks each

        def run(model=model, shares=shares) -> None:
            workers = [threading.Thread(target=model.embed_clips, args=(h,)) for h in shares]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        seconds, percent = timed(device, util, run)
        share = kernel_share(device, run) if detector == "mtcnn" and threads == 2 and every == 1 else None
        name = f"end to end {detector} {precision} every {every}, {threads} thr"
        row(name, sum(len(c) for c in todo), seconds, percent, kernel_share=share)

    detect_ratio = rows["detect mtcnn"]["per_s"] / rows["detect mtcnn-facenet"]["per_s"]
    e2e_ratio = (
        rows["end to end mtcnn float32 every 1, 1 thr"]["per_s"]
        / (rows["end to end mtcnn-facenet float32 every 1, 1 thr"]["per_s"])
    )
    results["ratios"] = {"detect_batched_over_facenet": detect_ratio, "end_to_end_batched_over_facenet": e2e_ratio}
    print(f"batched / facenet: detection {detect_ratio:.1f}×, end to end (float32, 1 thread) {e2e_ratio:.1f}×")
    results["seconds"] = time.perf_counter() - began
    print(f"whole script: {results['seconds']:.1f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"figures → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

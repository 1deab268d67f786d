"""Extraction benchmark (``make bench-extract``), all on the same generated videos in one run:

(a) ours: ``extract run`` (frames sampled and shrunk inside ffmpeg, batched faces, packed shards);
(b) naive: every frame at native rate and resolution into Python, detect + embed frame by frame,
    audio written to WAV and read back;
(c) floor: MTCNN + embedding alone on our frames already in memory (the compute we cannot avoid).

Targets: naive/ours >= 5x wall time; ours/floor <= 1.3x. Also: bytes stored per hour of video,
videos/s with 1 and 2 workers (steady state: workers and models warmed up on other videos), and
the float16 storage error against float32.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from extract import open_cache  # noqa: E402
from extract.config import ExtractConfig  # noqa: E402
from extract.decode import decode  # noqa: E402
from extract.faces import FaceEmbedder, resolve_face_weights  # noqa: E402
from extract.fbank import LogMel  # noqa: E402
from extract.info import cache_info  # noqa: E402
from extract.run import RunOptions, run_extraction  # noqa: E402
from manifests.media import face_frame, ffmpeg_exe, lfw_faces, write_video  # noqa: E402


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--videos", type=int, default=4, help="generated videos")
    p.add_argument("--seconds", type=float, default=3.0, help="length of each video")
    p.add_argument("--native-fps", type=float, default=25.0, help="frame rate the videos are encoded at")
    p.add_argument("--width", type=int, default=640, help="native frame width")
    p.add_argument("--height", type=int, default=360, help="native frame height")
    p.add_argument(
        "--threads", type=int, default=1,
        help="torch threads for every measured path (more than 1 on a busy shared machine makes "
        "OpenMP barriers spin and timings meaningless)",
    )
    p.add_argument("--face-weights", default="random", help="as extract run --face-weights")
    p.add_argument("--work", type=Path, default=Path(".bench/extract"), help="scratch folder (emptied)")
    p.add_argument("--json", type=Path, default=Path(".bench/extract.json"), help="where the figures go")
    return p.parse_args()


def make_videos(root: Path, n: int, seconds: float, fps: float, size: tuple[int, int], first: int = 0) -> Path:
    """Talking-head-like clips: a moving LFW face on a frame, a voiced tone; returns a manifest."""
    faces = lfw_faces()
    rng = np.random.default_rng(first)
    rows = []
    for v in range(first, first + n):
        frames = []
        h, w = size
        side = int(0.5 * h)
        for k in range(int(seconds * fps)):
            left = int((w - side) * (0.5 + 0.3 * np.sin(2 * np.pi * k / (2 * fps))))
            frames.append(face_frame(faces[(v * 7 + k // int(fps)) % 100], size, (h // 4, left, side, side)))
        t = np.arange(int(seconds * 16000)) / 16000
        audio = sum(np.sin(2 * np.pi * (120 + 10 * v) * j * t) / j for j in range(1, 6)) * 0.2
        audio = (audio + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        path = write_video(root / f"video{v:03d}.mp4", np.stack(frames), fps, audio, 16000)
        rows.append(f"v{v:03d},{path.resolve()}")
    manifest = root / f"manifest{first}.csv"
    manifest.write_text("utt_id,path\n" + "\n".join(rows) + "\n")
    return manifest


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - began, out


def ours(manifest: Path, cache_root: Path, cfg: ExtractConfig, workers: int, warm: Path, threads: int) -> float:
    """Steady-state wall time: the workers (and their models) are warmed up on other videos first."""
    options = RunOptions(workers=workers, shard_size=1 if workers > 1 else 16, threads=threads, progress=False)
    run_extraction(warm, cache_root / f"warm{workers}", cfg, options)
    seconds, summary = timed(run_extraction, manifest, cache_root / f"w{workers}", cfg, options)
    assert summary.extracted and not summary.failures, summary.failures
    return seconds


def naive(paths: list[Path], cfg: ExtractConfig, embedder: FaceEmbedder, logmel: LogMel, tmp: Path) -> float:
    """The obvious script: decode everything, then loop over frames one at a time."""
    import ffmpeg
    from scipy.io import wavfile

    began = time.perf_counter()
    for path in paths:
        out, _ = (
            ffmpeg.input(str(path)).video.output("pipe:1", format="rawvideo", pix_fmt="rgb24")
            .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        )
        w, h = _native_size(path)
        frames = np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)
        wav = tmp / "audio.wav"
        ffmpeg.input(str(path)).audio.output(str(wav), ac=1, ar=cfg.sample_rate).overwrite_output().run(
            cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True
        )
        _, audio = wavfile.read(wav)
        logmel(audio.astype(np.float32) / 32768.0)
        for frame in frames:
            embedder(frame[None])  # one frame per detector and embedder call
    return time.perf_counter() - began


def _native_size(path: Path) -> tuple[int, int]:
    import re

    err = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    w, h = re.search(r"Video:.*?, (\d{2,5})x(\d{2,5})", err).groups()
    return int(w), int(h)


def floor(paths: list[Path], cfg: ExtractConfig, embedder: FaceEmbedder) -> float:
    """MTCNN + embedding on exactly our frames, decoded beforehand."""
    frames = [decode(p, cfg.sample_rate, cfg.fps, cfg.frame_size).frames for p in paths]
    seconds, _ = timed(lambda: [embedder(f) for f in frames])
    return seconds


def float16_error(cache16: Path, cache32: Path) -> dict[str, dict[str, float]]:
    a, b = open_cache(cache16), open_cache(cache32)
    out = {}
    for key in ("fbank", "face"):
        x16 = np.concatenate([a[u][key].ravel() for u in b])
        x32 = np.concatenate([b[u][key].ravel() for u in b])
        err = np.abs(x16 - x32)
        rel = err / np.maximum(np.abs(x32), 1e-6)
        out[key] = {
            "max_abs": float(err.max()),
            "mean_abs": float(err.mean()),
            "max_rel": float(rel[np.abs(x32) > 1e-3].max()),
            "mean_rel": float(rel[np.abs(x32) > 1e-3].mean()),
        }
    return out


def main() -> int:
    args = parse_args()
    import torch

    torch.set_num_threads(args.threads)
    shutil.rmtree(args.work, ignore_errors=True)
    media = args.work / "media"
    media.mkdir(parents=True)
    size = (args.height, args.width)
    print(f"generating {args.videos} videos of {args.seconds:g} s, {args.width}x{args.height} at {args.native_fps:g} fps ...")
    manifest = make_videos(media, args.videos, args.seconds, args.native_fps, size)
    warm = make_videos(media, 2, 1.0, args.native_fps, size, first=900)
    paths = [Path(line.split(",", 1)[1]) for line in manifest.read_text().splitlines()[1:]]
    hours = args.videos * args.seconds / 3600

    cfg = ExtractConfig(face_weights=args.face_weights)
    weights = resolve_face_weights(cfg.face_weights, cfg.face_seed)
    embedder, logmel = FaceEmbedder(cfg, weights), LogMel(cfg)
    cache_root = args.work / "cache"

    # Every measured path runs once untimed first: the first call of MTCNN's pyramid at a new
    # image size builds oneDNN kernels for seconds, which is set-up, not throughput.
    warm_paths = [Path(line.split(",", 1)[1]) for line in warm.read_text().splitlines()[1:]]
    with tempfile.TemporaryDirectory() as tmp:
        naive(warm_paths[:1], cfg, embedder, logmel, Path(tmp))
    floor(warm_paths, cfg, embedder)

    print("(a) ours, 1 worker ...")
    t_ours = ours(manifest, cache_root, cfg, 1, warm, args.threads)
    print("(a) ours, 2 workers ...")
    t_ours2 = ours(manifest, cache_root, cfg, 2, warm, args.threads)
    print("(c) floor ...")
    t_floor = floor(paths, cfg, embedder)
    print("(b) naive ...")
    with tempfile.TemporaryDirectory() as tmp:
        t_naive = naive(paths, cfg, embedder, logmel, Path(tmp))

    cache16 = cache_root / "w1" / cfg.hash(weights.identity)
    cfg32 = ExtractConfig(face_weights=args.face_weights, dtype="float32")
    run_extraction(manifest, cache_root / "f32", cfg32, RunOptions(threads=args.threads, progress=False))
    cache32 = cache_root / "f32" / cfg32.hash(weights.identity)
    info16, info32 = cache_info(cache16), cache_info(cache32)

    results = {
        "videos": args.videos,
        "seconds_per_video": args.seconds,
        "native": f"{args.width}x{args.height}@{args.native_fps:g}fps",
        "cores": os.cpu_count(),
        "threads_per_worker": args.threads,
        "wall_s": {"ours_1_worker": t_ours, "ours_2_workers": t_ours2, "naive": t_naive, "floor": t_floor},
        "naive_over_ours": t_naive / t_ours,
        "ours_over_floor": t_ours / t_floor,
        "videos_per_s": {"1_worker": args.videos / t_ours, "2_workers": args.videos / t_ours2},
        "bytes_per_hour": {"float16": info16["bytes"] / hours, "float32": info32["bytes"] / hours},
        "face_found_rate": info16["face_found_rate"],
        "float16_error": float16_error(cache16, cache32),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")

    w = results["wall_s"]
    print(f"\nwall time on {args.videos} videos: ours {w['ours_1_worker']:.2f} s (2 workers {w['ours_2_workers']:.2f} s), "
          f"naive {w['naive']:.2f} s, floor {w['floor']:.2f} s")
    print(f"naive/ours  {results['naive_over_ours']:.1f}x  (target >= 5x)")
    print(f"ours/floor  {results['ours_over_floor']:.2f}x (target <= 1.3x)")
    print(f"videos/s    {results['videos_per_s']['1_worker']:.2f} (1 worker), {results['videos_per_s']['2_workers']:.2f} (2 workers)")
    b = results["bytes_per_hour"]
    print(f"stored      {b['float16'] / 2**20:.1f} MiB per hour of video (float16), {b['float32'] / 2**20:.1f} MiB (float32)")
    for key, e in results["float16_error"].items():
        print(f"float16 {key:6s} max abs {e['max_abs']:.2e}, mean abs {e['mean_abs']:.2e}, "
              f"max rel {e['max_rel']:.2e}, mean rel {e['mean_rel']:.2e}")
    ok = results["naive_over_ours"] >= 5 and results["ours_over_floor"] <= 1.3
    print(f"bench-extract: {'targets met' if ok else 'TARGETS MISSED'} → {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

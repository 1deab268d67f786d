"""Extraction benchmark (``make bench-extract``) on a MIXED corpus, every contender timed inside
this one process, interleaved round by round so a noisy machine slows them alike:

(a) ours: ``run_extraction`` with 1 and 2 workers. "cold" 2 workers: a fresh worker pool, so the
    run pays the workers' start-up (imports, models), as a command does; "warm": the pool of the
    previous run is reused (steady state). 1 worker runs in this process (models cached here).
(b) naive, at the SAME frame rate (the fair baseline): every frame decoded at native rate and
    resolution into Python, one in every native_fps / fps kept, detect + embed frame by frame on it,
    audio written to WAV and read back.
(c) floor: batched MTCNN + embedding alone on the same sampled frames already in memory, at native
    size capped to 640 px (what a pipeline that does not shrink frames cannot avoid); and
    floor256, the same on our own 256² letterboxed frames (ours' own compute).

Corpus: clips of 224², 480×360 and 1280×720, of several lengths and containers (talking-head-like:
a moving LFW face and a voiced tone). Targets (issue 14): naive / ours ≥ 3.5× with 2 workers;
ours ≤ floor(640 px); 2 workers no slower than 1. Also: bytes stored per hour of video and the
float16 storage error against float32.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from common.ffmpeg import ffmpeg_exe
from extract import open_cache
from extract.config import ExtractConfig
from extract.decode import decode
from extract.faces import FaceEmbedder, resolve_face_weights
from extract.fbank import LogMel
from extract.info import cache_info
from extract.run import RunOptions, run_extraction
from manifests.media import lfw_faces, write_video

SIZES = [(224, 224), (360, 480), (720, 1280)]  # (H, W)
CONTAINERS = [".mp4", ".mkv", ".webm", ".mov", ".avi", ".flv"]
FLOOR_MAX_SIDE = 640


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--videos", type=int, default=24, help="generated videos (sizes, lengths, containers cycle)")
    p.add_argument("--lengths", type=float, nargs="+", default=[1.5, 3.0, 4.5], help="clip lengths, seconds")
    p.add_argument("--native-fps", type=float, default=25.0, help="frame rate the videos are encoded at")
    p.add_argument("--rounds", type=int, default=1, help="interleaved rounds of every contender")
    p.add_argument("--threads", type=int, default=1, help="torch threads for the in-process contenders")
    p.add_argument("--face-weights", default="random", help="as extract run --face-weights")
    p.add_argument("--skip-naive", action="store_true", help="leave out the (slow) naive contender")
    p.add_argument("--work", type=Path, default=Path(".bench/extract"), help="scratch folder (emptied)")
    p.add_argument("--json", type=Path, default=Path(".bench/extract.json"), help="where the figures go")
    return p.parse_args()


def _paste(frame: np.ndarray, patch: np.ndarray, top: int, left: int) -> np.ndarray:
    frame[top : top + patch.shape[0], left : left + patch.shape[1]] = patch[..., None]
    return frame


def make_videos(root: Path, n: int, lengths: list[float], fps: float, first: int = 0) -> Path:
    """Talking-head-like clips of mixed size, length and container; returns a manifest."""
    from skimage.transform import resize

    faces = lfw_faces()
    rng = np.random.default_rng(first)
    rows = []
    for v in range(first, first + n):
        h, w = SIZES[v % len(SIZES)]
        seconds = lengths[(v // len(SIZES)) % len(lengths)]
        ext = CONTAINERS[v % len(CONTAINERS)]
        side = int(0.5 * h)
        patches: dict[int, np.ndarray] = {}
        frames = []
        for k in range(int(seconds * fps)):
            who = (v * 7 + k // int(fps)) % 100
            if who not in patches:
                patches[who] = (
                    (resize(np.asarray(faces[who], float), (side, side), order=1) * 255).clip(0, 255).astype(np.uint8)
                )
            left = int((w - side) * (0.5 + 0.3 * np.sin(2 * np.pi * k / (2 * fps))))
            frames.append(_paste(np.full((h, w, 3), 96, np.uint8), patches[who], h // 4, left))
        t = np.arange(int(seconds * 16000)) / 16000
        audio = sum(np.sin(2 * np.pi * (120 + 10 * v) * j * t) / j for j in range(1, 6)) * 0.2
        audio = (audio + 0.01 * rng.standard_normal(len(t))).astype(np.float32)
        path = write_video(root / f"video{v:03d}{ext}", np.stack(frames), fps, audio, 16000)
        rows.append(f"v{v:03d},{path.resolve()}")
    manifest = root / f"manifest{first}.csv"
    manifest.write_text("utt_id,path\n" + "\n".join(rows) + "\n")
    return manifest


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    began = time.perf_counter()
    out = fn(*args, **kwargs)
    return time.perf_counter() - began, out


def fresh_worker_pool() -> None:
    """Shut joblib's reusable loky pool down: the next multi-worker run starts its workers anew."""
    from joblib.externals.loky import get_reusable_executor

    get_reusable_executor().shutdown(wait=True)


def ours(manifest: Path, cache_root: Path, cfg: ExtractConfig, workers: int, **options) -> float:
    shutil.rmtree(cache_root, ignore_errors=True)
    seconds, summary = timed(
        run_extraction, manifest, cache_root, cfg, RunOptions(workers=workers, device="cpu", progress=False, **options)
    )
    assert summary.extracted and not summary.failures, summary.failures
    return seconds


def naive(paths: list[Path], cfg: ExtractConfig, embedder: FaceEmbedder, logmel: LogMel, tmp: Path) -> float:
    """The obvious script, sampling at our fps: decode every frame, keep 1 in native/fps, one at a time."""
    import ffmpeg
    from scipy.io import wavfile

    began = time.perf_counter()
    for path in paths:
        w, h, native = _native(path)
        out, _ = (
            ffmpeg.input(str(path))
            .video.output("pipe:1", format="rawvideo", pix_fmt="rgb24")
            .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
        )
        frames = np.frombuffer(out, np.uint8).reshape(-1, h, w, 3)
        keep = np.unique(np.floor(np.arange(0, len(frames) / native, 1 / cfg.fps) * native).astype(int))
        wav = tmp / "audio.wav"
        ffmpeg.input(str(path)).audio.output(str(wav), ac=1, ar=cfg.sample_rate).overwrite_output().run(
            cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True
        )
        _, audio = wavfile.read(wav)
        logmel(audio.astype(np.float32) / 32768.0)
        for k in keep[keep < len(frames)]:
            embedder(frames[k][None])  # one frame per detector and embedder call
    return time.perf_counter() - began


def _native(path: Path) -> tuple[int, int, float]:
    import re

    err = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr
    line = next(ln for ln in err.splitlines() if "Video:" in ln)
    w, h = re.search(r", (\d{2,5})x(\d{2,5})", line).groups()
    fps = float(re.search(r"(\d+(?:\.\d+)?) (?:fps|tbr)", line).group(1))
    return int(w), int(h), fps


def sampled_frames(path: Path, cfg: ExtractConfig, max_side: int | None) -> np.ndarray:
    """The frames at our fps, native size (long side capped at ``max_side``) or our 256² letterbox."""
    import ffmpeg

    if max_side is None:
        return decode(path, cfg.sample_rate, cfg.fps, cfg.frame_size).frames
    w, h, _ = _native(path)
    scale = min(1.0, max_side / max(w, h))
    w2, h2 = int(w * scale) // 2 * 2, int(h * scale) // 2 * 2
    out, _ = (
        ffmpeg.input(str(path))
        .video.filter("fps", fps=cfg.fps)
        .filter("scale", w2, h2)
        .output("pipe:1", format="rawvideo", pix_fmt="rgb24")
        .run(cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True)
    )
    return np.frombuffer(out, np.uint8).reshape(-1, h2, w2, 3)


def floor(frames: list[np.ndarray], embedder: FaceEmbedder) -> float:
    """MTCNN + embedding, batched per clip, on frames already in memory."""
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
    print(
        f"generating {args.videos} videos ({', '.join(f'{w}x{h}' for h, w in SIZES)}; {args.lengths} s; "
        f"{', '.join(CONTAINERS)}) at {args.native_fps:g} fps ...",
        flush=True,
    )
    manifest = make_videos(media, args.videos, args.lengths, args.native_fps)
    warm = make_videos(media, len(SIZES), [1.0], args.native_fps, first=900)
    paths = [Path(line.split(",", 1)[1]) for line in manifest.read_text().splitlines()[1:]]
    warm_paths = [Path(line.split(",", 1)[1]) for line in warm.read_text().splitlines()[1:]]
    media_s = sum(len(decode(p).audio) / 16000 for p in paths)

    cfg = ExtractConfig(face_weights=args.face_weights)
    weights = resolve_face_weights(cfg.face_weights, cfg.face_seed)
    embedder, logmel = FaceEmbedder(cfg, weights), LogMel(cfg)
    cache_root = args.work / "cache"
    floor_frames = {m: [sampled_frames(p, cfg, m) for p in paths] for m in (FLOOR_MAX_SIDE, None)}
    face_frames = sum(len(f) for f in floor_frames[None])

    # Every in-process contender runs once untimed first: the first MTCNN call at a new image size
    # builds oneDNN kernels for seconds (set-up, not throughput). Ours with 1 worker warms here too.
    with tempfile.TemporaryDirectory() as tmp:
        naive(warm_paths, cfg, embedder, logmel, Path(tmp))
    for m in (FLOOR_MAX_SIDE, None):
        floor([sampled_frames(p, cfg, m) for p in warm_paths], embedder)
    ours(warm, cache_root / "warm", cfg, 1, threads=args.threads)

    times: dict[str, list[float]] = {}
    contenders = {
        "ours_1_worker": lambda: ours(manifest, cache_root / "w1", cfg, 1, threads=args.threads),
        "ours_2_workers_cold": lambda: (fresh_worker_pool(), ours(manifest, cache_root / "w2c", cfg, 2, threads=1))[1],
        "ours_2_workers_warm": lambda: ours(manifest, cache_root / "w2w", cfg, 2, threads=1),
        "ours_2_workers_by_count": lambda: ours(manifest, cache_root / "w2n", cfg, 2, threads=1, schedule="count"),
        "ours_1_worker_no_prefetch": lambda: ours(
            manifest, cache_root / "w1n", cfg, 1, threads=args.threads, prefetch=False
        ),
        "floor_640px": lambda: floor(floor_frames[FLOOR_MAX_SIDE], embedder),
        "floor_256": lambda: floor(floor_frames[None], embedder),
    }
    if not args.skip_naive:
        contenders["naive_same_fps"] = lambda: _naive_tmp(paths, cfg, embedder, logmel)
    for r in range(args.rounds):
        names = list(contenders) if r % 2 == 0 else list(contenders)[::-1]
        for name in names:
            seconds = contenders[name]()
            times.setdefault(name, []).append(seconds)
            print(f"round {r + 1}: {name:28s} {seconds:7.2f} s", flush=True)
    torch.set_num_threads(args.threads)  # the 1-worker runs set it in this process

    best = {k: min(v) for k, v in times.items()}
    cache16 = cache_root / "w1" / cfg.hash(weights.identity)
    sub = args.work / "f32.csv"
    sub.write_text("\n".join(manifest.read_text().splitlines()[: 1 + len(SIZES)]) + "\n")
    run_extraction(sub, cache_root / "f16", cfg, RunOptions(threads=args.threads, device="cpu", progress=False))
    cfg32 = ExtractConfig(face_weights=args.face_weights, dtype="float32")
    run_extraction(sub, cache_root / "f32", cfg32, RunOptions(threads=args.threads, device="cpu", progress=False))
    cache32 = cache_root / "f32" / cfg32.hash(weights.identity)
    info16 = cache_info(cache16)
    hours = media_s / 3600
    ratio = lambda a, b: best[a] / best[b]  # noqa: E731
    results = {
        "videos": args.videos,
        "media_seconds": media_s,
        "face_frames": face_frames,
        "sizes": [f"{w}x{h}" for h, w in SIZES],
        "containers": CONTAINERS,
        "cores": os.cpu_count(),
        "rounds": args.rounds,
        "wall_s": times,
        "best_s": best,
        "ratios": {
            "naive_over_ours_2w_cold": ratio("naive_same_fps", "ours_2_workers_cold")
            if "naive_same_fps" in best
            else None,
            "naive_over_ours_2w_warm": ratio("naive_same_fps", "ours_2_workers_warm")
            if "naive_same_fps" in best
            else None,
            "ours_2w_cold_over_floor_640px": ratio("ours_2_workers_cold", "floor_640px"),
            "ours_2w_warm_over_floor_640px": ratio("ours_2_workers_warm", "floor_640px"),
            "ours_1w_over_floor_256": ratio("ours_1_worker", "floor_256"),
            "ours_2w_cold_over_1w": ratio("ours_2_workers_cold", "ours_1_worker"),
            "ours_2w_warm_over_1w": ratio("ours_2_workers_warm", "ours_1_worker"),
            "by_count_over_by_cost_2w": ratio("ours_2_workers_by_count", "ours_2_workers_warm"),
            "no_prefetch_over_prefetch_1w": ratio("ours_1_worker_no_prefetch", "ours_1_worker"),
        },
        "face_frames_per_s_2w_warm": face_frames / best["ours_2_workers_warm"],
        "bytes_per_hour_float16": info16["bytes"] / hours,
        "face_found_rate": info16["face_found_rate"],
        "float16_error": float16_error(cache_root / "f16" / cfg.hash(weights.identity), cache32),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")

    print(
        f"\n{args.videos} videos, {media_s:.1f} s of media, {face_frames} sampled frames; "
        f"best of {args.rounds} round(s):"
    )
    for name, seconds in best.items():
        print(f"  {name:28s} {seconds:7.2f} s")
    for name, value in results["ratios"].items():
        print(f"  {name:32s} {value:.2f}x" if value is not None else f"  {name:32s} -")
    print(f"  face frames/s (2 workers, warm) {results['face_frames_per_s_2w_warm']:.1f}")
    print(f"  stored {results['bytes_per_hour_float16'] / 2**20:.1f} MiB per hour of video (float16)")
    for key, e in results["float16_error"].items():
        print(
            f"  float16 {key:6s} max abs {e['max_abs']:.2e}, mean abs {e['mean_abs']:.2e}, max rel {e['max_rel']:.2e}"
        )
    r = results["ratios"]
    ok = (
        (r["naive_over_ours_2w_cold"] or 0) >= 3.5
        and r["ours_2w_cold_over_floor_640px"] <= 1.0
        and r["ours_2w_cold_over_1w"] <= 1.0
    )
    print(f"bench-extract: {'targets met' if ok else 'TARGETS MISSED'} → {args.json}")
    return 0


def _naive_tmp(paths, cfg, embedder, logmel) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        return naive(paths, cfg, embedder, logmel, Path(tmp))


if __name__ == "__main__":
    raise SystemExit(main())

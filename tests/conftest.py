"""Shared media fixtures: a small session-wide set of generated clips with real LFW faces."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # the machine is shared: keep every test process lean

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from manifests.media import face_frame, lfw_faces, write_video

torch = pytest.importorskip("torch")
torch.set_num_threads(1)


def tone(seconds: float, sample_rate: int, freq: float = 220.0, seed: int = 0) -> np.ndarray:
    """A voiced-like signal: harmonics plus a little noise, so every mel band has energy."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    sig = sum(np.sin(2 * np.pi * freq * k * t) / k for k in range(1, 6))
    sig += 0.05 * np.random.default_rng(seed).standard_normal(len(t))
    return (0.2 * sig).astype(np.float32)


def face_frames(n: int, size: tuple[int, int], first: int = 0) -> np.ndarray:
    faces = lfw_faces()
    return np.stack([face_frame(faces[(first + i) % len(faces)], size) for i in range(n)])


@dataclass(frozen=True)
class Clip:
    path: Path
    has_video: bool
    faces: bool
    seconds: float


@pytest.fixture(scope="session")
def clips(tmp_path_factory) -> dict[str, Clip]:
    """Tiny clips (~1 s) across containers, codecs, sample rates and frame rates."""
    root = tmp_path_factory.mktemp("media")
    specs = {
        # name: (file, fps, size (H, W), sample rate, faces?)
        "mp4": ("talk.mp4", 10, (96, 128), 16000, True),
        "mkv": ("talk.mkv", 12, (80, 80), 22050, True),
        "avi": ("talk.avi", 8, (96, 128), 44100, True),
        "webm": ("talk.webm", 10, (72, 96), 48000, True),
        "flv": ("talk.flv", 15, (96, 128), 16000, True),
        "weird": ("it's a $(touch pwned) clip — ü.mp4", 10, (96, 128), 16000, True),
        "noface": ("empty room.mp4", 10, (96, 128), 16000, False),
    }
    out = {}
    for i, (name, (file, fps, size, rate, faces)) in enumerate(specs.items()):
        n = int(fps * 1.0)
        frames = face_frames(n, size, first=3 * i) if faces else np.full((n, *size, 3), 90, np.uint8)
        path = write_video(root / file, frames, fps, tone(1.0, rate, 150 + 20 * i, seed=i), rate)
        out[name] = Clip(path, True, faces, 1.0)
    out["wav"] = Clip(write_video(root / "voice.wav", None, audio=tone(1.0, 16000, 300)), False, False, 1.0)
    out["m4a"] = Clip(
        write_video(root / "voice.m4a", None, audio=tone(0.8, 22050, 310), sample_rate=22050), False, False, 0.8
    )
    return out


def write_manifest(path: Path, rows: list[dict]) -> Path:
    import pandas as pd

    pd.DataFrame(rows).to_csv(path, index=False)
    return path

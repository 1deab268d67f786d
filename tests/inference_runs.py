"""Tiny trained runs and real audio files shared by the inference, export, verify and embed tests.

Trained once per test session (the first module to ask builds them under pytest's base temp
folder; later modules find them there), on a synthetic cache that carries a real extraction
config, so new audio files can be decoded with the runs' own feature settings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from conftest import tone

from distill.testing import make_lupi_items, tiny_config


@dataclass(frozen=True)
class Runs:
    cache: Path
    speaker: Path  # student, speaker, nonseq (closed-set ids; verification.json)
    emotion: Path  # teacher, emotion, seq (runs audio only, its video missing)
    wavs: list[Path]  # readable clips of different lengths, one shorter than a grid cell
    too_short: Path  # 10 ms of audio: less than one feature window
    not_audio: Path  # text named .wav


def trained_runs(tmp_path_factory) -> Runs:
    root = tmp_path_factory.getbasetemp() / "inference_runs"
    done = root / "done"
    if not done.is_file():
        from distill.train.trainer import run_training
        from extract.cache import build_cache
        from extract.config import ExtractConfig
        from manifests.media import write_video

        root.mkdir(parents=True, exist_ok=True)
        record = ExtractConfig(n_mels=20, face_weights="random").to_record("random")
        cache = build_cache(root / "cache", make_lupi_items(3, 8, n_frames=90), config=record)
        run_training(
            tiny_config(cache, "student", distill__method="none", train__epochs=2), root / "speaker", progress=False
        )
        run_training(
            tiny_config(cache, "teacher", data__task="emotion", data__setting="seq"), root / "emotion", progress=False
        )
        for i, seconds in enumerate((0.3, 0.9, 1.6, 0.45)):  # 0.3 s = 31 frames < the 60-frame crop: wraps
            write_video(root / f"clip{i}.wav", None, audio=tone(seconds, 16000, 180 + 60 * i, seed=i))
        write_video(root / "blip.wav", None, audio=tone(0.01, 16000, 300))
        (root / "notes.wav").write_text("not audio\n")
        (root / "cache_dir").write_text(str(cache))
        done.write_text("ok")
    cache = Path((root / "cache_dir").read_text())
    return Runs(
        cache,
        root / "speaker",
        root / "emotion",
        [root / f"clip{i}.wav" for i in range(4)],
        root / "blip.wav",
        root / "notes.wav",
    )


def assert_close(a: np.ndarray, b: np.ndarray, tol: float = 1e-5) -> None:
    np.testing.assert_allclose(a, b, rtol=0, atol=tol)

"""Synthetic LUPI caches: the face channel carries the label cleanly, the audio only weakly.

Built with ``extract.cache.build_cache`` (no video, no ffmpeg), so trainer tests run in seconds.
Each class has an audio prototype (a spectral pattern, added at low amplitude to loud noise) and
a face prototype (a 512-d vector, plus a little noise). The face track covers every item, so a
teacher learns a clean class geometry; the student hears only the weak audio pattern.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.cache import build_cache

EMOTIONS = ("angry", "happy", "neutral", "sad", "fear", "disgust")


def make_lupi_items(n_classes: int = 4, per_class: int = 12, *, n_frames: int = 120, n_mels: int = 20,
                    audio_snr: float = 0.5, face_noise: float = 0.1, fps: float = 10.0, seed: int = 0,
                    split_ratios: tuple[float, float, float] = (0.5, 0.25, 0.25), length_jitter: int = 0,
                    with_split: bool = True) -> list[dict]:
    """Item dicts for ``build_cache``: columns speaker, emotion (one per class) and split.

    ``audio_snr`` scales the class pattern against unit noise; ``face_noise`` is the std of
    per-frame noise around the class face prototype. Every class is in every split.
    """
    rng = np.random.default_rng(seed)
    audio_proto = rng.standard_normal((n_classes, n_mels)).astype(np.float32)
    face_proto = rng.standard_normal((n_classes, 512)).astype(np.float32)
    n_train, n_val = int(round(per_class * split_ratios[0])), int(round(per_class * split_ratios[1]))
    items = []
    for c in range(n_classes):
        for k in range(per_class):
            t = n_frames + (int(rng.integers(-length_jitter, length_jitter + 1)) if length_jitter else 0)
            fbank = rng.standard_normal((t, n_mels)).astype(np.float32) + audio_snr * audio_proto[c]
            n_face = max(1, int(t / 100 * fps))
            face = face_proto[c] + face_noise * rng.standard_normal((n_face, 512)).astype(np.float32)
            item = {
                "utt_id": f"c{c}_u{k:03d}",
                "fbank": fbank,
                "face": face,
                "face_found": np.ones(n_face, bool),
                "frame_times": (np.arange(n_face) / fps).astype(np.float32),
                "has_video": True,
                "duration": t / 100.0,
                "speaker": f"spk{c}",
                "emotion": EMOTIONS[c % len(EMOTIONS)] + ("" if c < len(EMOTIONS) else str(c)),
            }
            if with_split:
                item["split"] = "train" if k < n_train else "val" if k < n_train + n_val else "test"
            items.append(item)
    return items


def make_lupi_cache(cache_dir: str | Path, n_classes: int = 4, per_class: int = 12, **kwargs) -> Path:
    """A cache of :func:`make_lupi_items`; returns its directory."""
    return build_cache(cache_dir, make_lupi_items(n_classes, per_class, **kwargs), shard_size=32)

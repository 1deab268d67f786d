"""Synthetic cache items (random features, faces found in ~70% of frames, labels) for the cache tests."""

from __future__ import annotations

import numpy as np


def make_item(i: int, n_face: int = 6, rng: np.random.Generator | None = None) -> dict:
    rng = rng or np.random.default_rng(i)
    found = rng.random(n_face) > 0.3
    face = rng.standard_normal((n_face, 512)).astype(np.float32) * found[:, None]
    return {
        "utt_id": f"utt{i:03d}",
        "fbank": rng.standard_normal((50 + i, 40)).astype(np.float32),
        "face": face,
        "face_found": found,
        "frame_times": np.arange(n_face, dtype=np.float32) / 5,
        "speaker": f"spk{i % 3}",
        "split": "train",
        "score": np.float64(i / 10),
    }

"""Synthetic LUPI caches for tests, benchmarks and experiments: the face channel carries the label
cleanly, the audio only weakly (the project's own synthetic data, never evidence about real corpora).

Built with ``extract.cache.build_cache`` (no video, no ffmpeg), so trainer tests run in seconds.
Each item has a latent point ``u`` (its class centre plus within-class spread, like a speaker's
voice/face traits varying across recordings). The face track shows ``u`` almost noise-free; the
audio shows it as a weak spectral pattern under loud noise. The label only says which class
centre ``u`` came from, while a teacher's embedding, computed from the faces, also locates ``u``
inside its class: exactly the extra, privileged, information a student can distil.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from extract.cache import build_cache

EMOTIONS = ("angry", "happy", "neutral", "sad", "fear", "disgust")


def make_noise_items(lengths, n_mels: int = 80, seed: int = 7) -> list[dict]:
    """Audio-only items as ``extract run`` stores noise files (no face frames), one per length in
    frames: log-mels of a noise cache for ``augment.noise``."""
    rng = np.random.default_rng(seed)
    return [
        {
            "utt_id": f"noise{i:03d}",
            "fbank": rng.normal(10.0, 6.0, (n, n_mels)).astype(np.float32),
            "face": np.zeros((0, 512), np.float32),
            "face_found": np.zeros(0, bool),
            "frame_times": np.zeros(0, np.float32),
            "has_video": False,
            "duration": n / 100,
        }
        for i, n in enumerate(lengths)
    ]


def make_lupi_items(
    n_classes: int = 4,
    per_class: int = 12,
    *,
    n_frames: int = 120,
    n_mels: int = 20,
    audio_snr: float = 0.5,
    face_noise: float = 0.1,
    fps: float = 10.0,
    seed: int = 0,
    split_ratios: tuple[float, float, float] = (0.5, 0.25, 0.25),
    length_jitter: int = 0,
    latent_dim: int = 8,
    within_class: float = 0.6,
    with_split: bool = True,
) -> list[dict]:
    """Item dicts for ``build_cache``: columns speaker, emotion (one per class) and split.

    ``audio_snr`` scales the latent's spectral pattern against unit noise; ``face_noise`` is the
    std of per-frame noise on the face embedding; ``within_class`` the spread of ``u`` around its
    class centre. Every class is in every split.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_classes, latent_dim))
    to_audio = rng.standard_normal((latent_dim, n_mels)) / np.sqrt(latent_dim)
    to_face = rng.standard_normal((latent_dim, 512)) / np.sqrt(latent_dim)
    n_train, n_val = int(round(per_class * split_ratios[0])), int(round(per_class * split_ratios[1]))
    items = []
    for c in range(n_classes):
        for k in range(per_class):
            t = n_frames + (int(rng.integers(-length_jitter, length_jitter + 1)) if length_jitter else 0)
            u = centres[c] + within_class * rng.standard_normal(latent_dim)
            fbank = (rng.standard_normal((t, n_mels)) + audio_snr * (u @ to_audio)).astype(np.float32)
            n_face = max(1, int(t / 100 * fps))
            face = (u @ to_face + face_noise * rng.standard_normal((n_face, 512))).astype(np.float32)
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


#: Overrides that make a run take about a second on one CPU thread (tests only). No figures: drawing
#: them is most of such a run's time; a test that looks at them asks for them (``eval__plots=True``).
TINY = {
    "model.audio_channels": 16,
    "model.emb_dim": 16,
    "model.visual_dim": 16,
    "model.agg_dim": 16,
    "model.res2net_scale": 4,
    "data.batch_size": 8,
    "data.crop": 60,
    "data.crop_hop": 30,
    "data.seg_len": 30,
    "data.seg_hop": 15,
    "data.n_segments": 3,
    "train.epochs": 1,
    "train.threads": 1,
    "eval.plots": False,
}


def tiny_config(cache: str | Path, role: str = "teacher", **overrides):
    """A RunConfig of :data:`TINY` size on `cache`; keyword overrides use __ for dots (data__task)."""
    from distill.config import load_config  # torch: the synthetic caches themselves need none

    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return load_config(overrides={**TINY, "cache": str(cache), "role": role, **dotted})


def make_shared_direction_items(
    n_classes: int = 8,
    per_split: tuple[int, int, int] = (16, 4, 8),
    *,
    n_frames: int = 100,
    n_mels: int = 20,
    audio_snr: float = 0.05,
    residual: float = 0.1,
    face_dim: int = 512,
    fps: float = 10.0,
    seed: int = 0,
) -> list[dict]:
    """Faces like seeded-random FaceNet vectors: unit norm, all around one shared direction.

    face = normalise(s + ``residual`` · (r_class + 0.3 · r_item + 0.1 · r_frame)), so any two faces
    are at cosine ~0.99 and the identity lives in the small residual, yet the faces alone classify
    near-perfectly by nearest class mean. The audio carries the class only weakly
    (``audio_snr``). A teacher that does not pick the residual out leans on the audio.
    """
    rng = np.random.default_rng(seed)
    shared = rng.standard_normal(face_dim)
    shared /= np.linalg.norm(shared)
    class_res = rng.standard_normal((n_classes, face_dim)) / np.sqrt(face_dim)
    to_audio = rng.standard_normal((n_classes, n_mels))
    n_face = max(1, int(n_frames / 100 * fps))
    items = []
    for split, count in zip(("train", "val", "test"), per_split):
        for c in range(n_classes):
            for k in range(count):
                item_res = rng.standard_normal(face_dim) / np.sqrt(face_dim)
                frame_res = rng.standard_normal((n_face, face_dim)) / np.sqrt(face_dim)
                face = shared + residual * (class_res[c] + 0.3 * item_res + 0.1 * frame_res)
                face /= np.linalg.norm(face, axis=1, keepdims=True)
                fbank = rng.standard_normal((n_frames, n_mels)) + audio_snr * to_audio[c]
                items.append(
                    {
                        "utt_id": f"{split}_c{c}_{k:03d}",
                        "fbank": fbank.astype(np.float32),
                        "face": face.astype(np.float32),
                        "face_found": np.ones(n_face, bool),
                        "frame_times": (np.arange(n_face) / fps).astype(np.float32),
                        "has_video": True,
                        "duration": n_frames / 100.0,
                        "speaker": f"spk{c}",
                        "emotion": f"emo{c}",
                        "split": split,
                    }
                )
    return items

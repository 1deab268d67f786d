"""A data-starved corpus with noisy labels, where privileged information (the face) should pay off.

Each utterance has a latent point ``z`` (its class centre plus within-class spread). The face
track shows ``z`` almost noise-free. The audio shows ``z`` too, through a fixed random linear map
under frame noise, next to a loud nuisance ("channel"/speaking-style offsets) in directions
orthogonal to ``z``'s and unrelated to the label. Few training items are labelled, and 30% of
those labels name a wrong class (val and test labels are clean), as with VoxCeleb's automatic
labelling or acted emotion corpora whose intended label is not what the face shows. An audio-only
student then learns from too few labels of which many lie; a teacher whose embedding keeps what
the clean faces show (``distill.face_recon``) gives each training item a target that is right
where its label is wrong, and dense where a label is one number (tests/test_distill_methods_lupi.py
has the numbers; experiments/lupi_compare.py reproduces docs/method.md's).

The nuisance drifts (a new draw every ``nuisance_block`` frames) rather than staying fixed per
utterance: a fixed offset lets any student memorise each training item by its offset, after which
neither labels nor teacher targets teach anything (measured: no gain for ``embed`` then).
``LupiDesign(train_per_class=4, label_noise=0.0)`` is the clean-label design of the earlier
measurements in docs/method.md (draws reproduce).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from extract.cache import build_cache

#: Enough optimiser steps for 48 training items (12 per epoch at batch 4); the same for every run of
#: the LUPI test and of experiments/lupi_compare.py (``tiny_config`` overrides). A fixed 30 epochs (no
#: early stopping), as when the margins docs/method.md records were measured.
SCHEDULE = {"train__epochs": 30, "train__patience": 0, "data__batch_size": 4, "train__lr": 0.005}
#: The teacher's visual branch is wider than its audio branch, so its embedding leans on the faces.
TEACHER = {"model__visual_dim": 64, **SCHEDULE}


@dataclass(frozen=True)
class LupiDesign:
    """The knobs of the corpus (defaults: the design the LUPI test uses)."""

    n_classes: int = 6
    train_per_class: int = 8
    val_per_class: int = 10
    test_per_class: int = 20
    latent_dim: int = 8
    within_class: float = 0.3  # spread of z around its class centre (centres ~ N(0, I))
    n_mels: int = 20
    n_frames: int = 120
    fps: float = 10.0
    face_noise: float = 0.05  # per-frame noise on the face embedding (z shows nearly clean)
    audio_gain: float = 0.5  # scale of z's spectral pattern against unit frame noise
    nuisance_dim: int = 12  # directions of the nuisance, orthogonal to those of z
    nuisance_gain: float = 1.5  # its std per direction: louder than the label's signal
    nuisance_block: int = 10  # frames per nuisance draw (a drifting channel); 0: one per utterance
    label_noise: float = 0.3  # chance that a train item's label is swapped for another class


def make_lupi_items(design: LupiDesign = LupiDesign(), seed: int = 0) -> list[dict]:
    """Item dicts for ``build_cache``: fbank, face, ..., and the columns speaker, emotion, split.

    The mixing (which mel directions carry z, which the nuisance) is drawn once from ``seed``; val
    and test labels are always clean. Both label columns name the class.
    """
    d = design
    if d.latent_dim + d.nuisance_dim > d.n_mels:
        raise ValueError(f"latent_dim + nuisance_dim ({d.latent_dim} + {d.nuisance_dim}) must fit in n_mels={d.n_mels}")
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((d.n_classes, d.latent_dim))
    # A random rotation of the mel space: z and the nuisance live in orthogonal, non-axis directions.
    basis, _ = np.linalg.qr(rng.standard_normal((d.n_mels, d.n_mels)))
    to_audio, to_nuisance = basis[: d.latent_dim], basis[d.latent_dim : d.latent_dim + d.nuisance_dim]
    to_face = rng.standard_normal((d.latent_dim, 512)) / np.sqrt(d.latent_dim)
    counts = {"train": d.train_per_class, "val": d.val_per_class, "test": d.test_per_class}
    n_face = max(1, int(d.n_frames / 100 * d.fps))
    items = []
    for split, per_class in counts.items():
        for c in range(d.n_classes):
            for k in range(per_class):
                z = centres[c] + d.within_class * rng.standard_normal(d.latent_dim)
                block = d.nuisance_block or d.n_frames
                n_blocks = -(-d.n_frames // block)
                nuisance = d.nuisance_gain * rng.standard_normal((n_blocks, d.nuisance_dim))
                nuisance = np.repeat(nuisance, block, axis=0)[: d.n_frames]
                fbank = (
                    rng.standard_normal((d.n_frames, d.n_mels)) + d.audio_gain * (z @ to_audio) + nuisance @ to_nuisance
                )
                face = z @ to_face + d.face_noise * rng.standard_normal((n_face, 512))
                label = c
                if split == "train" and rng.random() < d.label_noise:
                    label = int((c + rng.integers(1, d.n_classes)) % d.n_classes)
                items.append(
                    {
                        "utt_id": f"{split}_c{c}_{k:03d}",
                        "fbank": fbank.astype(np.float32),
                        "face": face.astype(np.float32),
                        "face_found": np.ones(n_face, bool),
                        "frame_times": (np.arange(n_face) / d.fps).astype(np.float32),
                        "has_video": True,
                        "duration": d.n_frames / 100.0,
                        "speaker": f"spk{label}",
                        "emotion": f"emo{label}",
                        "split": split,
                    }
                )
    return items


def make_lupi_cache(cache_dir: str | Path, design: LupiDesign = LupiDesign(), seed: int = 0) -> Path:
    """A cache of :func:`make_lupi_items`; returns its directory."""
    return build_cache(cache_dir, make_lupi_items(design, seed), shard_size=64)

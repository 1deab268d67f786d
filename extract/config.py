"""Extraction settings: one frozen dataclass, and the hash that names the cache directory."""

from __future__ import annotations

import json
import platform
from dataclasses import asdict, dataclass, fields
from typing import Any

from common.files import sha256_text

#: Settings that change no stored number; they stay out of the hash so tuning them never
#: orphans a cache.
RUNTIME_ONLY = frozenset({"face_batch"})
#: The embedding network's precisions (``face_precision``): float32, or autocast to a 16-bit type.
FACE_PRECISIONS = ("float32", "bfloat16", "float16")
#: The values caches were made with before these settings existed (facenet-pytorch's own MTCNN,
#: every frame, float32): a config at these values hashes as it did then, so those caches keep
#: their directory, and a record without them reads back as them (:meth:`ExtractConfig.from_record`).
LEGACY_SETTINGS = {"face_detector": "mtcnn-facenet", "face_detect_every": 1, "face_precision": "float32"}


@dataclass(frozen=True)
class ExtractConfig:
    """Every extraction setting with its default. The cache directory is named by :meth:`hash`."""

    # audio
    sample_rate: int = 16000  # Hz, mono after ffmpeg's downmix
    n_mels: int = 80
    win_ms: float = 25.0  # analysis window; a clip shorter than this is a failure, not a 1-frame item
    hop_ms: float = 10.0
    f_min: float = 0.0
    f_max: float | None = None  # None: sample_rate / 2
    # video
    fps: float = 5.0  # frames sampled per second of video, inside ffmpeg
    frame_size: int = 256  # frames are letterboxed to frame_size² inside ffmpeg: full-res never reaches Python
    # faces
    face_detector: str = "mtcnn"  # mtcnn (batched, on the device) | mtcnn-facenet (facenet-pytorch's reference)
    face_detect_every: int = 1  # detect on every k-th frame of a clip (and its last); boxes carried between
    face_weights: str = "vggface2"  # vggface2 | casia-webface | random | PATH to a state dict (512-d) | dlib (128-d)
    face_seed: int = 0  # initialises the `random` face embedder reproducibly
    min_face_size: int = 20  # MTCNN's smallest face, in pixels of the letterboxed frame
    face_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)  # MTCNN P/R/O-net thresholds
    face_margin: int = 0  # pixels added around the detected box before the 160×160 crop
    face_precision: str = "float32"  # the embedding network's autocast dtype: float32 | bfloat16 | float16
    face_batch: int = 32  # frames per MTCNN / embedding batch (speed only)
    # storage
    dtype: str = "float16"  # fbank and face embeddings on disk; see docs/extract.md for the error

    def __post_init__(self) -> None:
        problems = []
        if self.sample_rate <= 0 or self.n_mels <= 0 or self.fps <= 0 or self.frame_size < 32:
            problems.append("sample_rate, n_mels and fps must be positive and frame_size ≥ 32")
        if not 0 < self.hop_ms <= self.win_ms:
            problems.append(f"need 0 < hop_ms ≤ win_ms (got hop {self.hop_ms}, win {self.win_ms})")
        if self.dtype not in ("float16", "float32"):
            problems.append(f"dtype must be float16 or float32, got {self.dtype!r}")
        if self.face_detect_every < 1:
            problems.append(f"face_detect_every must be ≥ 1, got {self.face_detect_every}")
        if self.face_precision not in FACE_PRECISIONS:
            problems.append(f"face_precision must be one of {', '.join(FACE_PRECISIONS)}, got {self.face_precision!r}")
        if problems:
            raise ValueError("invalid extraction config: " + "; ".join(problems))

    @property
    def win_samples(self) -> int:
        return int(round(self.sample_rate * self.win_ms / 1000))

    def feature_settings(self) -> dict[str, Any]:
        """The settings that decide the stored numbers (everything but RUNTIME_ONLY)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in RUNTIME_ONLY}

    def hash(self, weights_identity: str | None = None) -> str:
        """Short stable hash of the feature settings and the face weights' identity.

        ``weights_identity`` (a content hash, see :mod:`extract.faces`) matters because the same
        name, or the same PATH, can hold different weights; without it the name stands in.
        """
        payload = self.feature_settings()
        payload["face_weights"] = weights_identity or self.face_weights
        for name, legacy in LEGACY_SETTINGS.items():
            if payload[name] == legacy:
                del payload[name]
        blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=list)
        return sha256_text(blob)[:16]

    def to_record(
        self, weights_identity: str, face_dim: int = 512, versions: dict[str, str] | None = None
    ) -> dict[str, Any]:
        """What config.json holds: settings, hash, face-weights identity, library versions.

        ``face_dim`` is the face embedder's width (InceptionResnetV1 512, dlib 128; distill sizes
        its visual branch by it); ``versions`` adds that embedder's own libraries (dlib) to the
        ones every cache records.
        """
        record = asdict(self)
        record.update(
            hash=self.hash(weights_identity),
            face_weights_identity=weights_identity,
            face_dim=face_dim,
            versions={**library_versions(), **(versions or {})},
        )
        return record

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> ExtractConfig:
        """The settings back from a config.json record (the inverse of :meth:`to_record`).

        A record from before a setting existed gets the value its cache was made with
        (:data:`LEGACY_SETTINGS`: facenet-pytorch's own MTCNN), else the setting's default.
        """
        values = {f.name: record[f.name] for f in fields(cls) if f.name in record}
        values = {**LEGACY_SETTINGS, **values}
        if "face_thresholds" in values:
            values["face_thresholds"] = tuple(values["face_thresholds"])  # JSON has no tuples
        return cls(**values)


def library_versions() -> dict[str, str]:
    """Versions of everything that computes stored numbers (recorded, deliberately not hashed:
    a patch release must not orphan a million-video cache, but a reader can always check)."""
    from importlib import metadata

    import h5py
    import numpy
    import speechbrain
    import torch
    import torchaudio

    from common.ffmpeg import ffmpeg_version

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchaudio": torchaudio.__version__,
        "speechbrain": speechbrain.__version__,
        "facenet_pytorch": metadata.version("facenet-pytorch"),
        "numpy": numpy.__version__,
        "h5py": h5py.__version__,
        "ffmpeg": ffmpeg_version(),
    }

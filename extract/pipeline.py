"""One manifest item → :class:`ItemFeatures`, or a :class:`Failure` saying at which stage and why."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extract.cache import ItemFeatures
from extract.config import ExtractConfig
from extract.decode import DecodeError, decode
from extract.faces import FaceEmbedder, FaceWeights
from extract.fbank import LogMel

@dataclass(frozen=True)
class ManifestItem:
    utt_id: str
    path: str  # absolute
    start: float | None = None
    end: float | None = None
    crop: str = "full"
    labels: dict[str, Any] = field(default_factory=dict)  # carried through, including the manifest's `path`


@dataclass(frozen=True)
class Failure:
    utt_id: str
    path: str
    stage: str  # input | probe | audio | video | fbank | faces
    reason: str

    def as_row(self) -> dict[str, str]:
        return asdict(self)


class ItemExtractor:
    """decode → log-mel → faces, with the models built once per worker process."""

    def __init__(self, cfg: ExtractConfig, weights: FaceWeights, device: str = "cpu") -> None:
        self.cfg = cfg
        self.logmel = LogMel(cfg)  # on CPU: cheap next to the face models
        self.faces = FaceEmbedder(cfg, weights, device)

    def __call__(self, item: ManifestItem) -> ItemFeatures | Failure:
        cfg = self.cfg
        try:
            media = decode(item.path, cfg.sample_rate, cfg.fps, cfg.frame_size, item.crop, item.start, item.end)
            if len(media.audio) < cfg.win_samples:
                raise DecodeError(
                    "fbank",
                    f"audio is {len(media.audio) / cfg.sample_rate * 1000:.1f} ms, shorter than the "
                    f"{cfg.win_ms:g} ms feature window",
                )
            fbank = self.logmel(media.audio)
            if not np.isfinite(fbank).all():
                raise DecodeError("fbank", "log-mel has non-finite values")
        except DecodeError as err:
            return Failure(item.utt_id, item.path, err.stage, err.reason)
        try:
            face, found = self.faces(media.frames)
        except Exception as err:  # a model error on one item must not end a million-item run
            return Failure(item.utt_id, item.path, "faces", f"{type(err).__name__}: {err}")
        return ItemFeatures(
            utt_id=item.utt_id,
            fbank=fbank,
            face=face,
            face_found=found,
            frame_times=media.frame_times,
            has_video=media.has_video,
            duration=len(media.audio) / cfg.sample_rate,
            labels=dict(item.labels),
        )


def manifest_items(table, root: Path) -> list[ManifestItem]:
    """Rows of a validated manifest table → items with absolute paths and typed control columns."""
    items = []
    for row in table.to_dict("records"):
        path = Path(str(row["path"]))
        labels = {k: v for k, v in row.items() if k != "utt_id"}  # the index keeps the manifest's own path
        items.append(
            ManifestItem(
                utt_id=str(row["utt_id"]),
                path=str(path if path.is_absolute() else root / path),
                start=_optional_float(row.get("start")),
                end=_optional_float(row.get("end")),
                crop="full" if _missing(row.get("crop")) else str(row["crop"]),
                labels=labels,
            )
        )
    return items


def _missing(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def _optional_float(value: Any) -> float | None:
    return None if _missing(value) else float(value)

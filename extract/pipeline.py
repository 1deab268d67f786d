"""One manifest item → :class:`ItemFeatures`, or a :class:`Failure` saying at which stage and why."""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extract.cache.writer import ItemFeatures
from extract.config import ExtractConfig
from extract.decode import Decoded, DecodeError, MediaInfo, decode
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
    info: MediaInfo | None = None  # the scheduler's probe of the file, reused by decode; None: probe there


@dataclass(frozen=True)
class Failure:
    utt_id: str
    path: str
    stage: str  # input | probe | audio | video | fbank | faces
    reason: str

    def as_row(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class Loaded:
    """An item decoded and turned into log-mels: everything but the faces (the CPU half)."""

    item: ManifestItem
    media: Decoded
    fbank: np.ndarray
    duration: float  # seconds of decoded audio


def load_item(item: ManifestItem, cfg: ExtractConfig, logmel: LogMel) -> Loaded | Failure:
    """decode → log-mel, or the :class:`Failure` saying at which stage and why."""
    try:
        media = decode(item.path, cfg.sample_rate, cfg.fps, cfg.frame_size, item.crop, item.start, item.end, item.info)
        if len(media.audio) < cfg.win_samples:
            raise DecodeError(
                "fbank",
                f"audio is {len(media.audio) / cfg.sample_rate * 1000:.1f} ms, shorter than the "
                f"{cfg.win_ms:g} ms feature window",
            )
        fbank = logmel(media.audio)
        if not np.isfinite(fbank).all():
            raise DecodeError("fbank", "log-mel has non-finite values")
    except DecodeError as err:
        return Failure(item.utt_id, item.path, err.stage, err.reason)
    return Loaded(item, media, fbank, len(media.audio) / cfg.sample_rate)


def load_items(
    items: Iterable[ManifestItem], cfg: ExtractConfig, logmel: LogMel, prefetch: bool = True
) -> Iterator[Loaded | Failure]:
    """:func:`load_item` over ``items`` in order; with ``prefetch`` the next item decodes in a
    thread while the caller runs the face models on this one (ffmpeg runs in its own process, so
    the decode overlaps the models instead of waiting its turn)."""
    if not prefetch:
        yield from (load_item(item, cfg, logmel) for item in items)
        return
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        pending = None
        for item in items:
            ahead = pool.submit(load_item, item, cfg, logmel)
            if pending is not None:
                yield pending.result()
            pending = ahead
        if pending is not None:
            yield pending.result()


def finish(loaded: Loaded, face: np.ndarray, found: np.ndarray) -> ItemFeatures:
    """A loaded item and its faces → the record a shard stores."""
    media = loaded.media
    return ItemFeatures(
        utt_id=loaded.item.utt_id,
        fbank=loaded.fbank,
        face=face,
        face_found=found,
        frame_times=media.frame_times,
        has_video=media.has_video,
        duration=loaded.duration,
        labels=dict(loaded.item.labels),
    )


def embed_many(faces: FaceEmbedder, batch: list[Loaded]) -> list[ItemFeatures | Failure]:
    """Faces of several loaded items in one pass (``face_batch`` batches that span items, for a
    GPU; :meth:`FaceEmbedder.embed_clips`), split back per item.

    A model error fails every item of the pass: the items are retried one by one so only the
    one that breaks the models is lost.
    """
    if not batch:
        return []
    try:
        faces_found = faces.embed_clips([x.media.frames for x in batch])
    except Exception as err:  # a model error on one item must not end a million-item run
        if len(batch) == 1:
            return [Failure(batch[0].item.utt_id, batch[0].item.path, "faces", f"{type(err).__name__}: {err}")]
        return [out for x in batch for out in embed_many(faces, [x])]
    return [finish(x, face, found) for x, (face, found) in zip(batch, faces_found)]


class ItemExtractor:
    """decode → log-mel → faces, with the models built once per worker process."""

    def __init__(self, cfg: ExtractConfig, weights: FaceWeights, device: str = "cpu") -> None:
        self.cfg = cfg
        self.logmel = LogMel(cfg)  # on CPU: cheap next to the face models
        self.faces = FaceEmbedder(cfg, weights, device)

    def __call__(self, item: ManifestItem) -> ItemFeatures | Failure:
        return next(self.extract([item], prefetch=False))

    def extract(self, items: Iterable[ManifestItem], prefetch: bool = True) -> Iterator[ItemFeatures | Failure]:
        """Items in order, each decoded while the models run on the one before (``prefetch``)."""
        for loaded in load_items(items, self.cfg, self.logmel, prefetch):
            if isinstance(loaded, Failure):
                yield loaded
                continue
            try:
                face, found = self.faces(loaded.media.frames)
            except Exception as err:  # a model error on one item must not end a million-item run
                yield Failure(loaded.item.utt_id, loaded.item.path, "faces", f"{type(err).__name__}: {err}")
                continue
            yield finish(loaded, face, found)


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

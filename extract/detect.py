"""Face detection: the largest face of every frame, by a detector from :data:`FACE_DETECTORS`.

A detector takes a batch of uint8 RGB frames on its device and returns, on that device, one box
per frame (x1, y1, x2, y2 in pixels, float32) and a found mask; the ``face_detector`` setting
picks it, and the name is part of the cache's identity. Two are registered, both MTCNN with the
P/R/O-Net weights that ship in facenet-pytorch and the same ``min_face_size`` / ``face_thresholds``:

- ``mtcnn`` (default), :class:`BatchedMTCNN`: every stage runs on all frames of the batch at
  once and stays on the device (pyramid, P-Net, box regression, NMS keyed per frame, the R-Net
  and O-Net crops as gathers from one summed-area table per frame, the last stage's
  intersection-over-minimum NMS, the largest face). Python work per batch is a fixed number of
  tensor ops, none per frame or per box.
- ``mtcnn-facenet``, :class:`FacenetMTCNN`: facenet-pytorch's own ``detect_face``, whose R-Net and
  O-Net crops are cut and resized box by box in Python and whose last NMS runs in numpy. Kept as
  the reference the batched one is checked against (tests/test_extract_detect.py), and as the
  detector of caches written before the batched one existed.

:func:`keyframes` and :func:`carry` implement ``face_detect_every`` (detect on every k-th frame of a
clip, and on its last, and give the frames between the boxes of their two nearest detections).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from extract.config import ExtractConfig
from extract.detect_ops import area_crops, integral_image, largest_per_frame, min_nms_per_frame, nms_per_frame

#: facenet-pytorch's MTCNN defaults, kept so both detectors and old caches agree.
PYRAMID_FACTOR = 0.709
#: P-Net sees 12×12 windows at stride 2; R-Net and O-Net take 24² and 48² crops.
PNET_CELL, PNET_STRIDE, RNET_SIZE, ONET_SIZE = 12, 2, 24, 48
#: Candidates per R-Net / O-Net call: bounds the crops' memory (48² × 3 floats each) on a busy batch.
REFINE_CHUNK = 16384


class FaceDetector(ABC):
    """Frames → the largest face per frame. Registered under ``names`` (:func:`register_face_detector`)."""

    names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, cfg: ExtractConfig, device: torch.device) -> None:
        self.device = device
        self.min_face_size = cfg.min_face_size
        self.thresholds = tuple(cfg.face_thresholds)

    @abstractmethod
    def detect(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 (B, H, W, 3) frames on ``device`` → boxes (B, 4) float32 and found (B,) bool, on ``device``.

        A frame without a face has ``found`` False and a zero box.
        """


#: The detector registry: ``face_detector`` name → class.
FACE_DETECTORS: dict[str, type[FaceDetector]] = {}


def register_face_detector(cls: type[FaceDetector]) -> type[FaceDetector]:
    """Class decorator: make a :class:`FaceDetector` selectable by each of its ``names``."""
    for name in cls.names:
        if name in FACE_DETECTORS:
            raise ValueError(f"face_detector name {name!r} is taken by {FACE_DETECTORS[name].__name__}")
        FACE_DETECTORS[name] = cls
    return cls


def build_detector(cfg: ExtractConfig, device: torch.device) -> FaceDetector:
    """The detector ``cfg.face_detector`` names, on ``device``."""
    if cfg.face_detector not in FACE_DETECTORS:
        raise ValueError(f"face_detector {cfg.face_detector!r} is not one of {', '.join(FACE_DETECTORS)}")
    return FACE_DETECTORS[cfg.face_detector](cfg, device)


def mtcnn_networks(device: torch.device) -> tuple[torch.nn.Module, torch.nn.Module, torch.nn.Module]:
    """P-Net, R-Net, O-Net with the weights facenet-pytorch ships (read from the package, never downloaded)."""
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    return tuple(net().to(device).eval() for net in (PNet, RNet, ONet))  # type: ignore[return-value]


def pyramid_scales(height: int, width: int, min_face_size: int, factor: float = PYRAMID_FACTOR) -> list[float]:
    """The image pyramid's scales: the smallest face maps to P-Net's 12-px window, then shrink by
    ``factor`` until the shorter side is under 12 px (computed as facenet-pytorch does, float for float)."""
    scale = 12.0 / min_face_size
    shorter = min(height, width) * scale
    scales = []
    while shorter >= 12:
        scales.append(scale)
        scale *= factor
        shorter *= factor
    return scales


def _square(boxes: torch.Tensor) -> torch.Tensor:
    """Each box grown to a square about its centre (MTCNN's ``rerec``)."""
    w = boxes[:, 2] - boxes[:, 0]
    h = boxes[:, 3] - boxes[:, 1]
    side = torch.maximum(w, h)
    x1 = boxes[:, 0] + w * 0.5 - side * 0.5
    y1 = boxes[:, 1] + h * 0.5 - side * 0.5
    return torch.stack([x1, y1, x1 + side, y1 + side], dim=1)


def _regress(boxes: torch.Tensor, offsets: torch.Tensor, plus_one: bool) -> torch.Tensor:
    """Boxes moved by the networks' offsets (fractions of the box's size; R/O-Net count +1 pixel)."""
    w = boxes[:, 2] - boxes[:, 0] + (1 if plus_one else 0)
    h = boxes[:, 3] - boxes[:, 1] + (1 if plus_one else 0)
    return boxes + offsets * torch.stack([w, h, w, h], dim=1)


def _pixel_window(boxes: torch.Tensor, width: int, height: int) -> tuple[torch.Tensor, ...]:
    """The integer crop MTCNN cuts for a box: rows [y1 - 1, y2), columns [x1 - 1, x2) of the
    truncated corners clamped to [1, size] (1-based, as the MATLAB original), and whether it is
    non-empty."""
    corners = boxes.trunc().long()
    x1 = corners[:, 0].clamp(min=1) - 1
    y1 = corners[:, 1].clamp(min=1) - 1
    x2 = corners[:, 2].clamp(max=width)
    y2 = corners[:, 3].clamp(max=height)
    return y1, x1, y2, x2, (y2 > y1) & (x2 > x1)


@register_face_detector
class BatchedMTCNN(FaceDetector):
    """MTCNN with every stage batched over all frames and kept on the device (see the module docstring)."""

    names = ("mtcnn",)

    def __init__(self, cfg: ExtractConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.pnet, self.rnet, self.onet = mtcnn_networks(device)

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, height, width, _ = frames.shape
        if n == 0:
            return torch.zeros((0, 4), device=frames.device), torch.zeros(0, dtype=torch.bool, device=frames.device)
        boxes, frame = self.proposals(frames)
        table = integral_image(frames) if len(boxes) else None
        boxes, scores, frame = self._refine(table, boxes, frame, self.rnet, RNET_SIZE, self.thresholds[1], nms=True)
        boxes = _square(_regress(boxes[:, :4], boxes[:, 4:], plus_one=True)) if len(boxes) else boxes[:, :4]
        boxes, scores, frame = self._refine(table, boxes, frame, self.onet, ONET_SIZE, self.thresholds[2], nms=False)
        if len(boxes):
            boxes = _regress(boxes[:, :4], boxes[:, 4:], plus_one=True)
            keep = min_nms_per_frame(boxes, scores, frame, 0.7)
            boxes, scores, frame = boxes[keep], scores[keep], frame[keep]
        else:
            boxes = boxes[:, :4]
        best, found = largest_per_frame(boxes, scores, frame, n)
        return best.float(), found

    def proposals(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net over the pyramid: squared candidate boxes (N, 4) and their frames (N,)."""
        n, height, width, _ = frames.shape
        images = frames.permute(0, 3, 1, 2).float()
        found_boxes, found_scores, found_offsets, found_keys = [], [], [], []
        scales = pyramid_scales(height, width, self.min_face_size)
        for k, scale in enumerate(scales):
            resized = F.interpolate(images, size=(int(height * scale + 1), int(width * scale + 1)), mode="area")
            offsets, probs = self.pnet((resized - 127.5) * 0.0078125)
            face = probs[:, 1]
            hit = face >= self.thresholds[0]
            f, y, x = hit.nonzero(as_tuple=True)
            cell = torch.stack([x, y], dim=1).to(face.dtype)
            found_boxes.append(
                torch.cat(
                    [((PNET_STRIDE * cell + 1) / scale).floor(), ((PNET_STRIDE * cell + PNET_CELL) / scale).floor()],
                    dim=1,
                )
            )
            found_scores.append(face[f, y, x])
            found_offsets.append(offsets.permute(0, 2, 3, 1)[f, y, x])
            found_keys.append(f * len(scales) + k)
        if not scales:  # the frame is smaller than the smallest face
            return images.new_zeros((0, 4)), torch.zeros(0, dtype=torch.long, device=frames.device)
        boxes, scores = torch.cat(found_boxes), torch.cat(found_scores)
        offsets, keys = torch.cat(found_offsets), torch.cat(found_keys)
        keep = nms_per_frame(boxes, scores, keys, 0.5)  # within each (frame, scale)
        boxes, scores, offsets, frame = boxes[keep], scores[keep], offsets[keep], keys[keep] // len(scales)
        keep = nms_per_frame(boxes, scores, frame, 0.7)  # within each frame, across scales
        boxes, offsets, frame = boxes[keep], offsets[keep], frame[keep]
        return _square(_regress(boxes, offsets, plus_one=False)), frame

    def _refine(
        self,
        table: torch.Tensor | None,
        boxes: torch.Tensor,
        frame: torch.Tensor,
        net: torch.nn.Module,
        size: int,
        threshold: float,
        nms: bool,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """R-Net or O-Net on every candidate's crop: the candidates that pass (boxes with the
        network's offsets appended, (M, 8)), their scores and frames; with ``nms`` (R-Net) also
        NMS'd per frame."""
        empty = (boxes.new_zeros((0, 8)), boxes.new_zeros(0), frame[:0])
        if table is None or len(boxes) == 0:
            return empty
        height, width = table.shape[1] - 1, table.shape[2] - 1
        y1, x1, y2, x2, valid = _pixel_window(boxes, width, height)
        if not bool(valid.all()):  # a box wholly outside its frame has no pixels to look at
            boxes, frame, y1, x1, y2, x2 = (t[valid] for t in (boxes, frame, y1, x1, y2, x2))
            if len(boxes) == 0:
                return empty
        scores, offsets = [], []
        for lo in range(0, len(boxes), REFINE_CHUNK):
            part = slice(lo, lo + REFINE_CHUNK)
            crops = area_crops(table, frame[part], y1[part], x1[part], y2[part], x2[part], size)
            out = net((crops - 127.5) * 0.0078125)
            offsets.append(out[0])
            scores.append(out[-1][:, 1])
        score, offset = torch.cat(scores), torch.cat(offsets)
        passed = score > threshold
        boxes, score, offset, frame = boxes[passed], score[passed], offset[passed], frame[passed]
        if nms:
            keep = nms_per_frame(boxes, score, frame, 0.7)
            boxes, score, offset, frame = boxes[keep], score[keep], offset[keep], frame[keep]
        return torch.cat([boxes, offset], dim=1), score, frame


@register_face_detector
class FacenetMTCNN(FaceDetector):
    """facenet-pytorch's ``detect_face`` (per-box crops in Python, numpy NMS), then the largest
    face per frame on the host: the reference :class:`BatchedMTCNN` is checked against."""

    names = ("mtcnn-facenet",)

    def __init__(self, cfg: ExtractConfig, device: torch.device) -> None:
        super().__init__(cfg, device)
        self.pnet, self.rnet, self.onet = mtcnn_networks(device)

    @torch.inference_mode()
    def detect(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from facenet_pytorch.models.utils.detect_face import detect_face

        n = len(frames)
        boxes = np.zeros((n, 4), dtype=np.float32)
        found = np.zeros(n, dtype=bool)
        if n:
            nets, settings = (self.pnet, self.rnet, self.onet), (self.thresholds, PYRAMID_FACTOR, frames.device)
            found_boxes, _ = detect_face(frames, self.min_face_size, *nets, *settings)
            for i, candidates in enumerate(found_boxes):
                candidates = np.asarray(candidates, dtype=np.float64).reshape(-1, 5)  # x1, y1, x2, y2, probability
                if len(candidates):
                    area = (candidates[:, 2] - candidates[:, 0]) * (candidates[:, 3] - candidates[:, 1])
                    boxes[i], found[i] = candidates[np.argmax(area), :4], True
        return torch.from_numpy(boxes).to(frames.device), torch.from_numpy(found).to(frames.device)


# --------------------------------------------------------------------------- detect every k-th frame


def keyframes(lengths: list[int] | np.ndarray, every: int) -> np.ndarray:
    """Indices (into the clips' frames laid end to end) of the frames a detector runs on: every
    ``every``-th frame of each clip from its first, and each clip's last frame."""
    lengths = np.asarray(lengths, dtype=np.int64)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    total = int(lengths.sum())
    clip = np.repeat(np.arange(len(lengths)), lengths)
    t = np.arange(total) - starts[clip]
    return np.flatnonzero((t % every == 0) | (t == lengths[clip] - 1))


def carry(boxes: torch.Tensor, found: torch.Tensor, keys: np.ndarray, total: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Boxes and found flags for all ``total`` frames from the detections on ``keys`` (:func:`keyframes`).

    A frame between two detections of its clip takes the found flag of the nearer one (the
    earlier on a tie); its box is interpolated linearly between the two when both found a face,
    else it is the nearer one's. The first and last frames of every clip are detected, so the
    two detections around a frame always belong to its own clip.
    """
    frames = np.arange(total)
    after = np.searchsorted(keys, frames, side="left")  # first detection at or after the frame
    before = np.searchsorted(keys, frames, side="right") - 1  # last detection at or before it
    gap = keys[after] - keys[before]
    weight = np.divide(frames - keys[before], gap, out=np.zeros(total), where=gap > 0)
    nearer = np.where(weight <= 0.5, before, after)
    device = boxes.device
    before_t, after_t, nearer_t = (torch.from_numpy(a).to(device) for a in (before, after, nearer))
    w = torch.from_numpy(weight).to(device=device, dtype=boxes.dtype)[:, None]
    both = (found[before_t] & found[after_t])[:, None]
    mixed = torch.lerp(boxes[before_t], boxes[after_t], w)
    return torch.where(both, mixed, boxes[nearer_t]), found[nearer_t]

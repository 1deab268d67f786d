"""Face detection (MTCNN) and embedding (InceptionResnetV1), batched over a clip's frames.

``fixed_image_standardization`` is applied exactly once, in :meth:`FaceEmbedder.crops`, to the
aligned 160×160 crops; the embedder takes those crops as they are.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import MTCNN, InceptionResnetV1
from facenet_pytorch.models.mtcnn import fixed_image_standardization
from facenet_pytorch.models.utils.detect_face import detect_face, extract_face
from torch import nn

from common.device import resolve_device
from common.files import sha256_file
from extract.cache import FACE_DIM
from extract.config import ExtractConfig

CROP_SIZE = 160

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
    path: Path | None  # a local state-dict file, or None for `random`
    identity: str  # recorded in config.json and hashed into the cache id

    def build(self, seed: int) -> nn.Module:
        """An eval-mode InceptionResnetV1 with these weights (never downloads: the driver did)."""
        if self.path is None:
            return random_embedder(seed)
        state = torch.load(self.path, map_location="cpu", weights_only=True)
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}  # classifier head unused
        model = InceptionResnetV1(pretrained=None, classify=False)
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise FaceWeightsError(
                f"{self.path} is not an InceptionResnetV1 state dict "
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
                f"({type(err).__name__}: {err}). Offline, pass --face-weights PATH (a state dict file) or "
                "--face-weights random (seeded, for tests and pipelines that ignore face identity)."
            ) from None
    return target


def resolve_face_weights(spec: str, seed: int = 0) -> FaceWeights:
    """Turn a --face-weights value into a local file and an identity, failing now if it cannot."""
    if spec == "random":
        return FaceWeights(spec, None, f"random(seed={seed},init=he,rng=own)")
    if spec in PRETRAINED_FILES:
        path = _download_pretrained(spec)
        return FaceWeights(spec, path, f"{spec}:sha256={sha256_file(path)[:16]}")
    path = Path(spec).expanduser()
    if not path.is_file():
        raise FaceWeightsError(
            f"--face-weights {spec!r} is neither a known name ({', '.join([*PRETRAINED_FILES, 'random'])}) "
            "nor an existing file"
        )
    path = path.resolve()
    FaceWeights(spec, path, "").build(seed)  # fail now, not in every worker, if the file is wrong
    return FaceWeights(spec, path, f"file:sha256={sha256_file(path)[:16]}")


class FaceEmbedder(nn.Module):
    """uint8 RGB frames (F, H, W, 3) → per-frame 512-d embedding and a found mask.

    Frames where MTCNN finds no face get a zero row and ``found=False``; they are never given a
    crop or an embedding that could pass for a face. When a frame holds several faces the largest
    is kept (the speaker is usually the face nearest the camera).

    Detection calls facenet-pytorch's batched ``detect_face`` directly rather than ``MTCNN.forward``:
    the latter fails on a batch that mixes frames with and without faces under numpy ≥ 2, and doing
    the selection here makes the one standardisation step explicit.
    """

    def __init__(self, cfg: ExtractConfig, weights: FaceWeights, device: str = "cpu") -> None:
        super().__init__()
        self.batch = cfg.face_batch
        self.margin = cfg.face_margin
        self.device = resolve_device(device)
        self.detector = MTCNN(
            image_size=CROP_SIZE,
            margin=cfg.face_margin,
            min_face_size=cfg.min_face_size,
            thresholds=list(cfg.face_thresholds),
            device=self.device,
        )
        # channels_last: oneDNN's faster convolution layout on CPU (~20% here), and the tensor-core
        # one on GPU; the embeddings differ from the default layout by ~1e-7 (float rounding).
        self.embedder = weights.build(cfg.face_seed).to(self.device, memory_format=torch.channels_last)
        self.eval()

    def _largest_boxes(self, frames: torch.Tensor) -> list[np.ndarray | None]:
        d = self.detector  # detect_face moves the frames to the device itself
        boxes, _ = detect_face(frames, d.min_face_size, d.pnet, d.rnet, d.onet, d.thresholds, d.factor, self.device)
        picked: list[np.ndarray | None] = []
        for found in boxes:
            found = np.asarray(found, dtype=np.float64).reshape(-1, 5)  # x1, y1, x2, y2, probability
            if len(found) == 0:
                picked.append(None)
                continue
            area = (found[:, 2] - found[:, 0]) * (found[:, 3] - found[:, 1])
            picked.append(found[np.argmax(area), :4])
        return picked

    @torch.inference_mode()
    def crops(self, frames: np.ndarray) -> tuple[torch.Tensor, np.ndarray]:
        """Standardised aligned crops (N_found, 3, 160, 160) and the found mask (F,)."""
        _check_frames(frames)
        found = np.zeros(len(frames), dtype=bool)
        crops: list[torch.Tensor] = []
        # A uint8 tensor keeps facenet-pytorch on its torch resize path (its numpy path needs cv2).
        video = torch.tensor(frames)  # a copy: decoded frames are a read-only buffer
        for lo in range(0, len(frames), self.batch):
            batch = video[lo : lo + self.batch]
            for i, box in enumerate(self._largest_boxes(batch)):
                if box is not None:
                    found[lo + i] = True
                    crops.append(extract_face(batch[i], box, CROP_SIZE, self.margin))  # CPU, 0..255 floats
        if not crops:
            return torch.zeros(0, 3, CROP_SIZE, CROP_SIZE), found
        return fixed_image_standardization(torch.stack(crops)), found  # the one and only time

    @torch.inference_mode()
    def forward(self, frames: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        crops, found = self.crops(frames)
        emb = np.zeros((len(frames), FACE_DIM), dtype=np.float32)
        if len(crops):
            batches = (
                crops[lo : lo + self.batch].to(self.device, memory_format=torch.channels_last)
                for lo in range(0, len(crops), self.batch)
            )
            emb[found] = torch.cat([self.embedder(b).cpu() for b in batches]).numpy()
        return emb, found


def _check_frames(frames: np.ndarray) -> None:
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames must be uint8 RGB (F, H, W, 3), got {frames.dtype} {frames.shape}")

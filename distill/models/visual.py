"""Visual encoders: per-frame face embeddings (N, F, 512) + found-mask (N, F) → (N, D).

Frames where no face was found carry no evidence: their values are zeroed before any layer reads
them and they get zero attention weight. A crop with no face at all (video missing, or the
detector never fired) maps to a learned "no face" embedding, never to NaN.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.models.config import ModelConfig
from distill.models.normalize import FaceNorm
from distill.models.pooling import MaskedAttentivePooling
from distill.models.registry import Registry

VISUAL_ENCODERS: Registry[type[nn.Module]] = Registry("visual encoder")


class _FaceEncoder(nn.Module):
    """Shared frame projection, masking, pooling and "no face" fallback; subclasses add context."""

    def __init__(self, face_dim: int = 512, dim: int = 64, dropout: float = 0.1, norm: str = "standardize") -> None:
        super().__init__()
        self.face_dim, self.out_dim = face_dim, dim
        self.norm = FaceNorm(face_dim, norm)
        self.frame = nn.Sequential(nn.Linear(face_dim, dim), nn.LayerNorm(dim), nn.ReLU(), nn.Dropout(dropout))
        self.pool = MaskedAttentivePooling(dim)
        self.out = nn.Linear(dim, dim)
        self.no_face = nn.Parameter(0.02 * torch.randn(dim))

    @classmethod
    def from_config(cls, cfg: ModelConfig, face_dim: int) -> _FaceEncoder:
        return cls(face_dim, cfg.visual_dim, cfg.dropout, norm=cfg.face_norm)

    def context(self, frames: Tensor, mask: Tensor) -> Tensor:
        """Per-frame features → per-frame features with context; identity here."""
        return frames

    def forward(self, face: Tensor, face_mask: Tensor) -> Tensor:
        if face.dim() != 3 or face.shape[-1] != self.face_dim:
            raise ValueError(f"visual encoder expects face (N, F, {self.face_dim}), got {tuple(face.shape)}")
        if face_mask.shape != face.shape[:2] or face_mask.dtype != torch.bool:
            raise ValueError(
                f"face_mask must be bool of shape {tuple(face.shape[:2])}, "
                f"got {face_mask.dtype} {tuple(face_mask.shape)}"
            )
        keep = face_mask.unsqueeze(-1)
        frames = self.frame(self.norm(face).masked_fill(~keep, 0.0)).masked_fill(~keep, 0.0)
        pooled, present = self.pool(self.context(frames, face_mask), face_mask)
        emb = self.out(pooled)
        return torch.where(present.unsqueeze(-1), emb, self.no_face.to(emb.dtype))


@VISUAL_ENCODERS.register("attentive")
class AttentiveFaceEncoder(_FaceEncoder):
    """Frame projection + masked attentive pooling: order-free, the cheap default.

    Face embeddings of one speaker are nearly constant over a clip, so which frames are good
    (frontal, sharp) matters more than their order.
    """


@VISUAL_ENCODERS.register("temporal")
class TemporalFaceEncoder(_FaceEncoder):
    """Adds a residual temporal convolution over neighbouring frames before pooling.

    Lets the encoder see short facial dynamics (mouth movement, expression changes) for emotion.
    Missing neighbours contribute exactly zero, never their stored values.
    """

    def __init__(
        self, face_dim: int = 512, dim: int = 64, dropout: float = 0.1, norm: str = "standardize", kernel_size: int = 3
    ) -> None:
        super().__init__(face_dim, dim, dropout, norm)
        if kernel_size % 2 == 0:
            raise ValueError(
                f"temporal visual encoder: kernel_size must be odd to keep frame alignment, got {kernel_size}"
            )
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2)

    def context(self, frames: Tensor, mask: Tensor) -> Tensor:
        mixed = self.conv(frames.transpose(1, 2)).transpose(1, 2)
        return (frames + torch.relu(mixed)).masked_fill(~mask.unsqueeze(-1), 0.0)

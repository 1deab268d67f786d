"""Teacher fusion: audio embedding (N, Da) + visual embedding (N, Dv) → teacher embedding (N, D)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.models.config import ModelConfig
from distill.models.registry import Registry

FUSIONS: Registry[type[nn.Module]] = Registry("fusion")


@FUSIONS.register("concat")
class ConcatFusion(nn.Module):
    """Concatenate, then a one-hidden-layer MLP: lets the teacher learn any cross-modal interaction."""

    def __init__(self, audio_dim: int, visual_dim: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.mlp = nn.Sequential(
            nn.Linear(audio_dim + visual_dim, out_dim), nn.ReLU(), nn.Dropout(dropout), nn.Linear(out_dim, out_dim)
        )

    @classmethod
    def from_config(cls, cfg: ModelConfig, audio_dim: int, visual_dim: int) -> ConcatFusion:
        return cls(audio_dim, visual_dim, cfg.emb_dim, cfg.dropout)

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        return self.mlp(torch.cat([audio, visual], dim=-1))


@FUSIONS.register("gated")
class GatedFusion(nn.Module):
    """Per-dimension sigmoid gate between projected audio and visual embeddings.

    The gate sees both inputs, so it can learn to lean on audio when the visual input is the
    "no face" embedding; the output stays a convex mix of the two projections.
    """

    def __init__(self, audio_dim: int, visual_dim: int, out_dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.audio = nn.Linear(audio_dim, out_dim)
        self.visual = nn.Sequential(nn.Dropout(dropout), nn.Linear(visual_dim, out_dim))
        self.gate = nn.Linear(audio_dim + visual_dim, out_dim)

    @classmethod
    def from_config(cls, cfg: ModelConfig, audio_dim: int, visual_dim: int) -> GatedFusion:
        return cls(audio_dim, visual_dim, cfg.emb_dim, cfg.dropout)

    def forward(self, audio: Tensor, visual: Tensor) -> Tensor:
        g = torch.sigmoid(self.gate(torch.cat([audio, visual], dim=-1)))
        return g * self.audio(audio) + (1.0 - g) * self.visual(visual)

"""Masked attentive pooling, shared by the visual encoder (over frames) and the segment aggregator.

The mask is the whole point: an element whose mask is False gets a weight of exactly zero and
its value is replaced by zero before anything reads it, so it can never act as evidence (nor
leak NaN/inf into the output or the gradients). A row with no valid element pools to zeros and
is reported in ``present`` so the caller can substitute a learned embedding.

Under autocast the scores are in the lower dtype whatever the input's: the masked fill is the
scores' own smallest value, never a limit of another dtype.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class MaskedAttentivePooling(nn.Module):
    """Additive attention (Bahdanau-style scorer) over axis 1 of (N, L, D), honouring a (N, L) mask."""

    def __init__(self, in_dim: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_dim
        self.score = nn.Sequential(nn.Linear(in_dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))

    def forward(self, x: Tensor, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Return ``(pooled (N, D), present (N,) bool)``; ``mask=None`` means every element is valid."""
        if mask is None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match elements {tuple(x.shape[:2])}")
        x = x.masked_fill(~mask.unsqueeze(-1), 0.0)
        scores = self.score(x).squeeze(-1)
        # The fill must fit the scores' own dtype: under autocast they are bf16/fp16 while ``x`` may be
        # float32 (CUDA runs layer_norm in float32), and float32's extremes overflow bf16.
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        # An all-masked row softmaxes to uniform over finite scores; the mask product zeroes it.
        weights = scores.softmax(dim=-1) * mask
        return torch.einsum("nl,nld->nd", weights, x), mask.any(dim=-1)

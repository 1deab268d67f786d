"""Segment aggregators for the sequential setting: per-segment embeddings (B, S, D) → (B, D_agg).

``seg_mask`` (B, S) bool marks real segments when utterances of different lengths are padded to
one S; ``None`` means every segment is real. Padded segments never influence the output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from distill.models.config import ModelConfig
from distill.models.pooling import MaskedAttentivePooling
from distill.models.registry import Registry

AGGREGATORS: Registry[type[nn.Module]] = Registry("aggregator")


def _check(x: Tensor, seg_mask: Tensor | None) -> None:
    if x.dim() != 3:
        raise ValueError(f"aggregator expects segments (B, S, D), got {tuple(x.shape)}")
    if seg_mask is not None:
        if seg_mask.shape != x.shape[:2] or seg_mask.dtype != torch.bool:
            raise ValueError(
                f"seg_mask must be bool of shape {tuple(x.shape[:2])}, got {seg_mask.dtype} {tuple(seg_mask.shape)}"
            )
        empty = (~seg_mask.any(dim=1)).nonzero().flatten().tolist()
        if empty:
            raise ValueError(f"batch item(s) {empty} have no valid segment to aggregate")


@AGGREGATORS.register("bilstm")
class BiLSTMAggregator(nn.Module):
    """Bidirectional LSTM; the embedding is the last layer's final forward and backward states.

    Reads the segments in order, so it can model how an utterance evolves (useful for emotion).
    Padding must be trailing (valid segments first); packed sequences keep it out of the states.
    """

    def __init__(self, in_dim: int, out_dim: int = 64, num_layers: int = 1, dropout: float = 0.1) -> None:
        super().__init__()
        if out_dim % 2:
            raise ValueError(f"bilstm aggregator: out_dim={out_dim} must be even (two directions)")
        self.out_dim = out_dim
        self.lstm = nn.LSTM(
            in_dim,
            out_dim // 2,
            num_layers=num_layers,
            batch_first=True,
            bidirectional=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int) -> BiLSTMAggregator:
        return cls(in_dim, cfg.agg_dim, cfg.agg_layers, cfg.dropout)

    def forward(self, x: Tensor, seg_mask: Tensor | None = None) -> Tensor:
        _check(x, seg_mask)
        if seg_mask is None:
            _, (h, _) = self.lstm(x)
        else:
            lengths = seg_mask.sum(dim=1)
            if not torch.equal(seg_mask, torch.arange(x.shape[1], device=x.device) < lengths.unsqueeze(1)):
                raise ValueError("bilstm aggregator: seg_mask must mark a prefix (padding only at the end)")
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, (h, _) = self.lstm(packed)
        return torch.cat([h[-2], h[-1]], dim=-1)


@AGGREGATORS.register("attention")
class AttentionAggregator(nn.Module):
    """Masked attentive pooling over segments, then a linear map: weights informative segments."""

    def __init__(self, in_dim: int, out_dim: int = 64, dropout: float = 0.1) -> None:
        super().__init__()
        self.out_dim = out_dim
        self.pool = MaskedAttentivePooling(in_dim)
        self.out = nn.Sequential(nn.Dropout(dropout), nn.Linear(in_dim, out_dim))

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int) -> AttentionAggregator:
        return cls(in_dim, cfg.agg_dim, cfg.dropout)

    def forward(self, x: Tensor, seg_mask: Tensor | None = None) -> Tensor:
        _check(x, seg_mask)
        pooled, _ = self.pool(x, seg_mask)
        return self.out(pooled)


def sinusoidal_positions(n: int, dim: int, device: torch.device | None = None) -> Tensor:
    """(n, dim) sine/cosine position codes (Vaswani et al. 2017); no maximum sequence length."""
    pos = torch.arange(n, device=device, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(n, dim, device=device)
    codes[:, 0::2] = torch.sin(pos * freq)
    codes[:, 1::2] = torch.cos(pos * freq[: dim // 2])
    return codes


@AGGREGATORS.register("transformer")
class TransformerAggregator(nn.Module):
    """Pre-norm transformer encoder over segments with a learned [CLS] token as the embedding.

    Every segment can attend to every other one (long-range context, order via sinusoidal
    positions); padded segments are excluded with the key-padding mask.
    """

    def __init__(
        self, in_dim: int, out_dim: int = 64, num_layers: int = 1, n_heads: int = 4, dropout: float = 0.1
    ) -> None:
        super().__init__()
        if out_dim % n_heads:
            raise ValueError(f"transformer aggregator: out_dim={out_dim} must be divisible by n_heads={n_heads}")
        self.out_dim = out_dim
        self.proj = nn.Linear(in_dim, out_dim)
        self.cls = nn.Parameter(0.02 * torch.randn(out_dim))
        layer = nn.TransformerEncoderLayer(
            out_dim, n_heads, dim_feedforward=2 * out_dim, dropout=dropout, batch_first=True, norm_first=True
        )
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(out_dim), enable_nested_tensor=False)

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int) -> TransformerAggregator:
        return cls(in_dim, cfg.agg_dim, cfg.agg_layers, cfg.agg_heads, cfg.dropout)

    def forward(self, x: Tensor, seg_mask: Tensor | None = None) -> Tensor:
        _check(x, seg_mask)
        b, s, _ = x.shape
        tokens = torch.cat([self.cls.expand(b, 1, -1), self.proj(x)], dim=1)
        tokens = tokens + sinusoidal_positions(s + 1, self.out_dim, x.device).to(tokens.dtype)
        padding = None
        if seg_mask is not None:
            padding = torch.cat([seg_mask.new_zeros(b, 1), ~seg_mask], dim=1)
        return self.encoder(tokens, src_key_padding_mask=padding)[:, 0]

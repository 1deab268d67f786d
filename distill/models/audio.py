"""Audio encoders: log-mel frames (N, T, n_mels) → one embedding per crop or segment (N, D).

Thin wrappers around speechbrain's lobes, so the architecture is the one the speaker-recognition
recipes use and only the sizes are ours. Every encoder exposes ``out_dim``.
"""

from __future__ import annotations

from torch import Tensor, nn
from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.lobes.models.Xvector import Xvector

from distill.models.config import ModelConfig
from distill.models.registry import Registry

AUDIO_ENCODERS: Registry[type[nn.Module]] = Registry("audio encoder")


def _check_fbank(fbank: Tensor, n_mels: int) -> None:
    if fbank.dim() != 3 or fbank.shape[-1] != n_mels:
        raise ValueError(f"audio encoder expects fbank (N, T, {n_mels}), got shape {tuple(fbank.shape)}")


@AUDIO_ENCODERS.register("ecapa")
class EcapaEncoder(nn.Module):
    """ECAPA-TDNN (Desplanques et al. 2020), sized by one width.

    ``channels`` sets the four TDNN/SE-Res2Net layers; the multi-layer aggregation layer is 3x
    wider, and attention/SE bottlenecks are channels/8, the ratios of the 1024-channel recipe.
    """

    def __init__(self, n_mels: int, channels: int = 64, emb_dim: int = 64, res2net_scale: int = 8) -> None:
        super().__init__()
        if channels % res2net_scale:
            raise ValueError(f"ecapa: channels={channels} must be divisible by res2net_scale={res2net_scale}")
        bottleneck = max(channels // 8, 8)
        self.n_mels, self.out_dim = n_mels, emb_dim
        self.net = ECAPA_TDNN(
            n_mels,
            lin_neurons=emb_dim,
            channels=[channels] * 4 + [3 * channels],
            attention_channels=bottleneck,
            se_channels=bottleneck,
            res2net_scale=res2net_scale,
        )

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_mels: int) -> "EcapaEncoder":
        return cls(n_mels, cfg.audio_channels, cfg.emb_dim, cfg.res2net_scale)

    def forward(self, fbank: Tensor) -> Tensor:
        _check_fbank(fbank, self.n_mels)
        if self.training and fbank.shape[0] < 2:
            # BatchNorm over one pooled vector per item has no batch statistics to learn from.
            raise ValueError("ecapa: training needs at least 2 crops/segments per batch (use drop_last=True)")
        return self.net(fbank).squeeze(1)


@AUDIO_ENCODERS.register("xvector")
class XvectorEncoder(nn.Module):
    """x-vector TDNN (Snyder et al. 2018) with statistics pooling: the cheaper classic alternative."""

    def __init__(self, n_mels: int, channels: int = 64, emb_dim: int = 64) -> None:
        super().__init__()
        self.n_mels, self.out_dim = n_mels, emb_dim
        self.net = Xvector(in_channels=n_mels, tdnn_channels=[channels] * 4 + [3 * channels], lin_neurons=emb_dim)

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_mels: int) -> "XvectorEncoder":
        return cls(n_mels, cfg.audio_channels, cfg.emb_dim)

    def forward(self, fbank: Tensor) -> Tensor:
        _check_fbank(fbank, self.n_mels)
        return self.net(fbank).squeeze(1)

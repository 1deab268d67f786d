"""Audio encoders: log-mel frames (N, T, n_mels) → one embedding per crop or segment (N, D).

Thin wrappers around speechbrain's lobes, so the architecture is the one the speaker-recognition
recipes use and only the sizes are ours. Every encoder exposes ``out_dim``.
"""

from __future__ import annotations

from speechbrain.lobes.models.ECAPA_TDNN import ECAPA_TDNN
from speechbrain.lobes.models.ResNet import ResNet
from speechbrain.lobes.models.Xvector import Xvector
from torch import Tensor, nn

from distill.models.config import ModelConfig
from distill.models.registry import Registry

AUDIO_ENCODERS: Registry[type[nn.Module]] = Registry("audio encoder")


def _check_fbank(fbank: Tensor, n_mels: int) -> None:
    if fbank.dim() != 3 or fbank.shape[-1] != n_mels:
        raise ValueError(f"audio encoder expects fbank (N, T, {n_mels}), got shape {tuple(fbank.shape)}")


def _check_training_batch(name: str, module: nn.Module, fbank: Tensor) -> None:
    if module.training and fbank.shape[0] < 2:
        # BatchNorm over one pooled vector per item has no batch statistics to learn from.
        raise ValueError(f"{name}: training needs at least 2 crops/segments per batch (use drop_last=True)")


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
    def from_config(cls, cfg: ModelConfig, n_mels: int) -> EcapaEncoder:
        return cls(n_mels, cfg.audio_channels, cfg.emb_dim, cfg.res2net_scale)

    def forward(self, fbank: Tensor) -> Tensor:
        _check_fbank(fbank, self.n_mels)
        _check_training_batch("ecapa", self, fbank)
        return self.net(fbank).squeeze(1)


@AUDIO_ENCODERS.register("xvector")
class XvectorEncoder(nn.Module):
    """x-vector TDNN (Snyder et al. 2018) with statistics pooling: the cheaper classic alternative."""

    def __init__(self, n_mels: int, channels: int = 64, emb_dim: int = 64) -> None:
        super().__init__()
        self.n_mels, self.out_dim = n_mels, emb_dim
        self.net = Xvector(in_channels=n_mels, tdnn_channels=[channels] * 4 + [3 * channels], lin_neurons=emb_dim)

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_mels: int) -> XvectorEncoder:
        return cls(n_mels, cfg.audio_channels, cfg.emb_dim)

    def forward(self, fbank: Tensor) -> Tensor:
        _check_fbank(fbank, self.n_mels)
        return self.net(fbank).squeeze(1)


@AUDIO_ENCODERS.register("resnet")
class ResNetEncoder(nn.Module):
    """SE-ResNet over the (time, mel) plane with attentive statistics pooling: speechbrain's
    VoxCeleb ResNet lobe (the ResNet-34 layout of WeSpeaker's strongest baselines).

    Its 2-D convolutions see local time-frequency patterns that a TDNN, convolving over time
    only, does not. Stages are ``[C, C, 2C, 2C]`` wide with ``blocks`` residual blocks each; the
    mel axis is strided 8x. The stronger choice on a GPU, the costly one on CPU.
    """

    def __init__(
        self, n_mels: int, channels: int = 64, emb_dim: int = 64, blocks: tuple[int, ...] | list[int] = (3, 4, 6, 3)
    ) -> None:
        super().__init__()
        blocks = [int(b) for b in blocks]
        if len(blocks) != 4 or min(blocks) < 1:
            raise ValueError(f"resnet: blocks must be 4 positive counts, one per stage, got {blocks}")
        self.n_mels, self.out_dim = n_mels, emb_dim
        self.net = ResNet(
            input_size=n_mels,
            channels=[channels, channels, 2 * channels, 2 * channels],
            block_sizes=blocks,
            strides=[1, 2, 2, 2],
            lin_neurons=emb_dim,
        )

    @classmethod
    def from_config(cls, cfg: ModelConfig, n_mels: int) -> ResNetEncoder:
        return cls(n_mels, cfg.audio_channels, cfg.emb_dim, cfg.resnet_blocks)

    def forward(self, fbank: Tensor) -> Tensor:
        _check_fbank(fbank, self.n_mels)
        _check_training_batch("resnet", self, fbank)
        return self.net(fbank)

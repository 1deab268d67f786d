"""The one dataclass that describes a network; it is what ``config.yaml`` stores under ``model``.

Defaults are sized for CPU: a teacher or student of these sizes trains an epoch over ~150
two-second items in a few seconds on two cores. The recipe sizes for real runs are given in
the field comments (and in docs/models.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

#: Input normalisations (docs/method.md): the allowed values of ``fbank_norm`` and ``face_norm``.
FbankNorm = Literal["none", "global", "utterance"]
FaceNorm = Literal["none", "standardize", "whiten"]
FBANK_NORMS: tuple[str, ...] = get_args(FbankNorm)
FACE_NORMS: tuple[str, ...] = get_args(FaceNorm)


@dataclass
class ModelConfig:
    # Audio encoder (both roles). Real runs: ecapa, audio_channels=1024, emb_dim=192
    # (or resnet, audio_channels=128, emb_dim=256).
    audio_encoder: str = "ecapa"  # a registered audio encoder
    audio_channels: int = 64  # TDNN / SE-Res2Net width (the MFA layer is 3x this); resnet: first stage
    emb_dim: int = 64  # encoder embedding width (the teacher's fused embedding has this width too)
    res2net_scale: int = 8  # ECAPA Res2Net branches; audio_channels must be divisible by it
    # Input normalisation with training statistics (stored in the checkpoint; docs/method.md).
    fbank_norm: FbankNorm = "global"  # global: per mel band, training split; utterance: per crop/segment
    face_norm: FaceNorm = "standardize"  # teacher: standardize per dimension, or whiten (ZCA)
    resnet_blocks: list[int] = field(default_factory=lambda: [3, 4, 6, 3])  # per stage: ResNet-34

    # Visual encoder and fusion (teacher only).
    visual_encoder: str = "attentive"  # a registered visual encoder (teacher)
    visual_dim: int = 64  # width of per-frame projections and of the visual embedding
    fusion: str = "concat"  # how the teacher joins audio and faces
    face_dropout: float = 0.0  # training-time probability of hiding an item's whole face track;
    # 1.0 hides it at evaluation too: the audio-only teacher of the privileged-information control

    # Aggregation over segments (sequential setting only).
    aggregator: str = "attention"  # over segments (seq)
    agg_dim: int = 64  # aggregated embedding width (bilstm: 2 x hidden, so must be even)
    agg_layers: int = 1  # bilstm / transformer depth
    agg_heads: int = 4  # transformer attention heads; agg_dim must be divisible by it

    # Task header.
    header: str = "linear"  # aam: additive angular margin softmax (speaker)
    aam_margin: float = 0.2  # additive angular margin (radians), speechbrain VoxCeleb recipe
    aam_scale: float = 30.0  # cosine scale, speechbrain VoxCeleb recipe

    dropout: float = 0.1  # in the visual encoder, fusion MLP and aggregator (not in the audio encoder)

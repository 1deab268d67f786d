"""Task headers: embedding (N, D) → logits (N, C). Cross-entropy on the logits is the task loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from speechbrain.nnet.losses import AdditiveAngularMargin
from torch import Tensor, nn

from distill.models.config import ModelConfig
from distill.models.registry import Registry
from distill.precision import full_precision

HEADS: Registry[type[nn.Module]] = Registry("header")


@HEADS.register("linear")
class LinearHead(nn.Module):
    """Plain softmax classifier; the default for emotion and small speaker sets."""

    #: Whether ``labels`` change the logits (a training margin); soft-label losses then need a
    #: second, label-free call.
    uses_labels = False

    def __init__(self, in_dim: int, n_classes: int) -> None:
        super().__init__()
        self.n_classes = n_classes
        self.fc = nn.Linear(in_dim, n_classes)

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int, n_classes: int) -> LinearHead:
        return cls(in_dim, n_classes)

    def forward(self, emb: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.fc(emb)


@HEADS.register("aam")
class AAMHead(nn.Module):
    """Additive angular margin softmax (ArcFace; speechbrain's ``AdditiveAngularMargin``).

    Logits are ``scale * cos(theta)`` between the normalised embedding and class weights. The
    margin (``cos(theta_y + m)`` on the true class) is applied only when ``labels`` are given:
    it shapes training, while evaluation and soft-label targets must see the plain cosines.
    """

    uses_labels = True

    def __init__(self, in_dim: int, n_classes: int, margin: float = 0.2, scale: float = 30.0) -> None:
        super().__init__()
        self.n_classes, self.scale = n_classes, scale
        self.weight = nn.Parameter(torch.empty(n_classes, in_dim))
        nn.init.xavier_uniform_(self.weight)
        self.margin = AdditiveAngularMargin(margin=margin, scale=scale)

    @classmethod
    def from_config(cls, cfg: ModelConfig, in_dim: int, n_classes: int) -> AAMHead:
        return cls(in_dim, n_classes, cfg.aam_margin, cfg.aam_scale)

    def forward(self, emb: Tensor, labels: Tensor | None = None) -> Tensor:
        # float32 whatever autocast the network runs in: in bf16 every cosine above 0.996 rounds to 1,
        # where the margin's clamp passes no gradient, and the logits move in steps of 0.12 (scale 30)
        with full_precision(emb.device):
            cosine = F.linear(F.normalize(emb.float(), dim=-1), F.normalize(self.weight.float(), dim=-1))
        if labels is None:
            return self.scale * cosine
        if labels.shape != emb.shape[:1]:
            raise ValueError(f"aam header: labels must have shape ({emb.shape[0]},), got {tuple(labels.shape)}")
        # an item without a label (-1: the transfer set) gets no margin: its one-hot row is all zero
        one_hot = F.one_hot(labels.clamp(min=0), self.n_classes) * (labels >= 0).unsqueeze(-1)
        return self.margin(cosine, one_hot.to(cosine.dtype))

"""Distances between a student's and a teacher's embeddings, registered by the names configs use
(``distill.distance``: mse, l1, smooth_l1, cosine).

Means over every leading axis (batch, and segments in the sequential setting); mse / l1 /
smooth_l1 also over the embedding width, so their scale does not grow with it. The teacher side is
detached (a target, never trained by the student's loss) and both sides are taken in float32.
Kept with the networks' other registries so that the config can check a name without the training
stack.
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from distill.models.registry import Registry

Distance = Callable[[Tensor, Tensor], Tensor]
DISTANCES: Registry[Distance] = Registry("distance")


def _pair(student: Tensor, teacher: Tensor) -> tuple[Tensor, Tensor]:
    if student.shape != teacher.shape:
        raise ValueError(
            f"student embedding {tuple(student.shape)} and teacher embedding {tuple(teacher.shape)} differ in shape"
        )
    return student.float(), teacher.detach().float()


@DISTANCES.register("mse")
def mse_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean squared error over all elements."""
    s, t = _pair(student, teacher)
    return F.mse_loss(s, t)


@DISTANCES.register("l1")
def l1_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean absolute error over all elements: less pulled by a few large teacher coordinates."""
    s, t = _pair(student, teacher)
    return F.l1_loss(s, t)


@DISTANCES.register("smooth_l1")
def smooth_l1_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Huber-style (beta = 1): quadratic near the target, linear far from it."""
    s, t = _pair(student, teacher)
    return F.smooth_l1_loss(s, t, beta=1.0)


@DISTANCES.register("cosine")
def cosine_distance(student: Tensor, teacher: Tensor) -> Tensor:
    """Mean of ``1 - cos(s, t)`` per embedding: matches direction only, which is what cosine scoring uses."""
    s, t = _pair(student, teacher)
    return (1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-8)).mean()

"""Input normalisation from training statistics, stored as buffers (so in every checkpoint).

Why: stored FaceNet embeddings are unit vectors that share one dominant direction (any two faces
at cosine ~0.99), so who is speaking lives in a small residual; un-normalised, a teacher's frame
projection does not pick it out in a short budget and the teacher leans on the audio. Log-mels
have large per-band offsets. Each branch therefore starts with a normaliser whose statistics are
computed once from the training split (``distill.normalize``) before training. They are buffers of
the network, so ``best.pt`` carries them and every path that runs the network (training,
validation, teacher targets, ``distill eval``, ``embed``) applies them identically.

A normaliser that has not been fitted yet is the identity (mean 0, scale 1): networks built for
tests or loaded from a checkpoint behave as their buffers say, nothing is guessed at run time.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from distill.models.config import FACE_NORMS, FBANK_NORMS

#: a dimension whose std is below this fraction of the largest std is not blown up to unit variance
REL_STD_FLOOR = 1e-3


class _FittedNorm(nn.Module):
    """Shared bookkeeping: the mode, and whether training statistics were loaded."""

    modes: tuple[str, ...] = ()
    needs_stats: tuple[str, ...] = ()

    def __init__(self, mode: str) -> None:
        super().__init__()
        if mode not in self.modes:
            raise ValueError(f"{type(self).__name__}: unknown mode {mode!r}; choose one of {', '.join(self.modes)}")
        self.mode = mode
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def needs_fit(self) -> bool:
        return self.mode in self.needs_stats and not bool(self.fitted)

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, fitted={bool(self.fitted)}"


class FbankNorm(_FittedNorm):
    """Log-mel mean/variance normalisation, as speechbrain's ``InputNormalization``.

    ``global``: per mel band, mean and std over every frame of the training split.
    ``utterance``: per mel band over the frames of the input itself (a crop in ``nonseq``, a
    segment in ``seq``: what the encoder sees, at training and at inference alike); no statistics.
    ``none``: the identity. Input (N, T, n_mels).
    """

    modes = FBANK_NORMS
    needs_stats = ("global",)

    def __init__(self, n_mels: int, mode: str = "global", eps: float = 1e-5) -> None:
        super().__init__(mode)
        self.n_mels, self.eps = n_mels, eps
        self.register_buffer("mean", torch.zeros(n_mels))
        self.register_buffer("std", torch.ones(n_mels))

    def set_statistics(self, mean: Tensor, std: Tensor) -> None:
        """In place (``copy_``), so a module already wrapped by DDP sees the new values."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        self.std.copy_(_floored(torch.as_tensor(std, dtype=self.std.dtype)))
        self.fitted.fill_(True)

    def forward(self, fbank: Tensor) -> Tensor:
        if self.mode == "none":
            return fbank
        if self.mode == "utterance":
            mean = fbank.mean(dim=-2, keepdim=True)
            std = fbank.std(dim=-2, keepdim=True, unbiased=False)
            return (fbank - mean) / (std + self.eps)
        return (fbank - self.mean.to(fbank.dtype)) / self.std.to(fbank.dtype)


class FaceNorm(_FittedNorm):
    """Face embedding normalisation with statistics of the training split's found face frames.

    ``standardize``: per dimension, ``(x - mean) / std``. Subtracting the mean removes the
    direction every face shares; dividing by the std brings the identity residual to unit scale.
    ``whiten``: ZCA whitening, ``W (x - mean)`` with ``W = C^{-1/2}`` from the covariance ``C``
    (eigenvalues floored at ``1e-3`` of the mean eigenvalue, so directions the training faces
    never vary in are not amplified without bound). ``none``: the identity. Input (..., face_dim).
    """

    modes = FACE_NORMS
    needs_stats = ("standardize", "whiten")

    def __init__(self, face_dim: int, mode: str = "standardize") -> None:
        super().__init__(mode)
        self.face_dim = face_dim
        self.register_buffer("mean", torch.zeros(face_dim))
        self.register_buffer("scale", torch.ones(face_dim))  # standardize: 1 / std
        # whiten: the (face_dim, face_dim) matrix; only allocated in that mode (512² floats otherwise wasted)
        self.register_buffer("whitener", torch.eye(face_dim) if mode == "whiten" else torch.zeros(0))

    def set_statistics(self, mean: Tensor, cov_or_std: Tensor) -> None:
        """``standardize``: ``(mean, std)``; ``whiten``: ``(mean, covariance)``. In place."""
        self.mean.copy_(torch.as_tensor(mean, dtype=self.mean.dtype))
        given = torch.as_tensor(cov_or_std, dtype=torch.float64)
        if self.mode == "whiten":
            self.whitener.copy_(zca_whitener(given).to(self.whitener.dtype))
        else:
            self.scale.copy_(1.0 / _floored(given).to(self.scale.dtype))
        self.fitted.fill_(True)

    def forward(self, face: Tensor) -> Tensor:
        if self.mode == "none":
            return face
        centred = face - self.mean.to(face.dtype)
        if self.mode == "whiten":
            return centred @ self.whitener.to(face.dtype).T
        return centred * self.scale.to(face.dtype)


def _floored(std: Tensor) -> Tensor:
    floor = max(float(std.max()) * REL_STD_FLOOR, 1e-8) if std.numel() else 1e-8
    return std.clamp(min=floor)


def zca_whitener(cov: Tensor, rel_floor: float = 1e-3) -> Tensor:
    """``C^{-1/2}`` of a covariance matrix, eigenvalues floored at ``rel_floor`` x their mean."""
    cov = cov.double()
    cov = (cov + cov.T) / 2
    values, vectors = torch.linalg.eigh(cov)
    floor = max(float(values.clamp(min=0).mean()) * rel_floor, 1e-12)
    return (vectors * values.clamp(min=floor).rsqrt()) @ vectors.T


class NormalizedAudio(nn.Module):
    """An audio encoder behind its :class:`FbankNorm`; exposes the encoder's ``out_dim``."""

    def __init__(self, norm: FbankNorm, encoder: nn.Module) -> None:
        super().__init__()
        self.norm, self.encoder = norm, encoder
        self.out_dim = encoder.out_dim

    def forward(self, fbank: Tensor) -> Tensor:
        return self.encoder(self.norm(fbank))


def unfitted_norms(module: nn.Module) -> list[_FittedNorm]:
    """The normalisers of a network that still need training statistics."""
    return [m for m in module.modules() if isinstance(m, _FittedNorm) and m.needs_fit]

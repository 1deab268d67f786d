"""A run's numeric precision: the autocast dtype, the gradient scaler, and the one place that
enters (or leaves) autocast.

Training, validation, test evaluation, teacher targets and inference all run a network the same
way, so they share one :class:`Precision` built from ``train.amp``, ``train.amp_dtype`` and the
device, instead of each deciding what ``amp`` means and opening its own ``torch.autocast``.
Loss terms run in float32 inside a step's autocast region (:func:`full_precision`): casting their
inputs with ``.float()`` is not enough, autocast casts a matmul's inputs back down.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

#: ``train.amp_dtype`` values other than ``auto``.
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """How a network runs on ``device``: under autocast in ``dtype``, or in full precision (None)."""

    device: torch.device
    dtype: torch.dtype | None = None

    @classmethod
    def of(cls, amp: str, device: torch.device | str, amp_dtype: str = "auto") -> Precision:
        """``train.amp`` on ``device``: ``on``, or ``auto`` on CUDA, runs under autocast; ``off`` is
        full precision. ``amp_dtype`` (``train.amp_dtype``): ``auto`` picks bf16 where the device has
        it and fp16 (with a gradient scaler) on CUDA devices without; ``bf16`` / ``fp16`` force one."""
        device = torch.device(device)
        on = amp == "on" or (amp == "auto" and device.type == "cuda")
        if not on:
            return cls(device)
        if amp_dtype == "auto":
            bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
            return cls(device, torch.bfloat16 if bf16 else torch.float16)
        if amp_dtype not in AMP_DTYPES:
            raise ValueError(f"amp_dtype={amp_dtype!r} is not one of auto, {', '.join(AMP_DTYPES)}")
        if amp_dtype == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError(f"amp_dtype=bf16: {device} does not support bfloat16; use fp16 or auto")
        return cls(device, AMP_DTYPES[amp_dtype])

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context every forward pass of a run goes through."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Scales the loss where the dtype's range needs it (fp16); a pass-through otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)


def full_precision(device: torch.device | str) -> contextlib.AbstractContextManager:
    """Autocast off for a block inside an autocast region on ``device``'s type: the loss terms, so
    that a distance, a similarity matrix or a projection is float32 whatever the network ran in."""
    return torch.autocast(torch.device(device).type, enabled=False)

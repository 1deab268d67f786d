"""A run's numeric precision: the autocast dtype, the gradient scaler, and the one place that
enters autocast.

Training, validation, test evaluation, teacher targets and inference all run a network the same
way, so they share one :class:`Precision` built from ``train.amp`` and the device, instead of each
deciding what ``amp`` means and opening its own ``torch.autocast``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    """How a network runs on ``device``: under autocast in ``dtype``, or in full precision (None)."""

    device: torch.device
    dtype: torch.dtype | None = None

    @classmethod
    def of(cls, amp: str, device: torch.device | str) -> Precision:
        """``train.amp`` on ``device``: ``on``, or ``auto`` on CUDA, picks bf16 where the device has
        it and fp16 (with a gradient scaler) on CUDA devices without; ``off`` is full precision."""
        device = torch.device(device)
        on = amp == "on" or (amp == "auto" and device.type == "cuda")
        if not on:
            return cls(device)
        if device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return cls(device, torch.float16)
        return cls(device, torch.bfloat16)

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context every forward pass of a run goes through."""
        return torch.autocast(self.device.type, dtype=self.dtype, enabled=self.enabled)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """Scales the loss where the dtype's range needs it (fp16); a pass-through otherwise."""
        return torch.amp.GradScaler(self.device.type, enabled=self.dtype == torch.float16)

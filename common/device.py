"""Choosing the torch device from a config string (``auto``, ``cpu``, ``cuda``, ``cuda:N``)."""

from __future__ import annotations

import torch


def resolve_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto`` → this process's GPU (``cuda:<local_rank>``) when CUDA is available, else the CPU.

    A runtime choice: it never enters a cache id or a run's identity. Asking for CUDA on a machine
    without it is an error rather than a silent fall back to a CPU run 50 times slower.
    """
    if preference == "auto":
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(preference)
    except RuntimeError as exc:
        raise ValueError(f"device {preference!r} is not a torch device (auto, cpu, cuda, cuda:N)") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {preference}: CUDA is not available on this machine")
    return device

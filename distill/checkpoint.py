"""Checkpoints that survive a kill and load without unpickling arbitrary code.

Saved atomically (write a temp file, fsync, rename): a run killed while saving still has its
previous checkpoint whole. Everything stored is a tensor or a plain Python value, so
``torch.load(weights_only=True)`` reads it; RNG states are converted accordingly.
"""
from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from common.files import atomic_output
from distill.config import ConfigError, RunConfig, read_run_config
from distill.models import DistillNetwork, build_network

BEST = "best.pt"
LAST = "last.pt"


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return torch.load(path, map_location=map_location, weights_only=True)


def load_best_network(run_dir: str | Path, device: str | torch.device = "cpu"
                      ) -> tuple[DistillNetwork, RunConfig, dict[str, Any]]:
    """A finished run's best network (eval mode, on ``device``), its config and checkpoint meta.

    Sized from what the run saved (its config, and the meta's ``n_mels`` and ``labels``), so it
    loads without the cache it was trained on.
    """
    cfg = read_run_config(run_dir)
    state = load_checkpoint(Path(run_dir) / BEST, map_location=device)
    meta = state["meta"]
    net = build_network(cfg.model, role=cfg.role, setting=cfg.data.setting, n_mels=meta["n_mels"],
                        n_classes=len(meta["labels"]), face_dim=int(meta.get("face_dim", 512)))
    try:
        net.load_state_dict(state["model"])
    except RuntimeError as exc:
        if not any(".norm." in key for key in state["model"]):
            raise ConfigError(f"{run_dir} was trained before input normalisation (its best.pt has no normaliser "
                              "statistics): retrain it") from exc
        raise
    return net.to(device).eval(), cfg, meta


def rng_state() -> dict[str, Any]:
    """Python, numpy and torch RNG states as weights_only-loadable values."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    np.random.set_state((npst["kind"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

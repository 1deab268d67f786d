"""Backends: what runs a trained network on stacked log-mel cells, behind one call.

A backend is the run's PyTorch module, or an exported TorchScript or ONNX file (``distill export``
writes them; :class:`distill.serve.model.Model` loads either). Kept apart from both so that the
model API and the exporter depend on it, not on each other.
"""

from __future__ import annotations

import importlib.util
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from distill.config import ConfigError
from distill.data.dataset import Grid

#: The file of an export folder that describes it (format, grid, classes, features, checkpoint).
EXPORT_INFO = "model.json"

#: A callable from stacked cells (B, *cell, n_mels) float32 to (emb (B, D), logits (B, C)) numpy arrays.
Backend = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def torch_backend(net: torch.nn.Module, device: torch.device) -> Backend:
    """A DistillNetwork (or a traced module returning (emb, logits)) as a backend. A teacher runs
    with its video missing: it is given no faces."""

    @torch.no_grad()
    def run(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = net(torch.from_numpy(cells).to(device))
        emb, logits = (out.emb, out.logits) if hasattr(out, "emb") else out
        return emb.float().cpu().numpy(), logits.float().cpu().numpy()

    return run


def load_backend(export_dir: Path, info: dict, device: str = "cpu") -> Backend:
    """The network file of an export folder as an inference backend (any number of cells)."""
    path = Path(export_dir) / info["file"]
    if not path.is_file():
        raise FileNotFoundError(f"exported model {export_dir} lacks its network file {info['file']}")
    if info["format"] == "torchscript":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # TorchScript is deprecated in torch 2.11, still loads
            module = torch.jit.load(str(path), map_location=device).eval()
        return fixed_batch(torch_backend(module, torch.device(device)), info["cells"])
    if info["format"] == "onnx":
        require("onnxruntime")
        import onnxruntime as ort  # the export extra: only ONNX models need it

        providers = ["CPUExecutionProvider"]
        if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        session = ort.InferenceSession(str(path), providers=providers)

        def run(cells: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            emb, logits = session.run(["emb", "logits"], {"fbank": np.ascontiguousarray(cells, dtype=np.float32)})
            return emb, logits

        return fixed_batch(run, info["cells"])
    raise ConfigError(
        f"{export_dir}: unknown export format {info['format']!r}: export the run again (`distill export RUN`)"
    )


def fixed_batch(run: Backend, cells: int) -> Backend:
    """A backend for graphs traced with exactly ``cells`` cells: chunks, the last one zero-padded."""

    def call(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        embs, logits = [], []
        for lo in range(0, len(x), cells):
            chunk = x[lo : lo + cells]
            n = len(chunk)
            if n < cells:
                chunk = np.concatenate([chunk, np.zeros((cells - n, *chunk.shape[1:]), chunk.dtype)])
            e, lg = run(chunk)
            embs.append(e[:n])
            logits.append(lg[:n])
        return np.concatenate(embs), np.concatenate(logits)

    return call


def require(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ConfigError(f"ONNX models need the {module} package: pip install 'avpi[export]'")


def cell_shape(grid: Grid) -> tuple[int, ...]:
    """Frames of one cell: (crop,) for nonseq, (n_segments, seg_len) for seq. A whole-utterance
    grid has no one shape; this is then that of a crop (nonseq) or of one segment (seq)."""
    if grid.setting == "seq":
        return (grid.n_segments if grid.span == "window" else 1, grid.seg_len)
    return (grid.crop,)

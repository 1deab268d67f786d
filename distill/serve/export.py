"""``distill export``: a trained run as a self-contained model folder (TorchScript or ONNX).

What is exported is the network from log-mel cells to ``(emb, logits)``: input ``fbank`` of shape
(cells, crop, n_mels) for nonseq or (cells, n_segments, seg_len, n_mels) for seq. A teacher is
exported as it runs audio only (video missing). Two parts stay in Python, in
:mod:`distill.inference`, because they are cheap and do not trace into a fixed graph: the
log-mel front-end (speechbrain ``Fbank``, rebuilt from the feature settings stored in the
folder) and the cutting of an item into grid cells and the mean over them.

The graph has a fixed number of cells per call (``--cells``, default 32): speechbrain's ECAPA
pooling builds its mask with ``len(lengths)``, which tracing records as a constant, so a traced
graph cannot take another batch size. The loader pads the last chunk of cells with zeros and
drops their outputs; in eval mode cells do not interact (BatchNorm uses its running statistics),
so the padding changes nothing.

The folder::

    model.json       format, task, classes, grid, feature settings, verification threshold,
                     network input/output names, checkpoint meta, versions
    network.pt       TorchScript (torch.jit.trace), or
    network.onnx     ONNX (torch.onnx.export, the TorchScript-based exporter: dynamo=False)
    config.yaml      the run's resolved config
    metrics.json     the run's test metrics (when evaluated)
    README.md        the model card

Any normalisation the network applies to its input lives in its weights and buffers, so it is
inside the exported graph. Every export is checked before it is kept: the exported file is run
on cells of a batch size it was not traced with and must match the PyTorch network within
``TOLERANCE``.

ONNX: the TorchScript-based exporter (``dynamo=False``) is used because it handles the
speechbrain encoders without graph breaks, and with the fixed cell count above it has no
dynamic shape to get wrong; the dynamo exporter (torch 2.11's default) is not used. opset 17.
"""

from __future__ import annotations

import json
import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from common.files import sha256_file
from distill.config import ConfigError
from distill.data.dataset import Grid
from distill.run import RunDir
from distill.serve.backend import EXPORT_INFO, cell_shape, load_backend, require, torch_backend

FORMATS = {"torchscript": "network.pt", "onnx": "network.onnx"}
TOLERANCE = 1e-5
OPSET = 17


class CellNetwork(nn.Module):
    """The network as a plain tensor function: fbank cells -> (emb, logits), no faces."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, fbank: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.net(fbank)
        return out.emb, out.logits


def export_run(run_dir: str | Path, fmt: str, out_dir: str | Path, cells: int = 32) -> tuple[Path, float]:
    """Write the export folder; returns (folder, max abs difference to the run's network)."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format {fmt!r}: choose one of {', '.join(FORMATS)}")
    if cells < 1:
        raise ConfigError(f"--cells must be >= 1, got {cells}")
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()) and not (out_dir / EXPORT_INFO).is_file():
        raise ConfigError(f"--out {out_dir} exists and is not an exported model; choose an empty or new folder")
    run = RunDir(run_dir)
    trained = run.load_network("cpu")
    net, cfg, meta = trained.net, trained.config, trained.meta
    grid = Grid.for_eval(cfg.data)
    if grid.span == "utterance":
        option = "data.seq_span" if grid.setting == "seq" else "data.eval_span"
        raise ConfigError(
            f"{run_dir} evaluates whole utterances ({option}=utterance): an exported graph takes cells "
            f"of one fixed shape, so it cannot run it; use the run directory (Model.from_run)"
        )
    cell = CellNetwork(net).eval()
    shape = (*cell_shape(grid), meta["n_mels"])
    tmp = out_dir.with_name(f".tmp-{out_dir.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    example = torch.randn(cells, *shape, generator=torch.Generator().manual_seed(0))
    _write_network(cell, example, fmt, tmp / FORMATS[fmt])

    probe = torch.randn(cells + 3, *shape, generator=torch.Generator().manual_seed(1)).numpy()
    want = torch_backend(net, torch.device("cpu"))(probe)
    info = _info(run, cfg, meta, grid, fmt, int(want[0].shape[1]), cells)
    got = load_backend(tmp, info, "cpu")(probe)
    diff = max(float(np.abs(w - g).max()) for w, g in zip(want, got))
    if not diff <= TOLERANCE:
        shutil.rmtree(tmp)
        raise RuntimeError(
            f"the {fmt} export of {run_dir} differs from the run's network by {diff:.2e} (> {TOLERANCE}); not written"
        )
    info["check"] = {"max_abs_diff": diff, "tolerance": TOLERANCE, "cells": len(probe)}
    (tmp / EXPORT_INFO).write_text(json.dumps(info, indent=2) + "\n")
    shutil.copy(run.config_file, tmp / RunDir.CONFIG)
    if run.cohort.is_file():
        shutil.copy(run.cohort, tmp / RunDir.COHORT)
    metrics = _read_json(run.metrics)
    if metrics is not None:
        shutil.copy(run.metrics, tmp / RunDir.METRICS)
    (tmp / "README.md").write_text(model_card(info, metrics, run.config_file.read_text()))
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.replace(out_dir)
    return out_dir, diff


def _write_network(cell: nn.Module, example: torch.Tensor, fmt: str, path: Path) -> None:
    if fmt == "onnx":
        require("onnx")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer / deprecation chatter; the output check below is the test
        if fmt == "torchscript":
            torch.jit.trace(cell, example, check_trace=False).save(str(path))
        else:
            torch.onnx.export(
                cell,
                (example,),
                str(path),
                dynamo=False,
                opset_version=OPSET,
                input_names=["fbank"],
                output_names=["emb", "logits"],
            )


def _info(run: RunDir, cfg, meta: dict, grid: Grid, fmt: str, emb_dim: int, cells: int) -> dict:
    plain = {k: v for k, v in meta.items() if k != "cache_config" and _jsonable(v)}
    return {
        "format": fmt,
        "file": FORMATS[fmt],
        "exported": "network: log-mel cells -> (emb, logits); the log-mel front-end and the grid's cutting and "
        "averaging run in Python (distill.serve.model)",
        "input": {"name": "fbank", "shape": [cells, *cell_shape(grid), meta["n_mels"]], "dtype": "float32"},
        "cells": cells,
        "outputs": ["emb", "logits"],
        "task": cfg.data.task,
        "role": cfg.role,
        "setting": cfg.data.setting,
        "method": cfg.distill.method if cfg.role == "student" else None,
        "classes": list(meta["labels"]),
        "n_mels": meta["n_mels"],
        "emb_dim": emb_dim,
        "grid": asdict(grid),
        "features": json.loads(meta["cache_config"]),
        "verification": _read_json(run.verification),
        "cohort": RunDir.COHORT if run.cohort.is_file() else None,
        "checkpoint": {"file": RunDir.BEST, "sha256": sha256_file(run.best), "meta": plain},
        "source_run": str(run.path.resolve()),
        "torch": torch.__version__,
    }


def model_card(info: dict, metrics: dict | None, config_yaml: str) -> str:
    """README.md of an export: what the model is, how to load it, what it scored, how it was trained."""
    who = info["role"] if info["role"] == "teacher" else f"student ({info['method']})"
    lines = [
        f"# {info['task']} model: {who}, {info['setting']} setting",
        "",
        (
            f"Audio-only {info['task']} model exported from `{info['source_run']}` as {info['format']} "
            f"(`{info['file']}`); {info['emb_dim']}-d embeddings, {len(info['classes'])} classes: "
            f"{', '.join(info['classes'])}."
        ),
        "",
        "## Use",
        "",
        "```python",
        "from distill.serve.model import Model",
        'model = Model.load("path/to/this/folder")',
        'emb = model.embed(["a.wav", "b.mp4"])        # (2, D)',
        'pred = model.predict(["a.wav"])               # pred.top, pred.probs',
        "```",
        "",
        (
            f"Exported: {info['exported']}. Input `fbank` {info['input']['shape']} float32; outputs "
            f"`emb`, `logits`. Checked against the run's network: max abs difference "
            f"{info.get('check', {}).get('max_abs_diff', float('nan')):.1e}."
        ),
        "",
        "Features: "
        + ", ".join(
            f"{k}={info['features'].get(k)}"
            for k in ("sample_rate", "n_mels", "win_ms", "hop_ms", "f_min", "f_max")
            if k in info["features"]
        )
        + " (speechbrain Fbank, as extracted).",
        "",
    ]
    if info.get("verification"):
        v = info["verification"]
        lines += [
            (
                f"Verification threshold (cosine, validation EER point): {v['threshold']:.4f} "
                f"(val EER {v['eer']:.3f} over {v['n_trials']} trials)."
            ),
            "",
        ]
        if "asnorm" in v:
            a = v["asnorm"]
            lines += [
                (
                    f"AS-norm (top {a['top_k']} of a cohort of {a['cohort']} training speakers, `{RunDir.COHORT}`): "
                    f"threshold {a['threshold']:.4f}, val EER {a['eer']:.3f}."
                ),
                "",
            ]
    lines += ["## Test metrics", ""]
    if metrics:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in metrics.items() if isinstance(v, (int, float))]
        if isinstance(metrics.get("video_missing"), dict):
            lines += [f"| video missing: {k} | {v:.4f} |" for k, v in metrics["video_missing"].items()]
    else:
        lines.append("The run had not been evaluated (no metrics.json).")
    lines += ["", "## Training config", "", "```yaml", config_yaml.rstrip(), "```", ""]
    return "\n".join(lines)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _jsonable(value) -> bool:
    try:
        json.dumps(value)
        return True
    except TypeError:
        return False

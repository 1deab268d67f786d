"""The trainer: audio-visual teachers, cached teacher targets, audio-only students.

Subpackages by concern (docs/architecture.md): ``data`` (datasets over the feature cache),
``models`` (the networks), ``train`` (the loop, losses, teacher targets), ``eval`` (metrics,
evaluation, reports), ``serve`` (audio-only use of a trained run); beside them the run's config
(``config``), its directory (``run``), the methods table (``methods``), numeric precision
(``precision``), sweeps (``sweep``) and the CLI (``cli``; ``distill`` / ``python -m distill``).

The Python entry points are importable from here::

    from distill import Model, load_config, run_training, run_sweep

They load on first use, so ``import distill`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distill.config import RunConfig, load_config
    from distill.eval.report import write_results
    from distill.eval.run_eval import load_run
    from distill.run import RunDir
    from distill.serve.export import export_run
    from distill.serve.model import Model
    from distill.sweep import run_sweep
    from distill.train.trainer import run_training

#: Public name -> the module that defines it.
_ENTRY_POINTS = {
    "Model": "distill.serve.model",
    "RunConfig": "distill.config",
    "RunDir": "distill.run",
    "export_run": "distill.serve.export",
    "load_config": "distill.config",
    "load_run": "distill.eval.run_eval",
    "run_sweep": "distill.sweep",
    "run_training": "distill.train.trainer",
    "write_results": "distill.eval.report",
}

__all__ = [
    "Model",
    "RunConfig",
    "RunDir",
    "export_run",
    "load_config",
    "load_run",
    "run_sweep",
    "run_training",
    "write_results",
]


def __getattr__(name: str) -> Any:
    if name not in _ENTRY_POINTS:
        raise AttributeError(f"module 'distill' has no attribute {name!r}")
    return getattr(importlib.import_module(_ENTRY_POINTS[name]), name)

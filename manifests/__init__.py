"""Manifests: dataset recipes, splits, verification trial lists, and the generated demo corpus.

The manifest is the table the extractor reads (``utt_id, path`` + label columns); see
docs/architecture.md. The demo corpus generator is :func:`manifests.demo.make_demo_corpus`.
"""

from manifests.io import read_manifest, write_manifest
from manifests.recipes import RECIPES, NotADatasetError, RecipeResult, run_recipe
from manifests.splits import SPLIT_KINDS, assign_split
from manifests.trials import make_trials, read_trials, write_trials

__all__ = [
    "RECIPES",
    "SPLIT_KINDS",
    "NotADatasetError",
    "RecipeResult",
    "assign_split",
    "make_trials",
    "read_manifest",
    "read_trials",
    "run_recipe",
    "write_manifest",
    "write_trials",
]

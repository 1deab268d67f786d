"""Dataset recipes: a dataset's published directory -> a manifest table, plus what was skipped.

``run_recipe(name, root)`` is the entry point; each recipe is also a plain function
(``manifests.recipes.cremad.cremad(root)``) registered in :data:`RECIPES` under its CLI name.
"""

from __future__ import annotations

from pathlib import Path

from manifests.recipes import cremad, generic, iemocap, ravdess, voxceleb  # noqa: F401 (registers)
from manifests.recipes.base import (EMOTIONS, RECIPES, NotADatasetError, RecipeResult, RecipeSpec, SkipLog,
                                    get_recipe, register_recipe)
from manifests.splits import assign_split

__all__ = ["EMOTIONS", "RECIPES", "NotADatasetError", "RecipeResult", "RecipeSpec", "SkipLog", "get_recipe",
           "register_recipe", "run_recipe"]


def run_recipe(name: str, root: Path | str, split: str | None = "dataset", seed: int = 0,
               split_options: dict | None = None, **options) -> RecipeResult:
    """Run recipe ``name`` on ``root`` and set the ``split`` column.

    ``split='dataset'`` keeps a split the dataset ships (VoxCeleb) and otherwise applies the
    recipe's usual protocol (:attr:`RecipeSpec.default_split`); a split kind name
    (``speaker-id``, ``leave-speakers-out``, ...) always applies that kind; ``None`` writes no
    split column. ``options`` go to the recipe, ``split_options`` to :func:`assign_split`.
    """
    spec = get_recipe(name)
    result = spec.fn(root, **options)
    kind = spec.default_split if split == "dataset" else split
    if split == "dataset" and "split" in result.manifest.columns:
        return result
    if kind is None:
        if split != "dataset":
            result.manifest = result.manifest.drop(columns="split", errors="ignore")
        return result
    result.manifest["split"] = assign_split(result.manifest, kind, seed=seed, **(split_options or {}))
    return result

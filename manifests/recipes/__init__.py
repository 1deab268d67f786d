"""Dataset recipes: a dataset's published directory -> a manifest table, plus what was skipped.

``run_recipe(name, root)`` is the entry point; each recipe is also a plain function
(``manifests.recipes.cremad.cremad(root)``) registered in :data:`RECIPES` under its CLI name.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from manifests.recipes import cremad, generic, iemocap, ravdess, voxceleb  # noqa: F401 (registers)
from manifests.recipes.base import (
    EMOTIONS,
    RECIPES,
    NotADatasetError,
    RecipeResult,
    RecipeSpec,
    SkipLog,
    get_recipe,
    register_recipe,
)
from manifests.splits import GROUP, assign_split, group_leaks

__all__ = [
    "EMOTIONS",
    "RECIPES",
    "NotADatasetError",
    "RecipeResult",
    "RecipeSpec",
    "SkipLog",
    "get_recipe",
    "register_recipe",
    "run_recipe",
]


def run_recipe(
    name: str,
    root: Path | str,
    split: str | None = "dataset",
    seed: int = 0,
    split_options: dict | None = None,
    **options,
) -> RecipeResult:
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
        _warn_group_leaks(name, result.manifest)
        return result
    if kind is None:
        if split != "dataset":
            result.manifest = result.manifest.drop(columns="split", errors="ignore")
        return result
    result.manifest["split"] = assign_split(result.manifest, kind, seed=seed, **(split_options or {}))
    return result


def _warn_group_leaks(name: str, df) -> None:
    """A dataset's own split is kept as published, but a recording on both sides is said out loud."""
    if GROUP not in df.columns:
        return
    leaks = group_leaks(df[GROUP], df["split"])
    if len(leaks):
        warnings.warn(
            f"{name}: the dataset's own split puts {len(leaks)} {GROUP} value(s) (recordings) in two "
            f"splits, e.g. {leaks.index[0]!r} in {', '.join(leaks.iloc[0])}: held-out scores may be "
            f"optimistic; a split kind (--split speaker-id, speaker-disjoint, ...) keeps groups whole",
            stacklevel=3,
        )

"""What every recipe returns, how it reports what it left out, and the recipe registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import pandas as pd

#: Columns every manifest a recipe writes starts with, in this order.
BASE_COLUMNS = ("utt_id", "path", "speaker")

#: One spelling per emotion across datasets, so a model trained on one corpus reads another's labels.
EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fear", "disgust", "surprise", "excited", "frustrated", "other")


class NotADatasetError(ValueError):
    """The root given to a recipe does not hold that dataset (or none of it was usable)."""

    def __init__(self, recipe: str, root: Path | str, reason: str):
        self.recipe, self.root, self.reason = recipe, Path(root), reason
        super().__init__(f"{root} is not a {recipe} root: {reason}")


@dataclass
class SkipLog:
    """The items a recipe saw and left out, each with the reason: silent loss is how splits go wrong."""

    rows: list[tuple[str, str]] = field(default_factory=list)

    def add(self, item: Path | str, reason: str) -> None:
        self.rows.append((str(item), reason))

    def __len__(self) -> int:
        return len(self.rows)

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=["item", "reason"])


@dataclass
class RecipeResult:
    """A recipe's output: the manifest, what was skipped, and any trial lists the dataset ships."""

    manifest: pd.DataFrame
    skipped: pd.DataFrame = field(default_factory=lambda: SkipLog().frame())
    trials: dict[str, pd.DataFrame] = field(default_factory=dict)

    def summary(self) -> str:
        """One line: items, speakers, label counts, skipped."""
        df = self.manifest
        parts = [f"{len(df)} items"]
        if "speaker" in df:
            parts.append(f"{df['speaker'].nunique()} speakers")
        if "emotion" in df:
            counts = df["emotion"].value_counts().sort_index()
            parts.append("emotion " + " ".join(f"{k}={v}" for k, v in counts.items()))
        if "split" in df:
            counts = df["split"].value_counts()
            parts.append("split " + " ".join(f"{k}={counts[k]}" for k in ("train", "val", "test") if k in counts))
        for name, trials in self.trials.items():
            parts.append(f"{len(trials)} trials in {name}")
        parts.append(f"{len(self.skipped)} skipped")
        return ", ".join(parts)


class Recipe(Protocol):
    def __call__(self, root: Path, **options) -> RecipeResult: ...


@dataclass(frozen=True)
class RecipeSpec:
    """A registered recipe and the split protocol its dataset is usually evaluated with."""

    name: str
    fn: Recipe
    default_split: str | None  # a manifests.splits kind, used when the dataset ships no split

    @property
    def summary(self) -> str:
        return (self.fn.__doc__ or "").strip().splitlines()[0]


#: Recipes keyed by the name used on the command line and in configs.
RECIPES: dict[str, RecipeSpec] = {}


def register_recipe(name: str, default_split: str | None = None) -> Callable[[Recipe], Recipe]:
    def add(fn: Recipe) -> Recipe:
        if name in RECIPES:
            raise KeyError(f"recipe {name!r} registered twice")
        RECIPES[name] = RecipeSpec(name, fn, default_split)
        return fn

    return add


def get_recipe(name: str) -> RecipeSpec:
    try:
        return RECIPES[name]
    except KeyError:
        raise KeyError(f"unknown recipe {name!r}; known: {', '.join(sorted(RECIPES))}") from None


def require_dir(recipe: str, root: Path | str) -> Path:
    """The resolved root, or a clear error when it is not a directory at all."""
    root = Path(root)
    if not root.is_dir():
        raise NotADatasetError(recipe, root, "no such directory")
    return root.resolve()


def finish(
    recipe: str, root: Path, rows: list[dict], skipped: SkipLog, trials: dict[str, pd.DataFrame] | None = None
) -> RecipeResult:
    """Build the manifest frame with the base columns first; an empty result is an error, not a file."""
    if not rows:
        detail = f" ({len(skipped)} files skipped, e.g. {skipped.rows[0][0]}: {skipped.rows[0][1]})" if skipped else ""
        raise NotADatasetError(recipe, root, f"found no usable items{detail}")
    df = pd.DataFrame(rows)
    first = [c for c in BASE_COLUMNS if c in df.columns]
    df = (
        df[first + [c for c in df.columns if c not in first]]
        .sort_values("utt_id", kind="stable")
        .reset_index(drop=True)
    )
    dup = df["utt_id"][df["utt_id"].duplicated()]
    if len(dup):
        raise ValueError(f"{recipe}: duplicate utt_id {dup.iloc[0]!r} under {root}")
    return RecipeResult(df, skipped.frame(), trials or {})

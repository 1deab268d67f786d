"""The transfer set: training-side clips without a label, which a teacher can label and a student learn from.

A cache may hold audio-visual items that carry no label. A teacher that sees faces gives them
near-correct targets where an audio-only model cannot, so a distilling student learns its
label-free terms (the teacher's embeddings, its soft labels) on them too, while its task loss
stays on the labelled items. The teacher itself trains on the labelled items only, then embeds
every item (its targets include the transfer set). Validation and test never hold one.

Declared in the manifest: an empty label (the task's label column) or split ``unlabeled``.
``data.labels_per_class: k`` hides the labels of all but k seeded training items per class: the
others join the transfer set, so one cache gives a whole label-scarcity curve.

:func:`assign_roles` gives each item its role in a run: ``train`` (labelled), ``val``, ``test``,
``transfer``, or ``""`` (in no set: an unlabelled item of a cross-validation fold's val or test
fold, kept out so that no fold's held-out sessions or speakers reach training).
"""

from __future__ import annotations

import warnings
import zlib

import numpy as np
import pandas as pd

from distill.config import ConfigError, DataConfig

#: The split value that declares an item unlabelled (its label column, if filled, is never read).
UNLABELED = "unlabeled"
#: The role of a training-side item without a (visible) label.
TRANSFER = "transfer"
#: The role of an unlabelled item that belongs to no set (a val/test fold's).
UNUSED = ""
HELD_OUT = ("val", "test")


def blank_labels(values: pd.Series) -> np.ndarray:
    """Which values are no label: null, NaN, or a string of whitespace only."""
    missing = values.isna().to_numpy()
    text = values.astype(str).str.strip().to_numpy()
    return missing | (text == "")


def assign_roles(index: pd.DataFrame, data: DataConfig) -> pd.Series:
    """Each item's role (train / val / test / transfer / ``""``), indexed like ``index``.

    The split is :func:`distill.data.assign_splits`' (a fold, the split column, or a seeded split);
    unlabelled items then become ``transfer`` where they fall on the training side. An item with an
    empty label that the split column puts in val or test is an error (no metric can score it; mark
    it ``unlabeled`` instead). Finally ``data.labels_per_class`` hides labels (:func:`keep_labels`).
    """
    from distill.data.dataset import assign_splits

    column = data.label
    if column not in index.columns:
        raise ConfigError(f"the cache index has no {column!r} column; columns: {', '.join(index.columns)}")
    has_split = data.split_column in index.columns
    declared = (index[data.split_column].astype(str) == UNLABELED).to_numpy() if has_split else False
    unlabelled = blank_labels(index[column]) | declared
    if data.fold_column:
        # every item is dealt into its fold (its group's), so an unlabelled item of a held-out fold stays out
        splits = assign_splits(index, data).to_numpy(dtype=object)
        roles = np.where(unlabelled, np.where(splits == "train", TRANSFER, UNUSED), splits)
    elif has_split:
        splits = assign_splits(index, data).to_numpy(dtype=object)
        bad = unlabelled & np.isin(splits, HELD_OUT)
        if bad.any():
            first = index.index[bad][0]
            raise ConfigError(
                f"{int(bad.sum())} val/test item(s) have no {column!r} label (e.g. {first!r}): validation and "
                f"test need labels. Give it one, or mark an unlabelled item {data.split_column} {UNLABELED!r}"
            )
        roles = np.where(unlabelled, TRANSFER, splits)
    else:
        roles = np.full(len(index), TRANSFER, dtype=object)
        if (~unlabelled).any():
            roles[~unlabelled] = assign_splits(index[~unlabelled], data).to_numpy(dtype=object)
    roles = pd.Series(roles, index=index.index, dtype=object)
    if data.labels_per_class is not None:
        train = (roles == "train").to_numpy()
        keep = keep_labels(index[column][train].astype(str), data.labels_per_class, data.labels_seed)
        hidden = np.flatnonzero(train)[~keep]
        roles.iloc[hidden] = TRANSFER
    return roles


def keep_labels(labels: pd.Series, k: int, seed: int) -> np.ndarray:
    """Which of these labelled items keep their label: k per class, drawn with ``seed``.

    Each class draws from its own stream of (seed, class name), in the items' order, so a class's
    draw does not depend on the others, and the draws are nested: the k items of a smaller k are
    among those of a larger one (a curve over k adds labels, it does not swap them). A class with
    fewer than k items keeps all of them (with a warning).
    """
    keep = np.zeros(len(labels), dtype=bool)
    values = labels.to_numpy()
    short = []
    for name in sorted(set(values)):
        positions = np.flatnonzero(values == name)
        if len(positions) < k:
            short.append((name, len(positions)))
        order = np.random.default_rng([seed, zlib.crc32(str(name).encode())]).permutation(len(positions))
        keep[positions[order[:k]]] = True
    if short:
        name, n = short[0]
        warnings.warn(
            f"data.labels_per_class={k}: {len(short)} class(es) have fewer labelled training items "
            f"(e.g. {name!r}: {n}); all of theirs keep their labels",
            stacklevel=3,
        )
    return keep

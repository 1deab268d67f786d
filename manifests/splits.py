"""Train/val/test splits, written as a column of the manifest.

Each kind answers a different evaluation question, so each holds out something different:

- ``speaker-id``: closed-set identification. Every speaker appears in every split; each
  speaker's utterances (or recording groups, e.g. YouTube videos) are divided train/val/test.
- ``speaker-disjoint``: verification. Whole speakers go to one split, so test speakers are
  never seen in training.
- ``leave-speakers-out``: speaker-independent emotion folds. Speakers are dealt into
  ``n_folds`` folds; fold ``fold`` is the test set and the next fold the validation set.
- ``leave-one-session-out``: the same over a ``session`` column (IEMOCAP's five sessions, in
  order: fold 0 tests Session1 and validates on Session2).

All are deterministic given ``seed``, and a speaker's own assignment does not depend on which
other speakers are present (per-speaker random streams), so adding data never reshuffles it.

Verification trial lists live in :mod:`manifests.trials` and are re-exported here.
"""

from __future__ import annotations

import zlib
from typing import Callable, Hashable, Sequence

import numpy as np
import pandas as pd

from manifests.trials import make_trials, read_trials, write_trials  # noqa: F401 (re-export)

SPLITS = ("train", "val", "test")
Ratios = tuple[float, float, float]

SplitFn = Callable[..., pd.Series]
SPLIT_KINDS: dict[str, SplitFn] = {}


def _register(name: str) -> Callable[[SplitFn], SplitFn]:
    def add(fn: SplitFn) -> SplitFn:
        SPLIT_KINDS[name] = fn
        return fn

    return add


def assign_split(df: pd.DataFrame, kind: str, seed: int = 0, **options) -> pd.Series:
    """Return a ``split`` Series (``train``/``val``/``test``) aligned with ``df.index``.

    ``kind`` is a key of :data:`SPLIT_KINDS`; ``options`` go to that kind's function
    (e.g. ``ratios=(0.8, 0.1, 0.1)``, ``fold=0, n_folds=5``). Typical use::

        df["split"] = assign_split(df, "speaker-id", seed=0)
    """
    try:
        fn = SPLIT_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown split kind {kind!r}; known: {', '.join(SPLIT_KINDS)}") from None
    out = fn(df, seed=seed, **options)
    return out.rename("split")


def _stream(seed: int, key: Hashable) -> np.random.Generator:
    """A random stream for one key that depends only on (seed, key), not on the other keys."""
    return np.random.default_rng([seed, zlib.crc32(str(key).encode())])


def _require(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"manifest has no column {', '.join(map(repr, missing))} "
                         f"(columns: {', '.join(map(str, df.columns))})")


def _check_ratios(ratios: Sequence[float]) -> Ratios:
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not np.isclose(sum(ratios), 1.0):
        raise ValueError(f"ratios must be three non-negative fractions (train, val, test) summing to 1, got {ratios}")
    return tuple(float(r) for r in ratios)  # type: ignore[return-value]


def allocate(n: int, ratios: Ratios) -> tuple[int, int, int]:
    """How many of ``n`` units go to train/val/test (largest-remainder rounding).

    Any split with a non-zero ratio gets at least one unit when there are enough units to go
    round, because an empty validation or test split silently breaks model selection. Ties and
    shortages are served in the order train, test, val (1 unit: train; 2 units: train + test).
    """
    priority = [i for i in (0, 2, 1) if ratios[i] > 0]
    counts = [0, 0, 0]
    if n < len(priority):
        for i in priority[:n]:
            counts[i] = 1
        return tuple(counts)  # type: ignore[return-value]
    exact = [n * r for r in ratios]
    for i in priority:
        counts[i] = max(1, int(exact[i]))
    while sum(counts) < n:
        counts[max(priority, key=lambda i: exact[i] - counts[i])] += 1
    while sum(counts) > n:  # the minimum of one unit overshot: take back where it hurts least
        counts[max((i for i in priority if counts[i] > 1), key=lambda i: counts[i] - exact[i])] -= 1
    return tuple(counts)  # type: ignore[return-value]


def _labels(counts: tuple[int, int, int]) -> np.ndarray:
    return np.repeat(np.array(SPLITS, dtype=object), counts)


@_register("speaker-id")
def speaker_id_split(df: pd.DataFrame, seed: int = 0, ratios: Sequence[float] = (0.8, 0.1, 0.1),
                     speaker: str = "speaker", group: str | None = None) -> pd.Series:
    """Split each speaker's utterances train/val/test; every speaker with >= 3 units is in all three.

    ``group`` (e.g. a YouTube video column) keeps utterances of one recording together, so the
    test set is not the same session as the training set.
    """
    ratios = _check_ratios(ratios)
    _require(df, speaker, *([group] if group else []))
    out = pd.Series(index=df.index, dtype=object)
    for spk, rows in df.groupby(speaker, sort=True):
        units = rows[group] if group else pd.Series(rows.index, index=rows.index)
        keys = np.array(sorted(units.unique(), key=str), dtype=object)
        keys = keys[_stream(seed, spk).permutation(len(keys))]
        unit_split = dict(zip(keys, _labels(allocate(len(keys), ratios))))
        out.loc[rows.index] = units.map(unit_split).to_numpy()
    return out


@_register("speaker-disjoint")
def speaker_disjoint_split(df: pd.DataFrame, seed: int = 0, ratios: Sequence[float] = (0.8, 0.1, 0.1),
                           speaker: str = "speaker") -> pd.Series:
    """Send whole speakers to train/val/test (verification: test speakers unseen in training)."""
    ratios = _check_ratios(ratios)
    _require(df, speaker)
    speakers = np.array(sorted(df[speaker].unique(), key=str), dtype=object)
    order = np.random.default_rng(seed).permutation(len(speakers))
    spk_split = dict(zip(speakers[order], _labels(allocate(len(speakers), ratios))))
    return df[speaker].map(spk_split).astype(object)


def _fold_split(groups: pd.Series, folds: dict[Hashable, int], fold: int, n_folds: int) -> pd.Series:
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in [0, {n_folds}), got {fold}")
    val_fold = (fold + 1) % n_folds

    def name(g: Hashable) -> str:
        k = folds[g]
        return "test" if k == fold else "val" if k == val_fold else "train"

    return groups.map(name).astype(object)


@_register("leave-speakers-out")
def leave_speakers_out(df: pd.DataFrame, seed: int = 0, fold: int = 0, n_folds: int = 5,
                       speaker: str = "speaker", stratify: str | None = "gender") -> pd.Series:
    """Speaker-independent folds: fold ``fold`` is test, the next fold validation, the rest train.

    Speakers are shuffled and dealt round-robin, within each ``stratify`` value when that column
    exists (gender by default), so every fold holds both genders when the corpus does.
    """
    _require(df, speaker)
    if n_folds < 3:
        raise ValueError(f"n_folds must be >= 3 (train, val and test folds), got {n_folds}")
    n_speakers = df[speaker].nunique()
    if n_speakers < n_folds:
        raise ValueError(f"{n_speakers} speakers cannot fill {n_folds} speaker folds")
    rng = np.random.default_rng(seed)
    per_speaker = df.groupby(speaker, sort=True)
    strata = (per_speaker[stratify].first() if stratify and stratify in df.columns
              else pd.Series("all", index=per_speaker.size().index))
    folds: dict[Hashable, int] = {}
    deal = 0
    for _, members in sorted(strata.groupby(strata.astype(str)), key=lambda kv: kv[0]):
        spk = np.array(sorted(members.index, key=str), dtype=object)
        for s in spk[rng.permutation(len(spk))]:
            folds[s] = deal % n_folds
            deal += 1
    return _fold_split(df[speaker], folds, fold, n_folds)


@_register("leave-one-session-out")
def leave_one_session_out(df: pd.DataFrame, seed: int = 0, fold: int = 0,
                          session: str = "session") -> pd.Series:
    """Fold ``fold`` tests the fold-th session (sorted) and validates on the next one.

    ``seed`` is accepted for a uniform signature; the protocol itself is not random.
    """
    _require(df, session)
    sessions = sorted(df[session].unique(), key=str)
    if len(sessions) < 3:
        raise ValueError(f"leave-one-session-out needs >= 3 sessions, found {len(sessions)}: {sessions}")
    return _fold_split(df[session], {s: i for i, s in enumerate(sessions)}, fold, len(sessions))

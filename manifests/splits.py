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

:func:`fold_split` names a cross-validation fold by a column alone (one fold per value, or the
values dealt into k seeded folds): what ``data.fold_column`` and a sweep's ``folds:`` use.

All are deterministic given ``seed``, and a speaker's own assignment does not depend on which
other speakers are present (per-speaker random streams), so adding data never reshuffles it.

Every kind is group-aware: items sharing a ``group`` value (the recipes write one: VoxCeleb's
YouTube video id, IEMOCAP's session) never land in two splits, because clips of one recording
share channel, room and session and would make a held-out score optimistic. The ``group`` column
is used whenever the manifest has one (``group=None`` to ignore it, another column name to use
that). Speaker-level kinds move speakers linked by a shared group together; ``speaker-id`` splits
each speaker's groups, a group shared by several speakers going where its first speaker (in name
order) sends it. :func:`group_leaks` checks any split column for a group that spans two splits.

Verification trial lists live in :mod:`manifests.trials` and are re-exported here.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Hashable, Sequence

import numpy as np
import pandas as pd

from manifests.trials import make_trials, read_trials, write_trials  # noqa: F401 (re-export)

SPLITS = ("train", "val", "test")
Ratios = tuple[float, float, float]

SplitFn = Callable[..., pd.Series]
SPLIT_KINDS: dict[str, SplitFn] = {}
#: The manifest column naming an item's recording group (kept within one split when present).
GROUP = "group"
_AUTO = object()


def _register(name: str) -> Callable[[SplitFn], SplitFn]:
    def add(fn: SplitFn) -> SplitFn:
        SPLIT_KINDS[name] = fn
        return fn

    return add


def assign_split(df: pd.DataFrame, kind: str, seed: int = 0, **options) -> pd.Series:
    """Return a ``split`` Series (``train``/``val``/``test``) aligned with ``df.index``.

    ``kind`` is a key of :data:`SPLIT_KINDS`; ``options`` go to that kind's function
    (e.g. ``ratios=(0.8, 0.1, 0.1)``, ``fold=0, n_folds=5``). ``group`` defaults to the
    manifest's ``group`` column when it has one. Typical use::

        df["split"] = assign_split(df, "speaker-id", seed=0)
    """
    try:
        fn = SPLIT_KINDS[kind]
    except KeyError:
        raise ValueError(f"unknown split kind {kind!r}; known: {', '.join(SPLIT_KINDS)}") from None
    group = options.pop("group", _AUTO)
    if group is _AUTO:
        group = GROUP if GROUP in df.columns else None
    out = fn(df, seed=seed, group=group, **options).rename("split")
    if group:
        leaks = group_leaks(df[group], out)
        if len(leaks):  # a kind's own invariant: a bug here, or a group the protocol cannot honour
            raise ValueError(
                f"{kind} split puts {len(leaks)} {group!r} group(s) in two splits, e.g. "
                f"{leaks.index[0]!r} in {', '.join(leaks.iloc[0])}"
            )
    return out


def group_leaks(groups: pd.Series, split: pd.Series) -> pd.Series:
    """Groups whose items fall in more than one split -> the sorted splits they span (empty: none)."""
    spans = split.astype(str).groupby(groups.to_numpy()).unique()
    return spans[spans.map(len) > 1].map(sorted)


def speaker_blocks(df: pd.DataFrame, speaker: str, group: str | None) -> pd.Series:
    """Speaker -> its block: the first (by name) speaker of the speakers linked through shared groups.

    Without a group every speaker is its own block. Speaker-level splits deal blocks, so two
    speakers of one recording (an IEMOCAP session, a shared video) never sit on both sides.
    """
    speakers = sorted(df[speaker].unique(), key=str)
    parent = {s: s for s in speakers}

    def root(s):
        while parent[s] != s:
            parent[s] = parent[parent[s]]
            s = parent[s]
        return s

    if group:
        for members in df.groupby(group, sort=False)[speaker].unique():
            roots = sorted({root(m) for m in members}, key=str)
            for r in roots[1:]:
                parent[r] = roots[0]
    return pd.Series({s: root(s) for s in speakers}, dtype=object)


def _stream(seed: int, key: Hashable) -> np.random.Generator:
    """A random stream for one key that depends only on (seed, key), not on the other keys."""
    return np.random.default_rng([seed, zlib.crc32(str(key).encode())])


def _require(df: pd.DataFrame, *columns: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(
            f"manifest has no column {', '.join(map(repr, missing))} (columns: {', '.join(map(str, df.columns))})"
        )


def _require_values(df: pd.DataFrame, column: str) -> None:
    """A fold column must name a fold for every item: an empty value would silently drop a fold."""
    _require(df, column)
    empty = df[column].isna()
    if empty.any():
        first = df.loc[empty, "utt_id"].iloc[0] if "utt_id" in df.columns else df.index[empty][0]
        raise ValueError(f"{int(empty.sum())} item(s) have no {column!r} (e.g. {first!r}); every item needs one")


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
def speaker_id_split(
    df: pd.DataFrame,
    seed: int = 0,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    speaker: str = "speaker",
    group: str | None = None,
) -> pd.Series:
    """Split each speaker's utterances train/val/test; every speaker with >= 3 units is in all three.

    ``group`` (e.g. a YouTube video column) keeps utterances of one recording together, so the
    test set is not the same session as the training set. A group that an earlier speaker (by
    name) already placed keeps that split; the speaker's other groups fill the remaining counts.
    """
    ratios = _check_ratios(ratios)
    _require(df, speaker, *([group] if group else []))
    out = pd.Series(index=df.index, dtype=object)
    placed: dict = {}
    for spk, rows in df.groupby(speaker, sort=True):
        units = rows[group] if group else pd.Series(rows.index, index=rows.index)
        keys = np.array(sorted(units.unique(), key=str), dtype=object)
        keys = keys[_stream(seed, spk).permutation(len(keys))]
        fixed = [placed[k] for k in keys if k in placed]
        free = [k for k in keys if k not in placed]
        counts = [max(0, c - fixed.count(name)) for c, name in zip(allocate(len(keys), ratios), SPLITS)]
        labels = list(_labels(tuple(counts)))[: len(free)]
        labels += ["train"] * (len(free) - len(labels))  # shortfall after fixed groups overshot a split
        unit_split = {**{k: placed[k] for k in keys if k in placed}, **dict(zip(free, labels))}
        if group:
            placed.update(unit_split)
        out.loc[rows.index] = units.map(unit_split).to_numpy()
    return out


@_register("speaker-disjoint")
def speaker_disjoint_split(
    df: pd.DataFrame,
    seed: int = 0,
    ratios: Sequence[float] = (0.8, 0.1, 0.1),
    speaker: str = "speaker",
    group: str | None = None,
) -> pd.Series:
    """Send whole speakers to train/val/test (verification: test speakers unseen in training).

    Speakers linked by a shared ``group`` move together (the ratios then count such blocks).
    """
    ratios = _check_ratios(ratios)
    _require(df, speaker, *([group] if group else []))
    block = speaker_blocks(df, speaker, group)
    blocks = np.array(sorted(block.unique(), key=str), dtype=object)
    order = np.random.default_rng(seed).permutation(len(blocks))
    block_split = dict(zip(blocks[order], _labels(allocate(len(blocks), ratios))))
    return df[speaker].map(block.map(block_split)).astype(object)


def _fold_split(groups: pd.Series, folds: dict[Hashable, int], fold: int, n_folds: int) -> pd.Series:
    if not 0 <= fold < n_folds:
        raise ValueError(f"fold must be in [0, {n_folds}), got {fold}")
    val_fold = (fold + 1) % n_folds

    def name(g: Hashable) -> str:
        k = folds[g]
        return "test" if k == fold else "val" if k == val_fold else "train"

    return groups.map(name).astype(object)


@_register("leave-speakers-out")
def leave_speakers_out(
    df: pd.DataFrame,
    seed: int = 0,
    fold: int = 0,
    n_folds: int = 5,
    speaker: str = "speaker",
    stratify: str | None = "gender",
    group: str | None = None,
) -> pd.Series:
    """Speaker-independent folds: fold ``fold`` is test, the next fold validation, the rest train.

    Speakers are shuffled and dealt round-robin, within each ``stratify`` value when that column
    exists (gender by default), so every fold holds both genders when the corpus does. Speakers
    linked by a shared ``group`` are dealt as one block (stratified by its first speaker).
    """
    _require(df, speaker, *([group] if group else []))
    if n_folds < 3:
        raise ValueError(f"n_folds must be >= 3 (train, val and test folds), got {n_folds}")
    block = speaker_blocks(df, speaker, group)
    n_blocks = block.nunique()
    if n_blocks < n_folds:
        what = "speakers" if n_blocks == len(block) else f"blocks of speakers sharing a {group!r}"
        raise ValueError(f"{n_blocks} {what} cannot fill {n_folds} speaker folds")
    rng = np.random.default_rng(seed)
    per_speaker = df.groupby(speaker, sort=True)
    strata = (
        per_speaker[stratify].first()
        if stratify and stratify in df.columns
        else pd.Series("all", index=per_speaker.size().index)
    )
    strata = strata[strata.index.isin(block.unique())]  # a block is stratified by its first speaker
    folds: dict[Hashable, int] = {}
    deal = 0
    for _, members in sorted(strata.groupby(strata.astype(str)), key=lambda kv: kv[0]):
        spk = np.array(sorted(members.index, key=str), dtype=object)
        for s in spk[rng.permutation(len(spk))]:
            folds[s] = deal % n_folds
            deal += 1
    return _fold_split(df[speaker].map(block), folds, fold, n_folds)


@_register("leave-one-session-out")
def leave_one_session_out(
    df: pd.DataFrame, seed: int = 0, fold: int = 0, session: str = "session", group: str | None = None
) -> pd.Series:
    """Fold ``fold`` tests the fold-th session (sorted) and validates on the next one.

    ``seed`` is accepted for a uniform signature; the protocol itself is not random. A ``group``
    that spans two sessions cannot be honoured and is reported by :func:`assign_split`.
    """
    _require_values(df, session)
    sessions = sorted(df[session].unique(), key=str)
    if len(sessions) < 3:
        raise ValueError(f"leave-one-session-out needs >= 3 sessions, found {len(sessions)}: {sessions}")
    return _fold_split(df[session], {s: i for i, s in enumerate(sessions)}, fold, len(sessions))


def fold_split(
    df: pd.DataFrame, column: str, fold: int, n_folds: int = 0, seed: int = 0, group: str | None | object = _AUTO
) -> pd.Series:
    """Cross-validation fold ``fold`` over ``column``: that fold is test, the next one val, the rest train.

    ``n_folds=0``: one fold per value of ``column`` in sorted order (``leave-one-session-out``
    over it: IEMOCAP's sessions). ``n_folds=k``: the values dealt into k seeded folds, gender-
    stratified when the manifest has a ``gender`` column (``leave-speakers-out`` over it: CREMA-D or
    RAVDESS speakers). Val is a whole fold, so it is as speaker/session-independent as the test
    set, and group-aware like every kind.
    """
    if n_folds:
        return assign_split(
            df, "leave-speakers-out", seed=seed, fold=fold, n_folds=n_folds, speaker=column, group=group
        )
    return assign_split(df, "leave-one-session-out", seed=seed, fold=fold, session=column, group=group)


def count_folds(df: pd.DataFrame, column: str, n_folds: int = 0) -> int:
    """How many folds :func:`fold_split` has over ``column``: ``n_folds``, or one per value when 0."""
    _require_values(df, column)
    return n_folds or int(df[column].nunique())

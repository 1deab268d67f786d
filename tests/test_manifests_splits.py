"""Splits hold out what they promise, deterministically; trial lists are balanced and round-trip."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from manifests.splits import SPLIT_KINDS, allocate, assign_split, count_folds, fold_split, group_leaks, speaker_blocks
from manifests.trials import _pair_from_index, make_trials, read_trials, write_trials


def corpus(speakers: int = 10, utts: int = 12, sessions: int = 0) -> pd.DataFrame:
    rows = [
        {
            "utt_id": f"s{s:02d}_{u:03d}",
            "speaker": f"s{s:02d}",
            "gender": "female" if s % 2 else "male",
            "video": f"v{u % 4}",
        }
        for s in range(speakers)
        for u in range(utts)
    ]
    df = pd.DataFrame(rows)
    if sessions:
        df["session"] = "Session" + ((df["speaker"].str[1:].astype(int) // 2) % sessions + 1).astype(str)
    return df


@pytest.mark.parametrize(
    "n, ratios, expected",
    [
        (1, (0.8, 0.1, 0.1), (1, 0, 0)),
        (2, (0.8, 0.1, 0.1), (1, 0, 1)),
        (3, (0.8, 0.1, 0.1), (1, 1, 1)),
        (10, (0.8, 0.1, 0.1), (8, 1, 1)),
        (16, (0.8, 0.1, 0.1), (13, 1, 2)),
        (5, (0.5, 0.5, 0.0), (3, 2, 0)),
        (4, (0.34, 0.33, 0.33), (2, 1, 1)),
        (3, (0.0, 0.5, 0.5), (0, 1, 2)),
        (3, (0.98, 0.01, 0.01), (1, 1, 1)),
    ],
)
def test_allocate(n, ratios, expected):
    assert allocate(n, ratios) == expected
    assert sum(expected) == n


def test_speaker_id_every_speaker_everywhere_and_seeded():
    df = corpus()
    split = assign_split(df, "speaker-id", seed=3)
    assert split.name == "split" and split.index.equals(df.index)
    table = pd.crosstab(df["speaker"], split)
    assert (table[["train", "val", "test"]] > 0).all().all()
    assert (table["train"] == 10).all() and (table["test"] == 1).all()
    assert split.equals(assign_split(df, "speaker-id", seed=3))
    assert not split.equals(assign_split(df, "speaker-id", seed=4))
    # A speaker's split does not move when other speakers are added or removed.
    fewer = df[df["speaker"] != "s05"]
    assert assign_split(fewer, "speaker-id", seed=3).equals(split[fewer.index])


def test_speaker_id_groups_stay_together():
    df = corpus()
    split = assign_split(df, "speaker-id", seed=0, group="video", ratios=(0.5, 0.25, 0.25))
    assert (df.assign(split=split).groupby(["speaker", "video"])["split"].nunique() == 1).all()
    assert (pd.crosstab(df["speaker"], split)[["train", "val", "test"]] == [6, 3, 3]).all().all()


def test_speaker_disjoint():
    df = corpus(speakers=20)
    split = assign_split(df, "speaker-disjoint", seed=1)
    assert (df.assign(split=split).groupby("speaker")["split"].nunique() == 1).all()
    assert df.assign(split=split).groupby("split")["speaker"].nunique().to_dict() == {"train": 16, "val": 2, "test": 2}


def test_leave_speakers_out_folds_partition_speakers_and_balance_gender():
    df = corpus(speakers=10)
    tests = []
    for fold in range(5):
        split = assign_split(df, "leave-speakers-out", seed=7, fold=fold, n_folds=5)
        by = df.assign(split=split).groupby("split")
        assert by["speaker"].nunique().to_dict() == {"test": 2, "train": 6, "val": 2}
        assert (by["gender"].nunique() == 2).all()  # each fold holds one speaker of each gender
        test_speakers = set(df.loc[split == "test", "speaker"])
        val_speakers = set(df.loc[split == "val", "speaker"])
        assert not test_speakers & val_speakers
        tests.append(test_speakers)
        if fold:
            assert tests[fold - 1] != test_speakers
    assert set().union(*tests) == set(df["speaker"])  # every speaker is tested exactly once
    with pytest.raises(ValueError, match="fold must be in"):
        assign_split(df, "leave-speakers-out", fold=5)
    with pytest.raises(ValueError, match="3 speakers cannot fill 5"):
        assign_split(corpus(speakers=3), "leave-speakers-out")


def test_leave_one_session_out():
    df = corpus(speakers=10, sessions=5)
    split = assign_split(df, "leave-one-session-out", fold=2)
    assert set(df.loc[split == "test", "session"]) == {"Session3"}
    assert set(df.loc[split == "val", "session"]) == {"Session4"}
    with pytest.raises(ValueError, match="no column 'session'"):
        assign_split(corpus(), "leave-one-session-out")


def test_unknown_kind_and_bad_ratios():
    with pytest.raises(ValueError, match="unknown split kind 'random'.*speaker-id"):
        assign_split(corpus(), "random")
    with pytest.raises(ValueError, match="summing to 1"):
        assign_split(corpus(), "speaker-id", ratios=(0.5, 0.1, 0.1))
    assert set(SPLIT_KINDS) == {"speaker-id", "speaker-disjoint", "leave-speakers-out", "leave-one-session-out"}


def linked_corpus() -> pd.DataFrame:
    """20 speakers; recordings (``group``) shared by speaker pairs (s00+s01, s02+s03, ...) and one
    video shared across s10..s13, the way interviews and IEMOCAP sessions hold two voices."""
    df = corpus(speakers=20)
    n = df["speaker"].str[1:].astype(int)
    df["group"] = "g" + (n // 2).astype(str) + "_" + df["video"]
    df.loc[n.between(10, 13) & (df["video"] == "v0"), "group"] = "shared"
    return df


@pytest.mark.parametrize(
    "kind, options", [("speaker-id", {}), ("speaker-disjoint", {}), ("leave-speakers-out", {"fold": 1, "n_folds": 4})]
)
def test_group_column_is_used_and_no_group_spans_two_splits(kind, options):
    df = linked_corpus()
    split = assign_split(df, kind, seed=5, **options)
    assert group_leaks(df["group"], split).empty
    assert set(split) == {"train", "val", "test"}
    # Ignoring the groups (group=None) is what leaks: the check is not vacuous on this corpus.
    assert not group_leaks(df["group"], assign_split(df, kind, seed=5, group=None, **options)).empty


def test_speaker_blocks_link_speakers_through_shared_groups():
    df = linked_corpus()
    block = speaker_blocks(df, "speaker", "group")
    assert block["s01"] == "s00" and block["s13"] == "s10" and block["s11"] == "s10" and block["s14"] == "s14"
    assert block.nunique() == 9  # 10 pairs, two of them merged into one through "shared"
    assert (speaker_blocks(df, "speaker", None).index == speaker_blocks(df, "speaker", None).to_numpy()).all()


def test_group_leaks_names_the_group_and_its_splits():
    groups = pd.Series(["a", "a", "b", "c", "c"])
    split = pd.Series(["train", "test", "val", "val", "val"])
    assert group_leaks(groups, split).to_dict() == {"a": ["test", "train"]}


def test_sessions_as_groups_deal_whole_sessions():
    df = corpus(speakers=10, sessions=5)
    df["group"] = df["session"]  # IEMOCAP: the two actors of a session share its recordings
    split = assign_split(df, "leave-speakers-out", seed=0, fold=0, n_folds=5)
    assert df.assign(split=split).groupby("session")["split"].nunique().eq(1).all()
    with pytest.raises(ValueError, match="5 blocks of speakers sharing a 'group' cannot fill 6"):
        assign_split(df, "leave-speakers-out", fold=0, n_folds=6)


@pytest.mark.parametrize("column, n_folds, expected", [("session", 0, 5), ("speaker", 0, 10), ("speaker", 4, 4)])
def test_fold_split_tests_every_item_once_and_validates_on_the_next_fold(column, n_folds, expected):
    df = corpus(speakers=10, sessions=5)
    assert count_folds(df, column, n_folds) == expected
    splits = [fold_split(df, column, f, n_folds, seed=3) for f in range(expected)]
    tested = pd.concat([s == "test" for s in splits], axis=1).sum(axis=1)
    assert (tested == 1).all()  # cross-validation: each item is in exactly one fold's test set
    for f, split in enumerate(splits):
        units = df.assign(split=split).groupby(column)["split"].nunique()
        assert (units == 1).all()  # a session / speaker never spans two splits
        next_test = set(df.loc[splits[(f + 1) % expected] == "test", column])
        assert set(df.loc[split == "val", column]) == next_test  # val: the next fold, held out whole
        assert set(split) == {"train", "val", "test"}
    with pytest.raises(ValueError, match="no column 'take'"):
        count_folds(df, "take")
    holed = df.assign(**{column: df[column].where(df.index != 3)})  # one item without its fold value
    with pytest.raises(ValueError, match=rf"1 item\(s\) have no '{column}'"):
        count_folds(holed, column, n_folds)
    if not n_folds:
        with pytest.raises(ValueError, match=rf"1 item\(s\) have no '{column}'"):
            fold_split(holed, column, 0)


# --- trials ------------------------------------------------------------------------------------


@pytest.mark.parametrize("m", [2, 3, 7, 50_000, 3_000_000])
def test_pair_index_decoding_matches_enumeration(m):
    rng = np.random.default_rng(0)
    total = m * (m - 1) // 2
    p = np.unique(np.r_[0, total - 1, rng.integers(0, total, 1000)])
    i, j = _pair_from_index(p, m)
    assert (0 <= i).all() and (i < j).all() and (j < m).all()
    # Row-major order: index = i*m - i*(i+1)/2 + (j - i - 1)
    assert (i * m - i * (i + 1) // 2 + (j - i - 1) == p).all()


def test_make_trials_balanced_unique_and_correctly_labelled():
    df = corpus(speakers=6, utts=5)
    trials = make_trials(df, n_per_class=40, seed=1)
    assert trials["label"].value_counts().to_dict() == {1: 40, 0: 40}
    spk = df.set_index("utt_id")["speaker"]
    assert ((spk[trials["enrol"]].to_numpy() == spk[trials["test"]].to_numpy()) == trials["label"].astype(bool)).all()
    assert (trials["enrol"] < trials["test"]).all()
    assert not trials[["enrol", "test"]].duplicated().any()
    assert trials.equals(make_trials(df.sample(frac=1, random_state=3), n_per_class=40, seed=1))  # row order irrelevant
    assert not trials.equals(make_trials(df, n_per_class=40, seed=2))


def test_make_trials_caps_at_available_targets_and_all_pairs():
    df = corpus(speakers=3, utts=3)  # 3 target pairs per speaker = 9 targets; 27 non-targets
    capped = make_trials(df, n_per_class=1000)
    assert capped["label"].value_counts().to_dict() == {1: 9, 0: 9}
    everything = make_trials(df)
    assert len(everything) == 36 and everything["label"].sum() == 9
    with pytest.raises(ValueError, match="no speaker has two utterances"):
        make_trials(corpus(speakers=4, utts=1), n_per_class=5)
    with pytest.raises(ValueError, match="only one speaker"):
        make_trials(corpus(speakers=1, utts=4), n_per_class=5)


def test_trial_files_round_trip_and_errors_name_the_line(tmp_path):
    trials = make_trials(corpus(speakers=4, utts=4), n_per_class=10, seed=0)
    path = write_trials(trials, tmp_path / "trials.txt")
    assert path.read_text().splitlines()[0].count(" ") == 2
    assert read_trials(path).equals(trials)
    bad = tmp_path / "bad.txt"
    bad.write_text("1 a b\n\n2 a b\n")
    with pytest.raises(ValueError, match=r"bad.txt:3: expected 'label enrol test'"):
        read_trials(bad)
    with pytest.raises(ValueError, match="contains whitespace"):
        write_trials(pd.DataFrame({"label": [1], "enrol": ["a b"], "test": ["c"]}), tmp_path / "x.txt")

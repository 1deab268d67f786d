"""Evaluation trials: the sample drawn when no trial list is given is fixed, and recorded in the run."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from distill.eval import evaluate
from distill.eval.evaluate import TRIAL_SEED, build_trials, trials_record
from distill.testing import make_lupi_cache, tiny_config
from distill.train.trainer import run_training


def _index(n_speakers: int = 6, per_speaker: int = 10) -> pd.DataFrame:
    utts = [f"s{s}_u{u:02d}" for s in range(n_speakers) for u in range(per_speaker)]
    return pd.DataFrame({"utt_id": utts, "speaker": [u[:2] for u in utts]}, index=utts)


def test_sampled_trials_do_not_depend_on_the_callers_seed_and_are_recorded(monkeypatch):
    monkeypatch.setattr(evaluate, "MAX_ALL_PAIRS", 100)  # 60 items (1770 pairs) then count as "large"
    monkeypatch.setattr(evaluate, "BALANCED_TRIALS_PER_CLASS", 40)
    index = _index()
    ids = list(index.index)
    trials = build_trials(index, ids, "speaker", None)
    assert len(trials) == 80 and trials["label"].sum() == 40
    assert build_trials(index, ids[::-1], "speaker", None).equals(trials)  # order of the ids: irrelevant
    record = trials_record(trials, None, len(ids))
    assert record["source"] == "sampled" and record["seed"] == TRIAL_SEED and record["n_trials"] == 80
    other = build_trials(index, ids, "speaker", None, seed=TRIAL_SEED + 1)
    assert trials_record(other, None, len(ids))["sha256"] != record["sha256"]  # the digest sees the rows
    small = build_trials(index.iloc[:12], ids[:12], "speaker", None)
    assert trials_record(small, None, 12) | {"sha256": ""} == {
        "source": "all-pairs",
        "n_trials": 66,
        "n_target": 45 + 1,
        "sha256": "",
    }


def test_runs_of_different_seeds_are_scored_on_the_same_recorded_trials(tmp_path, monkeypatch):
    monkeypatch.setattr(evaluate, "MAX_ALL_PAIRS", 20)  # the tiny test split (8 items, 28 pairs) is sampled
    monkeypatch.setattr(evaluate, "BALANCED_TRIALS_PER_CLASS", 5)
    cache = make_lupi_cache(tmp_path / "cache", n_classes=2, per_class=16, n_frames=40)
    records = []
    for seed in (0, 1):
        run_training(tiny_config(cache, "teacher", train__seed=seed), tmp_path / f"t{seed}", progress=False)
        records.append(json.loads((tmp_path / f"t{seed}" / "metrics.json").read_text())["trials"])
    assert records[0]["source"] == "sampled" and records[0]["n_trials"] == 10
    assert records[0] == records[1]


def test_official_trial_lists_name_files_and_are_read_as_utterances(tmp_path):
    index = _index(3, 3)
    index.index = index["utt_id"] = [f"id1027{i // 3}/vid{i % 2}/{i:05d}" for i in range(9)]
    official = tmp_path / "veri_test.txt"  # the original VoxCeleb1-O format: file names, .wav
    official.write_text(f"1 {index.index[0]}.wav {index.index[1]}.wav\n0 {index.index[0]}.wav {index.index[4]}\n")
    trials = build_trials(index, [], "speaker", str(official))
    assert trials.to_dict("list") == {
        "label": [1, 0],
        "enrol": [index.index[0]] * 2,
        "test": [index.index[1], index.index[4]],
    }
    official.write_text(f"1 {index.index[0]}.wav id10999/nowhere/00001.wav\n")
    with pytest.raises(ValueError, match="names 1 item.* not in the cache, e.g. 'id10999/nowhere/00001'"):
        build_trials(index, [], "speaker", str(official))

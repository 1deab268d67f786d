"""The fake dataset trees parse, with their own recipes, as the datasets they imitate."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from extract.decode import probe
from manifests.recipes import run_recipe
from manifests.testing import FAKE_TREES, make_fake_tree


def test_fake_voxceleb_is_vox2_dev_and_vox1_with_its_trial_list(tmp_path):
    tree = make_fake_tree("voxceleb", tmp_path)
    vox2 = run_recipe("voxceleb2", tree.root / "VoxCeleb2", val_speakers=0.34)
    vox1 = run_recipe("voxceleb1", tree.root / "VoxCeleb1")
    assert len(vox2.skipped) == len(vox1.skipped) == 0
    assert len(vox2.manifest) + len(vox1.manifest) == tree.items
    assert set(vox2.manifest["subset"]) == {"dev"} and set(vox2.manifest["split"]) == {"train", "val"}
    assert vox2.manifest["speaker"].nunique() + vox1.manifest["speaker"].nunique() == tree.speakers
    trials = vox1.trials["veri_test2.txt"]  # every line names clips that exist (none dropped)
    assert len(trials) == len((tree.root / "VoxCeleb1" / "veri_test2.txt").read_text().splitlines())
    assert trials["label"].sum() == (1 - trials["label"]).sum() > 0
    same = trials["enrol"].str[:7] == trials["test"].str[:7]
    assert (same == trials["label"].astype(bool)).all()
    dev, test = probe(Path(vox2.manifest["path"].iloc[0])), probe(Path(vox1.manifest["path"].iloc[0]))
    assert dev.has_audio and dev.has_video and test.has_audio and not test.has_video


def test_fake_cremad_has_both_trees_and_every_actor_in_every_emotion(tmp_path):
    tree = make_fake_tree("cremad", tmp_path, actors=3)
    video = run_recipe("cremad", tree.root / "CREMA-D", split=None)
    audio = run_recipe("cremad", tree.root / "CREMA-D", split=None, media="audio")
    assert len(video.skipped) == 0 and len(video.manifest) == len(audio.manifest) == tree.items == 3 * 4
    df = video.manifest
    assert (df.groupby("speaker")["emotion"].nunique() == 4).all() and set(df["gender"]) <= {"female", "male"}
    assert df["path"].str.endswith(".flv").all() and audio.manifest["path"].str.endswith(".wav").all()


def test_fake_iemocap_turns_lie_inside_their_dialog_videos(tmp_path):
    tree = make_fake_tree("iemocap", tmp_path, sessions=2, turns=4)
    result = run_recipe("iemocap", tree.root / "IEMOCAP_full_release", split=None)
    df = result.manifest
    assert len(result.skipped) == 0 and len(df) == tree.items == 2 * 4
    assert set(df["session"]) == {"Session1", "Session2"} and df["speaker"].nunique() == tree.speakers == 4
    assert set(df["crop"]) == {"left", "right"}  # the female (marked) actor on the left
    assert (df.loc[df["crop"] == "left", "gender"] == "female").all()
    # The half the crop column names shows that actor: each half's face is nearer the speaker's own face
    # (cast order: session s has actors 2s-2 (female) and 2s-1) than the other actor's.
    from extract.decode import decode_frames
    from manifests.media import face_frame, lfw_faces
    from manifests.testing import FRAME, _cast

    cast = _cast(4, seed=0)
    for crop, actor, other in (("left", 0, 1), ("right", 1, 0)):
        turn = df[(df["session"] == "Session1") & (df["crop"] == crop)].iloc[0]
        half = decode_frames(Path(turn["path"]), 2.0, FRAME, crop=crop)[0][0].mean(axis=2)
        faces = [face_frame(lfw_faces()[cast[k].face], (FRAME, FRAME)).mean(axis=2) for k in (actor, other)]
        corr = [np.corrcoef(half.ravel(), f.ravel())[0, 1] for f in faces]
        assert corr[0] > corr[1] + 0.1, (crop, corr)
    for path, turns in df.groupby("path"):
        info = probe(Path(path))
        assert info.width == 2 * info.height and turns["end"].max() <= info.duration + 0.05  # two actors
        turns = turns.sort_values("start")
        assert np.all(turns["start"].to_numpy()[1:] >= turns["end"].to_numpy()[:-1])  # turns do not overlap


def test_same_arguments_same_tree_and_unknown_datasets_are_named(tmp_path):
    a = make_fake_tree("cremad", tmp_path / "a", actors=2)
    b = make_fake_tree("cremad", tmp_path / "b", actors=2)
    names = sorted(p.relative_to(a.root).as_posix() for p in a.root.rglob("*") if p.is_file())
    assert names == sorted(p.relative_to(b.root).as_posix() for p in b.root.rglob("*") if p.is_file())
    wav = "CREMA-D/AudioWAV/1002_DFA_SAD_XX.wav"
    assert (a.root / wav).read_bytes() == (b.root / wav).read_bytes()
    with pytest.raises(ValueError, match=rf"no fake tree for 'ravdess'; known: {', '.join(FAKE_TREES)}"):
        make_fake_tree("ravdess", tmp_path / "c")

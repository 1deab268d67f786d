"""Recipes on tiny fake trees laid out and named exactly as each dataset publishes itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from manifests.recipes import RECIPES, NotADatasetError, run_recipe
from manifests.recipes.cremad import cremad
from manifests.recipes.generic import generic
from manifests.recipes.ravdess import ravdess
from manifests.recipes.voxceleb import voxceleb1, voxceleb2


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def reasons(result) -> str:
    return "\n".join(result.skipped["item"] + ": " + result.skipped["reason"])


# --- CREMA-D -----------------------------------------------------------------------------------

CREMA_EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}


@pytest.fixture
def crema_root(tmp_path: Path) -> Path:
    root = tmp_path / "CREMA-D"
    for actor in ("1001", "1002", "1003", "1004", "1005"):
        for sentence, level in (("DFA", "XX"), ("IEO", "HI")):
            for emo in CREMA_EMOTIONS:
                name = f"{actor}_{sentence}_{emo}_{level}"
                touch(root / "VideoFlash" / f"{name}.flv")
                touch(root / "AudioWAV" / f"{name}.wav")
    touch(root / "AudioWAV" / "1001_XYZ_ANG_XX.wav")  # unknown sentence code
    touch(root / "VideoFlash" / "1001_XYZ_ANG_XX.flv")
    touch(root / "VideoFlash" / "1006_DFA_ANG_XX.flv")  # audio partner missing
    touch(root / "AudioWAV" / "1006_DFA_SAD_XX.wav")  # video partner missing
    touch(root / "VideoFlash" / "1006_DFA_HAP_XX.flv")
    touch(root / "AudioWAV" / "1006_DFA_HAP_XX.wav", b"")  # empty file (a known CREMA-D defect)
    (root / "VideoDemographics.csv").write_text(
        "ActorID,Age,Sex,Race,Ethnicity\n1001,51,Male,Caucasian,Not Hispanic\n1002,21,Female,Caucasian,Not Hispanic\n"
        "1003,21,Female,Caucasian,Not Hispanic\n1004,42,Female,Caucasian,Not Hispanic\n"
        "1005,29,Male,African American,Not Hispanic\n"
    )
    return root


def test_cremad_counts_labels_and_skips(crema_root):
    result = cremad(crema_root)
    df = result.manifest
    assert len(df) == 5 * 2 * 6
    assert list(df.columns[:3]) == ["utt_id", "path", "speaker"]
    assert sorted(df["speaker"].unique()) == ["1001", "1002", "1003", "1004", "1005"]
    assert df["emotion"].value_counts().to_dict() == {e: 10 for e in CREMA_EMOTIONS.values()}
    row = df.set_index("utt_id").loc["1001_IEO_NEU_HI"]
    assert row["emotion"] == "neutral" and row["level"] == "high" and row["gender"] == "male"
    assert row["path"].endswith("VideoFlash/1001_IEO_NEU_HI.flv") and Path(row["path"]).is_absolute()
    text = reasons(result)
    assert len(result.skipped) == 4, text
    assert "1001_XYZ_ANG_XX" in text and "ActorID_Sentence_Emotion_Level" in text
    assert "missing partner file AudioWAV/1006_DFA_ANG_XX.wav" in text
    assert "missing partner file VideoFlash/1006_DFA_SAD_XX.flv" in text
    assert "empty file AudioWAV/1006_DFA_HAP_XX.wav" in text


def test_cremad_audio_media_and_default_split(crema_root):
    result = run_recipe("cremad", crema_root, media="audio", split_options={"n_folds": 5})
    df = result.manifest
    assert df["path"].str.endswith(".wav").all()
    # leave-speakers-out, 5 folds over 5 actors: one actor each in test and val, speaker-disjoint.
    per_speaker = df.groupby("speaker")["split"].nunique()
    assert (per_speaker == 1).all()
    assert df.groupby("split")["speaker"].nunique().to_dict() == {"test": 1, "train": 3, "val": 1}


# --- RAVDESS -----------------------------------------------------------------------------------


@pytest.fixture
def ravdess_root(tmp_path: Path) -> Path:
    root = tmp_path / "RAVDESS"
    for actor in ("01", "02", "03", "04"):
        for emotion in ("01", "03", "05", "08"):
            for rep in ("01", "02"):
                intensity = "01" if emotion == "01" else "02"
                for modality in ("01", "02"):  # the Video_Speech zips hold full-AV and video-only files
                    touch(root / f"Actor_{actor}" / f"{modality}-01-{emotion}-{intensity}-01-{rep}-{actor}.mp4")
        touch(root / f"Actor_{actor}" / f"01-02-03-01-02-01-{actor}.mp4")  # song
    touch(root / "Actor_01" / "01-01-09-01-01-01-01.mp4")  # emotion 09 does not exist
    touch(root / "Actor_01" / "01-01-03-01-01-01-02.mp4")  # actor 02's file in Actor_01
    touch(root / "Actor_02" / "readme.txt")
    return root


def test_ravdess_default_is_audiovisual_speech(ravdess_root):
    result = ravdess(ravdess_root)
    df = result.manifest
    assert len(df) == 4 * 4 * 2
    assert df["utt_id"].str.startswith("01-01-").all()
    assert df["emotion"].value_counts().to_dict() == {"neutral": 8, "happy": 8, "angry": 8, "surprise": 8}
    assert df.groupby("speaker")["gender"].first().to_dict() == {
        "Actor_01": "male",
        "Actor_02": "female",
        "Actor_03": "male",
        "Actor_04": "female",
    }
    row = df.set_index("utt_id").loc["01-01-05-02-01-02-03"]
    assert (row["intensity"], row["statement"], row["repetition"]) == ("strong", 1, 2)
    text = reasons(result)
    assert text.count("modality 02 excluded") == 32
    assert text.count("song (vocal channel 02) excluded") == 4
    assert "01-01-09-01-01-01-01.mp4" in text and "actor 02 in the name but in folder Actor_01" in text
    assert "readme.txt" in text


def test_ravdess_song_when_asked(ravdess_root):
    df = ravdess(ravdess_root, include_song=True).manifest
    assert (df["vocal_channel"] == "song").sum() == 4 and len(df) == 36


# --- IEMOCAP -----------------------------------------------------------------------------------


def _emo_file(lines: list[str]) -> str:
    header = "% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]\n\n"
    body = ""
    for line in lines:
        body += line + "\nC-E1:\tNeutral;\t()\nA-E3:\tval 3; act 2; dom  2;\t()\n\n"
    return header + body


@pytest.fixture
def iemocap_root(tmp_path: Path) -> Path:
    root = tmp_path / "IEMOCAP_full_release"
    for s in range(1, 6):
        for marked, kind in (("F", "impro01"), ("M", "script01_1")):
            dialog = f"Ses0{s}{marked}_{kind}"
            touch(root / f"Session{s}" / "dialog" / "avi" / "DivX" / f"{dialog}.avi")
            lines = [
                f"[6.2901 - 8.2357]\t{dialog}_F000\tneu\t[2.5000, 2.5000, 2.5000]",
                f"[10.0100 - 11.3925]\t{dialog}_M000\texc\t[3.5000, 3.5000, 3.0000]",
                f"[14.8872 - 18.0175]\t{dialog}_F001\thap\t[4.0000, 3.0000, 3.0000]",
                f"[19.2900 - 20.7875]\t{dialog}_M001\tang\t[1.5000, 4.0000, 4.5000]",
                f"[21.3000 - 24.0000]\t{dialog}_F002\tsad\t[2.0000, 2.0000, 2.0000]",
                f"[25.0000 - 27.5000]\t{dialog}_M002\tfru\t[2.0000, 3.5000, 3.5000]",
                f"[28.0000 - 29.0000]\t{dialog}_F003\txxx\t[2.5000, 3.0000, 3.0000]",
            ]
            touch(root / f"Session{s}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt", _emo_file(lines).encode())
    ev = root / "Session1" / "dialog" / "EmoEvaluation"
    touch(ev / "._Ses01F_impro01.txt", b"\x00\x05\x16\x07")  # macOS resource fork in the release
    touch(
        ev / "Ses01F_impro02.txt",
        _emo_file(
            [  # dialog whose video is missing
                "[1.0000 - 2.0000]\tSes01F_impro02_F000\tneu\t[2.5000, 2.5000, 2.5000]"
            ]
        ).encode(),
    )
    with (ev / "Ses01F_impro01.txt").open("a") as fh:
        fh.write("[30.0000 - 31.0000]\tSes01F_impro01_F004\tneu\n")  # truncated turn line
        fh.write("[32.0000 - 31.0000]\tSes01F_impro01_M005\tneu\t[2.5000, 2.5000, 2.5000]\n")
    return root


def test_iemocap_four_classes_sides_and_sessions(iemocap_root):
    result = run_recipe("iemocap", iemocap_root)
    df = result.manifest.set_index("utt_id")
    assert len(df) == 5 * 2 * 5
    assert df["emotion"].value_counts().to_dict() == {"happy": 20, "neutral": 10, "angry": 10, "sad": 10}
    assert df.loc["Ses01F_impro01_M000", "emotion"] == "happy"  # excited merged into happy
    assert set(df["speaker"]) == {f"Ses0{s}{g}" for s in range(1, 6) for g in "FM"}
    row = df.loc["Ses02M_script01_1_M001"]
    assert (row["start"], row["end"], row["arousal"]) == (19.29, 20.7875, 4.0)
    assert row["path"].endswith("Session2/dialog/avi/DivX/Ses02M_script01_1.avi")
    # The marked actor (the dialog's letter) sits on the left.
    assert df.loc["Ses01F_impro01_F000", "crop"] == "left" and df.loc["Ses01F_impro01_M001", "crop"] == "right"
    assert df.loc["Ses03M_script01_1_M001", "crop"] == "left" and df.loc["Ses03M_script01_1_F000", "crop"] == "right"
    assert (df["gender"] == df["speaker"].str[-1].map({"F": "female", "M": "male"})).all()
    # Default split: leave-one-session-out, fold 0 tests Session1 and validates on Session2.
    assert df.groupby("session")["split"].unique().map(list).to_dict() == {
        "Session1": ["test"],
        "Session2": ["val"],
        "Session3": ["train"],
        "Session4": ["train"],
        "Session5": ["train"],
    }
    text = reasons(result)
    assert "._Ses01F_impro01.txt" in text
    assert "missing partner video dialog/avi/DivX/Ses01F_impro02.avi" in text
    assert "turn line is not" in text and "end 31.0 is not after start 32.0" in text
    assert text.count("emotion 'fru' not in the 4-class set") == 10
    assert text.count("no majority label (xxx)") == 10


def test_iemocap_all_classes_and_no_crop(iemocap_root):
    result = run_recipe("iemocap", iemocap_root, classes="all", crop_speaker=False, split_options={"fold": 4})
    df = result.manifest
    assert set(df["emotion"]) == {"neutral", "excited", "happy", "angry", "sad", "frustrated"}
    assert (df["crop"] == "full").all()
    assert set(df.loc[df["split"] == "test", "session"]) == {"Session5"}
    assert set(df.loc[df["split"] == "val", "session"]) == {"Session1"}


# --- VoxCeleb ----------------------------------------------------------------------------------


def _vox_tree(base: Path, ext: str, speakers: dict[str, list[str]], clips: int = 2) -> None:
    for spk, videos in speakers.items():
        for video in videos:
            for k in range(1, clips + 1):
                touch(base / spk / video / f"{k:05d}.{ext}")


def test_voxceleb2_dev_test_partner_and_meta(tmp_path):
    root = tmp_path / "vox2"
    dev = {"id00012": ["21Uxsk56VDQ", "2DLq_Kkc1r8"], "id00015": ["0fijmz4vTVU"]}
    test = {"id00017": ["01dfn2spqyE", "5MkXgwdrmJw"]}
    _vox_tree(root / "dev" / "mp4", "mp4", dev)
    _vox_tree(root / "dev" / "aac", "m4a", {**dev, "id00016": ["X-9a-bcdefg"]})  # id00016's mp4 missing
    _vox_tree(root / "test" / "mp4", "mp4", test)
    touch(root / "dev" / "mp4" / "id00012" / "21Uxsk56VDQ" / "clip.mp4")  # malformed clip name
    touch(root / "dev" / "mp4" / "speaker7" / "abc" / "00001.mp4")  # malformed speaker folder
    (root / "vox2_meta.csv").write_text(
        "VoxCeleb2 ID ,VGGFace2 ID ,Gender ,Set \n"
        "id00012 ,n000012 ,m ,dev \nid00015 ,n000015 ,f ,dev \n"
        "id00017 ,n000017 ,f ,test \n"
    )
    result = voxceleb2(root)
    df = result.manifest.set_index("utt_id")
    assert len(df) == (3 + 2) * 2
    assert df.loc["id00012/2DLq_Kkc1r8/00002", "path"].endswith("dev/mp4/id00012/2DLq_Kkc1r8/00002.mp4")
    assert df.groupby("speaker")["split"].first().to_dict() == {
        "id00012": "train",
        "id00015": "train",
        "id00017": "test",
    }
    assert df.loc["id00015/0fijmz4vTVU/00001", "gender"] == "female"
    text = reasons(result)
    assert "clip.mp4" in text and "speaker7: not a speaker folder named idNNNNN" in text
    assert text.count("no mp4 partner") == 2 and "id00016/X-9a-bcdefg/00001" in text
    audio = voxceleb2(root, media="aac").manifest
    assert len(audio) == 4 * 2 and audio["path"].str.endswith(".m4a").all()


def test_voxceleb2_groups_by_video_and_carves_speaker_disjoint_val(tmp_path):
    root = tmp_path / "vox2"
    dev = {f"id{n:05d}": [f"vid{n}a", f"vid{n}b"] for n in range(10, 30)}
    dev["id00010"].append("sharedvid01")  # one video with two dev speakers
    dev["id00011"].append("sharedvid01")
    _vox_tree(root / "dev" / "mp4", "mp4", dev)
    _vox_tree(root / "test" / "mp4", "mp4", {"id00090": ["testvid01"]})
    df = run_recipe("voxceleb2", root, val_speakers=0.25).manifest
    assert (df["group"] == df["utt_id"].str.split("/").str[1]).all()
    per_speaker = df.groupby("speaker")["split"]
    assert per_speaker.nunique().eq(1).all()  # speaker-disjoint
    assert df.groupby("group")["split"].nunique().eq(1).all()
    split = per_speaker.first()
    assert split["id00090"] == "test" and set(split.drop("id00090")) == {"train", "val"}
    assert split["id00010"] == split["id00011"]  # linked by their shared video
    assert 4 <= (split == "val").sum() <= 6
    assert run_recipe("voxceleb2", root, val_speakers="0.25").manifest["split"].equals(df["split"])  # CLI strings
    assert set(run_recipe("voxceleb2", root).manifest["split"]) == {"train", "test"}  # default: no carve-out
    with pytest.raises(ValueError, match="val_speakers must be a fraction"):
        voxceleb2(root, val_speakers=1.5)


def test_voxceleb1_official_split_and_trials(tmp_path):
    root = tmp_path / "vox1"
    speakers = {"id10270": ["x6uYqmx31kE", "8jEAjG6SegY"], "id10271": ["1gtz-CUIygI"], "id10272": ["na8-QEFmj44"]}
    _vox_tree(root / "vox1_test_wav" / "wav", "wav", speakers)
    (root / "iden_split.txt").write_text(
        "1 id10270/x6uYqmx31kE/00001.wav\n1 id10270/x6uYqmx31kE/00002.wav\n2 id10270/8jEAjG6SegY/00001.wav\n"
        "3 id10270/8jEAjG6SegY/00002.wav\n1 id10271/1gtz-CUIygI/00001.wav\n3 id10271/1gtz-CUIygI/00002.wav\n"
        "1 id10272/na8-QEFmj44/00001.wav\n3 id10272/na8-QEFmj44/00002.wav\n"
    )
    (root / "vox1_meta.csv").write_text(
        "VoxCeleb1 ID\tVGGFace1 ID\tGender\tNationality\tSet\n"
        "id10270\t5.Waltz\tm\tGermany\ttest\nid10271\tA.J._Buckley\tm\tIreland\ttest\n"
        "id10272\tAaron_Tveit\tf\tUSA\ttest\n"
    )
    (root / "veri_test2.txt").write_text(
        "1 id10270/x6uYqmx31kE/00001.wav id10270/8jEAjG6SegY/00002.wav\n"
        "0 id10270/x6uYqmx31kE/00001.wav id10271/1gtz-CUIygI/00001.wav\n"
        "0 id10272/na8-QEFmj44/00002.wav id10999/aaaaaaaaaaa/00001.wav\n"
    )  # speaker not downloaded
    with pytest.warns(
        UserWarning,
        match=r"puts 3 group value\(s\) \(recordings\) in two splits, e\.g\. "
        r"'1gtz-CUIygI' in test, train",
    ):
        result = run_recipe("voxceleb1", root)  # this iden_split holds clips of one video on both sides
    df = result.manifest.set_index("utt_id")
    assert len(df) == 8 and df["speaker"].nunique() == 3
    assert df.loc["id10270/8jEAjG6SegY/00001", "split"] == "val"
    assert df["split"].value_counts().to_dict() == {"train": 4, "test": 3, "val": 1}
    assert df.loc["id10272/na8-QEFmj44/00001", "gender"] == "female"
    trials = result.trials["veri_test2.txt"]
    assert trials.to_dict("list") == {
        "label": [1, 0],
        "enrol": ["id10270/x6uYqmx31kE/00001", "id10270/x6uYqmx31kE/00001"],
        "test": ["id10270/8jEAjG6SegY/00002", "id10271/1gtz-CUIygI/00001"],
    }
    assert set(trials["enrol"]) | set(trials["test"]) <= set(df.index)
    assert "1 of 3 trials name utterances not found" in reasons(result)


def test_voxceleb1_rejects_malformed_iden_split(tmp_path):
    root = tmp_path / "vox1"
    _vox_tree(root / "wav", "wav", {"id10270": ["x6uYqmx31kE"]})
    (root / "iden_split.txt").write_text("1 id10270/x6uYqmx31kE/00001.wav\n7 id10270/x6uYqmx31kE/00002.wav\n")
    with pytest.raises(ValueError, match=r"iden_split.txt:2"):
        voxceleb1(root)


# --- generic -----------------------------------------------------------------------------------


def test_generic_pattern_and_labels(tmp_path):
    root = tmp_path / "corpus"
    for spk in ("alice", "bob"):
        for emo in ("happy", "sad"):
            touch(root / spk / f"{emo}_1.wav")
    touch(root / "bob" / "notes" / "x.wav")  # does not match the pattern
    touch(root / "alice" / "cover.jpg")  # not media
    result = generic(root, pattern=r"(?P<speaker>[^/]+)/(?P<emotion>[a-z]+)_\d+\.wav")
    df = result.manifest.set_index("utt_id")
    assert len(df) == 4 and df.loc["alice/sad_1", "emotion"] == "sad" and df.loc["bob/happy_1", "speaker"] == "bob"
    assert len(result.skipped) == 1 and "does not match pattern" in reasons(result)

    labels = tmp_path / "labels.csv"
    labels.write_text("path,speaker,emotion\nalice/happy_1.wav,A,joy\nbob/sad_1.wav,B,grief\nbob/gone.wav,B,x\n")
    result = generic(root, labels=labels)
    assert result.manifest.set_index("utt_id").loc["bob/sad_1", "emotion"] == "grief"
    text = reasons(result)
    assert len(result.manifest) == 2
    assert text.count("no row in labels.csv") == 3 and "listed in labels.csv but not found" in text


def test_generic_bad_inputs(tmp_path):
    touch(tmp_path / "a.wav")
    with pytest.raises(ValueError, match="no named groups"):
        generic(tmp_path, pattern=r"(.*)\.wav")
    bad = tmp_path / "labels.csv"
    bad.write_text("file,speaker\na.wav,x\n")
    with pytest.raises(ValueError, match="needs a 'path' column"):
        generic(tmp_path, labels=bad)


def test_emotion_labels_share_one_spelling():
    from manifests.demo import EMOTIONS as DEMO
    from manifests.recipes import EMOTIONS
    from manifests.recipes import cremad as c
    from manifests.recipes import iemocap as i
    from manifests.recipes import ravdess as r

    for labels in (c.EMOTIONS.values(), r.EMOTIONS.values(), i.CODES.values(), i.FOUR_CLASS.values(), DEMO):
        assert set(labels) <= set(EMOTIONS)


# --- every recipe fails clearly on a root that is not its dataset -----------------------------


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_not_a_dataset_root(tmp_path, name):
    touch(tmp_path / "some" / "random.txt")
    with pytest.raises(NotADatasetError, match=rf"is not a {name} root: \w"):
        RECIPES[name].fn(tmp_path)
    with pytest.raises(NotADatasetError, match="no such directory"):
        RECIPES[name].fn(tmp_path / "missing")


def test_all_names_malformed_is_an_error_naming_a_file(tmp_path):
    touch(tmp_path / "AudioWAV" / "hello.wav")
    with pytest.raises(NotADatasetError, match=r"no usable items \(1 files skipped, e.g. .*hello.wav"):
        cremad(tmp_path)


def test_voxceleb1_reads_every_official_trial_list(tmp_path):
    root = tmp_path / "vox1"
    _vox_tree(root / "wav", "wav", {"id10270": ["x6uYqmx31kE"], "id10271": ["1gtz-CUIygI"]})
    line = (
        "1 id10270/x6uYqmx31kE/00001.wav id10270/x6uYqmx31kE/00002.wav\n"
        "0 id10270/x6uYqmx31kE/00001.wav id10271/1gtz-CUIygI/00002.wav\n"
    )
    names = (
        "veri_test.txt",
        "veri_test2.txt",
        "list_test_all.txt",
        "list_test_all2.txt",
        "list_test_hard.txt",
        "list_test_hard2.txt",
    )  # VoxCeleb1-O, -E, -H: original and cleaned
    for name in names:
        (root / name).write_text(line)
    result = run_recipe("voxceleb1", root)
    assert set(result.trials) == set(names)
    for trials in result.trials.values():
        assert trials["test"].tolist() == ["id10270/x6uYqmx31kE/00002", "id10271/1gtz-CUIygI/00002"]
        assert set(trials["enrol"]) | set(trials["test"]) <= set(result.manifest["utt_id"])

"""The demo corpus: real decodable videos, consistent labels and splits, deterministic for a seed."""

from __future__ import annotations

import hashlib
import subprocess

import numpy as np
import pandas as pd
import pytest

from common.ffmpeg import ffmpeg_exe
from manifests.demo import EMOTIONS, FACE, DemoConfig, main, make_demo_corpus, make_speakers, render_frames
from manifests.io import read_manifest
from manifests.media import lfw_faces
from manifests.voice import Prosody, Voice, synthesize

SMALL = dict(speakers=3, utts_per_speaker=4, seed=0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    return make_demo_corpus(out, **SMALL, progress=False)


def md5(path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_manifest_labels_and_splits(corpus):
    df = read_manifest(corpus)
    assert list(df.columns) == [
        "utt_id",
        "path",
        "speaker",
        "emotion",
        "gender",
        "voice_group",
        "split",
        "emotion_split",
        "snr_db",
    ]
    assert len(df) == 12 and df["speaker"].nunique() == 3
    # Every speaker says every emotion equally often, and keeps one gender.
    assert (pd.crosstab(df["speaker"], df["emotion"]) == 1).all().all()
    assert set(df["emotion"]) == set(EMOTIONS)
    assert (df.groupby("speaker")["gender"].nunique() == 1).all()
    # Voice groups of two consecutive speakers (the third speaker alone), one gender per group.
    assert df.groupby("speaker")["voice_group"].first().to_dict() == {"spk00": 0, "spk01": 0, "spk02": 1}
    assert (df.groupby("voice_group")["gender"].nunique() == 1).all()
    # Speaker identification: every speaker in train, val and test.
    assert (pd.crosstab(df["speaker"], df["split"])[["train", "val", "test"]] > 0).all().all()
    # Emotion: speaker-independent, one held-out speaker each for val and test here.
    assert (df.groupby("speaker")["emotion_split"].nunique() == 1).all()
    assert df.groupby("emotion_split")["speaker"].nunique().to_dict() == {"test": 1, "train": 1, "val": 1}
    assert df["snr_db"].between(-5, 5).all()
    raw = pd.read_csv(corpus)
    assert raw["path"].str.startswith("videos/").all()  # relative: the corpus folder moves as a unit


def test_files_are_real_h264_aac_videos(corpus):
    df = read_manifest(corpus)
    row = df.iloc[5]
    probe = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", row["path"]], capture_output=True, text=True).stderr
    assert "Video: h264" in probe and "Audio: aac" in probe and "160x160" in probe
    video = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", row["path"], "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
        capture_output=True,
        check=True,
    ).stdout
    frames = np.frombuffer(video, np.uint8).reshape(-1, 160, 160, 3)
    assert 1.5 * 25 - 1 <= len(frames) <= 2.5 * 25 + 1
    assert frames[:, 60:100, 60:100].std() > 10  # a textured face in the middle, not a blank frame
    audio = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", row["path"], "-f", "f32le", "-ac", "1", "-ar", "16000", "-"],
        capture_output=True,
        check=True,
    ).stdout
    samples = np.frombuffer(audio, np.float32)
    assert abs(len(samples) / 16000 - len(frames) / 25) < 0.1  # audio and video cover the same span
    assert 0.01 < np.sqrt(np.mean(samples**2)) < 0.5


def test_deterministic_for_a_seed_and_reused(corpus, tmp_path):
    again = make_demo_corpus(tmp_path / "again", **SMALL, progress=False)
    a, b = read_manifest(corpus, absolute=False), read_manifest(again, absolute=False)
    assert a.equals(b)
    assert md5(corpus.parent / a["path"][0]) == md5(again.parent / b["path"][0])
    stamp = (again.parent / b["path"][0]).stat().st_mtime_ns
    assert make_demo_corpus(tmp_path / "again", **SMALL, progress=False) == again
    assert (again.parent / b["path"][0]).stat().st_mtime_ns == stamp  # reused, not rewritten
    other = make_demo_corpus(tmp_path / "other", **{**SMALL, "seed": 1, "utts_per_speaker": 1}, progress=False)
    assert md5(other.parent / "videos" / "spk00_u000.mp4") != md5(corpus.parent / "videos" / "spk00_u000.mp4")


def test_a_corpus_made_by_another_ffmpeg_build_is_not_reused(corpus, tmp_path, monkeypatch):
    import json

    out = tmp_path / "built"
    manifest = make_demo_corpus(out, **{**SMALL, "speakers": 3, "utts_per_speaker": 1}, progress=False)
    first = manifest.parent / read_manifest(manifest, absolute=False)["path"][0]
    stamp = first.stat().st_mtime_ns
    recorded = json.loads((out / "corpus.json").read_text())
    assert recorded["ffmpeg"].startswith("ffmpeg version")
    recorded["ffmpeg"] = "ffmpeg version 0.0-another-build"
    (out / "corpus.json").write_text(json.dumps(recorded))
    make_demo_corpus(out, **{**SMALL, "speakers": 3, "utts_per_speaker": 1}, progress=False)
    assert first.stat().st_mtime_ns != stamp  # regenerated, not reused
    assert json.loads((out / "corpus.json").read_text())["ffmpeg"] != "ffmpeg version 0.0-another-build"


def test_voice_pitch_follows_speaker_and_emotion():
    def f0_of(x: np.ndarray, sr: int = 16000) -> float:
        x = x - x.mean()
        ac = np.correlate(x, x, "full")[len(x) - 1 :]
        lo, hi = sr // 400, sr // 60
        return sr / (lo + np.argmax(ac[lo:hi]))

    rng = np.random.default_rng(0)
    for f0 in (110.0, 210.0):
        estimates = [f0_of(synthesize(Voice(f0, 1.0, 0.6, 4.0), Prosody(f0_range=0.5), 1.0, rng)) for _ in range(5)]
        assert abs(np.median(estimates) / f0 - 1) < 0.1, (f0, estimates)
    low = synthesize(Voice(120, 1.0, 0.6, 4.0), Prosody(energy=0.8), 1.0, rng)
    high = synthesize(Voice(120, 1.0, 0.6, 4.0), Prosody(energy=1.25), 1.0, rng)
    assert np.sqrt(np.mean(high**2)) / np.sqrt(np.mean(low**2)) == pytest.approx(1.25 / 0.8, rel=0.01)


def test_speakers_resemble_each_other_but_have_distinct_faces():
    cfg = DemoConfig(speakers=10)
    cast = make_speakers(cfg)
    assert len({s.face for s in cast}) == 10 and len({s.tint for s in cast}) == 10  # distinct faces and skin tones
    female = [s.voice.f0 for s in cast if s.gender == "female"]
    spread = 2 ** (cfg.voice_spread / 12)
    assert max(female) / min(female) < 2 ** (4 / 12) * spread**2 + 1e-9  # group voices within four semitones
    assert all(
        0.95 / 1.01 <= s.voice.formant_scale / (1.15 if s.gender == "female" else 1.0) <= 1.05 * 1.01 for s in cast
    )
    # A voice group's members share its voice up to voice_spread; different groups do not.
    for a, b in zip(cast[::2], cast[1::2]):
        assert a.voice_group == b.voice_group and a.gender == b.gender
        assert 1 / spread**2 <= a.voice.f0 / b.voice.f0 <= spread**2
        assert abs(a.voice.formant_scale / b.voice.formant_scale - 1) < 0.021
    groups = [make_speakers(DemoConfig(speakers=10, voice_group=1))[i].voice for i in range(10)]
    assert len({v.f0 for v in groups}) == 10


def test_voice_group_members_are_closer_in_audio_than_other_speakers():
    """The corpus's premise, on the log-mel bands of clean speech: the two members of a voice group
    sound closer to each other than to the same-gender speakers of other groups."""
    from extract.config import ExtractConfig
    from extract.fbank import LogMel
    from manifests.demo import PROSODY

    cast, logmel = make_speakers(DemoConfig(speakers=8)), LogMel(ExtractConfig())
    rng = np.random.default_rng(0)
    p = [
        np.mean([logmel(synthesize(s.voice, PROSODY["neutral"], 1.5, rng)).mean(0) for _ in range(8)], axis=0)
        for s in cast
    ]

    def d(i: int, j: int) -> float:
        return float(np.abs(p[i] - p[j]).mean())

    assert [s.voice_group for s in cast] == [0, 0, 1, 1, 2, 2, 3, 3]
    within = np.mean([d(0, 1), d(2, 3), d(4, 5), d(6, 7)])
    across = np.mean([d(i, j) for i, j in ((0, 4), (0, 5), (1, 4), (1, 5), (2, 6), (2, 7), (3, 6), (3, 7))])
    assert within < 0.6 * across, (within, across)


def test_each_emotion_changes_the_face_consistently():
    cfg = DemoConfig()
    face = lfw_faces()[3]
    rng = np.random.default_rng(0)
    mean_frame = {e: render_frames(cfg, face, FACE[e], 10, rng).mean(axis=(0, 3)) for e in EMOTIONS}
    again = {e: render_frames(cfg, face, FACE[e], 10, rng).mean(axis=(0, 3)) for e in EMOTIONS}
    for e in EMOTIONS:  # the same emotion twice is closer than any other emotion
        d_same = np.abs(mean_frame[e] - again[e]).mean()
        assert all(d_same < np.abs(mean_frame[e] - again[o]).mean() for o in EMOTIONS if o != e), e


def test_cli(tmp_path, capsys):
    assert main([str(tmp_path / "c"), "--speakers", "2", "--utts-per-speaker", "1", "--frame-size", "96"]) == 0
    assert "2 utterances, 2 speakers" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "d"), "--speakers", "1"])
    assert exc.value.code == 2
    with pytest.raises(SystemExit) as exc:
        main([str(tmp_path / "e"), "--voice-group", "0"])
    assert exc.value.code == 2
    with pytest.raises(ValueError, match="split_ratios"):
        DemoConfig(split_ratios=(0.5, 0.0, 0.5))  # an empty validation split breaks model selection

"""extract.decode: every container decodes to 16 kHz mono and small frames; bad files say why."""

from __future__ import annotations

import os

import numpy as np
import pytest

from extract.decode import DecodeError, decode, probe
from manifests.media import face_frame, lfw_faces, write_video
from tests.conftest import tone


@pytest.mark.parametrize("name", ["mp4", "mkv", "avi", "webm", "flv", "weird"])
def test_containers_decode_to_16k_mono_and_fps_frames(clips, name):
    clip = clips[name]
    media = decode(clip.path, sample_rate=16000, fps=5, frame_size=64)
    assert media.has_video
    assert media.audio.dtype == np.float32 and media.audio.ndim == 1
    # 1 s at any source rate resamples to ~16000 samples (codec priming adds a few ms at most)
    assert abs(len(media.audio) - 16000) < 0.1 * 16000
    assert 0.01 < np.abs(media.audio).max() <= 1.0
    assert media.frames.shape == (5, 64, 64, 3) and media.frames.dtype == np.uint8
    np.testing.assert_allclose(media.frame_times, np.arange(5) / 5, atol=1e-6)


def test_audio_only_files_have_no_frames(clips):
    for name in ("wav", "m4a"):
        media = decode(clips[name].path, fps=5, frame_size=64)
        assert not media.has_video and media.frames.shape == (0, 64, 64, 3) and media.frame_times.shape == (0,)
        assert abs(len(media.audio) / 16000 - clips[name].seconds) < 0.05


def test_start_end_cut_and_crop_halves(tmp_path):
    # left half: a face; right half: flat background → the crop decides which one we keep
    h, w = 96, 192
    frame = np.full((h, w, 3), 40, np.uint8)
    frame[:, : w // 2] = face_frame(lfw_faces()[0], (h, w // 2))
    path = write_video(tmp_path / "dialog.mp4", np.repeat(frame[None], 30, 0), 10, tone(3.0, 16000), 16000)

    cut = decode(path, fps=5, frame_size=64, start=1.0, end=2.5)
    assert abs(len(cut.audio) - 1.5 * 16000) < 400
    assert len(cut.frames) in (7, 8) and cut.frame_times[0] == 0.0  # times restart at the cut

    left = decode(path, fps=5, frame_size=64, crop="left", end=1.0).frames
    right = decode(path, fps=5, frame_size=64, crop="right", end=1.0).frames
    assert left[0].std() > 3 * right[0].std()
    with pytest.raises(DecodeError, match="crop must be one of"):
        decode(path, crop="middle")
    with pytest.raises(DecodeError, match="end .* must be after start"):
        decode(path, start=2.0, end=1.0)


def test_frames_never_exceed_frame_size(tmp_path):
    big = np.zeros((4, 480, 640, 3), np.uint8)
    path = write_video(tmp_path / "big.mp4", big, 4, tone(1.0, 16000))
    frames = decode(path, fps=2, frame_size=48).frames
    assert frames.shape == (2, 48, 48, 3)


def test_bad_inputs_name_stage_and_reason(tmp_path, clips):
    text = tmp_path / "notes.mp4"
    text.write_text("these are my meeting notes, not a video\n")
    empty = tmp_path / "empty.mp4"
    empty.touch()
    data = clips["mkv"].path.read_bytes()
    truncated = tmp_path / "cut.mkv"
    truncated.write_bytes(data[: len(data) // 2])
    mp4 = clips["mp4"].path.read_bytes()
    truncated_mp4 = tmp_path / "cut.mp4"
    truncated_mp4.write_bytes(mp4[: len(mp4) // 2])
    silent = write_video(tmp_path / "silent.mp4", np.zeros((5, 32, 32, 3), np.uint8), 5)
    cases = {
        tmp_path / "absent.mp4": ("input", "file not found"),
        empty: ("input", "empty file"),
        text: ("probe", "not a readable media file"),
        truncated: ("audio", "truncated"),
        truncated_mp4: ("probe", "not a readable media file"),
        silent: ("audio", "no audio stream"),
        tmp_path: ("input", "is a directory"),
    }
    for path, (stage, reason) in cases.items():
        with pytest.raises(DecodeError) as err:
            decode(path)
        assert (err.value.stage, reason in err.value.reason) == (stage, True), (path, err.value)


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions; no honest way to deny it")
def test_unreadable_file(tmp_path, clips):
    path = tmp_path / "locked.mp4"
    path.write_bytes(clips["mp4"].path.read_bytes())
    path.chmod(0)
    with pytest.raises(DecodeError, match="permission denied"):
        decode(path)


def test_probe_sees_streams_and_duration(clips):
    info = probe(clips["mkv"].path)
    assert info.has_audio and info.has_video and abs(info.duration - 1.0) < 0.1
    info = probe(clips["wav"].path)
    assert info.has_audio and not info.has_video

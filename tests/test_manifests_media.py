"""manifests.media: real containers come out of write_video, and decode back to what went in."""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from common.ffmpeg import ffmpeg_exe
from manifests.media import CONTAINER_CODECS, MediaError, face_frame, lfw_faces, write_video


def _streams(path) -> str:
    """ffmpeg's own description of the file's streams (there is no ffprobe in the static build)."""
    proc = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)], capture_output=True, text=True)
    return "\n".join(line for line in proc.stderr.splitlines() if "Stream #" in line)


def test_lfw_faces_are_the_hundred_face_crops():
    faces = lfw_faces()
    assert faces.shape == (100, 25, 25)
    assert 0.0 <= faces.min() and faces.max() <= 1.0
    assert not faces.flags.writeable


def test_face_frame_places_the_face_in_the_box():
    face = lfw_faces()[0]
    frame = face_frame(face, size=(60, 80), box=(10, 20, 30, 30))
    assert frame.shape == (60, 80, 3) and frame.dtype == np.uint8
    assert (frame[:10] == 96).all() and (frame[:, :20] == 96).all()  # background outside the box
    assert frame[10:40, 20:50].std() > 10  # the face has texture
    with pytest.raises(ValueError, match="does not fit"):
        face_frame(face, size=(60, 80), box=(50, 0, 30, 30))
    # A skin tone tints the face only; without one the face is grey.
    assert (frame[..., 0] == frame[..., 2]).all()
    tinted = face_frame(face, size=(60, 80), box=(10, 20, 30, 30), tint=(1.0, 0.8, 0.5))
    assert (tinted[:10] == 96).all()
    ratio = tinted[10:40, 20:50].astype(float).mean((0, 1)) / frame[10:40, 20:50].astype(float).mean((0, 1))
    assert ratio == pytest.approx([1.0, 0.8, 0.5], abs=0.01)


@pytest.mark.parametrize("ext", [".mp4", ".mkv", ".avi", ".webm", ".flv"])
def test_write_video_makes_real_containers(tmp_path, monkeypatch, ext):
    monkeypatch.chdir(tmp_path)  # a shell expanding $(touch x) would create ./x here
    frames = np.stack([face_frame(lfw_faces()[i], (48, 64)) for i in range(5)])
    audio = (0.2 * np.sin(np.linspace(0, 440 * 2 * np.pi, 8000))).astype(np.float32)
    path = write_video(tmp_path / f"clip {ext[1:]} $(touch x) 'q' é{ext}", frames, 5, audio, 8000)
    streams = _streams(path)
    vcodec, acodec = CONTAINER_CODECS[ext]
    assert "Video:" in streams and "Audio:" in streams, streams
    assert {"libx264": "h264", "libvpx": "vp8", "flv": "flv1"}.get(vcodec, vcodec) in streams
    assert not (tmp_path / "x").exists()  # no shell ever saw the name


def test_write_video_audio_only_and_silent(tmp_path):
    audio = np.zeros(1600, np.float32)
    assert "Video:" not in _streams(write_video(tmp_path / "a.wav", None, audio=audio))
    assert "Video:" not in _streams(write_video(tmp_path / "a.m4a", None, audio=audio, sample_rate=22050))
    frames = np.zeros((3, 32, 32, 3), np.uint8)
    assert "Audio:" not in _streams(write_video(tmp_path / "v.mp4", frames, 5))


def test_write_video_errors_carry_ffmpeg_stderr(tmp_path):
    frames = np.zeros((2, 16, 16, 3), np.uint8)
    with pytest.raises(MediaError, match="Unknown encoder"):
        write_video(tmp_path / "x.mp4", frames, 5, vcodec="no-such-codec")
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "x.mp4", frames.astype(np.float32), 5)


# ------------------------------------------------------------------ which ffmpeg ($AVPI_FFMPEG)


def _fake_path(tmp_path, monkeypatch, with_ffmpeg: bool):
    """PATH holding only a folder that has (or lacks) an `ffmpeg`, a link to the bundled build."""
    import imageio_ffmpeg

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    if with_ffmpeg:
        (bin_dir / "ffmpeg").symlink_to(imageio_ffmpeg.get_ffmpeg_exe())
    monkeypatch.setenv("PATH", str(bin_dir))
    return bin_dir


def test_ffmpeg_choice_bundled_system_auto_and_path(tmp_path, monkeypatch):
    import imageio_ffmpeg

    from common.ffmpeg import FFMPEG_ENV, ffmpeg_version

    bundled = imageio_ffmpeg.get_ffmpeg_exe()
    bin_dir = _fake_path(tmp_path, monkeypatch, with_ffmpeg=True)
    monkeypatch.setenv(FFMPEG_ENV, "bundled")
    assert ffmpeg_exe() == bundled
    monkeypatch.setenv(FFMPEG_ENV, "system")
    assert ffmpeg_exe() == str(bin_dir / "ffmpeg")
    monkeypatch.delenv(FFMPEG_ENV)  # auto: PATH first
    assert ffmpeg_exe() == str(bin_dir / "ffmpeg")
    monkeypatch.setenv(FFMPEG_ENV, str(bin_dir / "ffmpeg"))
    assert ffmpeg_exe() == str(bin_dir / "ffmpeg")
    assert ffmpeg_version().startswith("ffmpeg version")


def test_ffmpeg_choice_errors_name_the_setting(tmp_path, monkeypatch):
    import imageio_ffmpeg

    from common.ffmpeg import FFMPEG_ENV

    _fake_path(tmp_path, monkeypatch, with_ffmpeg=False)
    monkeypatch.delenv(FFMPEG_ENV, raising=False)
    assert ffmpeg_exe() == imageio_ffmpeg.get_ffmpeg_exe()  # auto without one on PATH: the bundled build
    monkeypatch.setenv(FFMPEG_ENV, "system")
    with pytest.raises(FileNotFoundError, match="AVPI_FFMPEG=system"):
        ffmpeg_exe()
    monkeypatch.setenv(FFMPEG_ENV, str(tmp_path / "no-such-ffmpeg"))
    with pytest.raises(FileNotFoundError, match="not an executable"):
        ffmpeg_exe()

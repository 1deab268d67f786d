"""Media helpers shared by the demo corpus and the tests: real face crops, and writing frames +
audio into real containers (through the ffmpeg that :mod:`common.ffmpeg` chooses).

Everything goes through an ffmpeg binary as an argument list (never a shell), so any path a
manifest can hold — spaces, quotes, ``$(...)``, non-ASCII — is passed through untouched.
"""

from __future__ import annotations

import functools
import os
import tempfile
from pathlib import Path

import ffmpeg
import numpy as np

from common.ffmpeg import ffmpeg_exe

__all__ = ["MediaError", "lfw_faces", "face_frame", "write_video", "CONTAINER_CODECS"]

# (video codec, audio codec) per container: encoders the imageio-ffmpeg static build ships,
# chosen so the containers between them exercise different decoders (h264, mpeg4, mjpeg, vp8, flv1).
CONTAINER_CODECS: dict[str, tuple[str | None, str]] = {
    ".mp4": ("libx264", "aac"),
    ".mov": ("libx264", "aac"),
    ".mkv": ("mpeg4", "libvorbis"),
    ".avi": ("mjpeg", "pcm_s16le"),
    ".webm": ("libvpx", "libopus"),
    ".flv": ("flv", "aac"),
    ".wav": (None, "pcm_s16le"),
    ".m4a": (None, "aac"),
    ".mp3": (None, "libmp3lame"),
    ".ogg": (None, "libvorbis"),
}

# libopus only encodes at these rates; other rates are resampled inside ffmpeg.
_OPUS_RATES = (8000, 12000, 16000, 24000, 48000)


class MediaError(RuntimeError):
    """ffmpeg failed to write a file; the message carries ffmpeg's own stderr."""


@functools.lru_cache(maxsize=1)
def _lfw() -> np.ndarray:
    from skimage.data import lfw_subset

    faces = lfw_subset()[:100]  # the first 100 are faces, the last 100 are non-face patches
    faces.setflags(write=False)
    return faces


def lfw_faces() -> np.ndarray:
    """The 100 real face crops of ``skimage.data.lfw_subset()``: (100, 25, 25) float in [0, 1]."""
    return _lfw()


def face_frame(
    face: np.ndarray,
    size: tuple[int, int] = (120, 160),
    box: tuple[int, int, int, int] | None = None,
    background: int = 96,
    tint: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """Upscale a grey face crop onto a plain background frame.

    ``box`` is ``(top, left, height, width)`` in pixels; by default a centred square of 60% of the
    shorter side, large enough for MTCNN to find a 25-px LFW crop after upscaling. ``tint``
    multiplies the face's R, G, B (a skin tone; default grey).
    Returns a uint8 RGB frame of shape ``(H, W, 3)``.
    """
    from skimage.transform import resize

    face = np.asarray(face, dtype=np.float64)
    if face.ndim != 2:
        raise ValueError(f"face must be a 2-D grey image, got shape {face.shape}")
    height, width = size
    if box is None:
        side = int(0.6 * min(height, width))
        box = ((height - side) // 2, (width - side) // 2, side, side)
    top, left, bh, bw = box
    if top < 0 or left < 0 or top + bh > height or left + bw > width or bh <= 0 or bw <= 0:
        raise ValueError(f"box {box} does not fit in a frame of size {size}")
    frame = np.full((height, width, 3), background, dtype=np.uint8)
    patch = resize(face, (bh, bw), order=1, anti_aliasing=False)
    rgb = patch[..., None] * (np.ones(3) if tint is None else np.asarray(tint, dtype=np.float64))
    frame[top : top + bh, left : left + bw] = (np.clip(rgb, 0, 1) * 255).astype(np.uint8)
    return frame


def _write_wav(path: Path, audio: np.ndarray, sample_rate: int) -> None:
    from scipy.io import wavfile

    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"audio must be mono (n,), got shape {audio.shape}")
    wavfile.write(path, sample_rate, audio)


def write_video(
    path: str | os.PathLike,
    frames: np.ndarray | None,
    fps: float = 25.0,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
    vcodec: str | None = None,
    acodec: str | None = None,
) -> Path:
    """Mux uint8 RGB ``frames`` (N, H, W, 3) and float ``audio`` (n,) in [-1, 1] into ``path``.

    The container follows the extension (see ``CONTAINER_CODECS`` for the default codecs);
    either stream may be None (audio-only files: ``.wav``, ``.m4a``; silent videos).
    Frames go to ffmpeg's stdin as rawvideo; audio goes through a temporary float WAV.
    """
    path = Path(path)
    ext = path.suffix.lower()
    default_v, default_a = CONTAINER_CODECS.get(ext, ("libx264", "aac"))
    vcodec = vcodec or default_v
    acodec = acodec or default_a
    if frames is None and audio is None:
        raise ValueError(f"{path}: nothing to write (no frames and no audio)")
    if frames is not None:
        frames = np.ascontiguousarray(frames)
        if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames must be uint8 (N, H, W, 3), got {frames.dtype} {frames.shape}")
        if vcodec is None:
            raise ValueError(f"{path}: container {ext!r} holds no video; pass vcodec or drop frames")
    path.parent.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="write_video-") as tmp:
        streams = []
        out_kwargs: dict = {}
        if frames is not None:
            n, h, w, _ = frames.shape
            video = ffmpeg.input("pipe:0", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=fps)
            # 4:2:0 codecs need even dimensions; pad rather than fail.
            streams.append(video.filter("pad", "ceil(iw/2)*2", "ceil(ih/2)*2"))
            out_kwargs.update(vcodec=vcodec, r=fps)
            if vcodec != "mjpeg":
                out_kwargs["pix_fmt"] = "yuv420p"
            if vcodec in ("libx264", "libvpx", "libvpx-vp9"):
                out_kwargs["g"] = max(1, int(round(fps)))  # keyframe every second: truncation tests cut cleanly
        if audio is not None:
            wav = Path(tmp) / "audio.wav"
            _write_wav(wav, audio, sample_rate)
            streams.append(ffmpeg.input(str(wav)).audio)
            out_kwargs["acodec"] = acodec
            if acodec == "libopus" and sample_rate not in _OPUS_RATES:
                out_kwargs["ar"] = 48000
        # An absolute path keeps ffmpeg from reading "name:rest" as a protocol prefix.
        output = ffmpeg.output(*streams, str(path.absolute()), **out_kwargs).overwrite_output()
        try:
            output.run(
                cmd=ffmpeg_exe(),
                input=frames.tobytes() if frames is not None else None,
                capture_stdout=True,
                capture_stderr=True,
            )
        except ffmpeg.Error as err:
            stderr = err.stderr.decode("utf-8", "replace").strip()
            raise MediaError(f"ffmpeg could not write {path}:\n{stderr[-2000:]}") from None
    return path

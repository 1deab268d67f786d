"""Decode one media file with ffmpeg: 16 kHz mono float audio, and small RGB frames at a low rate.

Frames are sampled (``fps``), cropped and letterboxed to ``frame_size``² *inside* ffmpeg, so a
full-rate, full-resolution frame never crosses into Python: that is most of the speed-up over
decoding everything and subsampling in numpy. ffmpeg runs from an argument list (ffmpeg-python),
never a shell, on the absolute path, so any file name is passed through verbatim.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import ffmpeg
import numpy as np

from common.ffmpeg import ffmpeg_exe

CROPS = {"full": None, "left": ("iw/2", "ih", "0", "0"), "right": ("iw/2", "ih", "iw/2", "0")}

# A decode that ends this much short of the container's declared duration is a truncated file.
_TRUNCATION_TOLERANCE_S = 0.25
_TRUNCATION_SIGNS = re.compile(r"ended prematurely|truncat|partial file", re.IGNORECASE)


class DecodeError(Exception):
    """An item that cannot be decoded; ``stage`` and ``reason`` go to failures.csv."""

    def __init__(self, stage: str, reason: str) -> None:
        super().__init__(f"{stage}: {reason}")
        self.stage = stage
        self.reason = reason


@dataclass(frozen=True)
class MediaInfo:
    has_audio: bool
    has_video: bool
    duration: float | None  # seconds the container declares; None when it does not say
    width: int = 0  # native size of the first video stream; 0 when there is none or it is not stated
    height: int = 0
    frame_rate: float = 0.0  # native frames per second; 0 when not stated

    @property
    def pixels(self) -> int:
        return self.width * self.height


@dataclass
class Decoded:
    audio: np.ndarray  # (n,) float32 at the requested sample rate
    frames: np.ndarray  # (F, S, S, 3) uint8 RGB; F == 0 when the file has no video
    frame_times: np.ndarray  # (F,) float32 seconds from clip start
    has_video: bool


_GENERIC = re.compile(r"^(Error opening (input|output) files?|Last message repeated|Conversion failed)")


def _ffmpeg_message(stderr: bytes) -> str:
    """ffmpeg's specific complaint, without its generic trailer lines and "[in#0 @ 0x...]" noise."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln.strip()) for ln in stderr.decode("utf-8", "replace").splitlines()]
    specific = [ln for ln in lines if ln and not _GENERIC.match(ln)]
    return " | ".join(dict.fromkeys(specific[-2:])) or "ffmpeg failed without a message"


def check_readable(path: Path) -> None:
    """Fail early, with a reason a person can act on, before ffmpeg's vaguer messages."""
    if not path.exists():
        raise DecodeError("input", "file not found")
    if path.is_dir():
        raise DecodeError("input", "is a directory, not a media file")
    try:
        with open(path, "rb") as fh:
            head = fh.read(1)
    except PermissionError:
        raise DecodeError("input", "permission denied (file is not readable by this user)") from None
    except OSError as err:
        raise DecodeError("input", f"cannot read: {err.strerror}") from None
    if not head:
        raise DecodeError("input", "empty file (0 bytes)")


_SIZE = re.compile(r", (\d{2,5})x(\d{2,5})[ ,\[]")
_RATE = re.compile(r", (\d+(?:\.\d+)?) (?:fps|tbr)")
_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)|DURATION\s*:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")


def probe(path: Path) -> MediaInfo:
    """Streams and declared duration, parsed from ``ffmpeg -i`` (the static build has no ffprobe)."""
    # With no output file ffmpeg describes the input and exits non-zero by design.
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path.absolute())], capture_output=True)
    err = result.stderr.decode("utf-8", "replace")
    if "Error opening input" in err or "Invalid data found" in err:
        raise DecodeError("probe", f"not a readable media file ({_ffmpeg_message(result.stderr)})")
    streams = [ln for ln in err.splitlines() if ln.strip().startswith("Stream #")]
    has_audio = any(": Audio:" in ln for ln in streams)
    # Cover art in audio files shows up as a video stream; it is not video.
    video = [ln for ln in streams if ": Video:" in ln and "attached pic" not in ln]
    durations = [
        int(m[0] or m[3]) * 3600 + int(m[1] or m[4]) * 60 + float(m[2] or m[5]) for m in _DURATION.findall(err)
    ]
    size = _SIZE.search(video[0]) if video else None
    rate = _RATE.search(video[0]) if video else None
    return MediaInfo(
        has_audio,
        bool(video),
        max(durations) if durations else None,
        int(size[1]) if size else 0,
        int(size[2]) if size else 0,
        float(rate[1]) if rate else 0.0,
    )


def _input(path: Path, start: float | None, end: float | None):
    opts = {}
    if start:
        opts["ss"] = f"{start:.6f}"
    if end is not None:
        opts["t"] = f"{end - (start or 0.0):.6f}"
    return ffmpeg.input(str(path.absolute()), **opts)


def _run(stream, stage: str) -> tuple[bytes, str]:
    try:
        out, err = stream.global_args("-nostdin", "-hide_banner", "-v", "error").run(
            cmd=ffmpeg_exe(), capture_stdout=True, capture_stderr=True
        )
    except ffmpeg.Error as exc:
        raise DecodeError(stage, f"ffmpeg failed: {_ffmpeg_message(exc.stderr)}") from None
    return out, err.decode("utf-8", "replace")


def decode_audio(path: Path, sample_rate: int, start: float | None = None, end: float | None = None) -> np.ndarray:
    """Mono float32 at ``sample_rate`` (ffmpeg resamples and downmixes)."""
    stream = _input(path, start, end)["a:0"].output("pipe:1", format="f32le", ac=1, ar=sample_rate)
    out, err = _run(stream, "audio")
    if _TRUNCATION_SIGNS.search(err):
        raise DecodeError("audio", f"truncated or corrupt file ({_ffmpeg_message(err.encode())})")
    return np.frombuffer(out, dtype="<f4").astype(np.float32)


def decode_frames(
    path: Path,
    fps: float,
    size: int,
    crop: str = "full",
    start: float | None = None,
    end: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 RGB frames (F, size, size, 3) sampled at ``fps``, and their times from clip start."""
    if crop not in CROPS:
        raise DecodeError("video", f"crop must be one of {sorted(CROPS)}, got {crop!r}")
    video = _input(path, start, end)["v:0"].filter("fps", fps=fps)
    if CROPS[crop]:
        video = video.filter("crop", *CROPS[crop])
    video = (
        video.filter("scale", size, size, force_original_aspect_ratio="decrease")
        .filter("pad", size, size, "(ow-iw)/2", "(oh-ih)/2")
        .output("pipe:1", format="rawvideo", pix_fmt="rgb24")
    )
    out, err = _run(video, "video")
    if _TRUNCATION_SIGNS.search(err):
        raise DecodeError("video", f"truncated or corrupt file ({_ffmpeg_message(err.encode())})")
    frame_bytes = size * size * 3
    frames = np.frombuffer(out, dtype=np.uint8)[: len(out) // frame_bytes * frame_bytes]
    frames = frames.reshape(-1, size, size, 3)
    # The fps filter emits frame k at pts k / fps from the (cut) clip start.
    times = (np.arange(len(frames)) / fps).astype(np.float32)
    return frames, times


def decode(
    path: str | os.PathLike,
    sample_rate: int = 16000,
    fps: float = 5.0,
    frame_size: int = 256,
    crop: str = "full",
    start: float | None = None,
    end: float | None = None,
    info: MediaInfo | None = None,
) -> Decoded:
    """Audio and (if present) frames of one item, or a :class:`DecodeError` saying why not.

    ``info``: the file's :func:`probe`, when the caller already has it (the run's scheduler probes
    every item to cost it, and hands the result on so no file is probed twice).
    """
    path = Path(path)
    if start is not None and end is not None and end <= start:
        raise DecodeError("input", f"end ({end}) must be after start ({start})")
    check_readable(path)
    if info is None:
        info = probe(path)
    if not info.has_audio:
        raise DecodeError("audio", "no audio stream")
    audio = decode_audio(path, sample_rate, start, end)
    if info.duration is not None:
        expected = min(info.duration, end if end is not None else np.inf) - (start or 0.0)
        got = len(audio) / sample_rate
        if got < expected - _TRUNCATION_TOLERANCE_S:
            raise DecodeError("audio", f"truncated: decoded {got:.2f} s of the {expected:.2f} s the file declares")
    if len(audio) == 0:
        raise DecodeError("audio", "audio stream decodes to no samples")
    if info.has_video:
        frames, times = decode_frames(path, fps, frame_size, crop, start, end)
    else:
        frames = np.zeros((0, frame_size, frame_size, 3), np.uint8)
        times = np.zeros(0, np.float32)
    return Decoded(audio, frames, times, info.has_video)

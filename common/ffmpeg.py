"""Finding the ffmpeg binary every decode and encode goes through, and naming its build.

Lives at the bottom of the layering because extraction (decode) and the demo corpus (encode) both
need the same choice: two ffmpeg builds give different bytes, so the choice is part of a result.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path

#: Environment variable that chooses the ffmpeg binary: ``auto`` (default: ffmpeg on PATH, else the
#: bundled one), ``bundled`` (imageio-ffmpeg's static build, whose version requirements.lock pins),
#: ``system`` (ffmpeg on PATH, or an error), or a path to an ffmpeg executable.
FFMPEG_ENV = "AVPI_FFMPEG"


def ffmpeg_exe() -> str:
    """The ffmpeg binary every encode and decode goes through, chosen by ``$AVPI_FFMPEG``.

    The choice matters for numbers, not only for codecs: two ffmpeg builds encode (x264, aac,
    vorbis) and resample differently, so the same demo corpus and the same features come out
    different bytes. Runs that must reproduce pin one build (``bundled``; ``make demo`` does).
    """
    return _resolve_ffmpeg(os.environ.get(FFMPEG_ENV, "auto"))


def _resolve_ffmpeg(choice: str) -> str:  # not cached: PATH and the choice may change in a process
    choice = choice.strip() or "auto"
    if choice in ("auto", "system"):
        system = shutil.which("ffmpeg")
        if system:
            return system
        if choice == "system":
            raise FileNotFoundError(f"{FFMPEG_ENV}=system but no ffmpeg is on PATH")
    elif choice != "bundled":
        path = Path(choice).expanduser()
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise FileNotFoundError(
                f"{FFMPEG_ENV}={choice}: not an executable file (expected auto, bundled, system or a path to ffmpeg)"
            )
        return str(path)
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg_version(exe: str | None = None) -> str:
    """First line of ``ffmpeg -version`` of ``exe`` (default: :func:`ffmpeg_exe`), recorded with
    everything ffmpeg made, since another build gives other bytes."""
    return _banner(exe or ffmpeg_exe())


@functools.lru_cache(maxsize=8)
def _banner(exe: str) -> str:
    try:
        banner = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as err:
        return f"unavailable ({err})"
    return banner.split("\n", 1)[0].strip()

"""Small copies of the published datasets' directory layouts, holding real media, for tests that run
the documented commands (``python -m manifests RECIPE ROOT``, then ``extract run`` on some of them).

Every media file is made of a few generated talking-face clips (:func:`manifests.demo.make_demo_corpus`:
a voice and a real LFW face per speaker, an emotion per clip): one clip copied or remuxed by ffmpeg
into the container the dataset ships (CREMA-D ``.flv`` + ``.wav``, VoxCeleb1 ``.wav``), or, for an
IEMOCAP dialog, two speakers' clips side by side and in turns; named and foldered as the dataset
publishes it (docs/datasets.md). The labels are the clips' own, so
a speaker or emotion run on a tree has classes to learn; nothing measured on it says anything about
the real corpora. ``make_fake_tree(dataset, root, clips)`` writes one tree and returns its root.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.ffmpeg import ffmpeg_exe
from manifests.demo import make_demo_corpus
from manifests.io import read_manifest


@dataclass(frozen=True)
class Clip:
    """A generated clip: an mp4 (h264 + aac) of ``speaker``'s face and voice showing ``emotion``."""

    speaker: str
    emotion: str
    path: Path


def demo_clips(folder: Path, speakers: int = 6, utts_per_speaker: int = 4) -> list[Clip]:
    """Short (1.0-1.2 s), small (96 px, 10 fps) clips, each speaker's utterances cycling the four
    demo emotions; sorted by speaker, then utterance."""
    manifest = read_manifest(
        make_demo_corpus(
            folder,
            speakers=speakers,
            utts_per_speaker=utts_per_speaker,
            frame_size=96,
            fps=10.0,
            min_duration=1.0,
            max_duration=1.2,
            progress=False,
        )
    )
    rows = manifest.sort_values("utt_id")
    return [Clip(r.speaker, r.emotion, Path(r.path)) for r in rows.itertuples()]


def by_speaker(clips: list[Clip]) -> list[list[Clip]]:
    speakers = sorted({c.speaker for c in clips})
    return [[c for c in clips if c.speaker == s] for s in speakers]


class _Media:
    """Collects (clip, destination, form) and writes them: copies, and one ffmpeg process for every remux."""

    FORMS = {
        "flv": ["-map", "{i}:v", "-map", "{i}:a", "-c", "copy", "-f", "flv"],
        "avi": ["-map", "{i}:v", "-map", "{i}:a", "-c:v", "copy", "-c:a", "pcm_s16le", "-f", "avi"],
        "wav": ["-map", "{i}:a", "-ac", "1", "-ar", "16000", "-f", "wav"],
    }

    def __init__(self) -> None:
        self.jobs: list[tuple[Path, Path, str]] = []

    def add(self, clip: Clip, dest: Path, form: str = "copy") -> None:
        self.jobs.append((clip.path, dest, form))

    def write(self) -> None:
        inputs: list[Path] = []
        outputs: list[str] = []
        for src, dest, form in self.jobs:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if form == "copy":
                shutil.copy(src, dest)
                continue
            if src not in inputs:
                inputs.append(src)
            i = inputs.index(src)
            outputs += [arg.format(i=i) for arg in self.FORMS[form]] + [str(dest)]
        if outputs:
            cmd = [ffmpeg_exe(), "-v", "error", "-y"]
            for src in inputs:
                cmd += ["-i", str(src)]
            subprocess.run(cmd + outputs, check=True, capture_output=True)


CREMA_CODES = {"angry": "ANG", "happy": "HAP", "neutral": "NEU", "sad": "SAD"}


def fake_cremad(root: Path, clips: list[Clip], media: _Media) -> Path:
    """``CREMA-D/VideoFlash/<actor>_DFA_<EMO>_XX.flv`` and ``AudioWAV/*.wav``: an actor per speaker,
    one clip per emotion; ``VideoDemographics.csv`` with the actors' sex."""
    base = root / "CREMA-D"
    demographics = ["ActorID,Age,Sex,Race,Ethnicity"]
    for n, own in enumerate(by_speaker(clips)):
        actor = str(1001 + n)
        demographics.append(f"{actor},{30 + n},{'Male' if n % 2 else 'Female'},Caucasian,Not Hispanic")
        for clip in {c.emotion: c for c in own}.values():
            name = f"{actor}_DFA_{CREMA_CODES[clip.emotion]}_XX"
            media.add(clip, base / "VideoFlash" / f"{name}.flv", "flv")
            media.add(clip, base / "AudioWAV" / f"{name}.wav", "wav")
    base.mkdir(parents=True, exist_ok=True)
    (base / "VideoDemographics.csv").write_text("\n".join(demographics) + "\n")
    return base


RAVDESS_CODES = {"neutral": "01", "happy": "03", "sad": "04", "angry": "05"}


def fake_ravdess(root: Path, clips: list[Clip], media: _Media) -> Path:
    """``RAVDESS/Actor_NN/01-01-EE-01-01-01-NN.mp4``: full audio-visual speech, one clip per emotion."""
    base = root / "RAVDESS"
    for n, own in enumerate(by_speaker(clips), 1):
        for clip in {c.emotion: c for c in own}.values():
            media.add(clip, base / f"Actor_{n:02d}" / f"01-01-{RAVDESS_CODES[clip.emotion]}-01-01-01-{n:02d}.mp4")
    return base


IEMOCAP_CODES = {"angry": "ang", "happy": "hap", "neutral": "neu", "sad": "sad"}
DIALOG_FPS, DIALOG_SIZE, DIALOG_RATE = 10.0, 96, 16000


def fake_iemocap(root: Path, clips: list[Clip], media: _Media, sessions: int = 5) -> Path:
    """``IEMOCAP_full_release/SessionN/dialog/avi/DivX/SesNNF_impro01.avi`` and its
    ``EmoEvaluation/SesNNF_impro01.txt``: a dialog per session between two speakers of ``clips``, side
    by side as in the release (the first, the marked ``F`` actor, on the left). They take turns, each
    turn one of the speaker's clips (its voice, and its face in the speaker's half; the other half
    shows the listener's clip of the same index), so every session holds every emotion of the clips.
    Written here, not by :class:`_Media`: a dialog is many clips laid out in space and time."""
    from extract.decode import decode_audio, decode_frames
    from manifests.media import write_video

    base = root / "IEMOCAP_full_release"
    speakers = by_speaker(clips)
    decoded: dict[Path, tuple] = {}

    def load(clip: Clip) -> tuple:
        if clip.path not in decoded:
            frames, _ = decode_frames(clip.path, DIALOG_FPS, DIALOG_SIZE)
            decoded[clip.path] = (frames, decode_audio(clip.path, DIALOG_RATE))
        return decoded[clip.path]

    for s in range(1, sessions + 1):
        marked, other = speakers[(2 * s - 2) % len(speakers)], speakers[(2 * s - 1) % len(speakers)]
        dialog = f"Ses{s:02d}F_impro01"
        video, audio, lines, t = [], [], ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""], 0.0
        for k in range(min(len(marked), len(other))):
            for who, talker, listener in (("F", marked, other), ("M", other, marked)):
                (frames, wave), (still, _) = load(talker[k]), load(listener[k])
                halves = (frames, still[np.arange(len(frames)) % len(still)])
                video.append(np.concatenate(halves if who == "F" else halves[::-1], axis=2))
                seconds = len(frames) / DIALOG_FPS
                audio.append(np.resize(wave, int(round(seconds * DIALOG_RATE))))  # the turn lasts its frames
                code = IEMOCAP_CODES[talker[k].emotion]
                lines += [f"[{t:.4f} - {t + seconds:.4f}]\t{dialog}_{who}{k:03d}\t{code}\t[2.5000, 3.0000, 3.0000]", ""]
                t += seconds
        avi = base / f"Session{s}" / "dialog" / "avi" / "DivX" / f"{dialog}.avi"
        write_video(avi, np.concatenate(video), DIALOG_FPS, np.concatenate(audio), DIALOG_RATE)
        evaluation = base / f"Session{s}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text("\n".join(lines) + "\n")
    return base


def fake_voxceleb2(root: Path, clips: list[Clip], media: _Media, per_speaker: int = 2) -> Path:
    """``VoxCeleb2/dev/mp4/idNNNNN/<youtube id>/NNNNN.mp4``: ``per_speaker`` clips of one video each speaker."""
    base = root / "VoxCeleb2"
    for n, own in enumerate(by_speaker(clips)):
        for k, clip in enumerate(own[:per_speaker], 1):
            media.add(clip, base / "dev" / "mp4" / f"id{n:05d}" / f"vid{n:02d}xYouTb" / f"{k:05d}.mp4")
    return base


def fake_voxceleb1(root: Path, clips: list[Clip], media: _Media, speakers: int = 2, per_speaker: int = 2) -> Path:
    """``VoxCeleb1/wav/id1NNNN/<youtube id>/NNNNN.wav`` (audio only) and the official-format
    ``veri_test2.txt`` at the root (``label enrol.wav test.wav``: every pair of them)."""
    base = root / "VoxCeleb1"
    names: list[tuple[int, str]] = []
    for n, own in enumerate(by_speaker(clips)[-speakers:]):
        for k, clip in enumerate(own[-per_speaker:], 1):
            name = f"id{10270 + n}/v{n:02d}YouTubeId/{k:05d}.wav"
            media.add(clip, base / "wav" / name, "wav")
            names.append((n, name))
    pairs = [(a, b) for i, a in enumerate(names) for b in names[i + 1 :]]
    base.mkdir(parents=True, exist_ok=True)
    (base / "veri_test2.txt").write_text("".join(f"{int(a[0] == b[0])} {a[1]} {b[1]}\n" for a, b in pairs))
    return base


def fake_generic(root: Path, clips: list[Clip], media: _Media) -> Path:
    """``my_videos/<speaker>/<n>.mp4`` and ``my_videos/labels.csv`` (path relative to the root, emotion)."""
    base = root / "my_videos"
    rows = ["path,emotion"]
    for clip in clips[:8]:
        rel = f"{clip.speaker}/{clip.path.stem}.mp4"
        media.add(clip, base / rel)
        rows.append(f"{rel},{clip.emotion}")
    base.mkdir(parents=True, exist_ok=True)
    (base / "labels.csv").write_text("\n".join(rows) + "\n")
    return base


FAKE_TREES: dict[str, Callable[..., Path]] = {
    "cremad": fake_cremad,
    "ravdess": fake_ravdess,
    "iemocap": fake_iemocap,
    "voxceleb2": fake_voxceleb2,
    "voxceleb1": fake_voxceleb1,
    "generic": fake_generic,
}


def make_fake_tree(dataset: str, root: str | Path, clips: list[Clip], **options) -> Path:
    """Write ``dataset``'s published layout (a :data:`FAKE_TREES` name) under ``root``; returns the
    dataset's root folder (``root/CREMA-D``, ``root/VoxCeleb1``, ...). ``options`` go to the tree's
    function (``sessions=3`` for iemocap, ...)."""
    media = _Media()
    base = FAKE_TREES[dataset](Path(root), clips, media, **options)
    media.write()
    return base

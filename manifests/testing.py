"""Small fake copies of the published datasets, laid out and named as each is downloaded.

``make_fake_tree(dataset, root)`` writes a few real media files (synthetic voices from
:mod:`manifests.voice`, real LFW faces from :mod:`manifests.media`) in the directory layout the
recipes in :mod:`manifests.recipes` parse, so a whole pipeline (``examples/<dataset>/run.sh``,
the docs' commands) can run end to end in seconds. Each speaker has one face and one voice; an
emotion changes the voice's prosody and the face the way the demo corpus does
(:data:`manifests.demo.PROSODY`, :data:`manifests.demo.FACE`). It is test data: its labels are
learnable, but nothing measured on it says anything about the real corpora.

Layouts (``root`` is what a recipe script's ``--data`` takes):

- ``voxceleb``: ``VoxCeleb2/dev/mp4/idNNNNN/<youtube id>/NNNNN.mp4`` (audio + face) and
  ``VoxCeleb1/wav/id1NNNN/<youtube id>/NNNNN.wav`` (audio only) with an original-format
  ``VoxCeleb1/veri_test2.txt`` (``label enrol.wav test.wav``) over the VoxCeleb1 clips.
- ``cremad``: ``CREMA-D/VideoFlash/<actor>_<sentence>_<EMO>_<level>.flv`` with the same clip's
  audio in ``CREMA-D/AudioWAV/*.wav``, and ``CREMA-D/VideoDemographics.csv``.
- ``iemocap``: ``IEMOCAP_full_release/SessionN/dialog/avi/DivX/SesNNF_impro01.avi`` (both actors
  side by side, the dialog's marked actor on the left) and the turns of each dialog in
  ``SessionN/dialog/EmoEvaluation/SesNNF_impro01.txt``.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from manifests.demo import FACE, PROSODY, DemoConfig, Speaker, make_speakers, render_frames
from manifests.media import lfw_faces, write_video
from manifests.voice import add_noise, synthesize

SAMPLE_RATE = 16000
FPS = 10.0
FRAME = 96  # px: the face box (60 %) stays well above MTCNN's smallest face at extraction's letterbox
SNR_DB = 10.0


@dataclass(frozen=True)
class FakeTree:
    """What :func:`make_fake_tree` wrote."""

    dataset: str
    root: Path  # the data root a recipe script takes (--data)
    files: int  # media files written
    items: int  # items the dataset's recipe should list (clips; IEMOCAP: turns)
    speakers: int


def _rng(seed: int, *key: object) -> np.random.Generator:
    return np.random.default_rng([seed, *(zlib.crc32(str(k).encode()) for k in key)])


def _cast(n: int, seed: int) -> list[Speaker]:
    """``n`` speakers with distinct faces and voices (one voice each: the audio carries the speaker too)."""
    return make_speakers(DemoConfig(speakers=n, seed=seed, frame_size=FRAME, voice_group=1))


def _voice(spk: Speaker, emotion: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    return add_noise(synthesize(spk.voice, PROSODY[emotion], seconds, rng, SAMPLE_RATE), SNR_DB, rng)


def _frames(spk: Speaker, emotion: str, seconds: float, rng: np.random.Generator) -> np.ndarray:
    cfg = DemoConfig(frame_size=FRAME)
    return render_frames(cfg, lfw_faces()[spk.face], FACE[emotion], int(round(seconds * FPS)), rng, spk.tint)


def _clip(path: Path, spk: Speaker, emotion: str, rng: np.random.Generator, video: bool = True) -> np.ndarray:
    """Write one clip of ``spk`` (1.0-1.3 s; with ``video`` the face too); returns its audio."""
    seconds = float(rng.uniform(1.0, 1.3))
    frames = _frames(spk, emotion, seconds, rng) if video else None
    audio = _voice(spk, emotion, seconds, rng)
    write_video(path, frames, FPS, audio, SAMPLE_RATE)
    return audio


def _youtube_id(seed: int, *key: object) -> str:
    """An 11-character YouTube-style id (letters, digits, - and _), stable per key."""
    alphabet = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"))
    return "".join(_rng(seed, "yt", *key).choice(alphabet, 11))


def fake_voxceleb(
    root: Path, *, seed: int = 0, dev_speakers: int = 6, test_speakers: int = 3, videos: int = 2, clips: int = 1
) -> FakeTree:
    """VoxCeleb2 dev (mp4) for training, VoxCeleb1 (wav) with ``veri_test2.txt`` for the test."""
    cast = _cast(dev_speakers + test_speakers, seed)
    files = 0
    vox1: list[tuple[str, str]] = []  # (speaker, clip path relative to wav/)
    for i, spk in enumerate(cast):
        dev = i < dev_speakers
        spk_id = f"id{i:05d}" if dev else f"id{10270 + i - dev_speakers:05d}"
        for v in range(videos):
            video = _youtube_id(seed, spk_id, v)
            for k in range(1, clips + 1):
                rng = _rng(seed, spk_id, v, k)
                if dev:
                    _clip(root / "VoxCeleb2" / "dev" / "mp4" / spk_id / video / f"{k:05d}.mp4", spk, "neutral", rng)
                else:
                    rel = f"{spk_id}/{video}/{k:05d}.wav"
                    _clip(root / "VoxCeleb1" / "wav" / rel, spk, "neutral", rng, video=False)
                    vox1.append((spk_id, rel))
                files += 1
    pairs = list(combinations(vox1, 2))
    targets = [(a, b) for a, b in pairs if a[0] == b[0]]
    others = [(a, b) for a, b in pairs if a[0] != b[0]]
    chosen = _rng(seed, "trials").permutation(len(others))[: len(targets)]
    lines = [f"1 {a[1]} {b[1]}" for a, b in targets] + [f"0 {others[j][0][1]} {others[j][1][1]}" for j in chosen]
    (root / "VoxCeleb1" / "veri_test2.txt").write_text("\n".join(lines) + "\n")
    return FakeTree("voxceleb", root, files, files, len(cast))


#: CREMA-D's emotion codes, mapped onto the demo corpus's four emotions (their prosody and face change).
CREMA_CODES = {"ANG": "angry", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}


def fake_cremad(root: Path, *, seed: int = 0, actors: int = 6, sentences: tuple[str, ...] = ("DFA",)) -> FakeTree:
    """``actors`` actors (1001, 1002, ...), each saying every sentence in four emotions: .flv + .wav."""
    base = root / "CREMA-D"
    cast = _cast(actors, seed)
    files = items = 0
    demographics = ["ActorID,Age,Sex,Race,Ethnicity"]
    for i, spk in enumerate(cast):
        actor = str(1001 + i)
        demographics.append(f"{actor},{30 + i},{spk.gender.title()},Caucasian,Not Hispanic")
        for sentence in sentences:
            for code, emotion in CREMA_CODES.items():
                name = f"{actor}_{sentence}_{code}_XX"
                rng = _rng(seed, name)
                audio = _clip(base / "VideoFlash" / f"{name}.flv", spk, emotion, rng)
                write_video(base / "AudioWAV" / f"{name}.wav", None, audio=audio, sample_rate=SAMPLE_RATE)
                files, items = files + 2, items + 1
    (base / "VideoDemographics.csv").write_text("\n".join(demographics) + "\n")
    return FakeTree("cremad", root, files, items, len(cast))


#: IEMOCAP's 4-class codes (``exc`` merges into happy) and the demo emotion each one is voiced with.
IEMOCAP_CODES = {"neu": "neutral", "hap": "happy", "ang": "angry", "sad": "sad"}


def fake_iemocap(root: Path, *, seed: int = 0, sessions: int = 3, turns: int = 8) -> FakeTree:
    """One improvised dialog per session: a female (marked, left) and a male actor taking turns."""
    base = root / "IEMOCAP_full_release"
    cast = _cast(2 * sessions, seed)
    codes = list(IEMOCAP_CODES)
    items = 0
    for s in range(1, sessions + 1):
        female, male = cast[2 * s - 2], cast[2 * s - 1]
        dialog = f"Ses{s:02d}F_impro01"
        rng = _rng(seed, dialog)
        t = 0.5
        audio = [np.zeros(int(t * SAMPLE_RATE), np.float32)]
        emotions = ["neutral", "neutral"]  # the face each actor shows, per frame segment below
        segments: list[tuple[float, list[str]]] = [(t, list(emotions))]
        lines = ["% [START_TIME - END_TIME] TURN_NAME EMOTION [V, A, D]", ""]
        counts = {"F": 0, "M": 0}
        for n in range(turns):
            who = "FM"[n % 2]
            code = codes[(n // 2 + s) % len(codes)]
            seconds, gap = float(rng.uniform(1.0, 1.4)), 0.3
            speaker = female if who == "F" else male
            audio.append(_voice(speaker, IEMOCAP_CODES[code], seconds, rng))
            audio.append(np.zeros(int(gap * SAMPLE_RATE), np.float32))
            emotions[0 if who == "F" else 1] = IEMOCAP_CODES[code]
            segments.append((seconds + gap, list(emotions)))
            start, end = t, t + len(audio[-2]) / SAMPLE_RATE
            lines += [f"[{start:.4f} - {end:.4f}]\t{dialog}_{who}{counts[who]:03d}\t{code}\t[2.5000, 3.0000, 3.0000]"]
            lines += ["C-E1:\tNeutral;\t()", ""]
            counts[who] += 1
            t = end + gap
            items += 1
        wave = np.concatenate(audio)
        halves = []
        for spk, side in ((female, 0), (male, 1)):
            parts = [_frames(spk, emo[side], sec, _rng(seed, dialog, side, j)) for j, (sec, emo) in enumerate(segments)]
            halves.append(np.concatenate(parts))
        n_frames = min(len(h) for h in halves)
        frames = np.concatenate([halves[0][:n_frames], halves[1][:n_frames]], axis=2)  # side by side
        write_video(base / f"Session{s}" / "dialog" / "avi" / "DivX" / f"{dialog}.avi", frames, FPS, wave, SAMPLE_RATE)
        evaluation = base / f"Session{s}" / "dialog" / "EmoEvaluation" / f"{dialog}.txt"
        evaluation.parent.mkdir(parents=True, exist_ok=True)
        evaluation.write_text("\n".join(lines) + "\n")
    return FakeTree("iemocap", root, sessions, items, len(cast))


#: The fake trees by dataset name (the name of its ``examples/<dataset>/`` recipe).
FAKE_TREES: dict[str, Callable[..., FakeTree]] = {
    "voxceleb": fake_voxceleb,
    "cremad": fake_cremad,
    "iemocap": fake_iemocap,
}


def make_fake_tree(dataset: str, root: str | Path, **options) -> FakeTree:
    """Write a small fake copy of ``dataset`` (voxceleb | cremad | iemocap) under ``root``.

    ``options`` are the dataset's sizes (see :data:`FAKE_TREES`' functions) and ``seed``; the
    same arguments always write the same tree.
    """
    if dataset not in FAKE_TREES:
        raise ValueError(f"no fake tree for {dataset!r}; known: {', '.join(FAKE_TREES)}")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    return FAKE_TREES[dataset](root, **options)

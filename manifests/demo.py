"""The demo corpus: a small synthetic audio-visual corpus the whole pipeline runs on.

Speakers each have a consistent synthetic voice (:mod:`manifests.voice`) and a consistent real
face (one LFW crop, upscaled); every utterance carries one of four emotions. The design is fixed
here, not tuned toward any method's result (see docs/demo-corpus.md). It has the premise of
learning using privileged information: the audio is noisy and partly ambiguous, the face is clean.

- Audio is the harder modality, as in real audio-visual datasets: speakers come in *voice
  groups* (pairs by default) who share one voice up to small offsets (``voice_spread``), so the
  audio tells the group apart but barely its members; voice groups differ only slightly too (F0
  within a few semitones per gender, formant scale within +-5 %); every clip has additive noise
  at a low SNR (-5 to 5 dB), and emotion shifts pitch level/range, rate and energy by amounts
  comparable to the random variation between utterances.
- The face is the more reliable cue: every speaker, including both members of a voice group, has
  a distinct real face, and each emotion applies one consistent geometric and photometric change
  (widen, tilt, contrast).

``python -m manifests.demo OUT`` writes ``OUT/videos/*.mp4`` (h264 + aac), ``OUT/manifest.csv``
and ``OUT/corpus.json`` (the exact settings). Running it again with the same settings reuses
the files.
"""

from __future__ import annotations

import argparse
import json
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from skimage.transform import rotate
from tqdm import tqdm

from common.cli import HelpFormatter
from common.ffmpeg import ffmpeg_version
from manifests.io import write_manifest
from manifests.media import face_frame, lfw_faces, write_video
from manifests.splits import assign_split
from manifests.voice import Prosody, Voice, add_noise, synthesize

CORPUS_VERSION = 3  # bump whenever the corpus or its manifest changes: stale copies are regenerated
EMOTIONS = ("neutral", "happy", "sad", "angry")

#: How each emotion changes the voice: mild, the same order as between-utterance variation.
PROSODY = {
    "neutral": Prosody(f0_scale=1.00, f0_range=2.0, rate_scale=1.00, energy=1.00),
    "happy": Prosody(f0_scale=1.06, f0_range=3.0, rate_scale=1.08, energy=1.10),
    "sad": Prosody(f0_scale=0.95, f0_range=1.2, rate_scale=0.90, energy=0.85),
    "angry": Prosody(f0_scale=1.03, f0_range=2.6, rate_scale=1.10, energy=1.25),
}


@dataclass(frozen=True)
class FaceChange:
    """One emotion's consistent change of the face image."""

    tilt: float = 0.0  # degrees, counter-clockwise
    width: float = 1.0  # face box scale, horizontal
    height: float = 1.0  # face box scale, vertical
    brightness: float = 0.0  # added to the [0, 1] grey face
    contrast: float = 1.0  # around the face's mean


#: How each emotion changes the face: clear and consistent, so video is the reliable cue.
FACE = {
    "neutral": FaceChange(),
    "happy": FaceChange(width=1.20, height=0.90, brightness=0.08),
    "sad": FaceChange(tilt=-10.0, width=0.90, height=1.10, brightness=-0.08, contrast=0.9),
    "angry": FaceChange(tilt=10.0, contrast=1.35),
}


@dataclass(frozen=True)
class DemoConfig:
    """Every setting that shapes the corpus; saved as corpus.json so a rerun can reuse the files."""

    speakers: int = 10
    utts_per_speaker: int = 40
    seed: int = 0
    sample_rate: int = 16000
    fps: float = 25.0
    frame_size: int = 160
    min_duration: float = 1.5
    max_duration: float = 2.5
    snr_db: tuple[float, float] = (-5.0, 5.0)  # low: the audio is the noisy modality
    voice_group: int = 2  # speakers per voice group (consecutive speakers share one voice); 1: every voice its own
    # within a voice group, each speaker's offsets from the group's voice: F0 +- this many semitones, formant
    # scale +- this many percent, glottal tilt +- 0.01 x this, rate +- 0.05 x this syllables/s
    voice_spread: float = 1.0
    # speaker-id split (`split` column): per speaker's utterances, train/val/test. Few train, a large test:
    # the test split is what separates the methods (docs/results.md gives the arithmetic)
    split_ratios: tuple[float, float, float] = (0.3, 0.1, 0.6)
    skin_tones: bool = True  # each speaker's face gets its own RGB tint (False: the grey LFW crops of version 2)
    version: int = CORPUS_VERSION

    def __post_init__(self) -> None:
        if not 2 <= self.speakers <= 100:
            raise ValueError(f"speakers must be in [2, 100] (one distinct LFW face each), got {self.speakers}")
        if self.utts_per_speaker < 1:
            raise ValueError(f"utts_per_speaker must be >= 1, got {self.utts_per_speaker}")
        if self.frame_size < 64:
            raise ValueError(f"frame_size must be >= 64 px so the face detector finds the face, got {self.frame_size}")
        if not 0 < self.min_duration <= self.max_duration:
            raise ValueError(f"need 0 < min_duration <= max_duration, got {self.min_duration}, {self.max_duration}")
        if self.voice_group < 1:
            raise ValueError(f"voice_group must be >= 1 speaker, got {self.voice_group}")
        if self.voice_spread < 0:
            raise ValueError(f"voice_spread must be >= 0, got {self.voice_spread}")
        if len(self.split_ratios) != 3 or min(self.split_ratios) <= 0 or abs(sum(self.split_ratios) - 1) > 1e-9:
            raise ValueError(
                f"split_ratios must be three positive fractions (train, val, test) summing to 1, "
                f"got {self.split_ratios}"
            )


@dataclass(frozen=True)
class Speaker:
    name: str
    gender: str
    voice: Voice
    face: int  # index into lfw_faces()
    voice_group: int  # speakers with the same voice group share one voice up to ``voice_spread``
    tint: tuple[float, float, float] | None  # the face's skin tone (RGB multipliers); None: grey


def _rng(cfg: DemoConfig, *key: object) -> np.random.Generator:
    """An independent stream per (seed, key): an utterance does not depend on generation order."""
    return np.random.default_rng([cfg.seed, *(zlib.crc32(str(k).encode()) for k in key)])


def group_voice(cfg: DemoConfig, group: int) -> Voice:
    """The voice a voice group shares: groups alternate female/male and differ only slightly."""
    rng = _rng(cfg, "voice group", group)
    female = group % 2 == 0
    return Voice(
        f0=(200.0 if female else 115.0) * 2.0 ** (rng.uniform(-2.0, 2.0) / 12.0),
        formant_scale=(1.15 if female else 1.0) * rng.uniform(0.95, 1.05),
        tilt=rng.uniform(0.55, 0.75),
        rate=rng.uniform(3.6, 4.4),
    )


def make_speakers(cfg: DemoConfig) -> list[Speaker]:
    """Speakers in voice groups (nearly one voice per group, groups alternating female/male), each
    with a distinct face."""
    faces = _rng(cfg, "faces").permutation(len(lfw_faces()))[: cfg.speakers]
    speakers = []
    for i in range(cfg.speakers):
        group = i // cfg.voice_group
        base, rng, d = group_voice(cfg, group), _rng(cfg, "speaker", i), cfg.voice_spread
        voice = Voice(
            f0=base.f0 * 2.0 ** (rng.uniform(-d, d) / 12.0),
            formant_scale=base.formant_scale * (1.0 + rng.uniform(-d, d) / 100.0),
            tilt=base.tilt + 0.01 * rng.uniform(-d, d),
            rate=base.rate + 0.05 * rng.uniform(-d, d),
        )
        gender = "female" if group % 2 == 0 else "male"
        tone = _rng(cfg, "skin tone", i).uniform((0.75, 0.55, 0.40), (1.0, 0.95, 0.90)) if cfg.skin_tones else None
        tint = None if tone is None else tuple(round(float(c), 3) for c in tone)
        speakers.append(Speaker(f"spk{i:02d}", gender, voice, int(faces[i]), group, tint))
    return speakers


def _changed_face(face: np.ndarray, change: FaceChange, strength: float) -> np.ndarray:
    """Apply ``strength`` (0..1) of an emotion's tilt and photometric change to a grey face crop."""
    out = np.array(face, dtype=np.float64)  # lfw_faces() is read-only; skimage warps need a writable copy
    if change.tilt:
        out = rotate(out, change.tilt * strength, mode="edge", order=1)
    mean = out.mean()
    contrast = 1.0 + (change.contrast - 1.0) * strength
    return np.clip((out - mean) * contrast + mean + change.brightness * strength, 0.0, 1.0)


def render_frames(
    cfg: DemoConfig,
    face: np.ndarray,
    change: FaceChange,
    n_frames: int,
    rng: np.random.Generator,
    tint: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """(n_frames, S, S, 3) uint8: the changed face, re-placed each frame with a small jitter."""
    size = cfg.frame_size
    strength = rng.uniform(0.7, 1.0)
    grey = _changed_face(face, change, strength)
    base = 0.6 * size
    bw = int(round(base * (1.0 + (change.width - 1.0) * strength)))
    bh = int(round(base * (1.0 + (change.height - 1.0) * strength)))
    drift = np.cumsum(rng.normal(0.0, 0.8, size=(n_frames, 2)), axis=0).clip(-4, 4)
    frames = np.empty((n_frames, size, size, 3), np.uint8)
    for t in range(n_frames):
        scale = 1.0 + rng.uniform(-0.03, 0.03)
        h, w = min(size, int(bh * scale)), min(size, int(bw * scale))
        top = int(np.clip((size - h) / 2 + drift[t, 0], 0, size - h))
        left = int(np.clip((size - w) / 2 + drift[t, 1], 0, size - w))
        frames[t] = face_frame(grey, size=(size, size), box=(top, left, h, w), tint=tint)
    return frames


def _emotion_plan(cfg: DemoConfig, speaker: int) -> list[str]:
    """Each speaker's utterances cycle through the emotions (balanced), in a seeded order."""
    plan = [EMOTIONS[k % len(EMOTIONS)] for k in range(cfg.utts_per_speaker)]
    order = _rng(cfg, "emotions", speaker).permutation(len(plan))
    return [plan[k] for k in order]


def _write_utterance(cfg: DemoConfig, spk: Speaker, k: int, emotion: str, path: Path) -> dict:
    rng = _rng(cfg, "utt", spk.name, k)
    duration = rng.uniform(cfg.min_duration, cfg.max_duration)
    snr = rng.uniform(*cfg.snr_db)
    audio = add_noise(synthesize(spk.voice, PROSODY[emotion], duration, rng, cfg.sample_rate), snr, rng)
    n_frames = int(round(duration * cfg.fps))
    frames = render_frames(cfg, lfw_faces()[spk.face], FACE[emotion], n_frames, rng, spk.tint)
    write_video(path, frames, cfg.fps, audio, cfg.sample_rate)
    return {"snr_db": round(snr, 2)}


def _is_complete(out_dir: Path, cfg: DemoConfig) -> bool:
    saved, manifest = out_dir / "corpus.json", out_dir / "manifest.csv"
    if not (saved.is_file() and manifest.is_file()):
        return False
    made = json.loads(saved.read_text())
    if made.get("config") != json.loads(json.dumps(asdict(cfg))):
        return False
    if made.get("ffmpeg") != ffmpeg_version():  # another build writes other bytes: not the same corpus
        return False
    paths = pd.read_csv(manifest, usecols=["path"])["path"]
    return len(paths) == cfg.speakers * cfg.utts_per_speaker and all((out_dir / p).is_file() for p in paths)


def make_demo_corpus(
    out_dir: Path | str,
    speakers: int = DemoConfig.speakers,
    utts_per_speaker: int = DemoConfig.utts_per_speaker,
    seed: int = DemoConfig.seed,
    overwrite: bool = False,
    progress: bool | None = None,
    **settings,
) -> Path:
    """Generate the demo corpus under ``out_dir`` and return its manifest path.

    Deterministic given the settings. If ``out_dir`` already holds a complete corpus made with
    the same settings it is reused (unless ``overwrite``). ``settings`` are further
    :class:`DemoConfig` fields (``frame_size``, ``fps``, ``snr_db``, ...).
    Manifest columns: utt_id, path, speaker, emotion, gender, voice_group, split (speaker
    identification: every speaker in train/val/test, ``split_ratios`` of each speaker's utterances),
    emotion_split (speaker-independent: two held-out speakers each for val and test at the
    defaults), snr_db. (No ``duration``: the cache index owns that
    name and measures it from the decoded file.)
    """
    cfg = DemoConfig(speakers=speakers, utts_per_speaker=utts_per_speaker, seed=seed, **settings)
    out_dir = Path(out_dir)
    manifest = out_dir / "manifest.csv"
    if not overwrite and _is_complete(out_dir, cfg):
        return manifest
    (out_dir / "corpus.json").unlink(missing_ok=True)  # invalid until the new corpus is whole
    cast = make_speakers(cfg)
    jobs = [(spk, k, emotion) for i, spk in enumerate(cast) for k, emotion in enumerate(_emotion_plan(cfg, i))]
    rows = []
    for spk, k, emotion in tqdm(
        jobs, desc="demo corpus", unit="utt", disable=None if progress is None else not progress
    ):
        utt = f"{spk.name}_u{k:03d}"
        path = out_dir / "videos" / f"{utt}.mp4"
        extra = _write_utterance(cfg, spk, k, emotion, path)
        rows.append(
            {
                "utt_id": utt,
                "path": str(path.resolve()),
                "speaker": spk.name,
                "emotion": emotion,
                "gender": spk.gender,
                "voice_group": spk.voice_group,
                **extra,
            }
        )
    df = pd.DataFrame(rows)
    df["split"] = assign_split(df, "speaker-id", seed=seed, ratios=cfg.split_ratios)
    # Speaker-independent emotion split; needs three speakers (one each for train, val, test).
    df["emotion_split"] = (
        assign_split(df, "leave-speakers-out", seed=seed, fold=0, n_folds=min(5, cfg.speakers))
        if cfg.speakers >= 3
        else "train"
    )
    cols = ["utt_id", "path", "speaker", "emotion", "gender", "voice_group", "split", "emotion_split", "snr_db"]
    write_manifest(df[cols], manifest)
    speakers_info = [
        {
            "speaker": s.name,
            "gender": s.gender,
            "voice_group": s.voice_group,
            "lfw_index": s.face,
            "skin_tone": s.tint,
            **asdict(s.voice),
        }
        for s in cast
    ]
    (out_dir / "corpus.json").write_text(
        json.dumps(
            {"config": asdict(cfg), "speakers": speakers_info, "ffmpeg": ffmpeg_version(), "synthetic": True}, indent=2
        )
    )
    return manifest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m manifests.demo",
        description="Generate the synthetic audio-visual demo corpus (real LFW faces, synthetic voices, "
        "four emotions) and its manifest. See docs/demo-corpus.md.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("out", type=Path, help="output folder (videos/, manifest.csv, corpus.json)")
    parser.add_argument(
        "--speakers",
        type=int,
        default=DemoConfig.speakers,
        help="number of speakers (in voice groups of --voice-group, alternating female/male)",
    )
    parser.add_argument(
        "--utts-per-speaker", type=int, default=DemoConfig.utts_per_speaker, help="utterances per speaker"
    )
    parser.add_argument(
        "--voice-group",
        type=int,
        default=DemoConfig.voice_group,
        help="speakers per voice group (1: every voice its own)",
    )
    parser.add_argument("--seed", type=int, default=DemoConfig.seed, help="seed for every random choice")
    parser.add_argument("--frame-size", type=int, default=DemoConfig.frame_size, help="square frame side in pixels")
    parser.add_argument("--overwrite", action="store_true", help="regenerate even if a matching corpus exists")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        DemoConfig(
            speakers=args.speakers,
            utts_per_speaker=args.utts_per_speaker,
            frame_size=args.frame_size,
            voice_group=args.voice_group,
        )
    except ValueError as err:
        parser.error(str(err))
    manifest = make_demo_corpus(
        args.out,
        args.speakers,
        args.utts_per_speaker,
        args.seed,
        overwrite=args.overwrite,
        frame_size=args.frame_size,
        voice_group=args.voice_group,
    )
    df = pd.read_csv(manifest)
    print(f"{manifest}: {len(df)} utterances, {df['speaker'].nunique()} speakers, {df['emotion'].nunique()} emotions")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

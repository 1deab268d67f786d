"""RAVDESS: ``Actor_XX/MM-VV-EE-II-SS-RR-AA.mp4`` (``.wav`` for the audio-only release).

The seven two-digit fields are modality (01 audio-video, 02 video-only, 03 audio-only), vocal
channel (01 speech, 02 song), emotion, intensity (01 normal, 02 strong), statement (01 "Kids are
talking by the door", 02 "Dogs are sitting by the door"), repetition (01, 02) and actor (01-24;
odd actors are male, even female).
"""

from __future__ import annotations

import re
from pathlib import Path

from manifests.recipes.base import NotADatasetError, RecipeResult, SkipLog, finish, register_recipe, require_dir

EMOTIONS = {
    "01": "neutral",
    "02": "calm",
    "03": "happy",
    "04": "sad",
    "05": "angry",
    "06": "fear",
    "07": "disgust",
    "08": "surprise",
}
MODALITIES = {"av": "01", "video": "02", "audio": "03"}
EXTENSIONS = {"01": ".mp4", "02": ".mp4", "03": ".wav"}
NAME_RE = re.compile(
    r"^(?P<modality>0[1-3])-(?P<channel>0[12])-(?P<emotion>0[1-8])-(?P<intensity>0[12])-"
    r"(?P<statement>0[12])-(?P<repetition>0[12])-(?P<actor>\d{2})$"
)
ACTOR_DIR_RE = re.compile(r"^Actor_(\d{2})$")


@register_recipe("ravdess", default_split="leave-speakers-out")
def ravdess(root: Path | str, modality: str = "av", include_song: bool = False) -> RecipeResult:
    """RAVDESS: emotion (8 classes), intensity, statement, repetition, actor and gender per clip.

    By default only audio-visual speech clips (modality 01, vocal channel 01): song and the
    video-only/audio-only copies are reported as excluded, and come in with ``include_song``
    or ``modality='audio'|'video'``.
    """
    root = require_dir("ravdess", root)
    if modality not in MODALITIES:
        raise ValueError(f"ravdess: modality must be one of {sorted(MODALITIES)}, got {modality!r}")
    actors = sorted(p for p in root.iterdir() if p.is_dir() and ACTOR_DIR_RE.match(p.name))
    if not actors:
        raise NotADatasetError(
            "ravdess", root, "expected Actor_01 ... Actor_24 folders of MM-VV-EE-II-SS-RR-AA.mp4 files"
        )
    want = MODALITIES[modality]
    channels = ("01", "02") if include_song else ("01",)
    skipped, rows = SkipLog(), []
    for folder in actors:
        folder_actor = ACTOR_DIR_RE.match(folder.name)[1]
        for path in sorted(folder.iterdir()):
            if path.name.startswith(".") or path.is_dir():
                continue
            m = NAME_RE.match(path.stem)
            if not m or path.suffix.lower() != EXTENSIONS[m["modality"]]:
                skipped.add(path, "name is not MM-VV-EE-II-SS-RR-AA with the modality's extension (.mp4/.wav)")
                continue
            if m["actor"] != folder_actor:
                skipped.add(path, f"actor {m['actor']} in the name but in folder {folder.name}")
                continue
            if m["modality"] != want:
                skipped.add(path, f"modality {m['modality']} excluded (listing modality={modality!r})")
                continue
            if m["channel"] not in channels:
                skipped.add(path, "song (vocal channel 02) excluded; pass include_song to keep it")
                continue
            actor = int(m["actor"])
            rows.append(
                {
                    "utt_id": path.stem,
                    "path": str(path),
                    "speaker": f"Actor_{m['actor']}",
                    "emotion": EMOTIONS[m["emotion"]],
                    "intensity": "normal" if m["intensity"] == "01" else "strong",
                    "statement": int(m["statement"]),
                    "repetition": int(m["repetition"]),
                    "vocal_channel": "speech" if m["channel"] == "01" else "song",
                    "gender": "male" if actor % 2 else "female",
                }
            )
    return finish("ravdess", root, rows, skipped)

"""CREMA-D: ``VideoFlash/*.flv`` and ``AudioWAV/*.wav`` named ``ActorID_Sentence_Emotion_Level``.

E.g. ``1001_DFA_ANG_XX``: actor 1001-1091, one of 12 sentences, one of six emotions, and an
intensity level (LO/MD/HI, or XX unspecified). Actor demographics are in ``VideoDemographics.csv``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from manifests.recipes.base import NotADatasetError, RecipeResult, SkipLog, finish, register_recipe, require_dir

SENTENCES = ("IEO", "TIE", "IOM", "IWW", "TAI", "MTI", "IWL", "ITH", "DFA", "ITS", "TSI", "WSI")
EMOTIONS = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy", "NEU": "neutral", "SAD": "sad"}
LEVELS = {"LO": "low", "MD": "medium", "HI": "high", "XX": "unspecified"}
NAME_RE = re.compile(
    rf"^(?P<actor>1\d{{3}})_(?P<sentence>{'|'.join(SENTENCES)})_"
    rf"(?P<emotion>{'|'.join(EMOTIONS)})_(?P<level>{'|'.join(LEVELS)})$"
)
TREES = {"video": ("VideoFlash", ".flv"), "audio": ("AudioWAV", ".wav")}


def _listing(folder: Path, ext: str) -> dict[str, Path]:
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in folder.iterdir() if p.suffix.lower() == ext and not p.name.startswith(".")}


def _demographics(root: Path) -> dict[str, dict[str, str]]:
    path = root / "VideoDemographics.csv"
    if not path.is_file():
        return {}
    table = pd.read_csv(path, dtype=str)
    if not {"ActorID", "Sex"} <= set(table.columns):
        raise ValueError(f"{path}: expected ActorID and Sex columns, got {list(table.columns)}")
    return {
        a: {"gender": s.strip().lower(), "age": age}
        for a, s, age in zip(table["ActorID"], table["Sex"], table.get("Age", [""] * len(table)))
    }


@register_recipe("cremad", default_split="leave-speakers-out")
def cremad(root: Path | str, media: str = "video") -> RecipeResult:
    """CREMA-D: one row per clip with emotion (6 classes), level, sentence and actor.

    ``media='video'`` lists the ``.flv`` files (audio + face), ``'audio'`` the ``.wav`` files.
    A clip is kept only when both files exist and are non-empty: the dataset publishes both, so a
    missing or empty partner marks a broken download, and keeping it would mix audio-only and
    audio-visual items unevenly across the corpus.
    """
    root = require_dir("cremad", root)
    if media not in TREES:
        raise ValueError(f"cremad: media must be one of {sorted(TREES)}, got {media!r}")
    listings = {kind: _listing(root / folder, ext) for kind, (folder, ext) in TREES.items()}
    if not any(listings.values()):
        raise NotADatasetError(
            "cremad", root, "expected VideoFlash/*.flv and AudioWAV/*.wav named like 1001_DFA_ANG_XX"
        )
    demographics = _demographics(root)
    primary, other = media, "audio" if media == "video" else "video"
    skipped, rows = SkipLog(), []
    for stem in sorted(listings["video"].keys() | listings["audio"].keys()):
        here = listings[primary].get(stem) or listings[other][stem]
        m = NAME_RE.match(stem)
        if not m:
            skipped.add(here, "name is not ActorID_Sentence_Emotion_Level (e.g. 1001_DFA_ANG_XX)")
            continue
        missing = [f"{TREES[k][0]}/{stem}{TREES[k][1]}" for k in (primary, other) if stem not in listings[k]]
        if missing:
            skipped.add(here, f"missing partner file {missing[0]}")
            continue
        empty = [
            str(listings[k][stem].relative_to(root)) for k in (primary, other) if listings[k][stem].stat().st_size == 0
        ]
        if empty:
            skipped.add(here, f"empty file {empty[0]}")
            continue
        actor = m["actor"]
        row = {
            "utt_id": stem,
            "path": str(listings[primary][stem]),
            "speaker": actor,
            "emotion": EMOTIONS[m["emotion"]],
            "level": LEVELS[m["level"]],
            "sentence": m["sentence"],
        }
        if demographics:
            row.update(demographics.get(actor, {"gender": "", "age": ""}))
        rows.append(row)
    return finish("cremad", root, rows, skipped)

"""VoxCeleb1 and VoxCeleb2, as published by the VGG group.

Both name an utterance ``idXXXXX/<youtube-id>/<nnnnn>``; that path (without extension) is the
utterance id here, because it is how the official split and trial files name utterances. The
YouTube id is also written as ``group``, so a split kind never puts clips of one video on both sides.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from manifests.recipes.base import NotADatasetError, RecipeResult, SkipLog, finish, register_recipe, require_dir
from manifests.splits import GROUP, speaker_disjoint_split
from manifests.trials import read_trials

SPEAKER_RE = re.compile(r"^id\d{5}$")
CLIP_RE = re.compile(r"^\d{5}$")
#: Official trial lists: VoxCeleb1-O (cleaned and original), -E and -H.
TRIAL_FILES = (
    "veri_test2.txt",
    "veri_test.txt",
    "list_test_all2.txt",
    "list_test_all.txt",
    "list_test_hard2.txt",
    "list_test_hard.txt",
)
IDEN_SPLIT = {"1": "train", "2": "val", "3": "test"}
GENDER = {"m": "male", "f": "female"}


def _entries(folder: Path | str) -> list[os.DirEntry]:
    """A folder's entries by name, hidden ones (``.DS_Store``, ``._*``) left out."""
    return sorted((e for e in os.scandir(folder) if not e.name.startswith(".")), key=lambda e: e.name)


def _scan_tree(base: Path, ext: str, skipped: SkipLog, desc: str) -> dict[str, Path]:
    """``base/idXXXXX/<youtube-id>/<nnnnn>.<ext>`` -> {utt_id: path}; anything else is reported."""
    found: dict[str, Path] = {}
    for spk in tqdm(_entries(base), desc=desc, unit="spk", disable=None):
        if not (spk.is_dir() and SPEAKER_RE.match(spk.name)):
            skipped.add(spk.path, "not a speaker folder named idNNNNN")
            continue
        for video in _entries(spk.path):
            if not video.is_dir():
                skipped.add(video.path, "file where a YouTube-id folder was expected")
                continue
            for clip in _entries(video.path):
                stem, dot, suffix = clip.name.rpartition(".")
                if not (clip.is_file() and dot and suffix == ext and CLIP_RE.match(stem)):
                    skipped.add(clip.path, f"not a <nnnnn>.{ext} clip")
                    continue
                found[f"{spk.name}/{video.name}/{stem}"] = Path(clip.path)
    return found


def _read_meta(path: Path) -> dict[str, str]:
    """Speaker -> gender from vox1_meta.csv (tab-separated) or vox2_meta.csv (comma, padded)."""
    meta = pd.read_csv(path, sep=None, engine="python", dtype=str)
    meta.columns = [c.strip().lower() for c in meta.columns]
    id_col = next((c for c in meta.columns if c.startswith("voxceleb") and c.endswith("id")), None)
    if id_col is None or "gender" not in meta.columns:
        raise ValueError(f"{path}: expected a 'VoxCeleb? ID' and a 'Gender' column, got {list(meta.columns)}")
    return {i.strip(): GENDER.get(g.strip().lower(), g.strip()) for i, g in zip(meta[id_col], meta["gender"])}


def _meta_file(root: Path, name: str) -> Path | None:
    path = root / name
    return path if path.is_file() else None


@register_recipe("voxceleb2", default_split="speaker-disjoint")
def voxceleb2(root: Path | str, media: str = "mp4", val_speakers: float | str = 0.0) -> RecipeResult:
    """VoxCeleb2: ``{dev,test}/mp4/idXXXXX/<youtube-id>/<nnnnn>.mp4`` (or the ``aac/*.m4a`` audio tree).

    ``media='mp4'`` lists the audio-visual clips; ``'aac'`` the audio-only copies. The published
    dev/test partition (speaker-disjoint) becomes ``split`` train/test and is kept in ``subset``.
    ``val_speakers`` (a fraction in [0, 1)) carves that share of the dev speakers out as a
    speaker-disjoint ``val`` split (at least one speaker when > 0; seed 0, speakers sharing a
    video move together): the open-set validation that verification model selection needs.
    Gender comes from ``vox2_meta.csv`` when it is at the root.
    """
    root = require_dir("voxceleb2", root)
    ext = {"mp4": "mp4", "aac": "m4a"}.get(media)
    if ext is None:
        raise ValueError(f"voxceleb2: media must be 'mp4' or 'aac', got {media!r}")
    try:
        val_share = float(val_speakers)
    except (TypeError, ValueError):
        val_share = -1.0
    if not 0.0 <= val_share < 1.0:
        raise ValueError(f"voxceleb2: val_speakers must be a fraction in [0, 1), got {val_speakers!r}")
    parts = [p for p in ("dev", "test") if (root / p / media).is_dir()]
    if not parts:
        raise NotADatasetError("voxceleb2", root, f"expected dev/{media}/idXXXXX/... and/or test/{media}/idXXXXX/...")
    meta = _meta_file(root, "vox2_meta.csv")
    gender = _read_meta(meta) if meta else {}
    skipped, rows = SkipLog(), []
    for part in parts:
        clips = _scan_tree(root / part / media, ext, skipped, f"voxceleb2 {part}/{media}")
        partner, partner_ext = ("aac", "m4a") if media == "mp4" else ("mp4", "mp4")
        if (root / part / partner).is_dir():
            # The other tree lists the same clips; one present there but not here is a torn download.
            others = _scan_tree(root / part / partner, partner_ext, SkipLog(), f"voxceleb2 {part}/{partner}")
            for utt in sorted(others.keys() - clips.keys()):
                skipped.add(others[utt], f"no {media} partner (expected {part}/{media}/{utt}.{ext})")
        for utt, path in clips.items():
            spk, video, _ = utt.split("/")
            row = {
                "utt_id": utt,
                "path": str(path),
                "speaker": spk,
                "video": video,
                GROUP: video,
                "subset": part,
                "split": "train" if part == "dev" else "test",
            }
            if gender:
                row["gender"] = gender.get(spk, "")
            rows.append(row)
    result = finish("voxceleb2", root, rows, skipped)
    dev = result.manifest["subset"] == "dev"
    if val_share > 0 and dev.any():
        carved = speaker_disjoint_split(
            result.manifest[dev], seed=0, ratios=(1.0 - val_share, val_share, 0.0), group=GROUP
        )
        result.manifest.loc[dev, "split"] = carved
    return result


def _wav_trees(root: Path) -> list[Path]:
    """``wav/`` at the root, or one level down (``vox1_dev_wav/wav``, ``vox1_test_wav/wav``)."""
    if (root / "wav").is_dir():
        return [root / "wav"]
    return sorted(p / "wav" for p in root.iterdir() if p.is_dir() and (p / "wav").is_dir())


@register_recipe("voxceleb1", default_split="speaker-id")
def voxceleb1(root: Path | str) -> RecipeResult:
    """VoxCeleb1 audio: ``wav/idXXXXX/<youtube-id>/<nnnnn>.wav``, with its official split and trials.

    ``split`` comes from ``iden_split.txt`` (1/2/3 -> train/val/test) when present, else from
    ``vox1_meta.csv``'s Set column (dev -> train, test -> test). Every official trial list found
    at the root (``veri_test2.txt``, ``list_test_hard2.txt``, ...) is returned, restricted to the
    utterances present; trials naming absent utterances are counted in the skip report.
    """
    root = require_dir("voxceleb1", root)
    trees = _wav_trees(root)
    if not trees:
        raise NotADatasetError(
            "voxceleb1", root, "expected wav/idXXXXX/<youtube-id>/<nnnnn>.wav (or vox1_*_wav/wav/...)"
        )
    skipped = SkipLog()
    clips: dict[str, Path] = {}
    for tree in trees:
        for utt, path in _scan_tree(tree, "wav", skipped, f"voxceleb1 {tree.relative_to(root)}").items():
            if utt in clips:
                skipped.add(path, f"duplicate of {clips[utt]}")
            else:
                clips[utt] = path

    split: dict[str, str] = {}
    meta = _meta_file(root, "vox1_meta.csv")
    gender = _read_meta(meta) if meta else {}
    iden = _meta_file(root, "iden_split.txt")
    if iden:
        for n, line in enumerate(iden.read_text().splitlines(), 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 2 or fields[0] not in IDEN_SPLIT:
                raise ValueError(f"{iden}:{n}: expected '<1|2|3> idXXXXX/<youtube-id>/<nnnnn>.wav', got {line!r}")
            split[fields[1].rsplit(".", 1)[0]] = IDEN_SPLIT[fields[0]]
    elif meta:
        sets = pd.read_csv(meta, sep=None, engine="python", dtype=str)
        sets.columns = [c.strip().lower() for c in sets.columns]
        if "set" in sets.columns:
            by_speaker = {
                i.strip(): ("train" if s.strip() == "dev" else "test") for i, s in zip(sets.iloc[:, 0], sets["set"])
            }
            split = {utt: by_speaker[utt.split("/")[0]] for utt in clips if utt.split("/")[0] in by_speaker}

    rows = []
    for utt, path in clips.items():
        spk, video, _ = utt.split("/")
        row = {"utt_id": utt, "path": str(path), "speaker": spk, "video": video, GROUP: video}
        if gender:
            row["gender"] = gender.get(spk, "")
        if split:
            row["split"] = split.get(utt, "")
        rows.append(row)

    trials = {}
    known = pd.Index(list(clips))
    for name in TRIAL_FILES:
        path = root / name
        if not path.is_file():
            continue
        table = read_trials(path)
        table["enrol"] = table["enrol"].str.rsplit(".", n=1).str[0]
        table["test"] = table["test"].str.rsplit(".", n=1).str[0]
        present = table["enrol"].isin(known) & table["test"].isin(known)
        if not present.all():
            skipped.add(path, f"{int((~present).sum())} of {len(table)} trials name utterances not found; dropped")
        if present.any():
            trials[name] = table[present].reset_index(drop=True)
    return finish("voxceleb1", root, rows, skipped, trials)

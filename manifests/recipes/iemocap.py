"""IEMOCAP: utterances cut from the sessions' dialog videos by the EmoEvaluation turn lines.

Layout (``IEMOCAP_full_release``)::

    Session1/dialog/EmoEvaluation/Ses01F_impro01.txt
        [6.2901 - 8.2357]\tSes01F_impro01_F000\tneu\t[2.5000, 2.5000, 3.0000]
    Session1/dialog/avi/DivX/Ses01F_impro01.avi        both actors side by side

Each session has one female and one male actor. The dialog's letter (``Ses01F``) names the actor
wearing the motion-capture markers, who sits in the left half of the frame; the utterance's
last segment (``F000``) names the speaking actor. So the speaker is on the left when the two
letters agree, on the right otherwise: the ``crop`` column tells the extractor which half to keep.
The session is also the ``group``: its two actors share the recording, so any split kind keeps a
session on one side (leave-speakers-out then deals sessions, not actors).
"""

from __future__ import annotations

import re
from pathlib import Path

from manifests.recipes.base import NotADatasetError, RecipeResult, SkipLog, finish, register_recipe, require_dir

CODES = {
    "neu": "neutral",
    "hap": "happy",
    "exc": "excited",
    "ang": "angry",
    "sad": "sad",
    "fru": "frustrated",
    "sur": "surprise",
    "fea": "fear",
    "dis": "disgust",
    "oth": "other",
}
#: The usual 4-class setting: happy and excited merged.
FOUR_CLASS = {"neu": "neutral", "hap": "happy", "exc": "happy", "ang": "angry", "sad": "sad"}
NUM = r"(\d+(?:\.\d*)?)"
TURN_RE = re.compile(rf"^\[{NUM} - {NUM}\]\t(?P<utt>\S+)\t(?P<code>\S+)\t\[{NUM}, {NUM}, {NUM}\]\s*$")
DIALOG_RE = re.compile(r"^Ses(?P<session>\d{2})(?P<marked>[FM])_(?:impro|script)\w*$")
SESSION_DIR_RE = re.compile(r"^Session(\d+)$")


@register_recipe("iemocap", default_split="leave-one-session-out")
def iemocap(root: Path | str, classes: str = "4", crop_speaker: bool = True) -> RecipeResult:
    """IEMOCAP dialog utterances with start/end, emotion, valence/arousal/dominance, and crop side.

    ``classes='4'`` (default) keeps neutral, happy (+excited), angry, sad; ``'all'`` keeps every
    categorical label except ``xxx`` (no majority). ``crop_speaker=False`` writes ``crop=full``.
    """
    root = require_dir("iemocap", root)
    if classes not in ("4", "all"):
        raise ValueError(f"iemocap: classes must be '4' or 'all', got {classes!r}")
    labels = FOUR_CLASS if classes == "4" else CODES
    sessions = sorted(
        (p for p in root.iterdir() if SESSION_DIR_RE.match(p.name) and (p / "dialog" / "EmoEvaluation").is_dir()),
        key=lambda p: int(p.name[7:]),
    )
    if not sessions:
        raise NotADatasetError(
            "iemocap", root, "expected Session1..5/dialog/EmoEvaluation/*.txt (the IEMOCAP_full_release folder)"
        )
    skipped, rows = SkipLog(), []
    for session in sessions:
        for ev in sorted((session / "dialog" / "EmoEvaluation").glob("*.txt")):
            dialog = DIALOG_RE.match(ev.stem)
            if ev.name.startswith(".") or not dialog:
                skipped.add(ev, "not a SesNN{F,M}_<impro|script>... evaluation file")
                continue
            video = session / "dialog" / "avi" / "DivX" / f"{ev.stem}.avi"
            turns = [
                (n, line)
                for n, line in enumerate(ev.read_text(errors="replace").splitlines(), 1)
                if line.startswith("[")
            ]
            if not video.is_file():
                for n, _ in turns:
                    skipped.add(f"{ev}:{n}", f"missing partner video dialog/avi/DivX/{video.name}")
                continue
            for n, line in turns:
                m = TURN_RE.match(line)
                where = f"{ev}:{n}"
                if not m:
                    skipped.add(where, "turn line is not '[start - end]<TAB>utt<TAB>emotion<TAB>[V, A, D]'")
                    continue
                start, end, valence, arousal, dominance = (float(m[i]) for i in (1, 2, 5, 6, 7))
                utt, code = m["utt"], m["code"]
                who = utt.rsplit("_", 1)[-1]
                if not utt.startswith(ev.stem + "_") or not re.fullmatch(r"[FM]\d{3}", who):
                    skipped.add(where, f"utterance id {utt!r} is not {ev.stem}_<F|M>NNN")
                    continue
                if not end > start:
                    skipped.add(where, f"{utt}: end {end} is not after start {start}")
                    continue
                if code not in labels:
                    reason = (
                        "no majority label (xxx)"
                        if code == "xxx"
                        else f"emotion {code!r} not in the {classes}-class set"
                    )
                    skipped.add(where, f"{utt}: {reason}")
                    continue
                gender = who[0]
                rows.append(
                    {
                        "utt_id": utt,
                        "path": str(video),
                        "speaker": f"Ses{dialog['session']}{gender}",
                        "emotion": labels[code],
                        "start": start,
                        "end": end,
                        "crop": ("left" if gender == dialog["marked"] else "right") if crop_speaker else "full",
                        "session": session.name,
                        "group": session.name,
                        "gender": "female" if gender == "F" else "male",
                        "valence": valence,
                        "arousal": arousal,
                        "dominance": dominance,
                        "dialog": ev.stem,
                        "improvised": "_impro" in ev.stem,
                    }
                )
    return finish("iemocap", root, rows, skipped)

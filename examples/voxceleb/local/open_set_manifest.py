"""The open-set VoxCeleb manifest: VoxCeleb2 dev trains and validates, VoxCeleb1 tests.

Training items are the voxceleb2 manifest's ``train`` and ``val`` rows (its speaker-disjoint val
carve-out; the VoxCeleb2 test subset, if downloaded, is left out). Test items are the VoxCeleb1
utterances the trial list names (VoxCeleb1-O: 4,874 of its 153,516), with ``split=test``:
extracting the rest of VoxCeleb1 would cost hours for items no metric reads. The two corpora
share no speaker; a manifest where they do would test on training speakers, so it is refused.

    python examples/voxceleb/local/open_set_manifest.py --train vox2.csv --test vox1.csv \
        --trials vox1.veri_test2.txt --out vox2+vox1.csv
"""

from __future__ import annotations

import argparse
import sys

import pandas as pd

from manifests.io import read_manifest, write_manifest
from manifests.trials import read_trials


def open_set(train: pd.DataFrame, test: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """``train``'s train/val rows and the rows of ``test`` that ``trials`` names (ids with or without .wav)."""
    dev = train[train["split"].isin(["train", "val"])]
    if dev.empty or not (dev["split"] == "train").any():
        raise ValueError("the VoxCeleb2 manifest has no train rows (is it the dev subset's manifest?)")
    names = pd.concat([trials["enrol"], trials["test"]]).astype(str).str.replace(r"\.wav$", "", regex=True)
    wanted = set(names)
    missing = wanted - set(test["utt_id"])
    if missing:
        raise ValueError(
            f"the trial list names {len(missing)} utterance(s) not in the VoxCeleb1 manifest, e.g. {min(missing)!r}"
        )
    shared = set(dev["speaker"]) & set(test["speaker"])
    if shared:
        raise ValueError(f"{len(shared)} speaker(s) in both training and test, e.g. {min(shared)!r}: not open-set")
    chosen = test[test["utt_id"].isin(wanted)].assign(split="test")
    return pd.concat([dev, chosen], ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", required=True, help="manifest of VoxCeleb2 (python -m manifests voxceleb2)")
    parser.add_argument("--test", required=True, help="manifest of VoxCeleb1 (python -m manifests voxceleb1)")
    parser.add_argument("--trials", required=True, help="the trial list the test is scored on")
    parser.add_argument("--out", required=True, help="manifest to write")
    args = parser.parse_args(argv)
    try:
        df = open_set(read_manifest(args.train), read_manifest(args.test), read_trials(args.trials))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    write_manifest(df, args.out)
    counts = df.groupby("split")["speaker"].agg(["size", "nunique"])
    parts = ", ".join(f"{s} {counts.loc[s, 'size']} items / {counts.loc[s, 'nunique']} speakers" for s in counts.index)
    print(f"{args.out}: {parts}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

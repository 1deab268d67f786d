"""``python -m manifests RECIPE ROOT --out FILE``: a dataset's directory -> a manifest file.

Beside the manifest it writes ``<stem>.skipped.csv`` (item, reason) when anything was left
out, ``<stem>.<trial file>`` for each official trial list the dataset ships (VoxCeleb1), and
``<stem>.trials.txt`` when ``--trials N`` asks for a generated balanced list over the test split.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from pathlib import Path

from common.cli import RawHelpFormatter
from manifests.io import write_manifest
from manifests.recipes import RECIPES, NotADatasetError, run_recipe
from manifests.splits import SPLIT_KINDS
from manifests.trials import make_trials, write_trials

#: Recipe options on the command line: flag -> (keyword, help). Each applies only to recipes taking it.
RECIPE_OPTIONS = {
    "--media": ("media", "voxceleb2: mp4|aac (default mp4); cremad: video|audio (default video)"),
    "--val-speakers": (
        "val_speakers",
        "voxceleb2: fraction of dev speakers carved out as a speaker-disjoint val split (default 0: none)",
    ),
    "--modality": ("modality", "ravdess: av|audio|video (default av)"),
    "--include-song": ("include_song", "ravdess: keep song clips (vocal channel 02)"),
    "--classes": ("classes", "iemocap: 4 (neu, hap+exc, ang, sad) | all (default 4)"),
    "--no-crop": ("crop_speaker", "iemocap: write crop=full instead of the speaking actor's half"),
    "--labels": ("labels", "generic: CSV with a 'path' column (relative to ROOT) and label columns"),
    "--pattern": ("pattern", "generic: regex with named groups over the path relative to ROOT"),
}


def build_parser() -> argparse.ArgumentParser:
    recipes = "\n".join(f"  {name:<10} {spec.summary}" for name, spec in sorted(RECIPES.items()))
    parser = argparse.ArgumentParser(
        prog="manifests",
        description="Turn a dataset, as downloaded, into a manifest (CSV or parquet) the extractor reads.",
        epilog=f"recipes:\n{recipes}\n\nsplit kinds: dataset (the dataset's own split, else the recipe's "
        f"usual protocol), none, {', '.join(SPLIT_KINDS)}.\n"
        "exit status: 0 written; 1 ROOT is not that dataset or nothing usable was found; 2 bad usage.\n"
        "See docs/datasets.md for each dataset's expected layout.",
        formatter_class=RawHelpFormatter,  # the epilog's recipe list kept as written
    )
    parser.add_argument("recipe", choices=sorted(RECIPES), help="dataset recipe")
    parser.add_argument("root", type=Path, help="dataset root, as downloaded and unpacked")
    parser.add_argument(
        "--out", type=Path, required=True, default=argparse.SUPPRESS, help="manifest to write (.csv or .parquet)"
    )
    parser.add_argument(
        "--split", default="dataset", choices=["dataset", "none", *SPLIT_KINDS], help="how to fill the split column"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed for the split and generated trials")
    parser.add_argument("--fold", type=int, default=0, help="test fold for leave-speakers-out / leave-one-session-out")
    parser.add_argument("--n-folds", type=int, default=5, help="folds for leave-speakers-out")
    parser.add_argument(
        "--ratios",
        type=float,
        nargs=3,
        default=(0.8, 0.1, 0.1),
        metavar=("TRAIN", "VAL", "TEST"),
        help="fractions for speaker-id / speaker-disjoint",
    )
    parser.add_argument(
        "--trials",
        type=int,
        default=0,
        metavar="N",
        help="also write N target + N non-target trials over the test split (0: none)",
    )
    group = parser.add_argument_group("recipe options")
    for flag, (_, text) in RECIPE_OPTIONS.items():
        if flag in ("--include-song", "--no-crop"):
            group.add_argument(flag, action="store_true", default=argparse.SUPPRESS, help=text)
        else:
            group.add_argument(flag, default=argparse.SUPPRESS, help=text)
    return parser


def _recipe_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> dict:
    accepted = inspect.signature(RECIPES[args.recipe].fn).parameters
    options = {}
    for flag, (key, _) in RECIPE_OPTIONS.items():
        value = getattr(args, flag[2:].replace("-", "_"), None)
        if value is None:
            continue
        if key not in accepted:
            parser.error(f"{flag} does not apply to recipe {args.recipe}")
        options[key] = False if flag == "--no-crop" else value
    return options


def _split_options(args: argparse.Namespace) -> dict:
    kind = RECIPES[args.recipe].default_split if args.split == "dataset" else args.split
    return {
        "speaker-id": {"ratios": args.ratios},
        "speaker-disjoint": {"ratios": args.ratios},
        "leave-speakers-out": {"fold": args.fold, "n_folds": args.n_folds},
        "leave-one-session-out": {"fold": args.fold},
    }.get(kind, {})


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out.suffix.lower() not in (".csv", ".parquet", ".pq"):
        parser.error(f"--out must end in .csv or .parquet, got {args.out}")
    options = _recipe_options(parser, args)
    try:
        result = run_recipe(
            args.recipe,
            args.root,
            split=None if args.split == "none" else args.split,
            seed=args.seed,
            split_options=_split_options(args),
            **options,
        )
    except NotADatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # bad option values or malformed side files (labels CSV, iden_split.txt)
        print(f"error: {args.recipe}: {err}", file=sys.stderr)
        return 1

    df = result.manifest
    if args.trials:  # before writing anything: a usage error must not leave half the outputs behind
        test = df[df["split"] == "test"] if "split" in df else df.iloc[:0]
        if test.empty:
            parser.error("--trials needs a test split; choose a --split that makes one")
        try:
            result.trials["trials.txt"] = make_trials(test, args.trials, seed=args.seed)
        except ValueError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1

    stem = args.out.with_suffix("")
    write_manifest(df, args.out)
    if len(result.skipped):
        result.skipped.to_csv(f"{stem}.skipped.csv", index=False)
        print(f"wrote {stem}.skipped.csv", file=sys.stderr)
    for name, trials in result.trials.items():
        print(f"wrote {write_trials(trials, f'{stem}.{name}')}", file=sys.stderr)
    print(f"{args.out}: {result.summary()}")
    return 0

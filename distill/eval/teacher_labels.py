"""How well a teacher labels its transfer set: the accuracy of its cached targets' logits there.

A distilling student learns the teacher's targets on the transfer set, the training clips whose
labels were hidden (``data.labels_per_class``) or never existed; the teacher never trained on them.
How often the teacher's own prediction on such a clip is its true label is what a soft-label
student is taught there, and, for a teacher that sees faces against its audio-only control, the
first thing to look at when the video's share is not there. Read from ``targets.h5``, exactly what
the students read (per item, the mean of its grid cells' logits), against the labels the cache
holds for those clips (hidden from the run, not absent from the manifest). A clip with no label at
all in the cache cannot be scored and is not counted.

    python -m distill.eval.teacher_labels RUN_DIR [RUN_DIR ...]
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from common.cli import HelpFormatter
from distill.config import ConfigError
from distill.data.transfer import TRANSFER, blank_labels
from distill.run import RunData, RunDir
from distill.target_index import item_means


@dataclass(frozen=True)
class TeacherLabels:
    """A teacher's predictions on the items of one role (the transfer set by default)."""

    items: int  # items of that role with a label in the cache (the scored ones)
    correct: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.items if self.items else float("nan")


def item_predictions(targets: str | Path) -> dict[str, str]:
    """Per item of a targets file, the class of its mean logits over its grid cells."""
    index, means = item_means(targets, "logits")
    classes = index.key["labels"]
    return dict(zip(index.utt_ids, (classes[i] for i in means.argmax(axis=1))))


def teacher_labels(run_dir: str | Path, role: str = TRANSFER) -> TeacherLabels:
    """Score a finished teacher run's targets on its items of ``role`` (``transfer``, ``train``, ...)."""
    from extract.cache import open_cache  # the cache (HDF5, pandas): only when a teacher is scored

    run = RunDir(run_dir)
    cfg = run.config()
    if cfg.role != "teacher" or not run.targets.is_file():
        raise ConfigError(f"{run_dir}: not a finished teacher run (role {cfg.role!r}, {run.targets.name} missing)")
    cache = open_cache(cfg.cache)
    data = RunData.load(cfg, cache)
    utts = data.utt_ids(role)
    truth = cache.index.loc[utts, cfg.data.label]
    scored = [u for u, missing in zip(utts, blank_labels(truth)) if not missing]
    predicted = item_predictions(run.targets)
    absent = [u for u in scored if u not in predicted]
    if absent:
        raise ConfigError(f"{run.targets} has no targets for {len(absent)} item(s) of the run (e.g. {absent[0]!r})")
    correct = sum(predicted[u] == str(label) for u, label in zip(scored, truth.loc[scored].astype(str)))
    return TeacherLabels(len(scored), int(correct))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill.eval.teacher_labels",
        description=__doc__.split("\n")[0],
        formatter_class=HelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, help="finished teacher run directories")
    parser.add_argument("--role", default=TRANSFER, help="the items to score: transfer, train, val or test")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for run_dir in args.runs:
        try:
            score = teacher_labels(run_dir, args.role)
        except (ConfigError, OSError, KeyError) as exc:
            print(f"{run_dir}: {exc}", file=sys.stderr)
            return 1
        print(f"{run_dir}\t{args.role}\t{score.items} items\taccuracy {score.accuracy:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

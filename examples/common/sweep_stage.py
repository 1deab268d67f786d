"""The sweep side of the staged recipes (examples/*/run.sh): one sweep file drives every training stage.

Each training or report stage of a recipe calls this once. It writes

- ``WORK/sweep.yaml``: the recipe's sweep file (configs/paper/*.yaml, examples/<dataset>/sweep.yaml)
  with this run's cache, output folder and ``--set`` overrides written in;
- ``WORK/sweep.teachers.yaml``: the same sweep without students. The teacher stage runs it, the
  student stage runs the whole sweep: both plan their teachers from one file, so the student
  stage finds them finished and reuses them (``distill sweep`` skips a run holding metrics.json);
- ``WORK/plan/{teacher,student}.tsv``: every planned run of that role, one tab-separated line each
  (status, name, run directory, config file), with its resolved config in ``WORK/plan/``: for
  launching runs one by one under ``torchrun`` (``distill sweep`` runs them in one process), and to
  find a teacher that was evaluated but killed before its targets were written (status ``repair``:
  ``distill sweep`` would count it finished; ``distill teacher --resume`` re-evaluates it and
  writes them without training again);
- with ``--report``: results.csv/.md and charts over the finished runs, as ``distill sweep``
  writes them at its end (students named by variant), training nothing.

    python examples/common/sweep_stage.py SWEEP.yaml --cache C --out EXP --work WORK [--set k=v ...] [--report]
"""

from __future__ import annotations

import argparse
import difflib
import sys
from collections import Counter
from pathlib import Path

import yaml

from distill.config import ConfigError, dump_config
from distill.run import RunDir
from distill.sweep import SweepSpec, SweepTask, plan_sweep, set_for_every_run, write_sweep_results

#: Run states: finished (a teacher: with its targets), evaluated without targets, resumable, not started.
STATUSES = ("done", "repair", "resume", "new")
ROLES = ("teacher", "student")


def resolve_sweep(source: Path, cache: str, out: str, overrides: list[str]) -> dict:
    """``source``'s tree with ``cache``, ``out`` and the overrides set for every run
    (:func:`distill.sweep.set_for_every_run`)."""
    try:
        tree = yaml.safe_load(source.read_text()) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read sweep file {source}: {exc}") from exc
    if not isinstance(tree, dict):
        raise ConfigError(f"{source}: a sweep file is a mapping (see configs/demo_sweep.yaml)")
    tree["cache"], tree["out"] = cache, out
    return set_for_every_run(tree, overrides)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)


def run_status(run: RunDir, role: str) -> str:
    if run.finished:
        return "done" if role != "teacher" or run.targets.is_file() else "repair"
    return "resume" if run.started else "new"


def write_plan(tasks: list[SweepTask], plan_dir: Path) -> dict[str, Counter]:
    """``plan_dir/<role>.tsv`` and each run's config; returns the status counts per role."""
    lines: dict[str, list[str]] = {role: [] for role in ROLES}
    counts = {role: Counter() for role in ROLES}
    for task in tasks:
        cfg = task.config
        config = plan_dir / f"{task.name.replace('/', '__')}.yaml"
        plan_dir.mkdir(parents=True, exist_ok=True)
        dump_config(cfg, config)
        status = run_status(RunDir(task.run_dir), cfg.role)
        counts[cfg.role][status] += 1
        lines[cfg.role].append("\t".join([status, task.name, str(task.run_dir), str(config)]))
    for role in ROLES:
        _write(plan_dir / f"{role}.tsv", "".join(f"{line}\n" for line in lines[role]))
    return counts


def _counts(counts: Counter) -> str:
    total = sum(counts.values())
    return f"{total} ({', '.join(f'{counts[s]} {s}' for s in STATUSES if counts[s])})" if total else "0"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="sweep_stage.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the recipe's sweep file")
    parser.add_argument("--cache", required=True, help="the extracted cache directory")
    parser.add_argument("--out", required=True, help="the sweep's output folder (run directories, results)")
    parser.add_argument("--work", type=Path, required=True, help="where sweep.yaml and plan/ go")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--report", action="store_true", help="also write the results over the finished runs")
    args = parser.parse_args(argv)
    try:
        tree = resolve_sweep(args.sweep, args.cache, args.out, args.overrides)
        header = (
            f"# Written by the recipe from {args.sweep} (cache, out and --set overrides filled in).\n"
            f"# Edit that file or the recipe's options, not this one: the recipe rewrites it.\n"
        )
        dest = args.work / "sweep.yaml"
        before = dest.read_text() if dest.is_file() else None
        text = header + yaml.safe_dump(tree, sort_keys=False)
        _write(dest, text)
        _write(
            args.work / "sweep.teachers.yaml",
            header + "# The teachers (and control teachers) alone.\n" + yaml.safe_dump({**tree, "variants": []}),
        )
        spec = SweepSpec.load(dest)  # a bad key, method or control fails here, before any training
        tasks = plan_sweep(spec, Path(spec.out))  # and every run's config resolves (--set keys, folds)
        counts = write_plan(tasks, args.work / "plan")
    except ConfigError as exc:
        print(f"{parser.prog}: configuration error: {exc}", file=sys.stderr)
        return 2
    print(
        f"{dest}: {len(spec.combos)} task x setting, {len(spec.fold_ids())} fold(s): "
        f"teachers {_counts(counts['teacher'])}, students {_counts(counts['student'])}"
    )
    if before is not None and before != text:
        diff = list(difflib.unified_diff(before.splitlines(), text.splitlines(), lineterm="", n=0))[2:]
        print(
            f"note: {dest} changed since the last run; finished runs are reused as they are "
            f"(delete them under {spec.out} to train them again):\n  " + "\n  ".join(diff)
        )
    if args.report:
        finished = sum(counts[role]["done"] + counts[role]["repair"] for role in ROLES)
        written = write_sweep_results(spec, Path(spec.out)) if finished else {}
        if not written:
            print(f"no finished run under {spec.out}: run the training stages first", file=sys.stderr)
            return 1
        missing = len(tasks) - finished
        print(
            f"results over {finished} of {len(tasks)} planned run(s) -> {written['md']}"
            + (f" ({missing} not finished: rerun the training stages to add them)" if missing else "")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

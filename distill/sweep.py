"""Sweeps: one teacher per task x setting, every student variant x seed on its cached targets.

The teacher and its targets are the expensive shared part, so a sweep trains each exactly once
and every student reads the same targets file. A run directory that already holds metrics.json
is finished and skipped, one with only last.pt is resumed: rerunning a sweep (or ``make demo``)
after a crash or with a new variant only does the missing work.

SWEEP.yaml::

    cache: cache/abcd            # optional; --cache overrides
    out: results/demo            # optional; --out overrides
    seeds: [0, 1, 2]             # student seeds (the teacher uses teacher_seed, default seeds[0])
    combos:                      # task x setting pairs (or: tasks: [...] and settings: [...]),
      - {task: speaker, setting: nonseq}   # each with optional dotted overrides for all its runs:
      - {task: emotion, setting: seq, set: {data.split_column: emotion_split}}
    base: {train: {epochs: 3}}   # config tree shared by teachers and students
    teacher: {train: {epochs: 4}}  # extra config for the teachers only
    variants:                    # students: a name, a method, optional dotted overrides
      - {name: none, method: none}
      - {name: embed-cosine, method: embed, set: {distill.distance: cosine}}
    controls: [audio_teacher]    # optional: the privileged-information control (default: none)
    folds: {column: session}     # optional: cross-validation, one teacher per fold (below)
    labels_per_class: [1, 5, all]  # optional: a label-scarcity curve, one teacher per value (below)

``controls: [audio_teacher]`` also trains the same teacher with its faces hidden in training and
evaluation (``model.face_dropout: 1.0``, same architecture, same seed; ``distill.face_recon: 0``, so
the faces do not reach it as reconstruction targets either) and distils every variant
but ``none`` from it too: a gain that the audio-only teacher gives as well is self-distillation,
not the video's. distill.eval.report then gives each method's gain over ``none`` and the video's share.

Layout: ``OUT/<task>-<setting>/teacher`` and ``OUT/<task>-<setting>/<variant>/seed<k>``; the control
``OUT/<task>-<setting>/audio_teacher`` and ``OUT/<task>-<setting>/<variant>@audio_teacher/seed<k>``;
then ``OUT/results.csv``, ``OUT/results.md`` and ``OUT/results_<task>[_share].png`` via distill.eval.report.

``folds: {column: session}`` runs every task x setting once per fold: one fold per value of the
cache's ``session`` column (IEMOCAP leave-one-session-out), or with ``k: 5`` the column's values
(e.g. ``speaker``: CREMA-D, RAVDESS) dealt into 5 folds seeded by ``data.split_seed``. Fold f tests
its values, validates on fold f+1 (mod the count), trains on the rest (:func:`manifests.splits.fold_split`).
Each fold has its own teacher (and control), its students distilled from it; the fold is written
into every run's config (``data.fold_column``, ``data.n_folds``, ``data.fold``), so a run directory
alone says which items it trained and tested on. Layout ``OUT/<task>-<setting>/fold<f>/teacher`` etc.;
results.md gives per-fold rows and mean ± std over folds.

``labels_per_class: [1, 5, all]`` runs every task x setting (x fold) once per value: the run's
``data.labels_per_class`` (``all``: null, every label), so only k seeded labelled training items per
class keep their label and the rest become the transfer set (distill.data.transfer). Each value has its
own teacher (and control), trained on those k labelled items, since a teacher must never have
trained on a label its student is told is hidden; layout ``OUT/<task>-<setting>[/fold<f>]/k<k>/...``
(``kall``); results.md gives a section per value.

One planner (:func:`plan_sweep`) lists the runs with the teacher each depends on; two executors
run that plan: in order in this process (``backend="local"``, the default), or as tasks on a
dask.distributed cluster (``backend="dask"``), each student after its teacher's task. Both train
a run with the same function into the same directory, so the tables cannot differ by backend.
"""

from __future__ import annotations

import copy
import os
import socket
import time
import traceback
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from tqdm import tqdm

from distill.config import ConfigError, RunConfig, load_config, merge, parse_override, set_dotted
from distill.eval.report import ALL_LABELS, AUDIO_TEACHER, CONTROL_SUFFIX, collect_runs, write_results
from distill.methods import METHODS
from distill.run import RunDir, student_config
from distill.train.trainer import run_training
from extract.cache import open_cache
from manifests.splits import count_folds

#: Control teachers by name: the overrides that turn the sweep's teacher into the control's. The
#: audio-only teacher must not learn from the faces by any route: hidden as input, and not
#: reconstructed either (a face_recon teacher on audio alone still learns from them as targets).
CONTROLS = {AUDIO_TEACHER: {"model.face_dropout": 1.0, "distill.face_recon": 0.0}}
#: Where a sweep's runs train: in order in this process, or as tasks on a dask.distributed cluster.
BACKENDS = ("local", "dask")


@dataclass(frozen=True)
class SweepLayout:
    """Where a sweep's runs live: ``OUT/<task>-<setting>[/fold<f>]/`` holds the combo's (fold's)
    ``teacher``, its control teachers by name, and ``<label>/seed<k>`` per student (label: the
    variant's name, with ``@<control>`` for a student of a control teacher). The one place these
    paths are built."""

    out: Path

    def combo(self, task: str, setting: str, fold: int | None = None, k: int | str | None = None) -> Path:
        """The folder of one task x setting, of a fold, of a labels_per_class value ``k``."""
        combo = self.out / f"{task}-{setting}"
        combo = combo if fold is None else combo / f"fold{fold}"
        return combo if k is None else combo / f"k{k}"

    def teacher(
        self,
        task: str,
        setting: str,
        control: str | None = None,
        fold: int | None = None,
        k: int | str | None = None,
    ) -> Path:
        return self.combo(task, setting, fold, k) / (control or "teacher")

    def student(
        self, task: str, setting: str, label: str, seed: int, fold: int | None = None, k: int | str | None = None
    ) -> Path:
        return self.combo(task, setting, fold, k) / label / f"seed{seed}"

    def name(self, run_dir: Path) -> str:
        """A run's name in the sweep's records and task keys: its path below ``out``."""
        return run_dir.relative_to(self.out).as_posix()


@dataclass
class Variant:
    name: str
    method: str
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Folds:
    """A sweep's ``folds:``: the cross-validation every task x setting of the sweep runs over."""

    column: str  # the cache index column whose values make the folds (session, speaker)
    k: int = 0  # 0: one fold per value of the column; k >= 3: the values dealt into k seeded folds

    @classmethod
    def parse(cls, raw, where: str) -> Folds:
        if not isinstance(raw, dict) or "column" not in raw or set(raw) - {"column", "k"}:
            raise ConfigError(
                f"{where}: folds must be a mapping {{column: NAME}} or {{column: NAME, k: K}}, got {raw!r}"
            )
        k = raw.get("k", 0)
        if not isinstance(k, int) or isinstance(k, bool) or k < 0 or k in (1, 2):
            raise ConfigError(f"{where}: folds.k must be an integer >= 3 (or absent: one fold per value), got {k!r}")
        return cls(str(raw["column"]), k)

    def overrides(self, fold: int) -> dict:
        """The data section of fold ``fold``'s runs: how its split is made, in the run's own config."""
        return {"data.fold_column": self.column, "data.n_folds": self.k, "data.fold": fold}


def parse_label_counts(raw, where: str) -> list[int | str]:
    """A sweep's ``labels_per_class:``: distinct integers >= 1, and ``all`` for every label."""
    values = raw if isinstance(raw, list) else [raw]
    ok = all(v == ALL_LABELS or (isinstance(v, int) and not isinstance(v, bool) and v >= 1) for v in values)
    if not values or not ok or len(set(values)) != len(values):
        raise ConfigError(
            f"{where}: labels_per_class must be a list of distinct integers >= 1 and/or {ALL_LABELS!r}, got {raw!r}"
        )
    return values


def set_for_every_run(tree: dict, overrides: Sequence[str]) -> dict:
    """A sweep file's tree with ``key=value`` run-config overrides set for every run, in place.

    An override goes into ``base`` (every run) and ``teacher`` (where a sweep's teacher-only
    settings would otherwise win over it); a combo's or a variant's own ``set:`` still wins, since
    it is what makes that combo or variant what it is. The sections are copied before they are
    written, so a tree that shares them (YAML anchors) is not changed elsewhere.
    """
    pairs = [parse_override(text) for text in overrides]
    for section in ("base", "teacher"):
        if pairs or section in tree:
            tree[section] = copy.deepcopy(tree.get(section) or {})
        for key, value in pairs:
            set_dotted(tree[section], key, value)
    return tree


def label_overrides(k: int | str | None) -> dict:
    """The data section of the runs of labels_per_class value ``k`` (None: the sweep has no such key)."""
    return {} if k is None else {"data.labels_per_class": None if k == ALL_LABELS else k}


@dataclass
class SweepSpec:
    cache: str | None
    out: str
    seeds: list[int]
    combos: list[tuple[str, str]]
    combo_overrides: dict[tuple[str, str], dict]
    base: dict
    teacher: dict
    variants: list[Variant]
    teacher_seed: int
    controls: list[str] = field(default_factory=list)
    folds: Folds | None = None
    labels_per_class: list[int | str] | None = None  # a label-scarcity curve: one teacher per value
    _n_folds: int | None = field(default=None, repr=False)  # counted once from the cache index

    @classmethod
    def load(cls, path: str | Path, cache: str | None = None, out: str | None = None) -> SweepSpec:
        try:
            raw = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read sweep file {path}: {exc}") from exc
        known = {
            "cache",
            "out",
            "seeds",
            "combos",
            "tasks",
            "settings",
            "base",
            "teacher",
            "variants",
            "teacher_seed",
            "controls",
            "folds",
            "labels_per_class",
        }
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown key(s) {unknown}; valid: {sorted(known)}")
        combo_overrides: dict[tuple[str, str], dict] = {}
        if "combos" in raw:
            combos = []
            for i, c in enumerate(raw["combos"]):
                if not isinstance(c, dict) or not {"task", "setting"} <= set(c):
                    raise ConfigError(f"{path}: combo {i} needs a task and a setting, got {c!r}")
                combos.append((str(c["task"]), str(c["setting"])))
                combo_overrides[combos[-1]] = dict(c.get("set") or {})
        else:
            combos = [(t, s) for t in raw.get("tasks", ["speaker"]) for s in raw.get("settings", ["nonseq"])]
        variants = []
        for i, v in enumerate(raw.get("variants") or []):
            if not isinstance(v, dict) or "method" not in v:
                raise ConfigError(f"{path}: variant {i} needs at least a method (one of {', '.join(METHODS)})")
            if v["method"] not in METHODS:  # the methods table (distill.methods)
                raise ConfigError(
                    f"{path}: variant {v.get('name', i)} has method {v['method']!r}; one of {', '.join(METHODS)}"
                )
            variants.append(Variant(str(v.get("name", v["method"])), v["method"], dict(v.get("set") or {})))
        names = [v.name for v in variants]
        if len(set(names)) != len(names) or "teacher" in names:
            raise ConfigError(f"{path}: variant names must be unique and not 'teacher', got {names}")
        controls = [str(c) for c in raw.get("controls") or []]
        bad = sorted(set(controls) - set(CONTROLS))
        if bad:
            raise ConfigError(f"{path}: unknown control(s) {bad}; known: {sorted(CONTROLS)}")
        if set(controls) & set(names) or any(n.endswith(CONTROL_SUFFIX) for n in names):
            raise ConfigError(f"{path}: variant names must not name a control or end in {CONTROL_SUFFIX!r}")
        seeds = [int(s) for s in raw.get("seeds", [0])]
        spec = cls(
            cache=cache or raw.get("cache"),
            out=out or raw.get("out") or "results/sweep",
            seeds=seeds,
            combos=combos,
            combo_overrides=combo_overrides,
            base=dict(raw.get("base") or {}),
            teacher=dict(raw.get("teacher") or {}),
            variants=variants,
            teacher_seed=int(raw.get("teacher_seed", seeds[0])),
            controls=controls,
            folds=Folds.parse(raw["folds"], f"{path}") if raw.get("folds") is not None else None,
            labels_per_class=(
                parse_label_counts(raw["labels_per_class"], f"{path}") if "labels_per_class" in raw else None
            ),
        )
        if not spec.cache:
            raise ConfigError(f"{path}: no cache (give cache: in the file or --cache)")
        return spec

    def teacher_config(
        self,
        task: str,
        setting: str,
        control: str | None = None,
        fold: int | None = None,
        k: int | str | None = None,
    ) -> RunConfig:
        """The combo's teacher (of cross-validation fold ``fold``, of labels_per_class value ``k``), or
        with ``control`` the same teacher turned into that control. Its students inherit its data
        section, so they see its split, fold and labelled items."""
        tree = merge(self.base, self.teacher)
        return load_config(
            base=tree,
            overrides={
                "role": "teacher",
                "cache": self.cache,
                "data.task": task,
                "data.setting": setting,
                "train.seed": self.teacher_seed,
                **self.combo_overrides.get((task, setting), {}),
                **(self.folds.overrides(fold) if fold is not None else {}),
                **label_overrides(k),
                **(CONTROLS[control] if control else {}),
            },
        )

    def fold_ids(self) -> list[int | None]:
        """The sweep's folds, ``[None]`` without ``folds:``; one per column value is counted in the cache."""
        if self.folds is None:
            return [None]
        if self._n_folds is None:
            try:
                self._n_folds = count_folds(open_cache(self.cache).index, self.folds.column, self.folds.k)
            except ValueError as exc:  # CacheError is a RuntimeError: a missing cache says so itself
                raise ConfigError(f"folds: {exc}") from exc
            if self._n_folds < 3:
                raise ConfigError(
                    f"folds: column {self.folds.column!r} has {self._n_folds} value(s) in cache "
                    f"{self.cache}; cross-validation needs >= 3 (train, val and test folds)"
                )
        return list(range(self._n_folds))

    def label_counts(self) -> list[int | str | None]:
        """The sweep's labels_per_class values, ``[None]`` without the key (runs keep their configs' value)."""
        return list(self.labels_per_class) if self.labels_per_class is not None else [None]

    def student_runs(self) -> list[tuple[Variant, str, str | None]]:
        """(variant, method label, control teacher or None) for every student of a combo. A student
        that reads nothing of its teacher (``none``) is not repeated per control: it would be the same run."""
        runs = [(v, v.name, None) for v in self.variants]
        for control in self.controls:
            runs += [(v, f"{v.name}@{control}", control) for v in self.variants if METHODS[v.method].needs_teacher]
        return runs

    def student_config(
        self,
        task: str,
        setting: str,
        variant: Variant,
        seed: int,
        teacher_dir: Path,
        control: str | None = None,
        fold: int | None = None,
        k: int | str | None = None,
    ) -> RunConfig:
        """A student of the combo's teacher (or of its ``control``), derived by the CLI's rule
        (:func:`distill.run.student_config`): the teacher's data and model sections reach it, so a
        ``teacher: {data: ...}`` override cannot give the student another split."""
        overrides = {"train.seed": seed, **self.combo_overrides.get((task, setting), {}), **variant.overrides}
        return student_config(
            self.teacher_config(task, setting, control, fold, k),
            variant.method,
            overrides,
            teacher_dir=teacher_dir,
            shared=self.base,
        )


@dataclass
class RunRecord:
    name: str
    run_dir: Path
    status: str  # trained | resumed | skipped | failed
    seconds: float = 0.0
    error: str = ""
    started: float = 0.0  # wall clock (time.time()) when the run began and ended: the order across workers
    finished: float = 0.0
    host: str = ""  # hostname:pid of the process that ran it


@dataclass
class SweepResult:
    out: Path
    runs: list[RunRecord]
    results: dict = field(default_factory=dict)

    @property
    def failed(self) -> list[RunRecord]:
        return [r for r in self.runs if r.status == "failed"]

    def summary(self) -> str:
        trained = [r for r in self.runs if r.status in ("trained", "resumed")]
        mean = sum(r.seconds for r in trained) / len(trained) if trained else 0.0
        skipped = sum(r.status == "skipped" for r in self.runs)
        text = (
            f"sweep: {len(trained)} run(s) trained ({mean:.1f} s each on average), {skipped} reused, "
            f"{len(self.failed)} failed -> {self.results.get('md', self.out)}"
        )
        return text


@dataclass(frozen=True)
class SweepTask:
    """One run of the plan; ``depends_on`` names the teacher task whose targets it reads."""

    name: str
    run_dir: Path
    config: RunConfig
    depends_on: str | None = None


def plan_sweep(spec: SweepSpec, out_dir: Path) -> list[SweepTask]:
    """Every run of the sweep in the sequential order: per combo its teachers, then its students.

    A ``none`` student reads no targets, so it depends on nothing (it runs even if the teacher failed).
    """
    layout = SweepLayout(out_dir)
    tasks: list[SweepTask] = []
    for task, setting in spec.combos:
        for fold in spec.fold_ids():
            for k in spec.label_counts():
                teacher_task: dict[str | None, str] = {}
                for control in [None, *spec.controls]:
                    teacher_dir = layout.teacher(task, setting, control, fold, k)
                    teacher_task[control] = layout.name(teacher_dir)
                    cfg = spec.teacher_config(task, setting, control, fold, k)
                    tasks.append(SweepTask(teacher_task[control], teacher_dir, cfg))
                for variant, label, control in spec.student_runs():
                    teacher_dir = layout.teacher(task, setting, control, fold, k)
                    for seed in spec.seeds:
                        cfg = spec.student_config(task, setting, variant, seed, teacher_dir, control, fold, k)
                        depends_on = teacher_task[control] if METHODS[variant.method].needs_teacher else None
                        run_dir = layout.student(task, setting, label, seed, fold, k)
                        tasks.append(SweepTask(layout.name(run_dir), run_dir, cfg, depends_on))
    return tasks


def _train_or_reuse(cfg: RunConfig, run_dir: Path, name: str) -> RunRecord:
    run = RunDir(run_dir)
    if run.finished:
        return RunRecord(name, run_dir, "skipped")
    resume = run.started
    started = time.perf_counter()
    try:
        run_training(cfg, run_dir, resume=resume, progress=False)
    except Exception as exc:  # one failed run must not lose the others; it is reported and exits 1
        run.path.mkdir(parents=True, exist_ok=True)
        run.error.write_text(traceback.format_exc())
        return RunRecord(name, run_dir, "failed", time.perf_counter() - started, f"{type(exc).__name__}: {exc}")
    return RunRecord(name, run_dir, "resumed" if resume else "trained", time.perf_counter() - started)


def run_task(task: SweepTask, *teachers: RunRecord) -> RunRecord:
    """Train (or reuse, or resume) one planned run once its teachers' records are in; both executors call this."""
    began = time.time()
    if any(t.status == "failed" for t in teachers):
        record = RunRecord(task.name, task.run_dir, "failed", error="its teacher failed")
    else:
        record = _train_or_reuse(task.config, task.run_dir, task.name)
    record.started, record.finished, record.host = began, time.time(), f"{socket.gethostname()}:{os.getpid()}"
    return record


def _run_local(tasks: list[SweepTask], bar: tqdm) -> list[RunRecord]:
    done: dict[str, RunRecord] = {}
    for task in tasks:
        done[task.name] = run_task(task, *([done[task.depends_on]] if task.depends_on else []))
        _report(bar, done[task.name])
    return [done[t.name] for t in tasks]


def _run_dask(tasks: list[SweepTask], client, bar: tqdm) -> list[RunRecord]:
    """Each run a task; a student's task takes its teacher's future as an argument, so dask starts it
    only once the teacher's run (and its targets) is finished. A worker that dies mid-run has its
    task rescheduled by dask on another worker (``distributed.scheduler.allowed-failures`` times),
    where :func:`_train_or_reuse` resumes it from the run's ``last.pt``."""
    from dask.distributed import as_completed  # the cluster extra: only dask sweeps need it

    tag = uuid.uuid4().hex[:8]  # a rerun from the same client must not get the cached results back
    futures = {}
    for task in tasks:
        deps = [futures[task.depends_on]] if task.depends_on else []
        futures[task.name] = client.submit(run_task, task, *deps, key=f"sweep-{tag}-{task.name}", pure=False)
    task_of = {fut.key: task for task, fut in zip(tasks, futures.values())}
    done: dict[str, RunRecord] = {}
    for fut in as_completed(list(futures.values())):
        task = task_of[fut.key]
        if fut.status == "finished":
            done[task.name] = fut.result()
        else:  # run_task never raises: the worker died too often (KilledWorker), or the cluster went away
            exc = fut.exception()
            done[task.name] = RunRecord(task.name, task.run_dir, "failed", error=f"{type(exc).__name__}: {exc}")
        _report(bar, done[task.name])
    return [done[t.name] for t in tasks]


def run_sweep(
    path: str | Path,
    cache: str | None = None,
    out: str | None = None,
    progress: bool = True,
    backend: str = "local",
    scheduler: str | None = None,
    workers: int = 2,
) -> SweepResult:
    """Run a sweep file; ``backend="dask"`` runs it on the cluster at ``scheduler``, or without one
    on a LocalCluster of ``workers`` processes. The run directories must be on a filesystem every
    worker sees."""
    if backend not in BACKENDS:
        raise ConfigError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if workers < 1:
        raise ConfigError(f"workers must be >= 1, got {workers}")
    if scheduler and backend != "dask":
        raise ConfigError("a scheduler address needs backend 'dask' (--backend dask)")
    spec = SweepSpec.load(path, cache=cache, out=out)
    out_dir = Path(spec.out)
    tasks = plan_sweep(spec, out_dir)
    with tqdm(total=len(tasks), desc="sweep", unit="run", disable=not progress) as bar:
        if backend == "local":
            records = _run_local(tasks, bar)
        else:
            from extract.cluster import dask_client  # imports dask: only dask sweeps need it

            with dask_client(scheduler, workers) as client:
                records = _run_dask(tasks, client, bar)
    result = SweepResult(out_dir, records)
    result.results = write_sweep_results(spec, out_dir)
    return result


def _report(bar: tqdm, record: RunRecord) -> None:
    bar.update(1)
    detail = f"{record.seconds:.1f} s" if record.status in ("trained", "resumed") else record.error
    bar.write(f"  {record.status:>7}  {record.name}  {detail}".rstrip())


def write_sweep_results(spec: SweepSpec, out_dir: Path) -> dict:
    """results.csv/.md and bar charts over the sweep's finished runs, students named by variant."""
    layout = SweepLayout(out_dir)
    dirs = [layout.combo(t, s) for t, s in spec.combos if layout.combo(t, s).is_dir()]
    if not dirs:
        return {}
    df = collect_runs(dirs)
    # Two variants of one method (e.g. embed with mse vs cosine) must stay two rows of the table.
    variant_of = {}
    for t, s in spec.combos:
        for fold in spec.fold_ids():
            for k in spec.label_counts():
                for _, label, _ in spec.student_runs():
                    for seed in spec.seeds:
                        variant_of[str(layout.student(t, s, label, seed, fold, k))] = label
    is_student = df["run_dir"].isin(variant_of)
    df.loc[is_student, "method"] = df.loc[is_student, "run_dir"].map(variant_of)
    return write_results(df, out_dir)

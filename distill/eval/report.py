"""Results tables from finished run directories: one row per run, mean ± std over seeds.

A run directory holds ``config.yaml`` and ``metrics.json`` (docs/architecture.md).  The
report reads nothing else, so it works on runs copied off a cluster, on a sweep's output,
and on runs made by hand, and it tolerates config layouts: ``task``/``setting``/``method``/
``seed`` are taken from the top level or from their sections (``data.task``,
``data.setting``, ``distill.method``, ``train.seed``).  A teacher's ``metrics.json`` also
carries ``video_missing: {...}``, which becomes a second row with method
``teacher-no-video``: the failure that audio-only students exist to avoid.

The privileged-information control: a teacher trained with its faces always hidden
(``model.face_dropout: 1.0``) is method ``audio_teacher``, and a student distilled from it gets
its method suffixed ``@audio_teacher``. Next to the table, results.md then gives per method the
gain over ``none`` and the *video's share* (the gain over the same method distilled from the
audio-only teacher): mean, 95 % t-interval over seeds (paired by seed) and a paired t-test
(:mod:`distill.stats`); a LUPI gain is only a video gain if its share is significant.

Cross-validated runs (``data.fold_column`` set: a sweep's ``folds:``) get a ``fold`` column. Their
table rows are mean ± std *over folds* of each fold's mean over seeds (n = folds), followed by a
per-fold table (mean ± std over seeds); gains and shares are then paired by (fold, seed).

Runs with hidden labels (``data.labels_per_class``: a point of a label-scarcity curve, a sweep's
``labels_per_class:``) get a ``labels_per_class`` column (``all`` for runs that used every label),
and results.md a section per task and value, each with its own table, gains and shares. With two
or more values, the task's section opens with the curve itself (:func:`label_curve`): the mean
score per method and value, and the gains and shares of every value in one table, plotted with the
value on the x axis (``results_<task>_curve.png``).

The budget rule (distill.budget): a run's ``stopping.json`` says whether early stopping ended it
or the epoch cap did; results.csv gets ``stopped``, ``epochs_trained`` and ``steps_trained``, and results.md counts
the runs that hit the cap (a budget too small for the sweep shows there).

    python -m distill.eval.report runs/ --out results/
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

import pandas as pd
import yaml

from common.cli import HelpFormatter
from common.files import atomic_output, atomic_write_text
from distill.budget import CAP, Stopping
from distill.eval.metrics import LOWER_IS_BETTER, METRIC_KEYS
from distill.methods import BASELINE, METHODS
from distill.run import RunDir

__all__ = [
    "METHOD_ORDER",
    "SETTING_ORDER",
    "HEADLINE_METRIC",
    "collect_runs",
    "summarize",
    "fold_means",
    "format_markdown",
    "write_results",
    "video_shares",
    "format_shares",
    "label_curve",
    "format_curve",
    "main",
]

#: the audio-only teacher of the privileged-information control, and the suffix of its students' methods
AUDIO_TEACHER = "audio_teacher"
CONTROL_SUFFIX = f"@{AUDIO_TEACHER}"
#: Upper bound first, then its failure mode, the control teacher, then the students in the methods
#: table's order (distill.methods): the baseline, the LUPI baselines, the method.
METHOD_ORDER = ("teacher", "teacher-no-video", AUDIO_TEACHER, *METHODS)
#: the metrics the gains and the video's share are reported on, per task
SHARE_METRICS = {"speaker": ("accuracy", "eer"), "emotion": ("uar",)}
#: rows that are not students distilled from the teacher: no gain or share of their own
_NOT_SHARED = ("teacher", "teacher-no-video", AUDIO_TEACHER, BASELINE)
SETTING_ORDER = ("nonseq", "seq")
#: the metric each task's bar chart shows: verification is what a speaker embedding is for,
#: UAR is the emotion metric that class imbalance cannot inflate.
HEADLINE_METRIC = {"speaker": "eer", "emotion": "uar"}

KEY_COLUMNS = ("task", "setting", "method")
#: a cross-validated run's fold (from data.fold when data.fold_column is set); a column only when some run has one
FOLD = "fold"
#: a run's data.labels_per_class (ALL_LABELS: every label); a column only when some run hides labels
LABELS = "labels_per_class"
ALL_LABELS = "all"
#: from a run's stopping.json: "early" or "cap" (distill.budget), the epochs it trained and its
#: optimiser steps (a run stopped after a dozen steps, as few labels make it, shows here)
STOPPED, EPOCHS_TRAINED, STEPS_TRAINED = "stopped", "epochs_trained", "steps_trained"
_FIELD_SECTIONS = {"task": "data", "setting": "data", "method": "distill", "seed": "train"}
CONFIG_FILE = RunDir.CONFIG
METRICS_FILE = RunDir.METRICS
VIDEO_MISSING = "video_missing"


# ------------------------------------------------------------------------ collecting


def _config_field(config: dict, name: str):
    """``config[name]``, else ``config[section][name]`` (e.g. ``data.task``), else None."""
    if name in config:
        return config[name]
    section = config.get(_FIELD_SECTIONS[name])
    return section.get(name) if isinstance(section, dict) else None


def _read_run(run_dir: Path, name: str) -> list[dict]:
    """The table rows of one finished run: one, or two for a teacher with video_missing."""
    config_path, metrics_path = run_dir / CONFIG_FILE, run_dir / METRICS_FILE
    for path in (config_path, metrics_path):
        if not path.is_file():
            raise ValueError(f"{run_dir}: not a finished run directory (no {path.name})")
    try:
        config = yaml.safe_load(config_path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ValueError(f"{config_path}: not valid YAML ({exc})") from exc
    try:
        metrics = json.loads(metrics_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{metrics_path}: not valid JSON ({exc})") from exc
    if not isinstance(config, dict) or not isinstance(metrics, dict):
        raise ValueError(f"{run_dir}: config.yaml and metrics.json must each hold a mapping")

    base = {"run": name, **{field: _config_field(config, field) for field in ("task", "setting", "method", "seed")}}
    data = config.get("data")
    if isinstance(data, dict) and data.get("fold_column"):
        base[FOLD] = int(data.get("fold") or 0)
    if isinstance(data, dict):
        base[LABELS] = data.get(LABELS)
    stopping = Stopping.read(run_dir / RunDir.STOPPING)
    if stopping is not None:
        base[STOPPED], base[EPOCHS_TRAINED] = stopping.stopped, stopping.epochs
        base[STEPS_TRAINED] = stopping.steps or None  # 0: a record from before steps were counted
    for field in KEY_COLUMNS:  # group keys must be values, not NaN, to group and sort on
        base[field] = "unknown" if base[field] is None else str(base[field])
    audio_only = False
    if config.get("role") == "teacher":
        audio_only = _hides_faces(config)
        # a teacher's distill section is unused (method defaults to none)
        base["method"] = AUDIO_TEACHER if audio_only else "teacher"
    elif _from_audio_teacher(config, run_dir):
        base["method"] += CONTROL_SUFFIX
    rows = [{**base, **_scalar_metrics(metrics)}]
    # An audio-only teacher never looks at faces: its video-missing scores are its scores.
    if isinstance(metrics.get(VIDEO_MISSING), dict) and not audio_only:
        rows.append({**base, "method": "teacher-no-video", **_scalar_metrics(metrics[VIDEO_MISSING])})
    for row in rows:
        row["run_dir"] = str(run_dir)
    return rows


def _hides_faces(config: dict) -> bool:
    """A teacher trained (and evaluated) with its faces always hidden: the control's teacher."""
    model = config.get("model")
    return isinstance(model, dict) and float(model.get("face_dropout") or 0.0) >= 1.0


def _from_audio_teacher(config: dict, run_dir: Path) -> bool:
    """A student whose teacher run (distill.teacher, if it can still be read) hides its faces."""
    distill = config.get("distill")
    teacher = distill.get("teacher") if isinstance(distill, dict) else None
    if not teacher:
        return False
    path = Path(teacher)
    path = path if path.is_absolute() or (path / CONFIG_FILE).is_file() else run_dir / path
    try:
        teacher_config = yaml.safe_load((path / CONFIG_FILE).read_text()) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(teacher_config, dict) and _hides_faces(teacher_config)


def _scalar_metrics(metrics: dict) -> dict[str, float]:
    """Numeric top-level entries; nested sections (video_missing) and strings are not metrics."""
    return {
        key: float(value)
        for key, value in metrics.items()
        if isinstance(value, (int, float)) and not isinstance(value, bool)
    }


def _find_runs(path: Path) -> list[Path]:
    """``path`` itself when it is a run; else every finished run below it (unfinished ones skipped)."""
    if (path / METRICS_FILE).is_file():
        return [path]
    return sorted(p.parent for p in path.rglob(METRICS_FILE))


def collect_runs(root_or_run_dirs: str | Path | Iterable[str | Path]) -> pd.DataFrame:
    """One row per run (two for a teacher): run, task, setting, method, seed, every metric.

    Accepts run directories, folders holding run directories at any depth, or a mix.  A
    run is named by its path relative to the folder it was found in.
    """
    paths = [root_or_run_dirs] if isinstance(root_or_run_dirs, (str, Path)) else list(root_or_run_dirs)
    rows: list[dict] = []
    seen: set[Path] = set()  # a run named directly and again through its parent counts once
    for given in map(Path, paths):
        if not given.is_dir():
            raise ValueError(f"{given}: no such run directory or folder")
        runs = _find_runs(given)
        if not runs and (given / CONFIG_FILE).is_file():
            raise ValueError(f"{given}: not a finished run directory (no {METRICS_FILE})")
        for run_dir in runs:
            if run_dir.resolve() in seen:
                continue
            seen.add(run_dir.resolve())
            name = run_dir.name if run_dir == given else run_dir.relative_to(given).as_posix()
            rows.extend(_read_run(run_dir, name))
    if not rows:
        raise ValueError(f"no finished runs (directories with {METRICS_FILE}) under {', '.join(map(str, paths))}")
    df = pd.DataFrame(rows)
    if LABELS in df.columns:  # a column only where some run hid labels; the others used all of them
        if df[LABELS].notna().any():
            df[LABELS] = [ALL_LABELS if pd.isna(k) else int(k) for k in df[LABELS]]
        else:
            df = df.drop(columns=LABELS)
    metrics = [c for c in METRIC_KEYS if c in df.columns]
    folds = [FOLD] if FOLD in df.columns else []
    labels = [LABELS] if LABELS in df.columns else []
    keys = ("run", *KEY_COLUMNS, "seed", *folds, *labels, "run_dir")
    extras = [c for c in df.columns if c not in (*keys, *metrics)]
    return df[["run", *KEY_COLUMNS, "seed", *folds, *labels, *metrics, *extras, "run_dir"]]


# ----------------------------------------------------------------------- summarising


def _sort_groups(df: pd.DataFrame) -> pd.DataFrame:
    """Tasks alphabetically, settings and methods in their fixed order (unknown values last), folds by number."""
    orders = {"task": (), "setting": SETTING_ORDER, "method": METHOD_ORDER}
    keys = ["task", "setting", FOLD, "method"] if FOLD in df.columns else list(KEY_COLUMNS)  # per fold: fold-major

    def rank(values: pd.Series) -> pd.Series:
        if values.name == FOLD:
            return values.fillna(-1).astype(int)
        order = {v: i for i, v in enumerate(orders[values.name])}

        def key(v: str) -> str:  # a control student right after the same method from the teacher
            base, control = (v[: -len(CONTROL_SUFFIX)], 1) if v.endswith(CONTROL_SUFFIX) else (v, 0)
            return f"{order.get(base, len(order)):03d}:{base}:{control}"

        return values.map(key)

    return df.sort_values(keys, key=rank, kind="stable").reset_index(drop=True)


def default_metrics(df: pd.DataFrame) -> list[str]:
    """The contract metrics that at least one run reports, in table order."""
    return [m for m in METRIC_KEYS if m in df.columns and df[m].notna().any()]


def summarize(df: pd.DataFrame, metrics: Sequence[str] | None = None, by_fold: bool = False) -> pd.DataFrame:
    """Mean and sample std (ddof 1; NaN for one run) per (task, setting, method), and n runs.

    Columns: task, setting, method, n, then ``<metric>_mean`` and ``<metric>_std`` per metric.
    ``by_fold``: per (task, setting, method, fold), with a ``fold`` column (cross-validated runs).
    """
    metrics = list(metrics) if metrics is not None else default_metrics(df)
    missing = [m for m in metrics if m not in df.columns]
    if missing:
        raise ValueError(f"no run reports {', '.join(missing)} (available: {', '.join(default_metrics(df))})")
    grouped = df.groupby([*KEY_COLUMNS, *([FOLD] if by_fold else [])], dropna=False, sort=False)
    out = grouped.size().rename("n").to_frame()
    for m in metrics:
        out[f"{m}_mean"] = grouped[m].mean()
        out[f"{m}_std"] = grouped[m].std(ddof=1)
    return _sort_groups(out.reset_index())


def _folded(df: pd.DataFrame) -> pd.Series:
    """Which rows are cross-validated runs (have a fold)."""
    return df[FOLD].notna() if FOLD in df.columns else pd.Series(False, index=df.index)


def fold_means(df: pd.DataFrame) -> pd.DataFrame:
    """Cross-validated runs -> one row per (task, setting, method, fold): each metric's mean over seeds.

    Rows without a fold pass through unchanged, so :func:`summarize` of the result gives mean ± std
    over folds (n = folds) for cross-validated groups and over seeds for the others.
    """
    folded = _folded(df)
    if not folded.any():
        return df
    metrics = [c for c in df.columns if c in METRIC_KEYS]
    means = df[folded].groupby([*KEY_COLUMNS, FOLD], sort=False)[metrics].mean().reset_index()
    return pd.concat([df[~folded], means], ignore_index=True)


def _by_seed(rows: pd.DataFrame, metric: str) -> pd.Series:
    """A method's metric per seed, or per (fold, seed) for cross-validated runs: the pairing units."""
    values = rows.dropna(subset=[metric])
    return values.groupby([FOLD, "seed"] if _folded(values).any() else "seed")[metric].mean()


def video_shares(df: pd.DataFrame, metric: str, confidence: float = 0.95) -> pd.DataFrame:
    """Per (task, setting, method): the gain over ``none`` and the video's share, paired by seed.

    ``gain_*``: the method against ``none``; ``share_*``: against the same method distilled from
    the audio-only teacher (``<method>@audio_teacher``), NaN where that control was not run.
    Positive is better for every metric (for EER: lower than the reference). Each has ``_n`` pairs,
    ``_mean``, ``_low``/``_high`` (t-interval) and ``_p`` (paired t-test).
    """
    from distill.eval.stats import improvement  # scipy: only a report with pairs pays for it

    lower = metric in LOWER_IS_BETTER
    rows = []
    for (task, setting), group in df.groupby(["task", "setting"], sort=False):
        if metric not in group or group[metric].isna().all():
            continue
        methods = [m for m in dict.fromkeys(group["method"]) if m not in _NOT_SHARED and not m.endswith(CONTROL_SUFFIX)]
        baseline = _by_seed(group[group["method"] == BASELINE], metric)
        for method in methods:
            own = _by_seed(group[group["method"] == method], metric)
            control = _by_seed(group[group["method"] == method + CONTROL_SUFFIX], metric)
            row = {"task": task, "setting": setting, "method": method, "metric": metric}
            for name, reference in (("gain", baseline), ("share", control)):
                seeds = own.index.intersection(reference.index)
                row[f"{name}_n"] = len(seeds)
                if len(seeds):
                    d = improvement(own[seeds].to_numpy(), reference[seeds].to_numpy(), lower, confidence)
                    row.update(
                        {
                            f"{name}_mean": d.mean,
                            f"{name}_low": d.ci_low,
                            f"{name}_high": d.ci_high,
                            f"{name}_p": d.p_value,
                        }
                    )
            rows.append(row)
    columns = ["task", "setting", "method", "metric"] + [
        f"{n}_{k}" for n in ("gain", "share") for k in ("n", "mean", "low", "high", "p")
    ]
    return _sort_groups(pd.DataFrame(rows, columns=columns)) if rows else pd.DataFrame(columns=columns)


def _arrow(metric: str) -> str:
    """↓ for a metric where lower is better (EER, minDCF), else ↑: the tables' column marks."""
    return "↓" if metric in LOWER_IS_BETTER else "↑"


def _interval(row: pd.Series, name: str) -> str:
    mean = row.get(f"{name}_mean")
    if mean is None or pd.isna(mean):
        return "–"
    low, high = row[f"{name}_low"], row[f"{name}_high"]
    if pd.isna(low):
        return f"{mean:+.3f} ({_untestable(row, name)}: no interval)"
    return f"{mean:+.3f} [{low:+.3f}, {high:+.3f}]"


def _untestable(row: pd.Series, name: str) -> str:
    """Why a comparison has no interval or t-test: one pair, or pairs that all differ alike."""
    n = int(row.get(f"{name}_n", 0) or 0)
    return "one seed" if n < 2 else f"the same on all {n} seeds"


def _p(value) -> str:
    return "–" if value is None or pd.isna(value) else (f"{value:.3f}" if value >= 0.001 else "< 0.001")


def _verdict(row: pd.Series, alpha: float = 0.05) -> str:
    """The reading of one row, in words: is the gain there, and is it the video's?"""
    gain_p, share_p = row.get("gain_p"), row.get("share_p")
    if pd.isna(row.get("share_mean")):
        share = "no audio-only-teacher control run: the video's share is unknown"
    elif pd.isna(share_p):
        share = f"{_untestable(row, 'share')}: the video's share cannot be tested"
    elif share_p < alpha and row["share_mean"] > 0:
        share = "the video's share is significant"
    elif share_p < alpha:
        share = "the audio-only teacher does significantly better: the video costs here"
    else:
        share = "the video's share is **not significant**: this gain is not shown to come from the video"
    if pd.isna(gain_p):
        gain = (
            f"gain over none untested ({_untestable(row, 'gain')})"
            if pd.notna(row.get("gain_mean"))
            else "gain over none untested"
        )
    elif gain_p < alpha:
        gain = "gain over none significant" if row["gain_mean"] > 0 else "significantly worse than none"
    else:
        gain = "gain over none not significant"
    return f"{gain}; {share}"


def format_shares(shares: pd.DataFrame, alpha: float = 0.05) -> str:
    """The markdown table of :func:`video_shares` for one metric, with a verdict per row."""
    header = ["setting", "method", "n", "gain over `none` [95 % CI]", "p", "video's share [95 % CI]", "p", "reading"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in shares.iterrows():
        cells = [str(row["setting"]), str(row["method"]), *_share_cells(row, alpha)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _share_cells(row: pd.Series, alpha: float) -> list[str]:
    """n, the gain over `none` and the video's share (interval and p each), and the reading."""
    n = int(max(row["gain_n"], row["share_n"]))
    gain = [_interval(row, "gain"), _p(row.get("gain_p"))]
    share = [_interval(row, "share"), _p(row.get("share_p"))]
    return [str(n), *gain, *share, _verdict(row, alpha)]


def label_order(values) -> list:
    """labels_per_class values in curve order: ascending, ``all`` last."""
    return sorted(set(values), key=lambda k: (k == ALL_LABELS, k if k != ALL_LABELS else 0))


def label_curve(df: pd.DataFrame, metric: str, confidence: float = 0.95) -> pd.DataFrame:
    """:func:`video_shares` at every labels_per_class value, one frame with a ``labels_per_class``
    column: per (task, setting, method), its gain over ``none`` and its video's share along the
    label-scarcity curve (each value's pairs are its own runs, by seed)."""
    if LABELS not in df.columns:
        raise ValueError("no run hides labels (no labels_per_class column): there is no curve")
    parts = []
    for k in label_order(df[LABELS]):
        shares = video_shares(df[df[LABELS] == k], metric, confidence)
        if not shares.empty:
            parts.append(shares.assign(**{LABELS: k}))
    if not parts:
        return pd.DataFrame(columns=[*video_shares(df.iloc[:0], metric).columns, LABELS])
    return _sort_groups(pd.concat(parts, ignore_index=True))  # stable: k stays ascending per method


def format_curve(curve: pd.DataFrame, alpha: float = 0.05) -> str:
    """The markdown table of :func:`label_curve` for one metric: a row per method and value."""
    header = [
        "setting",
        "method",
        "labels / class",
        "n",
        "gain over `none` [95 % CI]",
        "p",
        "video's share [95 % CI]",
        "p",
        "reading",
    ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in curve.iterrows():
        cells = [str(row["setting"]), str(row["method"]), str(row[LABELS]), *_share_cells(row, alpha)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_curve_means(df: pd.DataFrame, metric: str) -> str:
    """Mean ± std over seeds of ``metric`` per (setting, method), one column per labels_per_class value."""
    ks = label_order(df[LABELS])
    cells: dict[tuple[str, str], dict] = {}
    for k in ks:
        rows = summarize(df[df[LABELS] == k], [metric])
        for _, row in rows.iterrows():
            cell = _cell(row[f"{metric}_mean"], row[f"{metric}_std"])
            cells.setdefault((row["setting"], row["method"]), {})[k] = cell
    order = _sort_groups(pd.DataFrame([{"task": "", "setting": s, "method": m} for s, m in cells]))
    header = ["setting", "method", *(f"{metric} {_arrow(metric)}, {k} / class" for k in ks)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in order.iterrows():
        per_k = cells[(row["setting"], row["method"])]
        lines.append("| " + " | ".join([row["setting"], row["method"], *(per_k.get(k, "–") for k in ks)]) + " |")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- writing


def _cell(mean: float, std: float) -> str:
    if math.isnan(mean):
        return "–"
    return f"{mean:.3f}" if math.isnan(std) else f"{mean:.3f} ± {std:.3f}"


def format_markdown(summary: pd.DataFrame, metrics: Sequence[str]) -> str:
    """One markdown table (setting, method, n, metrics) for the rows of ``summary``.

    Per setting and metric the best mean among the audio-only-at-test rows (every method
    but ``teacher``) is bold, so the table shows at a glance which student wins, if any. A
    per-fold summary (``summarize(..., by_fold=True)``) gets a fold column and a best per fold.
    """
    fold = [FOLD] if FOLD in summary.columns else []
    header = ["setting", *fold, "method", "n", *(f"{m} {_arrow(m)}" for m in metrics)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best: dict[tuple, float] = {}
    audio_only = summary[summary["method"] != "teacher"]
    for m in metrics:
        for keys, rows in audio_only.groupby(["task", "setting", *fold]):
            values = rows[f"{m}_mean"].dropna()
            if values.nunique() > 1:  # when every row ties, bold would single nothing out
                best[(*keys, m)] = values.min() if m in LOWER_IS_BETTER else values.max()
    for _, row in summary.iterrows():
        keys = (row["task"], row["setting"], *(row[c] for c in fold))
        cells = [str(row["setting"]), *(str(int(row[c])) for c in fold), str(row["method"]), str(int(row["n"]))]
        for m in metrics:
            text = _cell(row[f"{m}_mean"], row[f"{m}_std"])
            if row["method"] != "teacher" and best.get((*keys, m)) == row[f"{m}_mean"]:
                text = f"**{text}**"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_results(df: pd.DataFrame, out_dir: str | Path, metrics: Sequence[str] | None = None) -> dict[str, Path]:
    """results.csv (per run), results.md (mean ± std per task) and one bar chart per task.

    Returns the written paths keyed ``csv``, ``md`` and ``bar:<task>``.
    """
    from distill.eval.plots import plot_results_bar  # matplotlib: only when a chart is drawn

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: dict[str, Path] = {}
    with atomic_output(out_dir / "results.csv") as tmp:
        df.to_csv(tmp, index=False)
    written["csv"] = out_dir / "results.csv"

    sections = [
        "# Results",
        "",
        "Mean ± sample standard deviation over seeds on the test split; n = runs; ↓/↑: lower/higher is better.",
        "Bold: best mean among the audio-only-at-test rows (all but `teacher`) of a setting.",
    ]
    if _folded(df).any():
        sections.append(
            "Cross-validated rows: mean ± std over folds of each fold's mean over seeds; n = folds. "
            "Per-fold tables (mean ± std over seeds) follow each task's table."
        )
    sections += budget_lines(df)
    curves_done: set = set()
    for (task, k), task_df in _task_groups(df):
        if k is not None and task not in curves_done:
            curves_done.add(task)
            sections += _curve_sections(df[df["task"] == task], str(task), out_dir, written)
        task_metrics = [m for m in (metrics or default_metrics(task_df)) if m in task_df and task_df[m].notna().any()]
        name = str(task) if k is None else f"{task}_k{k}"  # the charts' file names
        folded = _folded(task_df)
        cross_validated = folded.any()
        per_unit = fold_means(task_df)  # the table's and the chart's rows: one per fold when cross-validated
        heading = task if k is None else f"{task}: {_labels_heading(k)}"
        sections += ["", f"## {heading}", "", format_markdown(summarize(per_unit, task_metrics), task_metrics)]
        if cross_validated:
            sections += [
                "",
                "### Per fold",
                "",
                format_markdown(summarize(task_df[folded], task_metrics, by_fold=True), task_metrics),
            ]
        headline = HEADLINE_METRIC.get(str(task))
        bar_metric = headline if headline in task_metrics else (task_metrics[0] if task_metrics else None)
        if bar_metric is not None:
            png = out_dir / f"results_{name}.png"
            over = "folds" if cross_validated else "seeds"
            plot_results_bar(
                per_unit,
                bar_metric,
                png,
                hue_order=METHOD_ORDER,
                title=f"{heading}: {bar_metric}, mean ± std over {over}",
            )
            written[f"bar:{name}"] = png
        sections += _share_sections(task_df, str(task), out_dir, written, name)
    atomic_write_text(out_dir / "results.md", "\n".join(sections) + "\n")
    written["md"] = out_dir / "results.md"
    return written


def _task_groups(df: pd.DataFrame):
    """``((task, k), rows)`` per results.md section: per task, and per labels_per_class value where runs
    hid labels (k None otherwise); tasks alphabetically, k ascending with ``all`` last."""
    for task, task_df in df.groupby("task", dropna=False, sort=True):
        if LABELS not in task_df.columns:
            yield (task, None), task_df
            continue
        for k in label_order(task_df[LABELS]):
            yield (task, k), task_df[task_df[LABELS] == k]


def _labels_heading(k) -> str:
    return "every training label" if k == ALL_LABELS else f"{k} labelled training item{'s' if k != 1 else ''} per class"


def budget_lines(df: pd.DataFrame) -> list[str]:
    """results.md's count of the runs the epoch cap ended (distill.budget), with their names when few."""
    if STOPPED not in df.columns:
        return []
    runs = df.drop_duplicates("run_dir")  # a teacher is two rows (with and without its video)
    recorded = runs[runs[STOPPED].notna()]
    capped = recorded[recorded[STOPPED] == CAP]
    share = len(capped) / len(recorded) if len(recorded) else 0.0
    line = (
        f"Budget: {len(capped)} of {len(recorded)} runs ({100 * share:.0f} %) hit the epoch cap (`train.epochs`) "
        "before early stopping (`train.patience`) ended them; the budget rule wants fewer than 10 %."
    )
    if 0 < len(capped) <= 10:
        line += " At the cap: " + ", ".join(f"`{r}`" for r in capped["run"]) + "."
    if len(recorded) < len(runs):
        line += f" {len(runs) - len(recorded)} run(s) record no stopping (trained before it was recorded)."
    return [line]


def _curve_sections(task_df: pd.DataFrame, task: str, out_dir: Path, written: dict[str, Path]) -> list[str]:
    """results.md's label-scarcity curve of one task (two or more labels_per_class values): the mean
    score per method and value, then per metric every value's gains and shares, and one figure."""
    from distill.eval.plots import plot_label_curve  # matplotlib: only when a chart is drawn

    if task_df[LABELS].nunique() < 2:
        return []
    metrics = [m for m in SHARE_METRICS.get(task, ()) if m in task_df and task_df[m].notna().any()]
    if not metrics:
        return []
    sections = [
        "",
        f"## {task}: the label-scarcity curve",
        "",
        "Each column one point of the curve: that many labelled training items per class, the other "
        "training items the transfer set (a distilling student learns the teacher's targets on them; "
        "`none` and the teachers never see them). Mean ± std over seeds; a section per value follows.",
        "",
        format_curve_means(task_df, metrics[0]),
    ]
    for metric in metrics:
        curve = label_curve(task_df, metric)
        if curve.empty:
            continue
        sections += ["", f"### Gain over `none` and the video's share along the curve: {metric} {_arrow(metric)}", ""]
        sections.append(format_curve(curve))
        if f"curve:{task}" not in written:
            png = out_dir / f"results_{task}_curve.png"
            plot_label_curve(
                task_df,
                curve,
                metric,
                png,
                order=label_order(task_df[LABELS]),
                title=f"{task}: {metric} by labelled items per class",
                method_order=METHOD_ORDER,
            )
            written[f"curve:{task}"] = png
            sections += ["", f"![{task}: the label-scarcity curve]({png.name})"]
    return sections


def _share_sections(
    task_df: pd.DataFrame, task: str, out_dir: Path, written: dict[str, Path], name: str | None = None
) -> list[str]:
    """results.md's gains-and-video's-share tables of one task (one labels_per_class value of it: its
    file ``name``), and their plot (first metric)."""
    name = name or task
    from distill.eval.plots import plot_video_share  # matplotlib: only when a chart is drawn

    sections: list[str] = []
    for metric in SHARE_METRICS.get(task, ()):
        if metric not in task_df:
            continue
        shares = video_shares(task_df, metric)
        if shares.empty:
            continue
        sections += ["", f"### Gain over `none` and the video's share: {metric} {_arrow(metric)}", ""]
        if len(sections) == 3:  # the explanation once per task
            sections += [
                "Per seed (per fold and seed when cross-validated), paired (same seed, same "
                "initialisation and data order), then the mean, its "
                "95 % t-interval and a two-sided paired t-test; positive = better. The video's share is "
                "the gain over the same method distilled from the audio-only teacher "
                f"(`<method>{CONTROL_SUFFIX}`: the same teacher trained with its faces hidden).",
                "",
            ]
        sections.append(format_shares(shares))
        if f"share:{name}" not in written and shares["share_mean"].notna().any():
            png = out_dir / f"results_{name}_share.png"
            plot_video_share(shares, png, title=f"{name}: {metric}, gain over none and the video's share")
            written[f"share:{name}"] = png
            sections += ["", f"![{name}: gain over none and the video's share]({png.name})"]
    return sections


# --------------------------------------------------------------------------------- CLI


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m distill.eval.report",
        description="Collect finished runs (config.yaml + metrics.json) into results.csv, results.md "
        "(mean ± std over seeds per task/setting/method) and a bar chart per task.",
        formatter_class=HelpFormatter,
    )
    parser.add_argument("runs", nargs="+", type=Path, help="run directories, or folders searched recursively for them")
    parser.add_argument(
        "--out", type=Path, default=Path("results"), help="folder for results.csv, results.md and the charts"
    )
    parser.add_argument(
        "--metrics",
        nargs="+",
        choices=METRIC_KEYS,
        default=list(METRIC_KEYS),
        metavar="METRIC",
        help="metrics in the markdown table; each task shows those its runs report",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        df = collect_runs(args.runs)
        written = write_results(df, args.out, args.metrics)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(written["md"].read_text())
    n_groups = len(df.groupby(list(KEY_COLUMNS), dropna=False))
    n_charts = sum(key.startswith("bar:") for key in written)
    print(
        f"{len(df)} rows from {df['run_dir'].nunique()} runs in {n_groups} groups -> {args.out} "
        f"(results.csv, results.md, {n_charts} chart(s))"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PNG figures that sit next to the numbers in a run directory or a results folder.

Figures are built on ``matplotlib.figure.Figure`` with the Agg canvas, never pyplot: no
display is needed, nothing global is touched, and plotting from a DataLoader worker or a
sweep process cannot leak figures.  Every function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.stats import norm

from distill.eval.metrics import LOWER_IS_BETTER, METRIC_KEYS, det_curve, verification_metrics

__all__ = [
    "group_log_columns",
    "plot_training_curves",
    "plot_det_curve",
    "plot_confusion_matrix",
    "plot_embeddings",
    "plot_results_bar",
    "plot_video_share",
    "plot_label_curve",
]

#: train-log columns that index rows rather than measure anything.
_INDEX_COLUMNS = frozenset({"epoch", "step", "iteration", "global_step", "time", "seconds", "elapsed", "wall_s"})


def _save(fig: Figure, out_png) -> Path:
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out_png, dpi=120, bbox_inches="tight")
    return out_png


def _is_metric(column: str) -> bool:
    """``val_eer``, ``val/uar``, ``test_accuracy`` and ``eer`` are all metric columns."""
    base = column.lower().replace("/", "_")
    return any(base == m or base.endswith("_" + m) for m in METRIC_KEYS)


_LOSS_NAMES = frozenset({"total", "task", "kd", "gkd", "ce", "nll", "distill"})
_SPLIT_PREFIXES = ("train_", "val_", "valid_", "test_", "train/", "val/", "valid/", "test/")


def _is_loss(column: str) -> bool:
    """``loss``, ``train_task``, ``train_total``, ``train_embed_enc``, ``kd``: logged loss terms."""
    name = column.lower()
    for prefix in _SPLIT_PREFIXES:
        name = name.removeprefix(prefix)
    return "loss" in name or name in _LOSS_NAMES or name.startswith("embed")


# ----------------------------------------------------------------------- training curves


def group_log_columns(columns) -> dict[str, list[str]]:
    """Sort train-log columns into panels: ``losses``, ``metrics``, ``other`` (e.g. lr).

    Index columns (epoch, step, time, ...) are dropped.  Matching is by name so that the
    trainer can add loss terms without this module knowing them in advance.
    """
    values = [str(c) for c in columns if str(c).lower() not in _INDEX_COLUMNS]
    metrics = [c for c in values if _is_metric(c)]
    losses = [c for c in values if c not in metrics and _is_loss(c)]
    other = [c for c in values if c not in metrics and c not in losses]
    return {"losses": losses, "metrics": metrics, "other": other}


def plot_training_curves(train_log_csv, out_png) -> Path:
    """Loss terms and validation metrics per epoch from a run's ``train_log.csv``.

    The log is read generically: every numeric column except the index columns (epoch,
    step, ...) is drawn.  Loss terms go to the left panel (log scale when they span more
    than a decade), metric-named columns to the middle, anything else (e.g. lr) to the
    right.  Rows are averaged per epoch and, if the log has a ``split`` column, per split.
    Validation curves (a ``val`` split or a ``val_`` column) are dashed, training ones solid.
    """
    log = pd.read_csv(train_log_csv)
    if "epoch" not in log.columns:
        raise ValueError(f"{train_log_csv}: train log has no 'epoch' column (columns: {', '.join(log.columns)})")
    if log.empty:
        raise ValueError(f"{train_log_csv}: train log has no rows")
    groups = group_log_columns(log.select_dtypes("number").columns)
    panels = [(name, cols) for name, cols in groups.items() if cols]
    if not panels:
        raise ValueError(f"{train_log_csv}: train log has no numeric column to plot besides epoch/step")

    splits = log["split"].fillna("").astype(str) if "split" in log.columns else pd.Series("", index=log.index)
    fig = Figure(figsize=(5.0 * len(panels), 3.8))
    for i, (name, cols) in enumerate(panels):
        ax = fig.add_subplot(1, len(panels), i + 1)
        for split, rows in log.groupby(splits, sort=True):
            per_epoch = rows.groupby("epoch")[cols].mean()
            for j, col in enumerate(cols):
                series = per_epoch[col].dropna()
                if series.empty:
                    continue
                validation = split in ("val", "valid", "validation", "dev") or col.lower().startswith(
                    ("val_", "val/", "valid")
                )
                label = f"{col} ({split})" if split else col
                ax.plot(
                    series.index,
                    series.values,
                    "--" if validation else "-",
                    marker="o",
                    markersize=3,
                    color=f"C{j}",
                    label=label,
                )
        logged = log[cols].to_numpy(dtype=float)
        logged = logged[~np.isnan(logged)]
        if name == "losses" and logged.size and logged.min() > 0 and logged.max() / logged.min() > 10:
            ax.set_yscale("log")  # loss terms of different magnitudes stay readable side by side
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        ax.legend(fontsize="small")
    return _save(fig, out_png)


# ------------------------------------------------------------------------------- DET


_DET_TICKS = np.array([0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99])


def plot_det_curve(scores, labels, out_png, title: str | None = None, p_target: float = 0.01) -> Path:
    """DET curve on normal-deviate axes (NIST convention), EER and minDCF points marked.

    On probit axes two Gaussian score distributions give a straight line, so curvature
    shows where a system departs from that and the interesting low-error corner is
    stretched instead of squashed into the origin.
    """
    fpr, fnr, thresholds = det_curve(scores, labels)
    summary = verification_metrics(scores, labels, p_target=p_target)
    n_target, n_nontarget = summary["n_target_trials"], summary["n_nontarget_trials"]
    best = int(np.searchsorted(thresholds, summary["min_dcf_threshold"]))  # the minDCF operating point
    # Rates of exactly 0 or 1 have no normal deviate: pin them just inside the frame.
    lo = min(max(0.5 / max(n_target, n_nontarget), _DET_TICKS[0]), 0.01)
    hi = _DET_TICKS[-1]

    def probit(p):
        return norm.ppf(np.clip(p, lo, hi))

    fig = Figure(figsize=(5.0, 5.0))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(probit(fpr), probit(fnr), color="C0", label="DET")
    ax.plot([probit(lo), probit(hi)], [probit(lo), probit(hi)], ":", color="grey", linewidth=0.8)
    eer_value = summary["eer"]
    ax.plot(probit(eer_value), probit(eer_value), "o", color="C3", label=f"EER {100 * eer_value:.2f}%")
    ax.plot(
        probit(fpr[best]),
        probit(fnr[best]),
        "s",
        color="C2",
        label=f"minDCF {summary['min_dcf']:.3f} (p_target {p_target:g})",
    )

    ticks = _DET_TICKS[_DET_TICKS >= lo]
    tick_labels = [f"{100 * t:g}" for t in ticks]
    ax.set_xticks(norm.ppf(ticks), labels=tick_labels, fontsize="small")
    ax.set_yticks(norm.ppf(ticks), labels=tick_labels, fontsize="small")
    ax.set_xlim(probit(lo), probit(hi))
    ax.set_ylim(probit(lo), probit(hi))
    ax.set_xlabel("false alarm rate (%)")
    ax.set_ylabel("miss rate (%)")
    ax.set_title(title or f"DET ({n_target:,} target / {n_nontarget:,} non-target trials)")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize="small")
    return _save(fig, out_png)


# ------------------------------------------------------------------ confusion matrix


def plot_confusion_matrix(cm, class_names: Sequence[str], out_png, title: str | None = None) -> Path:
    """Row-normalised confusion matrix (each row is one true class's recall profile).

    Colour is the row fraction, so rare and frequent classes read on the same scale; the
    raw count is printed in every cell so that the normalisation never hides how little
    evidence a row has.
    """
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {cm.shape}")
    if len(class_names) != cm.shape[0]:
        raise ValueError(f"{len(class_names)} class names for a {cm.shape[0]}-class confusion matrix")
    support = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, support, out=np.zeros(cm.shape, dtype=float), where=support > 0)

    n = cm.shape[0]
    size = max(3.5, 0.6 * n + 1.5)
    fig = Figure(figsize=(size + 1.0, size))
    ax = fig.add_subplot(1, 1, 1)
    image = ax.imshow(frac, vmin=0.0, vmax=1.0, cmap="Blues")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    if n <= 30:
        for (i, j), count in np.ndenumerate(cm):
            ax.text(
                j,
                i,
                f"{count}\n{100 * frac[i, j]:.0f}%",
                ha="center",
                va="center",
                fontsize="x-small",
                color="white" if frac[i, j] > 0.5 else "black",
            )
    ax.set_xticks(range(n), labels=list(class_names), rotation=45, ha="right")
    ax.set_yticks(range(n), labels=list(class_names))
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix (row-normalised)")
    return _save(fig, out_png)


# -------------------------------------------------------------------------- embeddings


def _pca_2d(emb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project onto the top two principal axes; also return their explained-variance ratios."""
    centred = emb - emb.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    var = s**2
    ratio = var[:2] / var.sum() if var.sum() > 0 else np.zeros(2)
    proj = centred @ vt[:2].T
    if proj.shape[1] < 2:
        proj = np.pad(proj, ((0, 0), (0, 2 - proj.shape[1])))
    return proj, np.pad(ratio, (0, 2 - ratio.size))


def plot_embeddings(emb, labels, out_png, title: str | None = None) -> Path:
    """2-D PCA of embeddings, one colour per label.

    PCA rather than t-SNE: it is deterministic and linear, so distances between clusters in
    the picture mean something and two runs' pictures can be compared.
    """
    emb = np.asarray(emb, dtype=np.float64)
    labels = np.asarray(labels)
    if emb.ndim != 2 or emb.shape[0] != labels.shape[0]:
        raise ValueError(f"embeddings must be (N, dim) with N = len(labels) = {labels.shape[0]}, got {emb.shape}")
    if emb.shape[0] < 2:
        raise ValueError(f"need at least 2 embeddings to project, got {emb.shape[0]}")
    proj, ratio = _pca_2d(emb)
    classes = np.unique(labels)
    cmap = "tab10" if len(classes) <= 10 else "tab20"

    fig = Figure(figsize=(5.5, 4.5))
    ax = fig.add_subplot(1, 1, 1)
    palette = matplotlib.colormaps[cmap]
    for i, cls in enumerate(classes):
        mask = labels == cls
        ax.scatter(proj[mask, 0], proj[mask, 1], s=10, alpha=0.8, color=palette(i % palette.N), label=str(cls))
    if len(classes) <= 20:
        ax.legend(fontsize="x-small", markerscale=1.5, loc="best")
    ax.set_xlabel(f"PC1 ({100 * ratio[0]:.0f}% var)")
    ax.set_ylabel(f"PC2 ({100 * ratio[1]:.0f}% var)")
    ax.set_title(title or f"embeddings, PCA ({emb.shape[0]} items, {len(classes)} classes)")
    ax.grid(alpha=0.3)
    return _save(fig, out_png)


# ------------------------------------------------------------------------- results bar


def plot_results_bar(
    df: pd.DataFrame,
    metric: str,
    out_png,
    group: str = "setting",
    hue: str = "method",
    hue_order: Sequence[str] | None = None,
    title: str | None = None,
) -> Path:
    """Mean ± std (over seeds) of ``metric``: one cluster of bars per ``group``, one bar per ``hue``.

    ``df`` has one row per run (``distill.eval.report.collect_runs``); the error bar is the
    sample standard deviation across runs (none for a single run), and the run count is in
    the title, or on each bar when bars rest on different numbers of runs.
    """
    missing = [c for c in (group, hue, metric) if c not in df.columns]
    if missing:
        raise ValueError(f"results table has no column(s) {', '.join(missing)} (columns: {', '.join(df.columns)})")
    data = df.dropna(subset=[metric])
    if data.empty:
        raise ValueError(f"no run has a value for {metric!r}")
    stats = data.groupby([group, hue])[metric].agg(["mean", "std", "count"])
    groups = sorted(data[group].unique(), key=str)
    present = set(data[hue].unique())
    hues = [h for h in (hue_order or []) if h in present] + sorted(present - set(hue_order or []), key=str)

    width = 0.8 / len(hues)
    counts = stats["count"].astype(int)
    uniform_n = counts.nunique() == 1
    fig = Figure(figsize=(max(5.0, 1.2 + len(groups) * len(hues) * 0.55), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    for i, h in enumerate(hues):
        cells = [(g_i, stats.loc[(g, h)]) for g_i, g in enumerate(groups) if (g, h) in stats.index]
        xs = [g_i - 0.4 + width * (i + 0.5) for g_i, _ in cells]
        means = [row["mean"] for _, row in cells]
        stds = [0.0 if math.isnan(row["std"]) else row["std"] for _, row in cells]
        ax.bar(xs, means, width, yerr=stds, capsize=3, color=f"C{i}", label=str(h))
        if not uniform_n:  # say which bars rest on fewer runs
            for x, m, sd, (_, row) in zip(xs, means, stds, cells):
                ax.annotate(
                    f"n={int(row['count'])}",
                    (x, m + sd),
                    xytext=(0, 2),
                    textcoords="offset points",
                    ha="center",
                    va="bottom",
                    fontsize="xx-small",
                )
    ax.set_xticks(range(len(groups)), labels=[str(g) for g in groups])
    ax.set_xlabel(group)
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    ax.set_ylabel(f"{metric} ({better} is better)")
    runs = f"{counts.iloc[0]} run(s) per bar" if uniform_n else "n = runs per bar"
    ax.set_title(f"{title or f'{metric}: mean ± std over seeds'} ({runs})")
    top = float((stats["mean"] + stats["std"].fillna(0.0)).max())
    ax.set_ylim(0.0, 1.15 * top if top > 0 else 1.0)  # every metric here is >= 0
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", ncols=min(len(hues), 4), loc="upper center", bbox_to_anchor=(0.5, -0.15))
    return _save(fig, out_png)


def plot_video_share(shares: pd.DataFrame, out_png, title: str | None = None) -> Path:
    """Per method: its gain over ``none`` and the video's share, each with its 95 % interval.

    ``shares`` is :func:`distill.eval.report.video_shares` for one metric (columns ``setting``,
    ``method``, ``gain_mean/low/high``, ``share_mean/low/high``; positive = better). A share whose
    interval crosses zero is not shown to come from the video; the dashed zero line makes that visible.
    """
    missing = [c for c in ("setting", "method", "gain_mean", "gain_low", "gain_high") if c not in shares.columns]
    if missing or shares.empty:
        raise ValueError(f"video-share table is empty or lacks {', '.join(missing) or 'rows'}")
    labels = [f"{r.setting}\n{r.method}" for r in shares.itertuples()]
    fig = Figure(figsize=(max(5.0, 1.5 + 1.1 * len(labels)), 4.0))
    ax = fig.add_subplot(1, 1, 1)
    width = 0.38
    for i, (name, text) in enumerate((("gain", "gain over none"), ("share", "video's share (vs audio-only teacher)"))):
        if f"{name}_mean" not in shares or shares[f"{name}_mean"].isna().all():
            continue
        mean = shares[f"{name}_mean"].to_numpy(float)
        low = np.nan_to_num(mean - shares[f"{name}_low"].to_numpy(float), nan=0.0)
        high = np.nan_to_num(shares[f"{name}_high"].to_numpy(float) - mean, nan=0.0)
        xs = np.arange(len(labels)) + (i - 0.5) * width
        ax.bar(xs, np.nan_to_num(mean), width, yerr=np.vstack([low, high]), capsize=3, color=f"C{i}", label=text)
    ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
    ax.set_xticks(range(len(labels)), labels=labels, fontsize="small")
    metric = str(shares["metric"].iloc[0]) if "metric" in shares else "metric"
    ax.set_ylabel(f"{metric}: improvement (positive = better)")
    ax.set_title(title or f"{metric}: mean and 95 % interval over seeds, paired by seed", fontsize="medium")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.18), ncols=2)
    return _save(fig, out_png)


#: the column of a label-scarcity sweep's runs (distill.eval.report.LABELS), and a control's marker
_LABELS, _CONTROL = "labels_per_class", "@"


def plot_label_curve(
    runs: pd.DataFrame,
    curve: pd.DataFrame,
    metric: str,
    out_png,
    order: Sequence,
    title: str | None = None,
    method_order: Sequence[str] = (),
) -> Path:
    """A label-scarcity curve in one figure, labelled items per class on the x axis of every panel,
    evenly spaced in ``order`` (distill.eval.report.label_order: ascending, ``all`` last).

    Left: ``metric``'s mean ± std over seeds per method (``runs``: one row per run with a
    ``labels_per_class`` column, as distill.eval.report.collect_runs gives). Middle and right: each
    method's gain over ``none`` and its video's share with their 95 % intervals (``curve``:
    distill.eval.report.label_curve for ``metric``; positive = better). A student of the
    audio-only teacher is dashed, a teacher dotted; the dashed zero line marks "no gain". Methods
    are drawn in ``method_order`` (a control student right after its method), unknown ones last.
    """
    for frame, needed in ((runs, (_LABELS, "method", metric)), (curve, (_LABELS, "method", "gain_mean"))):
        missing = [c for c in needed if c not in frame.columns]
        if missing:
            raise ValueError(f"label curve: a table lacks column(s) {', '.join(missing)}")
    data = runs.dropna(subset=[metric])
    if data.empty or curve.empty:
        raise ValueError(f"label curve: no run with {metric!r}, or no gains to plot")
    xs = {k: i for i, k in enumerate(order)}
    unplaced = set(data[_LABELS]) - set(xs)
    if unplaced:
        raise ValueError(f"label curve: labels_per_class value(s) {sorted(map(str, unplaced))} not in the order given")
    settings = sorted(data["setting"].unique(), key=str) if "setting" in data else [None]
    many = len(settings) > 1

    def label(setting, method) -> str:
        return f"{setting} {method}" if many else str(method)

    rank = {m: i for i, m in enumerate(method_order)}
    methods = sorted(
        dict.fromkeys(data["method"]),
        key=lambda m: (rank.get(m.split(_CONTROL)[0], len(rank)), m.split(_CONTROL)[0], _CONTROL in m),
    )
    base_of = {m: m.split(_CONTROL)[0] for m in methods}
    colours = {b: f"C{i % 10}" for i, b in enumerate(dict.fromkeys(base_of.values()))}

    def style(method: str) -> str:
        if _CONTROL in method:
            return "--"
        return ":" if "teacher" in method else "-"

    fig = Figure(figsize=(15.0, 4.6), layout="constrained")  # keeps each panel's y label off its neighbour
    axes = [fig.add_subplot(1, 3, i + 1) for i in range(3)]
    lines = [(s, m) for s in settings for m in methods]
    spread = 0.25 / max(len(lines), 1)
    for j, (setting, method) in enumerate(lines):
        rows = data[(data["method"] == method) & ((data["setting"] == setting) if many else True)]
        if rows.empty:
            continue
        stats = rows.groupby(_LABELS)[metric].agg(["mean", "std"])
        ks = sorted(stats.index, key=xs.get)
        x = [xs[k] + (j - len(lines) / 2) * spread for k in ks]
        axes[0].errorbar(
            x,
            stats.loc[ks, "mean"],
            yerr=stats.loc[ks, "std"].fillna(0.0),
            fmt=style(method),
            marker="o",
            markersize=4,
            capsize=2,
            color=colours[base_of[method]],
            label=label(setting, method),
        )
    panels = ((axes[1], "gain", "gain over none"), (axes[2], "share", "video's share (vs audio-only teacher)"))
    for ax, name, text in panels:
        drawn = False
        for j, ((setting, method), rows) in enumerate(curve.groupby(["setting", "method"], sort=False)):
            rows = rows.dropna(subset=[f"{name}_mean"])
            if rows.empty:
                continue
            x = np.array([xs.get(k, np.nan) for k in rows[_LABELS]]) + (j - 1) * 0.06
            mean = rows[f"{name}_mean"].to_numpy(float)
            low = np.nan_to_num(mean - rows[f"{name}_low"].to_numpy(float), nan=0.0)
            high = np.nan_to_num(rows[f"{name}_high"].to_numpy(float) - mean, nan=0.0)
            ax.errorbar(
                x,
                mean,
                yerr=np.vstack([low, high]),
                fmt="-",
                marker="o",
                markersize=4,
                capsize=3,
                color=colours.get(method, f"C{j}"),
                label=label(setting, method),
            )
            drawn = True
        ax.axhline(0.0, color="black", linewidth=0.8, linestyle="--")
        ax.set_title(f"{text}, 95 % interval", fontsize="medium")
        ax.set_ylabel(f"{metric} improvement (+ = better)")
        if drawn:
            ax.legend(fontsize="small")
    better = "lower" if metric in LOWER_IS_BETTER else "higher"
    axes[0].set_ylabel(f"{metric} ({better} is better)")
    axes[0].set_title("mean ± std over seeds", fontsize="medium")
    fig.legend(*axes[0].get_legend_handles_labels(), fontsize="small", ncols=4, loc="outside lower center")
    for ax in axes:
        ax.set_xticks(list(xs.values()), labels=[str(k) for k in xs])
        ax.set_xlabel("labelled training items per class")
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, out_png)

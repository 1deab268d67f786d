"""distill.eval.plots writes real, non-blank PNGs and refuses input it cannot draw honestly."""

import matplotlib.image
import numpy as np
import pandas as pd
import pytest

from distill.eval import plots
from distill.eval.report import label_order


def _image(path):
    """Decoded RGBA pixels of a PNG that must exist and show something."""
    pixels = matplotlib.image.imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert pixels.std() > 0.01, f"{path} is blank"
    return pixels


def test_group_log_columns():
    columns = [
        "epoch",
        "step",
        "loss",
        "task",
        "embed_enc",
        "embed_agg",
        "kd",
        "val_loss",
        "val_accuracy",
        "val/eer",
        "uar",
        "val_top5_accuracy",
        "lr",
        "grad_norm",
        "seconds",
    ]
    assert plots.group_log_columns(columns) == {
        "losses": ["loss", "task", "embed_enc", "embed_agg", "kd", "val_loss"],
        "metrics": ["val_accuracy", "val/eer", "uar", "val_top5_accuracy"],
        "other": ["lr", "grad_norm"],
    }
    # The trainer's layout: one row per epoch, split-prefixed loss terms and metrics.
    trainer = [
        "epoch",
        "train_embed_enc",
        "train_embed_agg",
        "train_task",
        "train_total",
        "train_gkd",
        "val_accuracy",
        "val_uar",
        "lr",
        "seconds",
    ]
    assert plots.group_log_columns(trainer) == {
        "losses": ["train_embed_enc", "train_embed_agg", "train_task", "train_total", "train_gkd"],
        "metrics": ["val_accuracy", "val_uar"],
        "other": ["lr"],
    }


def _train_log(path, with_lr):
    rows = []
    for epoch in range(1, 4):
        for step in range(3):
            row = {"epoch": epoch, "step": step, "split": "train", "loss": 2.0 / epoch, "task": 1.5 / epoch, "kd": 0.5}
            if with_lr:
                row["lr"] = 1e-3 / epoch
            rows.append(row)
        rows.append({"epoch": epoch, "split": "val", "val_accuracy": 0.3 * epoch, "val_eer": 0.4 / epoch})
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_training_curves_one_panel_per_group(tmp_path):
    two = _image(plots.plot_training_curves(_train_log(tmp_path / "a.csv", False), tmp_path / "a.png"))
    three = _image(plots.plot_training_curves(_train_log(tmp_path / "b.csv", True), tmp_path / "sub" / "b.png"))
    assert three.shape[1] / two.shape[1] == pytest.approx(1.5, rel=0.1)


def test_training_curves_reject_logs_without_epochs_or_values(tmp_path):
    (tmp_path / "no_epoch.csv").write_text("step,loss\n0,1.0\n")
    with pytest.raises(ValueError, match="no 'epoch' column"):
        plots.plot_training_curves(tmp_path / "no_epoch.csv", tmp_path / "x.png")
    (tmp_path / "only_index.csv").write_text("epoch,step\n1,0\n")
    with pytest.raises(ValueError, match="no numeric column to plot"):
        plots.plot_training_curves(tmp_path / "only_index.csv", tmp_path / "x.png")


def test_det_curve_png(tmp_path):
    rng = np.random.default_rng(0)
    labels = rng.random(2000) < 0.2
    scores = rng.normal(1.5 * labels, 1.0)
    _image(plots.plot_det_curve(scores, labels, tmp_path / "det.png"))
    perfect = np.r_[np.ones(5), np.zeros(5)]  # rates of exactly 0 must not break the probit axes
    _image(plots.plot_det_curve(perfect, perfect, tmp_path / "perfect.png"))
    with pytest.raises(ValueError, match="both target and non-target"):
        plots.plot_det_curve([0.1, 0.2], [1, 1], tmp_path / "x.png")


def test_confusion_matrix_png(tmp_path):
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # a class with no test items
    _image(plots.plot_confusion_matrix(cm, ["neu", "hap", "sad"], tmp_path / "cm.png"))
    with pytest.raises(ValueError, match="2 class names for a 3-class"):
        plots.plot_confusion_matrix(cm, ["neu", "hap"], tmp_path / "x.png")
    with pytest.raises(ValueError, match="must be square"):
        plots.plot_confusion_matrix(np.ones((2, 3)), ["a", "b"], tmp_path / "x.png")


def test_pca_keeps_the_high_variance_axes():
    rng = np.random.default_rng(1)
    emb = rng.normal(size=(2000, 3)) * [10.0, 1.0, 0.1]
    proj, ratio = plots._pca_2d(emb)
    assert ratio == pytest.approx([100 / 101.01, 1 / 101.01], rel=0.1)
    assert abs(np.corrcoef(proj[:, 0], emb[:, 0])[0, 1]) > 0.99


def test_embeddings_png(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.repeat(["spk_a", "spk_b", "spk_c"], 20)
    emb = rng.normal(size=(60, 8)) + 4 * (labels[:, None] == "spk_b")
    _image(plots.plot_embeddings(emb, labels, tmp_path / "emb.png"))
    with pytest.raises(ValueError, match="N = len\\(labels\\) = 3"):
        plots.plot_embeddings(emb, labels[:3], tmp_path / "x.png")


def test_results_bar_png(tmp_path):
    df = pd.DataFrame(
        [
            {"setting": s, "method": m, "seed": k, "eer": 0.1 * (i + 1) + 0.01 * k}
            for s in ("nonseq", "seq")
            for i, m in enumerate(("none", "embed"))
            for k in range(3 - i)
        ]
    )
    _image(plots.plot_results_bar(df, "eer", tmp_path / "bar.png", hue_order=["embed", "none"]))
    with pytest.raises(ValueError, match="no column\\(s\\) uar"):
        plots.plot_results_bar(df, "uar", tmp_path / "x.png")
    with pytest.raises(ValueError, match="no run has a value for 'eer'"):
        plots.plot_results_bar(df.assign(eer=np.nan), "eer", tmp_path / "x.png")


def test_video_share_png_and_refuses_an_empty_table(tmp_path):
    shares = pd.DataFrame(
        {
            "setting": ["nonseq", "seq"],
            "method": ["embed", "embed"],
            "metric": "accuracy",
            "gain_mean": [0.1, 0.05],
            "gain_low": [0.02, float("nan")],
            "gain_high": [0.18, float("nan")],
            "share_mean": [0.01, float("nan")],
            "share_low": [-0.03, float("nan")],
            "share_high": [0.05, float("nan")],
        }
    )
    png = plots.plot_video_share(shares, tmp_path / "share.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="empty"):
        plots.plot_video_share(shares.iloc[:0], tmp_path / "none.png")


def test_label_curve_png_orders_k_numerically_with_all_last_and_refuses_bad_tables(tmp_path):
    assert label_order([4, "all", 1, 10, 2, 1]) == [1, 2, 4, 10, "all"]  # the order the report passes
    runs = pd.DataFrame(
        [
            {"setting": "nonseq", "method": m, "seed": s, "labels_per_class": k, "accuracy": 0.2 + 0.1 * i + 0.01 * s}
            for k in (1, 10, "all")
            for i, m in enumerate(("none", "embed", "embed@audio_teacher"))
            for s in range(3)
        ]
        + [
            {"setting": "nonseq", "method": "teacher", "seed": 0, "labels_per_class": k, "accuracy": 0.9}
            for k in (1, "all")
        ]
    )
    curve = pd.DataFrame(
        {
            "setting": "nonseq",
            "method": "embed",
            "labels_per_class": [1, 10, "all"],
            "gain_mean": [0.3, 0.1, 0.0],
            "gain_low": [0.2, 0.0, -0.05],
            "gain_high": [0.4, 0.2, 0.05],
            "share_mean": [0.25, float("nan"), 0.01],
            "share_low": [0.1, float("nan"), -0.04],
            "share_high": [0.4, float("nan"), 0.06],
        }
    )
    order = [1, 10, "all"]
    png = plots.plot_label_curve(
        runs, curve, "accuracy", tmp_path / "curve.png", order=order, method_order=["teacher", "none"]
    )
    pixels = _image(png)
    assert pixels.shape[1] > 2 * pixels.shape[0]  # three panels side by side
    with pytest.raises(ValueError, match="lacks column\\(s\\) labels_per_class"):
        plots.plot_label_curve(runs.drop(columns="labels_per_class"), curve, "accuracy", tmp_path / "x.png", order)
    with pytest.raises(ValueError, match="no gains to plot"):
        plots.plot_label_curve(runs, curve.iloc[:0], "accuracy", tmp_path / "x.png", order)
    with pytest.raises(ValueError, match="not in the order given"):  # a value the caller's order misses
        plots.plot_label_curve(runs, curve, "accuracy", tmp_path / "x.png", [1, "all"])

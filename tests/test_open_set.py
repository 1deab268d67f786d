"""Open-set speaker verification: test speakers never seen in training (VoxCeleb2 → VoxCeleb1)."""

from __future__ import annotations

import json

from synthetic import make_lupi_items, tiny_config

from distill.train import run_training
from extract.cache import build_cache

UNSEEN = ("spk4", "spk5")


def test_run_with_only_unseen_test_speakers_reports_verification(tmp_path):
    items = make_lupi_items(6, 12, n_frames=90)
    for item in items:  # spk4 and spk5 only in test; every other speaker only in train/val
        if item["speaker"] in UNSEEN:
            item["split"] = "test"
        elif item["split"] == "test":
            item["split"] = "train"
    cache = build_cache(tmp_path / "cache", items)
    metrics = run_training(tiny_config(cache, "teacher"), tmp_path / "run", progress=False)
    # identification is undefined when no test speaker is a training class; verification is not
    assert "accuracy" not in metrics and "top5_accuracy" not in metrics
    assert 0.0 <= metrics["eer"] <= 1.0 and 0.0 <= metrics["min_dcf"] <= 1.0
    assert {"eer", "min_dcf"} <= set(metrics["video_missing"])
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["eer"] == metrics["eer"]
    assert (tmp_path / "run" / "det.png").is_file() and (tmp_path / "run" / "embeddings.png").is_file()

"""Evaluation and teacher targets batch like training on a GPU (loader workers, a large batch): the
predictions and targets are those of a single process with small batches."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.eval.predict import Evaluator, eval_batch_size, predict
from distill.models import build_network
from distill.precision import Precision
from distill.run import RunData
from distill.testing import make_lupi_cache, tiny_config
from distill.train.targets import compute_targets
from extract import open_cache


@pytest.mark.parametrize("setting,span", [("nonseq", "window"), ("seq", "utterance")])
def test_workers_and_a_large_batch_change_no_prediction_or_target(tmp_path, setting, span):
    cache = open_cache(make_lupi_cache(tmp_path / "cache", n_classes=3, per_class=6, n_frames=90, length_jitter=30))
    cfg = tiny_config(cache.dir, "teacher", data__setting=setting, data__seq_span=span, data__max_segments=3)
    data = RunData.load(cfg, cache)
    torch.manual_seed(0)
    net = build_network(cfg.model, role="teacher", setting=setting, n_mels=cache.n_mels, n_classes=3).eval()
    cpu = Precision(torch.device("cpu"))
    test = data.dataset("test", faces=True, train=False)
    big = Evaluator(net, cpu, batch_size=eval_batch_size(cfg.data), num_workers=2)
    assert big.batch_size == 64  # 4 x the training batch of 8, at least 64; against batches of 3 below
    for video in (True, False):
        small = predict(net, test, cpu, video=video, batch_size=3)
        large = big.predict(test, video=video)
        assert small.utt_ids == large.utt_ids
        np.testing.assert_allclose(large.emb, small.emb, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(large.logits, small.logits, rtol=1e-5, atol=1e-5)
    items = data.all_items(faces=True)
    one = compute_targets(net, items, cpu, batch_size=3, progress=False)
    two = compute_targets(net, items, cpu, batch_size=64, num_workers=2, progress=False)
    assert one.keys() == two.keys() and len(one["enc"]) >= len(items)
    for name in one:
        np.testing.assert_allclose(two[name], one[name], rtol=1e-5, atol=1e-5, err_msg=name)

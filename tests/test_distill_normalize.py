"""Input normalisation: the normaliser modules, the training statistics, and their life in checkpoints."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.config import ConfigError
from distill.models.normalize import FaceNorm, FbankNorm, unfitted_norms, zca_whitener
from distill.run import RunDir
from distill.testing import make_lupi_items, tiny_config
from distill.train.input_stats import input_statistics
from distill.train.trainer import Trainer, run_training
from extract import open_cache
from extract.cache import build_cache

torch.set_num_threads(1)


def test_an_unfitted_normaliser_is_the_identity_and_says_it_needs_statistics():
    x, f = torch.randn(2, 30, 8), torch.randn(2, 5, 16)
    fb, face = FbankNorm(8, "global"), FaceNorm(16, "standardize")
    assert torch.equal(fb(x), x) and torch.equal(face(f), f)
    assert unfitted_norms(torch.nn.ModuleList([fb, face, FbankNorm(8, "utterance"), FaceNorm(16, "none")])) == [
        fb,
        face,
    ]
    fb.set_statistics(torch.zeros(8), torch.ones(8))
    assert not fb.needs_fit and bool(fb.fitted)
    with pytest.raises(ValueError, match="unknown mode"):
        FbankNorm(8, "sentence")


def test_fbank_global_uses_the_stored_statistics_and_utterance_each_input_its_own():
    g = torch.Generator().manual_seed(0)
    x = 3.0 + 2.0 * torch.randn(4, 50, 6, generator=g) * torch.arange(1, 7)
    fb = FbankNorm(6, "global")
    mean, std = torch.tensor([1.0, 2, 3, 4, 5, 6]), torch.tensor([0.5, 1, 2, 4, 8, 16])
    fb.set_statistics(mean, std)
    torch.testing.assert_close(fb(x), (x - mean) / std)
    per = FbankNorm(6, "utterance")(x)
    torch.testing.assert_close(per.mean(1), torch.zeros(4, 6), atol=1e-5, rtol=0)
    torch.testing.assert_close(per.std(1, unbiased=False), torch.ones(4, 6), atol=1e-3, rtol=0)


def test_face_standardize_and_whiten_by_hand():
    rng = np.random.default_rng(0)
    # FaceNet-like: unit vectors around one shared direction (cosine ~0.99 between any two)
    shared = rng.standard_normal(16)
    faces = shared / np.linalg.norm(shared) + 0.05 * rng.standard_normal((400, 16))
    faces /= np.linalg.norm(faces, axis=1, keepdims=True)
    mean, std, cov = faces.mean(0), faces.std(0), np.cov(faces.T, bias=True)
    x = torch.from_numpy(faces).float()

    std_norm = FaceNorm(16, "standardize")
    std_norm.set_statistics(torch.from_numpy(mean), torch.from_numpy(std))
    torch.testing.assert_close(std_norm(x), torch.from_numpy((faces - mean) / std).float(), atol=1e-4, rtol=1e-4)

    white = FaceNorm(16, "whiten")
    white.set_statistics(torch.from_numpy(mean), torch.from_numpy(cov))
    out = white(x).double().numpy()
    np.testing.assert_allclose(np.cov(out.T, bias=True), np.eye(16), atol=1e-3)
    # ZCA: the symmetric inverse square root
    w = zca_whitener(torch.from_numpy(cov)).numpy()
    np.testing.assert_allclose(w @ cov @ w, np.eye(16), atol=1e-6)
    np.testing.assert_allclose(w, w.T, atol=1e-10)


def test_a_dimension_without_variance_is_not_blown_up():
    norm = FaceNorm(3, "standardize")
    norm.set_statistics(torch.zeros(3), torch.tensor([1.0, 1e-12, 0.5]))
    assert float(norm.scale.max()) <= 1e3 + 1e-6


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """Items with frames whose face was not found, and one item without video, over several shards."""
    items = make_lupi_items(3, 8, n_frames=80, n_mels=10)
    rng = np.random.default_rng(1)
    for k, item in enumerate(items):
        item["fbank"] = item["fbank"] * (1 + np.arange(10)) + 5.0  # band offsets and scales to remove
        item["face"] = item["face"] + 3.0
        item["face_found"] = rng.random(len(item["face_found"])) > 0.3
        item["face"][~item["face_found"]] = 0.0
        if k == 1:
            item["face_found"][:] = False
            item["face"][:] = 0.0
            item["has_video"] = False
    return build_cache(tmp_path_factory.mktemp("norm") / "cache", items, shard_size=5)


def test_input_statistics_equal_the_moments_of_the_training_items(cache):
    c = open_cache(cache)
    train = c.index.loc[c.index["split"] == "train", "utt_id"].tolist()
    stats = input_statistics(c, train, face_cov=True)
    fbank = np.concatenate([c.read(u)["fbank"] for u in train]).astype(np.float64)
    faces = np.concatenate([c.read(u)["face"][c.read(u)["face_found"]] for u in train]).astype(np.float64)
    assert stats.n_frames == len(fbank) and stats.n_faces == len(faces)
    np.testing.assert_allclose(stats.fbank_mean, fbank.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats.fbank_std, fbank.std(0), rtol=1e-7)
    np.testing.assert_allclose(stats.face_mean, faces.mean(0), rtol=1e-9)
    np.testing.assert_allclose(stats.face_std, faces.std(0), rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(stats.face_cov, np.cov(faces.T, bias=True), atol=1e-9)


def test_a_run_fits_the_statistics_once_stores_them_and_every_loader_applies_them(cache, tmp_path):
    run = tmp_path / "teacher"
    run_training(tiny_config(cache, "teacher", data__crop=40, data__crop_hop=20), run, progress=False)
    c = open_cache(cache)
    train = c.index.loc[c.index["split"] == "train", "utt_id"].tolist()
    stats = input_statistics(c, train)
    net = RunDir(run).load_network().net
    audio_norm, face_norm = net.encoder.audio.norm, net.encoder.visual.norm
    assert audio_norm.mode == "global" and face_norm.mode == "standardize" and not unfitted_norms(net)
    np.testing.assert_allclose(audio_norm.mean.numpy(), stats.fbank_mean, rtol=1e-5)
    np.testing.assert_allclose(face_norm.mean.numpy(), stats.face_mean, rtol=1e-5)
    np.testing.assert_allclose(1 / face_norm.scale.numpy(), stats.face_std, rtol=1e-4)


def test_a_resumed_run_restores_its_statistics_rather_than_recomputing_them(cache, tmp_path):
    run = tmp_path / "student"
    cfg = tiny_config(cache, "student", data__crop=40, data__crop_hop=20)
    run_training(cfg, run, progress=False)
    state = load_checkpoint(run / RunDir.LAST)
    key = "encoder.norm.mean"
    state["model"][key] = torch.full_like(state["model"][key], 42.0)  # not what the data would give
    save_checkpoint(state, run / RunDir.LAST)
    cfg.train.epochs = 2
    trainer = Trainer(cfg, run, progress=False)
    assert trainer.resume()
    trainer.fit()
    assert torch.equal(load_checkpoint(run / RunDir.LAST)["model"][key], state["model"][key])
    fresh = Trainer(cfg, tmp_path / "fresh", progress=False)
    fresh.fit()
    assert float(load_checkpoint(tmp_path / "fresh" / RunDir.BEST)["model"][key].abs().max()) < 42.0


def test_normalisation_modes_are_checked_by_the_config(cache):
    with pytest.raises(ConfigError, match="model.face_norm"):
        tiny_config(cache, "teacher", model__face_norm="pca")
    with pytest.raises(ConfigError, match="model.fbank_norm"):
        tiny_config(cache, "teacher", model__fbank_norm="sentence")
    with pytest.raises(ConfigError, match="face_dropout"):
        tiny_config(cache, "teacher", model__face_dropout=1.5)


def test_configs_base_yaml_writes_out_the_defaults_normalisation_included():
    from pathlib import Path

    from distill.config import RunConfig, load_config

    base = load_config(Path(__file__).resolve().parents[1] / "configs" / "base.yaml")
    assert base.to_dict() == RunConfig().to_dict()
    assert (base.model.fbank_norm, base.model.face_norm) == ("global", "standardize")


def test_a_run_from_before_normalisation_is_a_clear_error(cache, tmp_path):
    run = tmp_path / "student"
    run_training(tiny_config(cache, "student", data__crop=40, data__crop_hop=20), run, progress=False)
    state = load_checkpoint(run / RunDir.BEST)
    state["model"] = {
        k.replace("encoder.encoder.", "encoder."): v for k, v in state["model"].items() if ".norm." not in k
    }  # the layout of a checkpoint written before normalisation
    save_checkpoint(state, run / RunDir.BEST)
    with pytest.raises(ConfigError, match="before input normalisation"):
        RunDir(run).load_network()


def test_statistics_sample_is_all_items_when_small_and_a_fixed_subset_when_large():
    from distill.train.input_stats import stats_sample

    ids = [f"u{i:05d}" for i in range(50)]
    assert stats_sample(ids, max_items=50) == ids
    sample = stats_sample(ids, max_items=10)
    assert len(sample) == len(set(sample)) == 10 and set(sample) <= set(ids)
    assert sample == sorted(sample) and sample == stats_sample(ids, max_items=10)  # cache order, reproducible

"""Training-time augmentation (distill/augment.py): noise mixed in the mel-power domain, SpecAugment masks,
seeded by (seed, epoch, item), on training cells only; teacher targets stay those of the clean cells."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tone

from distill.config import AugmentConfig, ConfigError
from distill.data.augment import (
    AddNoise,
    Augmenter,
    FreqMask,
    NoiseSource,
    TimeMask,
    build_augmenter,
    mix_at_snr,
    to_power,
)
from distill.data.dataset import Grid, GridDataset
from distill.testing import make_lupi_cache, make_lupi_items, make_noise_items, tiny_config
from distill.train.trainer import Trainer, run_training
from extract.cache import build_cache, open_cache


@pytest.fixture(scope="module")
def caches(tmp_path_factory):
    root = tmp_path_factory.mktemp("augment")
    cache = make_lupi_cache(root / "cache", n_classes=3, per_class=8, n_frames=90, length_jitter=30)
    return cache, build_cache(root / "noise", make_noise_items((230, 75, 400), n_mels=20))


ALL_ON = {"augment__p_noise": 1.0, "augment__time_masks": 2, "augment__freq_masks": 2}


# --------------------------------------------------------------------------- the mixing rule


def test_mix_at_snr_gives_the_intended_mean_power_ratio():
    rng = np.random.default_rng(0)
    x, n = rng.normal(20.0, 10.0, (100, 80)), rng.normal(5.0, 8.0, (100, 80))  # dB, float64
    for snr in (-5.0, 0.0, 7.5, 20.0):
        mixed = mix_at_snr(x, n, snr)
        added = to_power(mixed) - to_power(x)
        assert 10 * np.log10(to_power(x).mean() / added.mean()) == pytest.approx(snr, abs=1e-6)
        ratio = added / to_power(n)  # the noise is scaled, not reshaped
        np.testing.assert_allclose(ratio, ratio.flat[0], rtol=1e-6)
    low = mix_at_snr(x.astype(np.float32), n.astype(np.float32), 0.0)
    assert low.dtype == np.float32 and (low >= x.astype(np.float32) - 1e-4).all()  # power only adds


def test_mixing_log_mels_approximates_the_log_mel_of_the_mixed_waveform():
    """Mel power adds for independent sources: mixing the stored log-mels is close to extracting the mix."""
    from extract.config import ExtractConfig
    from extract.fbank import LogMel

    logmel = LogMel(ExtractConfig())
    speech = tone(2.0, 16000, 220.0, seed=1)
    noise = np.random.default_rng(0).standard_normal(len(speech)).astype(np.float32)
    x, n = logmel(speech), logmel(noise)
    gain = to_power(x).mean() / to_power(n).mean()  # 0 dB on mean mel power
    extracted = logmel(speech + np.float32(np.sqrt(gain)) * noise)
    error = np.abs(mix_at_snr(x, n, 0.0) - extracted).mean()
    change = np.abs(x - extracted).mean()  # what the noise does to the features
    assert error < 1.0 and error < 0.1 * change, (error, change)  # measured: 0.58 dB of 18 dB


# --------------------------------------------------------------------------- the transforms


WINDOW = Grid(setting="seq", crop=0, hop=20, seg_len=30, seg_hop=15, n_segments=4, max_faces=4)
UTTERANCE = Grid(
    setting="seq", crop=0, hop=0, seg_len=30, seg_hop=15, n_segments=0, max_faces=4, span="utterance", max_segments=64
)  # the whole utterance in one cell


def seq_cell(n_frames: int = 140, grid: Grid = WINDOW):
    fbank = np.random.default_rng(1).normal(10.0, 5.0, (n_frames, 20)).astype(np.float32)
    rows = grid.frame_index(n_frames, grid.n_cells(n_frames) - 1)  # (segments, 30), overlapping by 15 frames
    return fbank, rows


def same_frame_same_value(out: np.ndarray, rows: np.ndarray) -> bool:
    """Every fbank frame that two overlapping segments share came out identical in both."""
    flat_rows, flat = rows.reshape(-1), out.reshape(-1, out.shape[-1])
    return all((flat[flat_rows == r] == flat[flat_rows == r][0]).all() for r in np.unique(flat_rows))


@pytest.mark.parametrize("grid", [WINDOW, UTTERANCE], ids=["window", "utterance"])
def test_noise_and_masks_treat_a_frame_shared_by_two_segments_alike(caches, grid):
    fbank, rows = seq_cell(grid=grid)
    assert len(np.unique(rows)) < rows.size  # segments do share frames
    source = NoiseSource(open_cache(caches[1]))
    for transform in (AddNoise(source, (0.0, 5.0), p=1.0), TimeMask(3, 12), FreqMask(2, 5)):
        aug = Augmenter([transform])
        outs = [aug(fbank[rows], rows, len(fbank), np.random.default_rng(k)) for k in range(5)]
        assert any(not np.array_equal(o, fbank[rows]) for o in outs), type(transform).__name__
        assert all(same_frame_same_value(o, rows) for o in outs), type(transform).__name__


def test_masks_cover_at_most_their_width_with_the_cell_mean():
    fbank, rows = seq_cell()
    cell = fbank[rows]
    for seed in range(20):
        out = Augmenter([TimeMask(1, 12)])(cell, rows, len(fbank), np.random.default_rng(seed))
        hit = np.unique(rows[(out != cell).any(-1)])
        assert len(hit) <= 12 and (len(hit) == 0 or hit.max() - hit.min() == len(hit) - 1)  # one span of frames
        assert np.allclose(out[(out != cell).any(-1)], cell.mean())
        out = Augmenter([FreqMask(1, 5)])(cell, rows, len(fbank), np.random.default_rng(seed))
        bands = np.flatnonzero((out != cell).any(axis=(0, 1)))
        assert len(bands) <= 5 and (len(bands) == 0 or bands.max() - bands.min() == len(bands) - 1)


def test_noise_windows_are_read_in_place_and_wrap_when_the_noise_is_short(caches):
    noise = open_cache(caches[1])
    whole = {i: noise.read_at(i, fields=("fbank",), labels=False)["fbank"] for i in range(len(noise))}
    source = NoiseSource(noise)
    for seed in range(10):
        window = source.window(np.random.default_rng(seed), 100)
        matches = [
            i
            for i, w in whole.items()
            if any(np.array_equal(window, w[s : s + len(window)]) for s in range(len(w) - len(window) + 1))
        ]
        assert matches and len(window) == min(100, len(whole[matches[0]]))  # the 75-frame item: all of it


# --------------------------------------------------------------------------- datasets and runs


def test_augmented_cells_are_a_function_of_seed_epoch_and_item(caches):
    cache = open_cache(caches[0])
    cfg = tiny_config(caches[0], augment__noise=str(caches[1]), **ALL_ON)
    grid, rows = Grid.from_config(cfg.data), np.arange(len(cache))

    def dataset(augment=True):  # a fresh object each time, as a resumed run builds it
        return GridDataset(
            cache,
            rows,
            np.zeros(len(rows), np.int64),
            grid,
            faces=False,
            train=True,
            seed=3,
            augment=build_augmenter(cfg.augment, cache) if augment else None,
        )

    a, b, clean = dataset(), dataset(), dataset(augment=False)
    for i in (0, 5, 11):
        first = a[(2, i)]
        assert torch.equal(first["fbank"], b[(2, i)]["fbank"])  # same seed, epoch, item
        assert first["cell"] == clean[(2, i)]["cell"]  # the cell draw is not disturbed
        assert not torch.equal(first["fbank"], clean[(2, i)]["fbank"])
        assert not torch.equal(first["fbank"], a[(3, i)]["fbank"])  # another epoch, other draws
    with pytest.raises(ValueError, match="training datasets only"):
        GridDataset(
            cache,
            rows,
            np.zeros(len(rows), np.int64),
            grid,
            faces=False,
            train=False,
            augment=build_augmenter(cfg.augment, cache),
        )


def test_augmentation_changes_the_students_input_and_leaves_its_targets_bit_identical(caches, tmp_path):
    cache, noise = caches
    teacher = tmp_path / "teacher"
    run_training(tiny_config(cache, "teacher", **{"augment__noise": str(noise), **ALL_ON}), teacher, progress=False)
    student = {"distill__method": "embed+softlabel", "distill__teacher": str(teacher)}
    plain = Trainer(tiny_config(cache, "student", **student), tmp_path / "s0", progress=False).train_dataset()
    noisy = Trainer(
        tiny_config(cache, "student", augment__noise=str(noise), **ALL_ON, **student), tmp_path / "s1", progress=False
    ).train_dataset()
    changed = 0
    for i in range(len(plain)):
        p, q = plain[(1, i)], noisy[(1, i)]
        assert p["cell"] == q["cell"] and {k for k in p if k.startswith("t_")} == {"t_enc", "t_logits"}
        assert all(torch.equal(p[k], q[k]) for k in p if k.startswith("t_"))  # the clean cell's targets
        changed += not torch.equal(p["fbank"], q["fbank"])
    assert changed == len(plain)
    metrics = run_training(
        tiny_config(cache, "student", augment__noise=str(noise), **ALL_ON, **student), tmp_path / "s2", progress=False
    )
    assert 0.0 <= metrics["accuracy"] <= 1.0


def test_a_noise_cache_of_other_log_mel_settings_is_refused(caches, tmp_path):
    other = build_cache(tmp_path / "noise40", make_noise_items((230, 75, 400), n_mels=40))
    with pytest.raises(ConfigError, match="n_mels: noise 40 vs training 20"):
        build_augmenter(AugmentConfig(noise=str(other)), open_cache(caches[0]))
    with pytest.raises(ConfigError, match="augment.noise: .*not a feature cache"):
        build_augmenter(AugmentConfig(noise=str(tmp_path)), open_cache(caches[0]))
    with pytest.raises(ConfigError, match="augment.snr"):
        tiny_config(caches[0], augment__snr=[10, 0])
    assert build_augmenter(AugmentConfig(), open_cache(caches[0])) is None  # the default: off


@pytest.mark.slow
def test_a_noise_cache_from_audio_files_through_manifests_and_extract(tmp_path, capsys):
    """MUSAN-style: a folder of noise .wav/.flac -> `manifests generic` -> `extract run` -> a run's noise."""
    from extract.cli import main as extract
    from manifests.cli import main as manifests
    from manifests.media import write_video

    folder = tmp_path / "musan" / "noise"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    write_video(folder / "white.wav", None, audio=(0.1 * rng.standard_normal(24000)).astype(np.float32))
    write_video(folder / "hum.flac", None, audio=tone(0.6, 16000, 50.0, seed=2), acodec="flac")
    assert manifests(["generic", str(tmp_path / "musan"), "--out", str(tmp_path / "noise.csv")]) == 0
    capsys.readouterr()
    assert (
        extract(
            [
                "run",
                "--manifest",
                str(tmp_path / "noise.csv"),
                "--cache-root",
                str(tmp_path / "cache"),
                "--face-weights",
                "random",
                "--threads",
                "1",
                "--no-progress",
                "--strict",
            ]
        )
        == 0
    )
    noise_dir = capsys.readouterr().out.strip().split()[-1]
    noise = open_cache(noise_dir)
    assert sorted(noise) == ["noise/hum", "noise/white"] and not noise.column("has_video").any()
    assert noise.table.locations[:, 1].tolist() == [61, 151]  # T = 1 + n // hop (speechbrain centres frames)

    cache = build_cache(
        tmp_path / "train",
        make_lupi_items(3, 8, n_frames=90, n_mels=80),
        config={"n_mels": 80, "sample_rate": 16000, "hop_ms": 10.0, "win_ms": 25.0},
    )
    cfg = tiny_config(cache, augment__noise=noise_dir, augment__p_noise=1.0)
    data = Trainer(cfg, tmp_path / "t", progress=False).train_dataset()
    clean = GridDataset(data.cache, data.rows, data.labels, data.grid, faces=True, train=True)
    assert not torch.equal(data[(1, 0)]["fbank"], clean[(1, 0)]["fbank"])
    assert torch.equal(data[(1, 0)]["face"], clean[(1, 0)]["face"])  # a teacher's faces are never touched
    with pytest.raises(ConfigError, match="hop_ms: noise 10.0 vs training 20.0"):
        build_augmenter(
            cfg.augment,
            open_cache(
                build_cache(tmp_path / "t20", make_lupi_items(3, 2, n_mels=80), config={"n_mels": 80, "hop_ms": 20.0})
            ),
        )

"""Training-time augmentation of log-mel cells: additive noise in the mel-power domain, SpecAugment masks.

The cache holds log-mels, not waveforms, so augmentation works on them. speechbrain's ``Fbank``
(extract/fbank.py) stores ``x = 10·log10(P)`` per frame and mel band, P the mel-filtered power
spectrum (``power_spectrogram=2``, reference 1, ``amin`` 1e-10, floored 80 dB below the
utterance's maximum). For independent sources the expected power spectra add, and the mel
filterbank is linear, so speech plus noise at gain g has the mel power ``P_x + g·P_n``:

    x_aug = 10·log10(10^(x/10) + g·10^(n/10)),   g = mean(P_x) / (mean(P_n) · 10^(snr/10))

with the means over the cell, so ``snr`` is the ratio of mean mel powers in dB. The noise
log-mels come from a *noise cache*: noise audio (MUSAN-style) run through the same ``extract run``
(docs/training.md#augmentation). What this cannot do is anything that needs the waveform
(reverberation, speed perturbation); docs/training.md says why there is no waveform store.

Each transform is a callable ``(cell, pos, rng) -> cell``: ``cell`` is a grid cell's fbank rows,
(crop, n_mels) or (n_segments, seg_len, n_mels); ``pos`` the position of each row in frames from
the cell's start, so overlapping segments of a ``seq`` window get the same noise and the same time
masks on the frames they share. ``rng`` is the sample's generator, a function of (seed, epoch,
item) (``GridDataset.augment_rng``): a resumed run sees the same augmented cells.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np

from distill.config import AugmentConfig, ConfigError
from extract import open_cache
from extract.cache import CacheError

#: The extraction settings that decide what a log-mel value means; a noise cache must share them.
FBANK_SETTINGS = ("sample_rate", "n_mels", "win_ms", "hop_ms", "f_min", "f_max")
DB = 10.0  # log-mels are 10·log10(mel power): dB of a power spectrogram (speechbrain Fbank)
_NATS_PER_DB = np.log(10.0) / DB  # exp/log in the cell's own dtype: float32 holds 10^(±38), log-mels span ~100 dB


class Transform(Protocol):
    def __call__(self, cell: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray: ...


def to_power(logmel: np.ndarray) -> np.ndarray:
    """dB log-mels -> mel power, 10^(x/10), in the input's float dtype."""
    logmel = np.asarray(logmel)
    return np.exp(logmel * logmel.dtype.type(_NATS_PER_DB))


def mix_at_snr(logmel: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """Log-mels of speech + noise from both log-mels, the noise scaled so that mean mel power of
    speech over noise is ``snr_db``; same shape and dtype as ``logmel``."""
    p_x, p_n = to_power(logmel), to_power(noise.astype(logmel.dtype, copy=False))
    gain = p_x.mean(dtype=np.float64) / (max(p_n.mean(dtype=np.float64), 1e-30) * 10.0 ** (snr_db / DB))
    p_x += logmel.dtype.type(gain) * p_n
    return np.log(p_x, out=p_x) * logmel.dtype.type(1.0 / _NATS_PER_DB)


class NoiseSource:
    """Windows of noise log-mels from a noise cache, read a window at a time (not whole files).

    Picklable (the cache opens its HDF5 files lazily in each loader worker).
    """

    def __init__(self, cache, reference: dict | None = None):
        if len(cache) == 0:
            raise ConfigError(
                f"augment.noise: the noise cache {cache.dir} holds no items: extract the noise files into it "
                "(`python -m manifests generic NOISE_DIR --out noise.csv`, then `extract run`)"
            )
        if reference is not None:
            check_compatible(cache.config, reference, cache.dir)
        self.cache = cache
        self.n_frames = cache.table.locations[:, 1].astype(np.int64)

    def window(self, rng: np.random.Generator, span: int) -> np.ndarray:
        """(min(span, n), n_mels) consecutive frames of a random noise item from a random start."""
        row = int(rng.integers(len(self.n_frames)))
        n = int(self.n_frames[row])
        start = int(rng.integers(max(n - span, 0) + 1))
        stop = start + min(span, n)
        return self.cache.read_at(row, fields=("fbank",), labels=False, frames=(start, stop))["fbank"]


def check_compatible(noise: dict, reference: dict, where) -> None:
    """A noise cache's log-mels mean what the training cache's do: same fbank settings."""
    differ = [
        f"{k}: noise {noise[k]!r} vs training {reference[k]!r}"
        for k in FBANK_SETTINGS
        if k in noise and k in reference and noise[k] != reference[k]
    ]
    if noise.get("n_mels") is None or reference.get("n_mels") is None:
        differ.append("n_mels: unknown")
    if differ:
        raise ConfigError(
            f"augment.noise: the noise cache {where} was extracted with other log-mel settings than "
            f"the training cache ({'; '.join(differ)}); rerun extract run on the noise with the "
            f"training cache's settings"
        )


class AddNoise:
    """With probability ``p``, noise from ``source`` at an SNR drawn uniformly from ``snr`` dB."""

    def __init__(self, source: NoiseSource, snr: Sequence[float] = (0.0, 15.0), p: float = 0.5):
        self.source, self.snr, self.p = source, (float(snr[0]), float(snr[1])), float(p)

    def __call__(self, cell: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if rng.random() >= self.p:
            return cell
        window = self.source.window(rng, int(pos.max()) + 1)
        snr = rng.uniform(*self.snr)
        return mix_at_snr(cell, window[pos % len(window)], snr)


class TimeMask:
    """SpecAugment time masking: ``n`` spans of 0..``width`` frames set to the cell's mean."""

    def __init__(self, n: int, width: int):
        self.n, self.width = n, width

    def __call__(self, cell: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        span = int(pos.max()) + 1
        masked = np.zeros(pos.shape, bool)
        for _ in range(self.n):
            w = min(int(rng.integers(self.width + 1)), span)
            t0 = int(rng.integers(span - w + 1))
            masked |= (pos >= t0) & (pos < t0 + w)
        if masked.any():
            cell = cell.copy()
            cell[masked] = cell.mean()
        return cell


class FreqMask:
    """SpecAugment frequency masking: ``n`` bands of 0..``width`` mel bins set to the cell's mean."""

    def __init__(self, n: int, width: int):
        self.n, self.width = n, width

    def __call__(self, cell: np.ndarray, pos: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        n_mels = cell.shape[-1]
        masked = np.zeros(n_mels, bool)
        for _ in range(self.n):
            w = min(int(rng.integers(self.width + 1)), n_mels)
            f0 = int(rng.integers(n_mels - w + 1))
            masked[f0 : f0 + w] = True
        if masked.any():
            cell = cell.copy()
            cell[..., masked] = cell.mean()
        return cell


class Augmenter:
    """Transforms applied in order to one grid cell (noise first, then masks, as SpecAugment
    is applied to the input the network would otherwise see)."""

    def __init__(self, transforms: Sequence[Transform]):
        self.transforms = list(transforms)

    def __call__(self, cell: np.ndarray, rows: np.ndarray, n_frames: int, rng: np.random.Generator) -> np.ndarray:
        """``cell`` = fbank[rows] of an utterance of ``n_frames`` frames (rows wrap mod n_frames)."""
        pos = (rows - rows.flat[0]) % n_frames  # frames from the cell start; a wrapped frame keeps its place
        for transform in self.transforms:
            cell = transform(cell, pos, rng)
        return cell


def build_augmenter(cfg: AugmentConfig, cache) -> Augmenter | None:
    """The augmenter a run's training cells go through, or None when ``cfg`` turns nothing on."""
    if not cfg.active:
        return None
    transforms: list[Transform] = []
    if cfg.noise:
        try:
            noise = open_cache(cfg.noise)
        except CacheError as exc:
            raise ConfigError(f"augment.noise: {exc}") from exc
        transforms.append(AddNoise(NoiseSource(noise, cache.config), cfg.snr, cfg.p_noise))
    if cfg.time_masks:
        transforms.append(TimeMask(cfg.time_masks, cfg.time_mask_width))
    if cfg.freq_masks:
        transforms.append(FreqMask(cfg.freq_masks, cfg.freq_mask_width))
    return Augmenter(transforms)

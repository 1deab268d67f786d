"""A small source-filter speech synthesiser for the demo corpus (no TTS engine needed).

A glottal pulse train at a time-varying F0 excites a cascade of formant resonators, one vowel
per syllable, with noise-burst onsets and a syllable envelope. A :class:`Voice` fixes what
makes a speaker recognisable (mean F0, vocal-tract length via formant scale, glottal tilt,
speaking rate); a :class:`Prosody` fixes what an emotion changes (pitch level and range, rate,
energy). Both are deliberately small perturbations so that voices resemble each other.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.signal import lfilter

#: F1-F3 (Hz) of five vowels for an adult male tract (Peterson & Barney style averages).
VOWELS = np.array(
    [
        [730, 1090, 2440],  # a
        [530, 1840, 2480],  # e
        [270, 2290, 3010],  # i
        [570, 840, 2410],  # o
        [300, 870, 2240],  # u
    ],
    dtype=np.float64,
)
BANDWIDTHS = np.array([80.0, 100.0, 150.0])


@dataclass(frozen=True)
class Voice:
    """What stays constant across one speaker's utterances."""

    f0: float  # mean fundamental frequency, Hz
    formant_scale: float  # vocal-tract length: 1.0 adult male, ~1.15 adult female
    tilt: float  # glottal low-pass pole in (0, 1): larger = darker, breathier voice
    rate: float  # syllables per second


@dataclass(frozen=True)
class Prosody:
    """What an emotion changes: multiplicative on the voice, range in semitones."""

    f0_scale: float = 1.0
    f0_range: float = 2.0
    rate_scale: float = 1.0
    energy: float = 1.0


def _resonator(freq: float, bandwidth: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """Second-order all-pole resonator with unit gain at DC (Klatt style)."""
    r = np.exp(-np.pi * bandwidth / sr)
    a = np.array([1.0, -2.0 * r * np.cos(2.0 * np.pi * freq / sr), r * r])
    return np.array([a.sum()]), a


def _f0_contour(n: int, centres: np.ndarray, f0: float, semitones: float, rng: np.random.Generator) -> np.ndarray:
    """Declining pitch with one random accent per syllable, smoothly interpolated."""
    k = len(centres)
    decl = np.linspace(semitones / 2, -semitones / 2, k)
    accents = rng.uniform(-1.0, 1.0, k) * semitones
    knots = np.concatenate([[0], centres, [n - 1]])
    values = np.concatenate([[decl[0]], decl + accents, [decl[-1] - semitones / 2]])
    return f0 * 2.0 ** (np.interp(np.arange(n), knots, values) / 12.0)


def _pulse_train(f0: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Impulses at each glottal period, with 1% period jitter; amplitude varies 10% (shimmer)."""
    phase = np.cumsum(f0 * (1.0 + 0.01 * rng.standard_normal(len(f0))) / sr)
    pulses = np.zeros(len(f0))
    idx = np.flatnonzero(np.diff(np.floor(phase)) > 0) + 1
    pulses[idx] = 1.0 + 0.1 * rng.standard_normal(len(idx))
    return pulses


def synthesize(
    voice: Voice, prosody: Prosody, duration: float, rng: np.random.Generator, sample_rate: int = 16000
) -> np.ndarray:
    """One utterance of random syllables in ``voice`` with ``prosody``: float32 (n,), peak <= 1."""
    sr = sample_rate
    n = int(round(duration * sr))
    n_syl = max(2, int(round(duration * voice.rate * prosody.rate_scale)))
    lengths = rng.dirichlet(np.full(n_syl, 8.0)) * n
    bounds = np.concatenate([[0], np.cumsum(lengths)]).astype(int)
    bounds[-1] = n
    centres = (bounds[:-1] + bounds[1:]) / 2
    f0 = _f0_contour(
        n, centres, voice.f0 * prosody.f0_scale * (1 + 0.03 * rng.standard_normal()), prosody.f0_range, rng
    )

    # Glottal source: pulses -> two-pole low-pass (spectral tilt) -> differentiation (lip radiation).
    source = _pulse_train(f0, sr, rng)
    source = lfilter([1.0 - voice.tilt], [1.0, -voice.tilt], source)
    source = lfilter([1.0 - voice.tilt], [1.0, -voice.tilt], source)
    source = np.diff(source, prepend=0.0)

    out = np.zeros(n)
    for s, e in zip(bounds[:-1], bounds[1:]):
        seg = source[s:e]
        if len(seg) < 16:
            continue
        if rng.random() < 0.1:  # a short pause instead of a syllable
            continue
        formants = VOWELS[rng.integers(len(VOWELS))] * voice.formant_scale * (1 + 0.03 * rng.standard_normal(3))
        y = seg
        for f, bw in zip(formants, BANDWIDTHS):
            b, a = _resonator(min(f, 0.45 * sr), bw, sr)
            y = lfilter(b, a, y)
        y = y / (np.sqrt(np.mean(y**2)) + 1e-9)
        y = y * np.sin(np.linspace(0.0, np.pi, len(y))) ** 0.6  # syllable envelope
        onset = min(len(y) // 3, int(rng.uniform(0.02, 0.06) * sr))
        burst = np.diff(rng.standard_normal(onset + 1)) * 0.25  # high-passed noise: a plosive/fricative
        y[:onset] += burst * np.hanning(2 * onset)[onset:]
        out[s:e] = y * (0.6 + 0.4 * rng.random())

    rms = np.sqrt(np.mean(out**2)) + 1e-9
    out *= 0.05 * prosody.energy / rms
    return out.astype(np.float32)


def add_noise(clean: np.ndarray, snr_db: float, rng: np.random.Generator) -> np.ndarray:
    """Add pink-ish noise (white through a random one-pole low-pass) at ``snr_db`` to ``clean``."""
    white = rng.standard_normal(len(clean))
    pole = rng.uniform(0.5, 0.95)
    noise = lfilter([1.0 - pole], [1.0, -pole], white)
    p_clean = np.mean(clean.astype(np.float64) ** 2)
    noise *= np.sqrt(p_clean / (np.mean(noise**2) * 10.0 ** (snr_db / 10.0)))
    return np.clip(clean + noise, -1.0, 1.0).astype(np.float32)

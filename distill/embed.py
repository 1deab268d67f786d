"""Audio-only embeddings of new files with a trained run: the deployment path of the method.

Audio is decoded and turned into log-mels by the extraction code itself (``extract.decode``,
``extract.fbank``) with the settings stored in the run's checkpoint, so features at inference
match the features the network was trained on. No faces are needed; a teacher run embeds with
its video missing. A file is embedded on the run's grid: every cell, embeddings averaged.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from distill.checkpoint import load_best_network
from distill.config import ConfigError
from distill.data import Grid


def extraction_config(cache_config: dict):
    """The ExtractConfig a cache was built with, from its config.json record."""
    from extract.config import ExtractConfig

    if cache_config.get("synthetic"):
        raise ConfigError("this run was trained on a synthetic cache: there is no extraction config to decode new audio with")
    return ExtractConfig.from_record(cache_config)


class Embedder:
    """A run's best network plus the feature pipeline it was trained on."""

    def __init__(self, run_dir: str | Path, device: str = "cpu"):
        self.net, cfg, meta = load_best_network(run_dir, device)
        self.device = torch.device(device)
        self.grid = Grid.from_config(cfg.data)
        self.cache_config = json.loads(meta["cache_config"])

    @torch.no_grad()
    def embed_fbank(self, fbank: np.ndarray) -> np.ndarray:
        """(T, n_mels) log-mels -> one embedding: the mean over the grid's cells."""
        rows = np.stack([self.grid.frame_index(len(fbank), c) for c in range(self.grid.n_cells(len(fbank)))])
        x = torch.from_numpy(np.asarray(fbank, dtype=np.float32)[rows]).to(self.device)
        return self.net(x).emb.mean(0).cpu().numpy()

    @functools.cached_property
    def features(self):
        """The extraction settings and log-mel of the run's cache (built on first use: a run on a
        synthetic cache can still embed log-mels, just not files)."""
        from extract.fbank import LogMel

        ecfg = extraction_config(self.cache_config)
        return ecfg, LogMel(ecfg)

    def embed_file(self, path: str | Path) -> np.ndarray:
        from extract.decode import decode_audio

        ecfg, logmel = self.features
        audio = decode_audio(Path(path), ecfg.sample_rate)
        if len(audio) < ecfg.win_samples:
            raise ValueError(f"{path}: {len(audio)} audio samples, shorter than one feature window")
        return self.embed_fbank(logmel(audio))


def embed_files(run_dir: str | Path, files: list[str]) -> np.ndarray:
    embedder = Embedder(run_dir)
    out = []
    for path in files:
        try:
            out.append(embedder.embed_file(path))
        except ConfigError:
            raise
        except Exception as exc:
            raise ValueError(f"{path}: cannot embed ({type(exc).__name__}: {exc})") from exc
    return np.stack(out).astype(np.float32)


def write_embeddings(emb: np.ndarray, files: list[str], out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, emb)
    elif out.suffix == ".csv":
        table = pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])
        table.insert(0, "path", list(files))
        table.to_csv(out, index=False)
    else:
        raise ConfigError(f"--out {out}: use a .npy or .csv file name")
    return out

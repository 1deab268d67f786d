"""Use a trained model, audio only: embed, classify and compare recordings (the deployment API).

    >>> model = Model.from_run("runs/student", device="cpu")      # or Model.load(export_dir)
    >>> emb = model.embed(["a.wav", "b.mp4"])                     # (2, D)
    >>> pred = model.predict(["a.wav"])                           # class probabilities, top class
    >>> model.score("a.wav", "b.mp4")                             # cosine score(s)

Audio is decoded by the extraction code (``extract.decode``) and turned into log-mels by the
extraction's own front-end (``extract.fbank.LogMel``) with the settings of the run's cache, so a
file is seen exactly as the training items were. An item is cut into the run's grid cells (the
fixed-length crops or segment windows the network was trained on; a short item wraps around, as
in training) and its embedding and logits are the mean over its cells, as in ``distill eval``.

Batching: because every cell has the same shape, items of any length batch without padding: the
cells of many items are stacked, at most ``batch_size`` per forward pass, and each cell carries
the index of its item (the mask that routes it back), so a batched result equals the unbatched
one up to float rounding. Waveforms padded into one ``(B, n)`` array are cut to their ``lengths``
first, so padding never reaches the network.

The network is one of three backends behind the same call: the run's PyTorch module
(:meth:`Model.from_run`), or an exported TorchScript or ONNX file (:meth:`Model.from_export`,
written by ``distill export``, see :mod:`distill.export`).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from common.files import sha256_file
from distill.config import ConfigError
from distill.data.dataset import Grid
from distill.eval.metrics import cosine_scores
from distill.eval.scoring import as_norm
from distill.run import RunDir
from distill.serve.backend import EXPORT_INFO, Backend, cell_shape, load_backend, torch_backend
from extract.config import ExtractConfig
from extract.decode import DecodeError, decode_audio
from extract.fbank import LogMel
from manifests.io import read_manifest

COHORT = RunDir.COHORT  # the AS-norm cohort of a speaker run (distill.eval.calibration writes it); an export copies it
VERIFICATION = RunDir.VERIFICATION  # the val EER operating point; an export records it in model.json
NORMS = ("auto", "none", "asnorm")


@dataclass(frozen=True)
class Segment:
    """Part of a file: seconds ``start`` to ``end`` (None: to the end), as a manifest's start/end columns say."""

    path: str
    start: float | None = None
    end: float | None = None


#: What embed/predict accept per item: a file path, a Segment of a file, or a mono waveform at
#: ``Model.sample_rate`` (1-D numpy array or tensor).
Item = str | Path | Segment | np.ndarray | torch.Tensor


@dataclass
class Prediction:
    """Class probabilities (softmax of the cell-averaged logits) for a list of items."""

    classes: list[str]
    probs: np.ndarray  # (N, C)

    @property
    def top(self) -> list[str]:
        return [self.classes[i] for i in self.probs.argmax(1)]

    @property
    def top_prob(self) -> np.ndarray:
        return self.probs.max(1)

    def table(self, ids: Sequence[str] | None = None) -> pd.DataFrame:
        """One row per item: ``top``, ``top_prob`` and ``prob_<class>`` for every class."""
        frame = pd.DataFrame(self.probs, columns=[f"prob_{c}" for c in self.classes])
        frame.insert(0, "top_prob", self.top_prob)
        frame.insert(0, "top", self.top)
        if ids is not None:
            frame.insert(0, "utt_id", list(ids))
        return frame


def extraction_config(cache_config: dict):
    """The ExtractConfig a cache was built with, from its config.json record."""
    if not cache_config or cache_config.get("synthetic"):
        raise ConfigError(
            "this model was trained on a synthetic cache: there is no extraction config to decode "
            "new audio with (log-mels can still be given directly)"
        )
    return ExtractConfig.from_record(cache_config)


class Model:
    """An audio-only model: a backend, the grid it runs on, its classes and its feature settings."""

    def __init__(
        self,
        backend: Backend,
        *,
        grid: Grid,
        n_mels: int,
        classes: list[str],
        task: str,
        feature_record: dict | None,
        threshold: dict | None = None,
        source: str = "",
        identity: str = "",
        cohort: np.ndarray | None = None,
        info: dict | None = None,
    ):
        self.backend, self.grid, self.n_mels = backend, grid, n_mels
        self.classes, self.task = list(classes), task
        self.feature_record = feature_record or {}
        self.threshold = threshold  # {"threshold": ..., "eer": ..., ...} or None
        self.source = source
        self.identity = identity  # sha256 of the checkpoint: the same for a run and its exports
        self.cohort = cohort  # (speakers, D) AS-norm cohort, or None
        self.info = info or {}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_run(cls, run_dir: str | Path, device: str = "cpu") -> Model:
        """A run's best checkpoint (run directory with config.yaml and best.pt); no cache needed."""
        run = RunDir(run_dir)
        trained = run.load_network(device)
        cfg, meta = trained.config, trained.meta
        return cls(
            torch_backend(trained.net, torch.device(device)),
            grid=Grid.for_eval(cfg.data),
            n_mels=meta["n_mels"],
            classes=meta["labels"],
            task=cfg.data.task,
            feature_record=json.loads(meta["cache_config"]),
            threshold=_read_json(run.verification),
            source=str(run_dir),
            identity=sha256_file(run.best),
            cohort=_read_cohort(run.path),
            info={"role": cfg.role, "setting": cfg.data.setting},
        )

    @classmethod
    def from_export(cls, export_dir: str | Path, device: str = "cpu") -> Model:
        """A folder written by ``distill export`` (TorchScript or ONNX); needs neither run nor cache."""
        export_dir = Path(export_dir)
        info_file = export_dir / EXPORT_INFO
        if not info_file.is_file():
            raise ConfigError(
                f"{export_dir} is not an exported model (no {EXPORT_INFO}): give a folder written by `distill export`"
            )
        info = json.loads(info_file.read_text())
        return cls(
            load_backend(export_dir, info, device),
            grid=Grid(**info["grid"]),
            n_mels=info["n_mels"],
            classes=info["classes"],
            task=info["task"],
            feature_record=info["features"],
            threshold=info.get("verification"),
            source=str(export_dir),
            identity=info["checkpoint"]["sha256"],
            cohort=_read_cohort(export_dir),
            info=info,
        )

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> Model:
        """A run directory or an export folder, whichever ``path`` is."""
        path = Path(path)
        if (path / EXPORT_INFO).is_file():
            return cls.from_export(path, device)
        if RunDir(path).config_file.is_file():
            return cls.from_run(path, device)
        raise ConfigError(
            f"{path} is neither a run directory ({RunDir.CONFIG}) nor an exported model ({EXPORT_INFO}): give the "
            "--out of a `distill teacher`/`student` run or of `distill export`"
        )

    # ------------------------------------------------------------------ features
    @functools.cached_property
    def _frontend(self):
        ecfg = extraction_config(self.feature_record)
        return ecfg, LogMel(ecfg)

    @property
    def sample_rate(self) -> int:
        """The rate waveforms must be given at (files are resampled by ffmpeg)."""
        return self._frontend[0].sample_rate

    def fbank(self, item: Item) -> np.ndarray:
        """One item's log-mels (T, n_mels), decoded, computed and rounded to the cache's storage
        dtype as the extraction did: the numbers a cached item of the same file holds."""
        ecfg, logmel = self._frontend
        if isinstance(item, (str, Path, Segment)):
            seg = item if isinstance(item, Segment) else Segment(str(item))
            audio = decode_audio(Path(seg.path), ecfg.sample_rate, seg.start, seg.end)
            name = seg.path
        else:
            audio = item.detach().cpu().numpy() if isinstance(item, torch.Tensor) else np.asarray(item)
            if audio.ndim != 1:
                raise ValueError(f"a waveform must be mono (n,), got shape {audio.shape}")
            name = "waveform"
        if len(audio) < ecfg.win_samples:
            raise ValueError(
                f"{name}: {len(audio)} audio samples, shorter than one feature window "
                f"({ecfg.win_samples} samples = {ecfg.win_ms} ms)"
            )
        feats = logmel(audio.astype(np.float32, copy=False))
        return feats.astype(ecfg.dtype).astype(np.float32, copy=False)

    # ------------------------------------------------------------------ the network over cells
    def forward_fbanks(self, fbanks: Sequence[np.ndarray], batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Per-item (emb (N, D), logits (N, C)): each the mean over the item's grid cells."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        fbanks = [np.asarray(fb, dtype=np.float32) for fb in fbanks]
        for i, fb in enumerate(fbanks):
            if fb.ndim != 2 or fb.shape[1] != self.n_mels or len(fb) == 0:
                raise ValueError(f"item {i}: log-mels must be (T >= 1, {self.n_mels}), got {fb.shape}")
        n = len(fbanks)
        # (item, cell) of every cell; a batch's cells are cut only when it runs (a long file stays cheap)
        owner = np.repeat(np.arange(n), [self.grid.n_cells(len(fb)) for fb in fbanks]).astype(np.int64)
        cell = np.concatenate([np.arange(self.grid.n_cells(len(fb))) for fb in fbanks]) if n else owner
        emb_sum = logit_sum = None
        for chunk in self._batches(fbanks, owner, cell, batch_size):
            x = np.stack([fbanks[owner[j]][self.grid.frame_index(len(fbanks[owner[j]]), cell[j])] for j in chunk])
            emb, logits = self.backend(x)
            if emb_sum is None:
                emb_sum, logit_sum = np.zeros((n, emb.shape[1])), np.zeros((n, logits.shape[1]))
            np.add.at(emb_sum, owner[chunk], emb)
            np.add.at(logit_sum, owner[chunk], logits)
        if emb_sum is None:
            raise ValueError("nothing to embed: no items given")
        counts = np.bincount(owner, minlength=n)[:, None]
        return (emb_sum / counts).astype(np.float32), (logit_sum / counts).astype(np.float32)

    def _batches(
        self, fbanks: list[np.ndarray], owner: np.ndarray, cell: np.ndarray, batch_size: int
    ) -> Iterator[np.ndarray]:
        """Positions of the cells to stack per forward pass, at most ``batch_size`` each.

        Window grids: every cell has one shape, so consecutive cells. Whole-utterance grids: cells
        of equal shape only (an utterance of its own length, or the same segment count), so no
        padding ever reaches the network and a result is the same whatever else is batched with it.
        """
        positions = np.arange(len(owner))
        if self.grid.span != "utterance":
            groups = [positions]
        else:
            shapes: dict[tuple, list[int]] = {}
            for j in positions:
                n = len(fbanks[owner[j]])
                shape = self.grid.frame_index(n, int(cell[j])).shape if self.grid.segmented else (n,)
                shapes.setdefault(shape, []).append(int(j))
            groups = [np.array(g) for g in shapes.values()]
        for group in groups:
            for lo in range(0, len(group), batch_size):
                yield group[lo : lo + batch_size]

    def _fbanks(self, items: Item | Sequence[Item], lengths: Sequence[int] | None) -> list[np.ndarray]:
        return [self.fbank(x) for x in as_items(items, lengths)]

    # ------------------------------------------------------------------ what users call
    def embed(
        self, items: Item | Sequence[Item], batch_size: int = 64, lengths: Sequence[int] | None = None
    ) -> np.ndarray:
        """Embeddings (N, D) of files, Segments or waveforms; ``batch_size`` cells per forward pass.

        A padded ``(B, n)`` waveform array with ``lengths`` (samples per row) is cut to its lengths.
        """
        return self.forward_fbanks(self._fbanks(items, lengths), batch_size)[0]

    def predict(
        self, items: Item | Sequence[Item], batch_size: int = 64, lengths: Sequence[int] | None = None
    ) -> Prediction:
        """Class probabilities of each item (emotion, or closed-set speaker identity)."""
        logits = self.forward_fbanks(self._fbanks(items, lengths), batch_size)[1]
        return Prediction(self.classes, softmax(logits))

    def score(
        self, a: Item | Sequence[Item], b: Item | Sequence[Item], batch_size: int = 64, norm: str = "none"
    ) -> np.ndarray:
        """Scores of the pairs (a[i], b[i]): cosine (``norm="none"``) or AS-norm against the run's
        cohort (``"asnorm"``); ``"auto"`` is AS-norm when the model has a cohort."""
        ea, eb = self.embed(a, batch_size), self.embed(b, batch_size)
        if len(ea) != len(eb):
            raise ValueError(f"score: {len(ea)} items against {len(eb)}; pairs need equal counts")
        return self.score_embeddings(ea, eb, norm)

    def score_embeddings(self, enrol: np.ndarray, test: np.ndarray, norm: str = "none") -> np.ndarray:
        """Like :meth:`score`, for embeddings already computed."""
        norm = self.resolve_norm(norm)
        if norm == "none":
            return cosine_scores(enrol, test)
        top_k = (self.threshold or {}).get("asnorm", {}).get("top_k", 300)
        return as_norm(enrol, test, self.cohort, top_k)

    def resolve_norm(self, norm: str) -> str:
        """``auto`` -> ``asnorm`` with a cohort, else ``none``; ``asnorm`` without one is an error."""
        if norm not in NORMS:
            raise ConfigError(f"score normalisation {norm!r}: choose one of {', '.join(NORMS)}")
        if norm == "auto":
            return "asnorm" if self.cohort is not None else "none"
        if norm == "asnorm" and self.cohort is None:
            raise ConfigError(
                f"{self.source} has no AS-norm cohort (a speaker run's cohort.npy, written by evaluation): "
                "score with --norm none, or write it with `distill eval RUN`"
            )
        return norm

    def decide(self, scores: np.ndarray, norm: str = "none") -> np.ndarray:
        """Same speaker? at the run's validation EER threshold for scores of this ``norm``."""
        norm = self.resolve_norm(norm)
        point = (self.threshold or {}).get("asnorm") if norm == "asnorm" else self.threshold
        if not point:
            raise ConfigError(
                f"{self.source} has no recorded verification threshold for {norm} scores (a speaker "
                f"run's {VERIFICATION}, written by evaluation): write it with `distill eval RUN`"
            )
        return np.asarray(scores) >= point["threshold"]

    @functools.cached_property
    def embed_dim(self) -> int:
        shape = (1, *cell_shape(self.grid), self.n_mels)
        return int(self.backend(np.zeros(shape, np.float32))[0].shape[1])

    def __repr__(self) -> str:
        return (
            f"Model({self.source!r}, task={self.task}, {self.grid.setting}, {len(self.classes)} classes, "
            f"threshold={'yes' if self.threshold else 'no'})"
        )


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _read_cohort(folder: Path) -> np.ndarray | None:
    return np.load(folder / COHORT) if (folder / COHORT).is_file() else None


def as_items(items: Item | Sequence[Item], lengths: Sequence[int] | None = None) -> list[Item]:
    """Normalise embed/predict input to a list of single items."""
    if isinstance(items, (str, Path, Segment)):
        return [items]
    if isinstance(items, (np.ndarray, torch.Tensor)) and items.ndim == 1:
        return [items]
    if isinstance(items, (np.ndarray, torch.Tensor)) and items.ndim == 2:
        rows = list(items)
        if lengths is not None:
            if len(lengths) != len(rows):
                raise ValueError(f"{len(rows)} waveforms but {len(lengths)} lengths")
            rows = [row[: int(n)] for row, n in zip(rows, lengths)]
        return rows
    if lengths is not None:
        raise ValueError("lengths applies to a padded (B, n) waveform array only")
    return list(items)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(1, keepdims=True)


# ---------------------------------------------------------------------------- many files, some bad


@dataclass
class Failure:
    item_id: str
    reason: str

    def line(self) -> str:
        return f"{self.item_id}: {self.reason}"


def iter_fbanks(model: Model, sources: Iterable[tuple[str, Item]]) -> Iterator[tuple[str, np.ndarray | Failure]]:
    """(id, log-mels) per source, or (id, Failure) for one that cannot be decoded: one bad file never
    stops the others."""
    for item_id, item in sources:
        try:
            yield item_id, model.fbank(item)
        except ConfigError:
            raise
        except (DecodeError, OSError, ValueError, RuntimeError) as exc:
            yield item_id, Failure(item_id, f"{type(exc).__name__}: {exc}")


def run_items(
    model: Model,
    sources: Sequence[tuple[str, Item]],
    *,
    batch_size: int = 64,
    chunk: int = 64,
    progress: bool = False,
    desc: str = "embed",
) -> Iterator[tuple[list[str], np.ndarray, np.ndarray, list[Failure]]]:
    """Decode and run ``chunk`` sources at a time: yields (ids, emb, logits, failures) per chunk."""
    bar = tqdm(total=len(sources), desc=desc, unit="file", disable=not progress)
    try:
        for lo in range(0, len(sources), chunk):
            ids, fbanks, failures = [], [], []
            for item_id, fb in iter_fbanks(model, sources[lo : lo + chunk]):
                if isinstance(fb, Failure):
                    failures.append(fb)
                else:
                    ids.append(item_id)
                    fbanks.append(fb)
            if ids:
                emb, logits = model.forward_fbanks(fbanks, batch_size)
            else:
                emb, logits = np.zeros((0, 0), np.float32), np.zeros((0, 0), np.float32)
            bar.update(min(chunk, len(sources) - lo))
            yield ids, emb, logits, failures
    finally:
        bar.close()


def sources_from(files: Sequence[str] = (), manifest: str | None = None) -> list[tuple[str, Item]]:
    """(id, item) pairs from file arguments (id = the path as given) or a manifest (utt_id; start/end honoured)."""
    if manifest:
        df = read_manifest(manifest)
        starts = df["start"] if "start" in df.columns else [None] * len(df)
        ends = df["end"] if "end" in df.columns else [None] * len(df)
        return [
            (str(u), Segment(str(p), _opt(s), _opt(e))) for u, p, s, e in zip(df["utt_id"], df["path"], starts, ends)
        ]
    return [(str(f), str(f)) for f in files]


def _opt(value: Any) -> float | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else float(value)

"""Embeddings of many files written for use outside the toolkit: .npy / .csv, or a resumable .h5.

The audio path and the network are :class:`distill.serve.model.Model`'s. A ``.h5`` output is built
for whole test sets: files are embedded ``chunk`` at a time and each finished chunk is committed
as its own small file (written under a temporary name, fsynced, renamed) in ``OUT.parts/``; a run
killed at any moment keeps every committed chunk, and rerunning the same command skips the ids
already committed (and those already in an existing ``OUT``). When every chunk is in, the parts
and any previous ``OUT`` are merged into a new ``OUT`` (again temp + rename) and the parts removed.
Embeddings of another model (a different checkpoint hash) are never mixed into the same file.

``OUT.h5`` holds ``utt_id`` (N,), ``path`` (N,) and ``emb`` (N, D) float32, with attributes
``model`` (checkpoint sha256), ``source`` and ``emb_dim``.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from common.files import atomic_output
from distill.config import ConfigError
from distill.serve.model import Failure, Item, Model, Segment, run_items

H5_SUFFIXES = (".h5", ".hdf5")


def write_embeddings(emb: np.ndarray, ids: list[str], out: str | Path) -> Path:
    """Embeddings of a few files as ``.npy`` (N x D) or ``.csv`` (path + D columns)."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".npy":
        np.save(out, emb)
    elif out.suffix == ".csv":
        table = pd.DataFrame(emb, columns=[f"e{i}" for i in range(emb.shape[1])])
        table.insert(0, "path", list(ids))
        table.to_csv(out, index=False)
    else:
        raise ConfigError(f"--out {out}: use a .npy, .csv or .h5 file name")
    return out


@dataclass
class EmbedResult:
    out: Path
    embedded: int = 0  # new this time
    skipped: int = 0  # already stored (resumed)
    total: int = 0  # rows in OUT
    emb_dim: int = 0
    failures: list[Failure] = field(default_factory=list)


def read_h5(path: str | Path) -> tuple[list[str], np.ndarray]:
    """(utt_ids, embeddings) of an embeddings file."""
    with h5py.File(path, "r") as fh:
        return [u.decode() if isinstance(u, bytes) else str(u) for u in fh["utt_id"][()]], fh["emb"][()]


def embed_to_h5(
    model: Model,
    sources: list[tuple[str, Item]],
    out: str | Path,
    *,
    batch_size: int = 64,
    chunk: int = 256,
    progress: bool = True,
) -> EmbedResult:
    """Embed ``sources`` (id, item) into ``out`` (.h5), resumably; failures are reported, not fatal."""
    out = Path(out)
    if out.suffix not in H5_SUFFIXES:
        raise ConfigError(f"--out {out}: a resumable embedding file ends in .h5")
    if chunk < 1:
        raise ConfigError(f"--chunk must be >= 1, got {chunk}")
    parts = out.with_name(out.name + ".parts")
    stored = _stored_ids(model, out, parts)
    todo = list({u: item for u, item in sources if u not in stored}.items())  # an id given twice is embedded once
    result = EmbedResult(out, skipped=len({u for u, _ in sources} & stored))
    if todo:
        parts.mkdir(parents=True, exist_ok=True)
        (parts / "model.json").write_text(json.dumps({"model": model.identity, "source": model.source}))
        paths = dict(todo)
        start = len(list(parts.glob("part-*.npz")))
        for k, (ids, emb, _, failures) in enumerate(
            run_items(model, todo, batch_size=batch_size, chunk=chunk, progress=progress, desc="embed")
        ):
            result.failures += failures
            if ids:
                _commit_part(parts / f"part-{start + k:06d}.npz", ids, [_path_of(paths[u]) for u in ids], emb)
                result.embedded += len(ids)
    if parts.is_dir():
        _merge(model, out, parts)
    if out.is_file():
        with h5py.File(out, "r") as fh:
            result.total, result.emb_dim = int(fh["emb"].shape[0]), int(fh["emb"].shape[1])
    return result


def _path_of(item: Item) -> str:
    return item.path if isinstance(item, Segment) else str(item)


def _stored_ids(model: Model, out: Path, parts: Path) -> set[str]:
    ids: set[str] = set()
    if out.is_file():
        with h5py.File(out, "r") as fh:
            if fh.attrs.get("model") != model.identity:
                raise ConfigError(
                    f"{out} holds embeddings of another model ({fh.attrs.get('model', '?')[:12]}), "
                    f"not of {model.source} ({model.identity[:12]}); choose another --out"
                )
            ids.update(u.decode() for u in fh["utt_id"][()])
    if parts.is_dir():
        meta = parts / "model.json"
        if meta.is_file() and json.loads(meta.read_text())["model"] != model.identity:
            raise ConfigError(f"{parts} holds chunks of another model; remove it or choose another --out")
        for part in sorted(parts.glob("part-*.npz")):
            with np.load(part) as z:
                ids.update(z["utt_id"].tolist())
    return ids


def _commit_part(path: Path, ids: list[str], paths: list[str], emb: np.ndarray) -> None:
    with atomic_output(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, utt_id=np.array(ids, dtype=str), path=np.array(paths, dtype=str), emb=emb.astype(np.float32))


def _merge(model: Model, out: Path, parts: Path) -> None:
    ids, paths, embs = [], [], []
    if out.is_file():
        with h5py.File(out, "r") as fh:
            ids += [u.decode() for u in fh["utt_id"][()]]
            paths += [p.decode() for p in fh["path"][()]]
            embs.append(fh["emb"][()])
    for part in sorted(parts.glob("part-*.npz")):
        with np.load(part) as z:
            ids += z["utt_id"].tolist()
            paths += z["path"].tolist()
            embs.append(z["emb"])
    embs = [e for e in embs if len(e)]
    if ids:
        strings = h5py.string_dtype()
        with atomic_output(out) as tmp, h5py.File(tmp, "w") as fh:
            fh.create_dataset("utt_id", data=np.array(ids, dtype=object), dtype=strings)
            fh.create_dataset("path", data=np.array(paths, dtype=object), dtype=strings)
            fh.create_dataset("emb", data=np.concatenate(embs).astype(np.float32))
            fh.attrs.update(model=model.identity, source=model.source, emb_dim=int(embs[0].shape[1]))
    shutil.rmtree(parts)

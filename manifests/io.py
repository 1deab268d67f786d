"""Reading and writing manifest tables (CSV or parquet), with paths kept valid across the move."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from common.files import atomic_output

REQUIRED = ("utt_id", "path")
#: Identifier-like columns read as text, so CREMA-D actor ``1001`` or session ``01`` keep their spelling.
TEXT_COLUMNS = ("utt_id", "path", "speaker", "session", "emotion", "gender", "split", "crop")
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}


class ManifestError(ValueError):
    """A manifest that cannot be used as it is; the message names the file, the row and the reason."""


def check_manifest(df: pd.DataFrame, where: Path | str) -> None:
    """The contract every manifest meets: ``utt_id`` and ``path`` columns, unique utt_ids."""
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise ManifestError(
            f"manifest {where} lacks required column(s) {', '.join(missing)} "
            f"(it has: {', '.join(map(str, df.columns)) or 'none'}): add them (utt_id: a unique id per item; "
            "path: its media file, absolute or relative to the manifest's folder), or make the manifest with "
            "`python -m manifests`"
        )
    ids = df["utt_id"].astype(str)
    duplicated = ids[ids.duplicated()].unique()
    if len(duplicated):
        shown = ", ".join(repr(u) for u in duplicated[:5])
        raise ManifestError(
            f"manifest {where}: {len(duplicated)} duplicate utt_id(s), e.g. {shown}; utt_ids must be unique"
        )


def _format(path: Path) -> str:
    try:
        return FORMATS[path.suffix.lower()]
    except KeyError:
        raise ManifestError(f"{path}: manifest must end in {', '.join(FORMATS)}") from None


def write_manifest(df: pd.DataFrame, out: Path | str) -> Path:
    """Write ``df`` to ``out`` (.csv or .parquet); returns the path written.

    Media paths under the manifest's folder are written relative to it (so a corpus folder can be
    moved or copied as a unit); anything outside stays absolute. This follows the manifest
    contract: ``path`` is relative to the manifest's folder or absolute.
    """
    out = Path(out)
    fmt = _format(out)
    check_manifest(df, out)
    out.parent.mkdir(parents=True, exist_ok=True)
    base = out.parent.resolve()

    def rel(p: str) -> str:
        p = Path(p)
        if not p.is_absolute():
            return p.as_posix()
        try:
            return p.relative_to(base).as_posix()
        except ValueError:
            return str(p)

    df = df.assign(path=df["path"].astype(str).map(rel))
    with atomic_output(out) as tmp:
        if fmt == "csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
    return out


def read_manifest(path: Path | str, absolute: bool = True) -> pd.DataFrame:
    """Read a manifest; with ``absolute`` the ``path`` column is resolved against its folder."""
    path = Path(path)
    fmt = _format(path)
    if not path.is_file():
        raise ManifestError(f"manifest {path} does not exist")
    try:
        if fmt == "csv":
            head = pd.read_csv(path, nrows=0).columns
            df = pd.read_csv(
                path,
                dtype={c: str for c in TEXT_COLUMNS if c in head},
                keep_default_na=False,
                na_values={c: [""] for c in head if c not in TEXT_COLUMNS},
            )
        else:
            df = pd.read_parquet(path)
    except Exception as err:  # pandas/pyarrow raise many types; the user needs the file and the cause
        raise ManifestError(f"manifest {path} cannot be read as {fmt}: {err}") from None
    check_manifest(df, path)
    if absolute:
        base = path.parent.resolve()
        df["path"] = [p if os.path.isabs(p) else str(base / p) for p in df["path"].astype(str)]
    return df

"""Any folder of media: labels from a CSV, from a regular expression over the path, or both."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from manifests.recipes.base import NotADatasetError, RecipeResult, SkipLog, finish, register_recipe, require_dir

MEDIA_EXTENSIONS = (
    ".mp4",
    ".avi",
    ".mkv",
    ".mov",
    ".webm",
    ".flv",
    ".mpg",
    ".wav",
    ".flac",
    ".m4a",
    ".mp3",
    ".ogg",
    ".opus",
)


def _read_labels(path: Path) -> pd.DataFrame:
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "path" not in table.columns:
        raise ValueError(
            f"{path}: the labels CSV needs a 'path' column (media path relative to the root); got {list(table.columns)}"
        )
    table["path"] = table["path"].map(lambda p: Path(p).as_posix())
    dup = table["path"][table["path"].duplicated()]
    if len(dup):
        raise ValueError(f"{path}: path {dup.iloc[0]!r} is listed twice")
    return table.set_index("path")


@register_recipe("generic", default_split=None)
def generic(
    root: Path | str,
    labels: Path | str | None = None,
    pattern: str | None = None,
    extensions: tuple[str, ...] = MEDIA_EXTENSIONS,
) -> RecipeResult:
    """Every media file under ROOT; labels from ``labels`` (CSV) and/or ``pattern`` (regex).

    ``labels``: a CSV with a ``path`` column relative to ROOT plus any label columns (``speaker``,
    ``emotion``, ``utt_id``, ...). Files it does not list, and rows naming missing files, are
    reported. ``pattern``: a regular expression with named groups matched against the path
    relative to ROOT, e.g. ``(?P<speaker>[^/]+)/(?P<emotion>[a-z]+)_\\d+\\.wav``; groups become
    columns, files that do not match are reported. Without ``utt_id`` from either, the utterance
    id is the relative path without its extension.
    """
    root = require_dir("generic", root)
    regex = re.compile(pattern) if pattern else None
    if regex is not None and not regex.groupindex:
        raise ValueError(f"generic: pattern {pattern!r} has no named groups (?P<name>...) to take labels from")
    table = _read_labels(Path(labels)) if labels else None
    exts = {e.lower() for e in extensions}
    files = sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in exts
        and p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )
    if not files:
        raise NotADatasetError("generic", root, f"no media files ({', '.join(sorted(exts))}) under it")
    skipped, rows = SkipLog(), []
    for path in files:
        rel = path.relative_to(root).as_posix()
        row = {"utt_id": rel.rsplit(".", 1)[0], "path": str(path)}
        if regex is not None:
            m = regex.fullmatch(rel)
            if not m:
                skipped.add(path, f"path does not match pattern {pattern!r}")
                continue
            row.update({k: v for k, v in m.groupdict().items() if v is not None})
        if table is not None:
            if rel not in table.index:
                skipped.add(path, f"no row in {Path(labels).name}")
                continue
            row.update({k: v for k, v in table.loc[rel].items()})
        rows.append(row)
    if table is not None:
        listed = {p.relative_to(root).as_posix() for p in files}
        for rel in table.index.difference(sorted(listed)):
            skipped.add(root / rel, f"listed in {Path(labels).name} but not found")
    return finish("generic", root, rows, skipped)

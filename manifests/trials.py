"""Speaker verification trial lists: generating balanced ones and the VoxCeleb text format.

A trial is ``label enrol test`` with label 1 for a same-speaker (target) pair and 0 otherwise,
the format of VoxCeleb1's ``veri_test2.txt``. In a DataFrame the columns are ``label, enrol, test``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.files import atomic_write_text

TRIAL_COLUMNS = ["label", "enrol", "test"]


def _pair_from_index(p: np.ndarray, m: int) -> tuple[np.ndarray, np.ndarray]:
    """Decode linear indices into pairs (i < j) of ``m`` items, in row-major upper-triangle order.

    Lets us sample pairs uniformly without materialising all m(m-1)/2 of them.
    """
    p = np.asarray(p, dtype=np.int64)
    i = m - 2 - np.floor(np.sqrt(-8.0 * p + 4.0 * m * (m - 1) - 7) / 2.0 - 0.5).astype(np.int64)

    def row_start(r: np.ndarray) -> np.ndarray:
        return r * m - r * (r + 1) // 2

    # The float square root can land one row off for very large m; settle it exactly.
    i = np.where(p < row_start(i), i - 1, i)
    i = np.where(p >= row_start(i + 1), i + 1, i)
    j = p - row_start(i) + i + 1
    return i, j


def _all_pairs(utts: np.ndarray, spk: np.ndarray) -> pd.DataFrame:
    i, j = np.triu_indices(len(utts), k=1)
    return pd.DataFrame({"label": (spk[i] == spk[j]).astype(np.int64), "enrol": utts[i], "test": utts[j]})


def make_trials(
    df: pd.DataFrame, n_per_class: int | None = None, seed: int = 0, speaker: str = "speaker", utt: str = "utt_id"
) -> pd.DataFrame:
    """Verification trials over the utterances of ``df`` (usually its test split).

    ``n_per_class=None`` gives every unordered pair (unbalanced; quadratic in size, for small
    sets). An integer gives that many target and that many non-target pairs, sampled uniformly
    without replacement, capped at the number of target (or non-target) pairs that exist so the
    list stays balanced. Rows are sorted by (enrol, test); enrol precedes test in ``utt`` order.
    """
    for col in (speaker, utt):
        if col not in df.columns:
            raise ValueError(f"make_trials: manifest has no column {col!r}")
    if df[utt].duplicated().any():
        raise ValueError(f"make_trials: duplicate {utt} {df[utt][df[utt].duplicated()].iloc[0]!r}")
    table = df[[utt, speaker]].astype({utt: str}).sort_values(utt, kind="stable")
    utts = table[utt].to_numpy(dtype=object)
    spk = table[speaker].astype(str).to_numpy(dtype=object)
    if len(utts) < 2:
        raise ValueError(f"make_trials: need >= 2 utterances, got {len(utts)}")
    if n_per_class is None:
        return _all_pairs(utts, spk)
    if n_per_class < 1:
        raise ValueError(f"n_per_class must be >= 1 or None, got {n_per_class}")

    rng = np.random.default_rng(seed)
    # Targets: enumerate per speaker by count, sample linear indices, decode within each speaker.
    _, members, counts = np.unique(spk, return_inverse=True, return_counts=True)
    by_speaker = np.split(np.argsort(members, kind="stable"), np.cumsum(counts)[:-1])
    sizes = np.array([len(ix) * (len(ix) - 1) // 2 for ix in by_speaker], dtype=np.int64)
    n_target, n_all = int(sizes.sum()), len(utts) * (len(utts) - 1) // 2
    k = min(n_per_class, n_target, n_all - n_target)
    if k == 0:
        what = "no speaker has two utterances" if n_target == 0 else "there is only one speaker"
        raise ValueError(f"make_trials: cannot balance target/non-target pairs: {what}")
    picks = np.sort(rng.choice(n_target, size=k, replace=False))
    starts = np.concatenate([[0], np.cumsum(sizes)])
    owner = np.searchsorted(starts, picks, side="right") - 1
    ti, tj = np.empty(k, np.int64), np.empty(k, np.int64)
    for s in np.unique(owner):
        sel = owner == s
        a, b = _pair_from_index(picks[sel] - starts[s], len(by_speaker[s]))
        ti[sel], tj[sel] = by_speaker[s][a], by_speaker[s][b]

    # Non-targets: rejection-sample global pair indices (most pairs are non-target in practice).
    chosen: np.ndarray = np.empty(0, np.int64)
    while len(chosen) < k:
        draw = rng.choice(n_all, size=min(n_all, 2 * (k - len(chosen)) + 16), replace=False)
        i, j = _pair_from_index(draw, len(utts))
        chosen = np.unique(np.concatenate([chosen, draw[spk[i] != spk[j]]]))
    chosen = rng.choice(chosen, size=k, replace=False)
    ni, nj = _pair_from_index(chosen, len(utts))

    out = pd.DataFrame(
        {
            "label": np.r_[np.ones(k, np.int64), np.zeros(k, np.int64)],
            "enrol": utts[np.r_[ti, ni]],
            "test": utts[np.r_[tj, nj]],
        }
    )
    return out.sort_values(["enrol", "test"], kind="stable").reset_index(drop=True)


def read_trials(path: Path | str) -> pd.DataFrame:
    """Read a ``label enrol test`` file (VoxCeleb ``veri_test2.txt`` style); errors name the line."""
    path = Path(path)
    rows = []
    with path.open() as fh:
        for n, line in enumerate(fh, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) != 3 or fields[0] not in ("0", "1"):
                raise ValueError(f"{path}:{n}: expected 'label enrol test' with label 0 or 1, got {line.strip()!r}")
            rows.append((int(fields[0]), fields[1], fields[2]))
    return pd.DataFrame(rows, columns=TRIAL_COLUMNS).astype({"label": np.int64})


def write_trials(trials: pd.DataFrame, path: Path | str) -> Path:
    """Write trials as ``label enrol test`` lines; the inverse of :func:`read_trials`."""
    missing = [c for c in TRIAL_COLUMNS if c not in trials.columns]
    if missing:
        raise ValueError(f"write_trials: missing column(s) {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for col in ("enrol", "test"):
        bad = trials[col].astype(str).str.contains(r"\s", regex=True)
        if bad.any():
            raise ValueError(f"write_trials: {col} {trials[col][bad].iloc[0]!r} contains whitespace")
    lines = (
        trials["label"].astype(int).astype(str) + " " + trials["enrol"].astype(str) + " " + trials["test"].astype(str)
    )
    atomic_write_text(path, "".join(line + "\n" for line in lines))
    return path

"""Speaker verification with a trained model: cosine scores of pairs, decisions, EER/minDCF of trial lists.

Each distinct file of a trial list is decoded and embedded once (batched); a pair is scored by
the cosine of its two embeddings (``distill.eval.metrics.cosine_scores``, as evaluation scores) and
decided "same" at or above the run's validation EER threshold (``verification.json``). A run
evaluated before that file existed gets it on first use, computed from its cache as evaluation
does; without the cache there is a score but no decision.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from distill.config import ConfigError
from distill.eval import metrics as M
from distill.eval.calibration import write_verification
from distill.eval.run_eval import load_run
from distill.run import RunDir
from distill.serve.model import Failure, Item, Model, run_items, sources_from


def ensure_threshold(model: Model, run_dir: str | Path) -> dict | None:
    """The model's verification threshold, recording it in a speaker run (from its cache) when missing."""
    run = RunDir(run_dir)
    if model.threshold or model.task != "speaker" or not run.best.is_file():
        return model.threshold  # known, not a speaker model, or an export folder (it carries what the run had)

    try:
        loaded = load_run(run)
        model.threshold = write_verification(loaded.evaluator, loaded.data, loaded.dir)
        if model.threshold:
            model.cohort = np.load(run.cohort)
    except (OSError, ValueError, RuntimeError) as exc:  # the cache moved or is gone: scores, no decisions
        warnings.warn(
            f"{run_dir}: no verification threshold recorded and none computable ({exc}); scores without decisions",
            stacklevel=2,
        )
    return model.threshold


def trial_items(
    trials: pd.DataFrame,
    trials_path: str | Path,
    manifest: str | None = None,
    audio_roots: Sequence[str | Path] = (),
) -> dict[str, Item]:
    """Trial entries -> items: utt_ids of ``manifest``, else paths under ``audio_roots``.

    With a manifest an entry matches a utt_id as written or without its extension: the official
    VoxCeleb lists name ``id10270/5r0dWxy17C8/00001.wav``, the recipe's utt_id is that path without
    ``.wav``. Without one, a relative entry is looked up under each of ``audio_roots`` in turn (the
    first folder that holds it), by default the trial file's own folder. An entry that matches
    nothing is a configuration error naming it and what to give instead; a list whose files are
    partly missing is scored, each missing file a per-file failure.
    """
    names = list(dict.fromkeys([*trials["enrol"], *trials["test"]]))
    if manifest and audio_roots:
        raise ConfigError("--manifest and --audio-root both say where trial entries are: give one of them")
    if manifest:
        known = dict(sources_from(manifest=manifest))
        found: dict[str, Item] = {}
        missing = []
        for name in names:
            key = name if name in known else _without_extension(name)
            if key in known:
                found[name] = known[key]
            else:
                missing.append(name)
        if missing:
            first = missing[0]
            tried = f"{first!r}" + (f" or {_without_extension(first)!r}" if _without_extension(first) != first else "")
            raise ConfigError(
                f"trial list {trials_path} names {len(missing)} of {len(names)} entries that are no utt_id of "
                f"{manifest}, the first {tried}: give the manifest of the audio the list was made for "
                "(`python -m manifests voxceleb1 ROOT --out M` writes the official lists next to M), or "
                "drop --manifest and give --audio-root DIR, the folder the entries are paths in"
            )
        return found
    roots = [Path(r) for r in audio_roots] or [Path(trials_path).resolve().parent]
    items: dict[str, Item] = {}
    for name in names:
        candidates = [Path(name)] if Path(name).is_absolute() else [root / name for root in roots]
        items[name] = str(next((c for c in candidates if c.exists()), candidates[0]))
    if names and not any(Path(p).exists() for p in items.values()):
        where = "the trial file's folder" if not audio_roots else "--audio-root " + " ".join(map(str, roots))
        raise ConfigError(
            f"none of the {len(names)} files that trial list {trials_path} names exists under {where}; the "
            f"first, {names[0]!r}, would be {items[names[0]]}: give --audio-root DIR, the folder the entries "
            "are paths in (VoxCeleb1: its wav/ folder), or --manifest M whose utt_ids they are"
        )
    return items


def _without_extension(name: str) -> str:
    """``id10270/5r0dWxy17C8/00001.wav`` -> ``id10270/5r0dWxy17C8/00001``, as the recipes make utt_ids."""
    path = PurePosixPath(name)
    return str(path.with_suffix("")) if path.suffix else name


def score_pairs(
    model: Model,
    pairs: pd.DataFrame,
    items: dict[str, Item],
    *,
    norm: str = "auto",
    batch_size: int = 64,
    progress: bool = False,
) -> tuple[pd.DataFrame, list[Failure]]:
    """``pairs`` (enrol, test[, label]) with ``score`` (cosine, or AS-norm; then also ``cosine``) and
    ``decision`` (when that score's threshold is known) for every pair whose two files could be
    embedded; failures name the files that could not."""
    norm = model.resolve_norm(norm)
    unique = list(dict.fromkeys([*pairs["enrol"], *pairs["test"]]))
    emb: dict[str, np.ndarray] = {}
    failures: list[Failure] = []
    for ids, e, _, failed in run_items(
        model, [(u, items[u]) for u in unique], batch_size=batch_size, progress=progress, desc="verify"
    ):
        emb.update(zip(ids, e))
        failures += failed
    ok = pairs["enrol"].isin(emb.keys()) & pairs["test"].isin(emb.keys())
    scored = pairs[ok].reset_index(drop=True)
    if len(scored):
        enrol, test = np.stack([emb[u] for u in scored["enrol"]]), np.stack([emb[u] for u in scored["test"]])
        scores = model.score_embeddings(enrol, test, norm)
        if norm != "none":
            scored["cosine"] = M.cosine_scores(enrol, test)
    else:
        scores = np.zeros(0)
    scored["score"] = scores
    point = (model.threshold or {}).get("asnorm") if norm == "asnorm" else model.threshold
    if point:
        scored["decision"] = np.where(model.decide(scores, norm), "same", "different")
    return scored, failures


def trial_metrics(scored: pd.DataFrame) -> dict[str, float] | None:
    """EER / minDCF of a labelled scored list (and the accuracy of its decisions); None without
    both target and non-target trials."""
    if "label" not in scored or scored["label"].nunique() < 2:
        return None
    labels = scored["label"].to_numpy().astype(bool)
    out = M.verification_metrics(scored["score"].to_numpy(), labels)
    result = {"eer": out["eer"], "min_dcf": out["min_dcf"], "n_trials": len(labels)}
    if "decision" in scored:
        result["decision_accuracy"] = float(((scored["decision"] == "same").to_numpy() == labels).mean())
    return result

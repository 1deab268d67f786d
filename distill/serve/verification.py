"""Speaker verification with a trained model: cosine scores of pairs, decisions, EER/minDCF of trial lists.

Each distinct file of a trial list is decoded and embedded once (batched); a pair is scored by
the cosine of its two embeddings (``distill.eval.metrics.cosine_scores``, as evaluation scores) and
decided "same" at or above the run's validation EER threshold (``verification.json``). A run
evaluated before that file existed gets it on first use, computed from its cache as evaluation
does; without the cache there is a score but no decision.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

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


def trial_items(trials: pd.DataFrame, trials_path: str | Path, manifest: str | None = None) -> dict[str, Item]:
    """Trial entries -> items: utt_ids of ``manifest``, else paths relative to the trial file's folder."""
    names = list(dict.fromkeys([*trials["enrol"], *trials["test"]]))
    if manifest:
        known = dict(sources_from(manifest=manifest))
        missing = [n for n in names if n not in known]
        if missing:
            raise ValueError(
                f"trial list {trials_path} names {len(missing)} id(s) not in {manifest}, e.g. {missing[0]!r}"
            )
        return {n: known[n] for n in names}
    base = Path(trials_path).resolve().parent
    return {n: n if Path(n).is_absolute() else str(base / n) for n in names}


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

"""The test evaluation of a run and the files it leaves: ``metrics.json``, the verification
threshold and cohort of a speaker run, the plots.

One function for the three callers: the end of training (the trainer's best weights),
``distill eval`` (a finished run loaded by :func:`distill.run.load_run`) and so every run of a
sweep. It needs a network, the run's data and its directory, never a trainer.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import torch

from common.device import resolve_device
from distill.config import ConfigError, EvalConfig, RunConfig
from distill.data.dataset import GridDataset
from distill.eval import metrics as M
from distill.eval.calibration import TrainingCohorts, score_norm_metrics, write_verification
from distill.eval.evaluate import build_trials, classification, trials_record, verification
from distill.eval.predict import Evaluator, Predictions, eval_batch_size
from distill.models import DistillNetwork
from distill.precision import Precision
from distill.run import RunData, RunDir
from extract import open_cache


@dataclass
class RunEvaluation:
    """What evaluation wrote to ``metrics.json``, and the test predictions it was computed from."""

    metrics: dict
    test: Predictions
    extras: dict = field(default_factory=dict, repr=False)  # scores and trial labels of a speaker run


def evaluate_run(
    evaluator: Evaluator,
    data: RunData,
    run_dir: str | Path | RunDir,
    *,
    best_epoch: int,
    scoring: EvalConfig | None = None,
) -> RunEvaluation:
    """Test metrics of the evaluator's network (+ ``video_missing`` for a teacher) into
    ``metrics.json``, the verification threshold and cohort of a speaker run, and the plots;
    ``best_epoch`` is recorded. ``scoring``: the run's ``eval`` section (score normalisation of the
    test metrics, default none; ``plots: false`` draws no figures)."""
    run = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    scoring = scoring or EvalConfig()
    teacher = evaluator.net.role == "teacher"
    test = data.dataset("test", faces=teacher, train=False)
    pred = evaluator.predict(test)
    cohorts = TrainingCohorts(evaluator, data)  # shared by the AS-norm metrics and the verification threshold
    metrics, extras = test_metrics(pred, cohorts, data, scoring, run)
    if teacher:
        metrics["video_missing"], _ = test_metrics(
            evaluator.predict(test, video=False), cohorts, data, scoring, run, video=False
        )
    metrics["best_epoch"] = best_epoch
    if "trials" in extras:
        metrics["trials"] = extras["trials"]
    run.write_metrics(metrics)
    if data.config.task == "speaker":
        write_verification(evaluator, data, run, cohorts)
    write_plots(pred, extras, data, run, figures=scoring.plots)
    return RunEvaluation(metrics, pred, extras)


def test_metrics(
    pred: Predictions,
    cohorts: TrainingCohorts,
    data: RunData,
    scoring: EvalConfig,
    run: RunDir,
    video: bool = True,
) -> tuple[dict, dict]:
    """Classification metrics (unless no test item's class was trained on) and, for a speaker run,
    verification on the configured or built trials, also on normalised scores when ``scoring`` says so
    (the cohort from the same modality as ``pred``: ``video``); extras: the scores, trial labels and
    trials record."""
    cfg = data.config
    extras: dict = {}
    if cfg.task == "speaker" and not (pred.labels >= 0).any():
        # Open-set verification (e.g. train on VoxCeleb2, test on VoxCeleb1): no test speaker was a
        # training class, so identification is undefined; verification below is what is reported.
        metrics = {}
    else:
        metrics = classification(pred, cfg.task)
    if cfg.task == "speaker":
        try:
            trials = build_trials(data.cache.index, pred.utt_ids, cfg.label, cfg.trials)
            ver, scores, labels = verification(pred, trials, **cfg.costs)
        except ValueError as exc:  # e.g. one test utterance per speaker: no target trial exists
            # Losing a trained run to an impossible metric helps nobody: say so, keep the rest.
            warnings.warn(f"{run}: no verification metrics ({exc})", stacklevel=2)
            return metrics, extras
        metrics.update(ver)
        metrics.update(score_norm_metrics(cohorts, scoring, pred, trials, video))  # eval.score_norm
        extras.update(scores=scores, trial_labels=labels, trials=trials_record(trials, cfg.trials, len(pred.utt_ids)))
    return metrics, extras


def write_plots(pred: Predictions, extras: dict, data: RunData, run: RunDir, figures: bool = True) -> None:
    """The confusion matrix as CSV (a run without verification scores); with ``figures`` (``eval.plots``)
    also the training curves, DET (speaker) or confusion matrix, and the test embeddings as PNG."""
    known = pred.labels >= 0
    names = data.labels.names
    if "scores" not in extras:
        cm = M.confusion_matrix(pred.labels[known], pred.logits[known].argmax(1), n_classes=len(names))
        pd.DataFrame(cm, index=names, columns=names).to_csv(run.confusion_csv)
    if not figures:
        return
    from distill.eval import plots  # matplotlib: imported only by a run that draws

    plots.plot_training_curves(run.train_log, run.curves)
    if "scores" in extras:
        plots.plot_det_curve(extras["scores"], extras["trial_labels"], run.det)
    else:
        plots.plot_confusion_matrix(cm, names, run.confusion)
    # Coloured by the items' own labels, so test speakers unseen in training are shown too.
    plots.plot_embeddings(pred.emb, data.label_of(pred.utt_ids), run.embeddings)


def reevaluate(run_dir: str | Path, cache: str | None = None) -> dict:
    """``distill eval``: recompute metrics.json, verification and plots from a run's config and best checkpoint."""
    run = load_run(run_dir, cache)
    return evaluate_run(run.evaluator, run.data, run.dir, best_epoch=run.epoch, scoring=run.config.eval).metrics


@dataclass
class LoadedRun:
    """A finished run ready to evaluate: its directory, config, best network and data."""

    dir: RunDir
    config: RunConfig
    net: DistillNetwork
    data: RunData
    evaluator: Evaluator
    epoch: int  # of the best checkpoint

    @property
    def cache(self):
        return self.data.cache

    def predict(self, dataset: GridDataset, video: bool = True) -> Predictions:
        return self.evaluator.predict(dataset, video)


def load_run(run_dir: str | Path, cache: str | None = None, device: str | torch.device | None = None) -> LoadedRun:
    """A finished run's best network next to the data of its cache (or of ``cache``), for evaluation.

    No trainer, optimizer or teacher targets: an ``embed`` student is evaluated like any other.
    """
    run = RunDir(run_dir)
    cfg = run.config()
    if cache:
        cfg.cache = str(cache)
    if cfg.cache is None:
        raise ConfigError(f"{run} names no cache: give one (`distill eval RUN --cache DIR`)")
    device = resolve_device(cfg.train.device) if device is None else torch.device(device)
    data = RunData.load(cfg, open_cache(cfg.cache))
    trained = run.load_network(device)
    if trained.meta["labels"] != data.labels.names:
        raise ConfigError(
            f"{run} was trained on classes {trained.meta['labels']}; the training split of "
            f"{cfg.cache} has {data.labels.names}: its scores would not be comparable; evaluate on the cache "
            "it was trained on (--cache)"
        )
    precision = Precision.of(cfg.train.amp, device, cfg.train.amp_dtype)
    evaluator = Evaluator(trained.net, precision, eval_batch_size(cfg.data), cfg.data.num_workers)
    return LoadedRun(run, cfg, trained.net, data, evaluator, trained.epoch)

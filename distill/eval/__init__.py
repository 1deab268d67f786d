"""Evaluation: predictions over a split, the metrics (pure numpy), score normalisation and
calibration, the test evaluation of a run, statistics over seeds, results tables and plots."""

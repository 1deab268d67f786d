"""The trainer: audio-visual teachers, cached teacher targets, audio-only students.

Entry points: ``distill`` / ``python -m distill`` (distill.cli), ``distill.train.trainer.run_training``,
``distill.sweep.run_sweep``, ``distill.serve.model.Model``. See docs/method.md and docs/training.md.
"""

"""distill.methods: each method declared once (its terms, weights, what it reads of the teacher),
the objective summing exactly those terms, and a new method added through the table alone."""

from __future__ import annotations

import csv

import pytest
import torch
from inference_runs import trained_runs
from torch import nn

from distill.config import DistillConfig, load_config
from distill.methods import METHODS, TEACHER, Method, Term, option
from distill.models import NetOutput
from distill.run import RunDir, student_config
from distill.train.objective import TERMS, Objective, StepInputs
from distill.train.trainer import Trainer, run_training

ALPHA, TASK_WEIGHT, IMITATION = 0.3, 0.6, 0.4
#: What docs/method.md says of each method: its weighted terms and the teacher outputs it reads.
EXPECTED = {
    "none": ({"task": 1.0}, ()),
    "softlabel": ({"task": 1 - ALPHA, "kd": ALPHA}, ("logits",)),
    "gkd": ({"gkd": 1.0}, ("logits",)),
    "embed": ({"embed": 1.0, "task": TASK_WEIGHT}, ("enc", "agg")),
    "embed+softlabel": ({"embed": 1.0, "task": TASK_WEIGHT, "kd": ALPHA}, ("enc", "agg", "logits")),
}


def _outputs(seed: int = 0, batch: int = 6, width: int = 8, classes: int = 3):
    g = torch.Generator().manual_seed(seed)
    enc = torch.randn(batch, width, generator=g)
    out = NetOutput(enc=enc, agg=None, emb=enc, logits=torch.randn(batch, classes, generator=g))
    teacher = {"enc": torch.randn(batch, width, generator=g), "logits": 3 * torch.randn(batch, classes, generator=g)}
    return out, torch.arange(batch) % classes, teacher


def test_the_table_lists_every_method_once_in_report_order():
    assert list(METHODS) == ["none", "softlabel", "gkd", "embed", "embed+softlabel"]
    assert not METHODS["none"].needs_teacher and all(METHODS[m].needs_teacher for m in list(METHODS)[1:])
    with pytest.raises(ValueError, match="unknown teacher output"):
        Method("mind-reading", (Term("task"),), reads=("thoughts",))


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_method_sums_exactly_its_declared_terms(name):
    weights, reads = EXPECTED[name]
    cfg = DistillConfig(method=name, alpha=ALPHA, task_weight=TASK_WEIGHT, imitation=IMITATION)
    assert METHODS[name].weights(cfg) == weights and METHODS[name].reads == reads
    objective = Objective(cfg, "student", {"enc": 8}, {"enc": 8})
    out, labels, teacher = _outputs()
    terms = objective(out, labels, teacher)
    value = {
        "embed": sum(v for k, v in terms.items() if k.startswith(("embed_", "rel_", "nce_"))),
        **{k: terms[k] for k in ("task", "kd", "gkd") if k in terms},
    }
    assert set(weights) <= set(value) and "task" in terms  # the task loss is logged for every method
    expected = sum(w * value[k] for k, w in weights.items())
    assert float(terms["total"]) == pytest.approx(float(expected), rel=1e-6)
    assert objective.uses_teacher_logits == ("logits" in reads)


def test_a_teacher_trains_on_labels_and_face_reconstruction_only_when_weighted():
    assert TEACHER.term_names == ("task", "face_recon", "audio_aux") and not TEACHER.reads
    plain = Objective(DistillConfig(method="embed"), "teacher", {"enc": 8}, face_dim=16)
    assert plain.weights == {"task": 1.0} and not list(plain.parameters())  # the method is a student's option
    recon = Objective(DistillConfig(face_recon=2.5), "teacher", {"enc": 8}, face_dim=16)
    assert recon.weights == {"task": 1.0, "face_recon": 2.5}
    assert {"face_recon.decode.weight", "face_recon.decode.bias"} <= set(recon.state_dict())
    aux = Objective(DistillConfig(audio_aux=0.5), "teacher", {"enc": 8}, face_dim=16, audio_dim=8, n_classes=3)
    assert aux.weights == {"task": 1.0, "audio_aux": 0.5}
    assert {"audio_aux.head.weight", "audio_aux.head.bias"} <= set(aux.state_dict())


class LogitMatching(nn.Module):
    """A toy term: mean squared distance between the student's and the teacher's logits."""

    def __init__(self, _cfg, _shapes):
        super().__init__()

    def term(self, x: StepInputs):
        value = (x.soft.float() - x.teacher["logits"].float()).pow(2).mean()
        return value, {"logit_mse": value}


def test_a_new_method_is_one_table_entry_plus_its_loss(tmp_path_factory, monkeypatch):
    """Registered in the table and the loss registry only: config, objective, targets, trainer and
    log follow without another edit."""
    monkeypatch.setitem(TERMS, "logit_mse", LogitMatching)
    monkeypatch.setitem(
        METHODS, "logit_mse", Method("logit_mse", (Term("task"), Term("logit_mse", option("alpha"))), reads=("logits",))
    )
    runs = trained_runs(tmp_path_factory)  # the emotion teacher and its targets
    cfg = student_config(
        RunDir(runs.emotion).config(), "logit_mse", {"distill.alpha": 0.25, "train.epochs": 1}, teacher_dir=runs.emotion
    )
    trainer = Trainer(cfg, tmp_path_factory.mktemp("toy") / "s", progress=False)
    assert trainer.teacher.store.fields == ("logits",)  # it opens only what the method reads
    assert trainer.objective.weights == {"task": 1.0, "logit_mse": 0.25}
    metrics = run_training(cfg, trainer.run.path, progress=False)
    assert 0.0 <= metrics["uar"] <= 1.0
    with open(trainer.run.train_log) as fh:
        row = next(csv.DictReader(fh))
    assert float(row["train_total"]) == pytest.approx(
        float(row["train_task"]) + 0.25 * float(row["train_logit_mse"]), rel=1e-4
    )
    with pytest.raises(Exception, match="'telepathy' is not one of"):
        load_config(overrides={"distill.method": "telepathy"})

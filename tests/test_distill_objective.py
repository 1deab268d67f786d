"""The soft-label terms see the student's margin-free logits, whatever the header."""

from __future__ import annotations

import pytest
import torch

from distill.config import DistillConfig
from distill.models import ModelConfig, build_network
from distill.train.losses import generalized_distillation, hinton_kd
from distill.train.objective import Objective, StepModule

N_CLASSES, N_MELS = 4, 20


def step_for(header: str, method: str) -> StepModule:
    torch.manual_seed(0)
    net = build_network(
        ModelConfig(audio_encoder="xvector", emb_dim=16, header=header),
        role="student",
        setting="nonseq",
        n_mels=N_MELS,
        n_classes=N_CLASSES,
    )
    objective = Objective(
        DistillConfig(method=method, temperature=2.0, imitation=0.3), "student", net.level_dims, net.level_dims
    )
    return StepModule(net, objective).eval()  # eval: no dropout, so two calls agree


def batch_and_teacher():
    g = torch.Generator().manual_seed(1)
    batch = {"fbank": torch.randn(6, 60, N_MELS, generator=g), "label": torch.arange(6) % N_CLASSES}
    teacher = {"logits": torch.randn(6, N_CLASSES, generator=g) * 3}
    return batch, teacher


def test_softlabel_with_aam_imitates_on_label_free_logits():
    step = step_for("aam", "softlabel")
    batch, teacher = batch_and_teacher()
    with torch.no_grad():
        terms = step(batch, teacher)
        plain = step.net(batch["fbank"]).logits  # no labels: no margin
        margin = step.net(batch["fbank"], labels=batch["label"]).logits
    # CPU convolutions are not bit-reproducible across calls (~1e-4 in cosine, x30 by the AAM scale);
    # the margin (0.2 rad) moves the loss far more than that.
    assert terms["kd"] == pytest.approx(hinton_kd(plain, teacher["logits"], 2.0).item(), rel=5e-3)
    assert terms["kd"] != pytest.approx(hinton_kd(margin, teacher["logits"], 2.0).item(), rel=5e-2)


def test_gkd_with_linear_header_is_lopez_paz_formula():
    step = step_for("linear", "gkd")
    batch, teacher = batch_and_teacher()
    with torch.no_grad():
        terms = step(batch, teacher)
        logits = step.net(batch["fbank"]).logits
    expected = generalized_distillation(logits, teacher["logits"], batch["label"], 2.0, 0.3)
    assert terms["total"] == pytest.approx(expected.item(), rel=5e-3)


def test_gkd_with_aam_keeps_margin_for_labels_only():
    step = step_for("aam", "gkd")
    batch, teacher = batch_and_teacher()
    with torch.no_grad():
        terms = step(batch, teacher)
        plain = step.net(batch["fbank"]).logits
        margin = step.net(batch["fbank"], labels=batch["label"]).logits
    label_part = torch.nn.functional.cross_entropy(margin, batch["label"])
    imitation = generalized_distillation(plain, teacher["logits"], batch["label"], 2.0, 1.0)
    assert terms["total"] == pytest.approx((0.7 * label_part + 0.3 * imitation).item(), rel=5e-3)
    assert terms["total"] != pytest.approx(
        generalized_distillation(margin, teacher["logits"], batch["label"], 2.0, 0.3).item(), rel=2e-2
    )

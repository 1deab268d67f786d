"""distill.train.losses against hand-computed values and known limits."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from distill.models.distances import DISTANCES
from distill.train.losses import (
    EmbeddingDistillLoss,
    FaceReconstructionLoss,
    generalized_distillation,
    hinton_kd,
    task_loss,
)

torch.set_num_threads(1)

S = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
T = torch.tensor([[0.0, 2.0], [3.0, 0.0]])
# Differences 1, 0, 0, 4 (elementwise); cosines 2/sqrt(5) and 9/15.
HAND = {
    "mse": (1 + 0 + 0 + 16) / 4,
    "l1": (1 + 0 + 0 + 4) / 4,
    "smooth_l1": (0.5 + 0 + 0 + 3.5) / 4,  # |d| >= 1 → |d| - 0.5
    "cosine": ((1 - 2 / math.sqrt(5)) + (1 - 0.6)) / 2,
}


@pytest.mark.parametrize("name", list(DISTANCES))
def test_distance_matches_hand_computation(name):
    assert set(DISTANCES) == set(HAND)
    assert DISTANCES[name](S, T).item() == pytest.approx(HAND[name], rel=1e-6)
    assert DISTANCES[name](S, S).item() == pytest.approx(0.0, abs=1e-6)
    # Segment axis: a mean over (B, S) pairs, same value when the batch is split into segments.
    assert DISTANCES[name](S.view(1, 2, 2), T.view(1, 2, 2)).item() == pytest.approx(HAND[name], rel=1e-6)
    with pytest.raises(ValueError, match="differ in shape"):
        DISTANCES[name](S, T[:1])


def test_projection_only_where_widths_differ_and_teacher_gets_no_gradient():
    loss = EmbeddingDistillLoss({"enc": (8, 12), "agg": (6, 6)}, distance="mse", weights={"enc": 0.5, "agg": 2.0})
    assert set(loss.projections) == {"enc"} and loss.projections["enc"].in_features == 8
    student = {"enc": torch.randn(4, 3, 8, requires_grad=True), "agg": torch.randn(4, 6, requires_grad=True)}
    teacher = {"enc": torch.randn(4, 3, 12, requires_grad=True), "agg": torch.randn(4, 6, requires_grad=True)}
    terms = loss(student, teacher)
    assert set(terms) == {"embed_enc", "embed_agg", "total"}
    proj = loss.projections["enc"]
    torch.testing.assert_close(terms["embed_enc"], 0.5 * F.mse_loss(proj(student["enc"]), teacher["enc"]))
    torch.testing.assert_close(terms["embed_agg"], 2.0 * F.mse_loss(student["agg"], teacher["agg"]))
    torch.testing.assert_close(terms["total"], terms["embed_enc"] + terms["embed_agg"])
    terms["total"].backward()
    assert proj.weight.grad is not None and student["enc"].grad.abs().sum() > 0
    assert teacher["enc"].grad is None and teacher["agg"].grad is None


def test_embedding_loss_rejects_mismatched_inputs():
    loss = EmbeddingDistillLoss({"enc": (4, 4)})
    with pytest.raises(KeyError, match="teacher embeddings lack level 'enc'"):
        loss({"enc": torch.randn(2, 4)}, {"agg": torch.randn(2, 4)})
    with pytest.raises(ValueError, match="student level 'enc' has width 5, expected 4"):
        loss({"enc": torch.randn(2, 5)}, {"enc": torch.randn(2, 4)})
    with pytest.raises(ValueError, match="unknown level"):
        EmbeddingDistillLoss({"enc": (4, 4)}, weights={"agg": 1.0})
    with pytest.raises(KeyError, match="unknown distance 'l2'"):
        EmbeddingDistillLoss({"enc": (4, 4)}, distance="l2")


def test_hinton_kd_hand_computed_with_t_squared():
    s, t = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])
    # T = 1: p_t = (3/4, 1/4) against uniform.
    expected = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    assert hinton_kd(s, t, 1.0).item() == pytest.approx(expected, rel=1e-6)
    # T = 2: p_t = softmax(log(3)/2, 0) = (sqrt3, 1)/(1 + sqrt3), times T² = 4.
    p = math.sqrt(3) / (1 + math.sqrt(3))
    expected_t2 = 4 * (p * math.log(p / 0.5) + (1 - p) * math.log((1 - p) / 0.5))
    assert hinton_kd(s, t, 2.0).item() == pytest.approx(expected_t2, rel=1e-6)


def test_hinton_kd_limits():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    for temp in (0.5, 1.0, 4.0):
        assert hinton_kd(s, s, temp).item() == pytest.approx(0.0, abs=1e-6)
    # Large T: T²·KL → mean over the batch of Σ δ² / (2C), δ the centred logit difference (logit matching).
    delta = (t - t.mean(-1, keepdim=True)) - (s - s.mean(-1, keepdim=True))
    matching = (delta**2).sum(-1).mean() / (2 * 7)
    assert hinton_kd(s, t, 200.0).item() == pytest.approx(matching.item(), rel=2e-2)
    t.requires_grad_(True)
    s.requires_grad_(True)
    hinton_kd(s, t, 2.0).backward()
    assert t.grad is None and s.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="temperature"):
        hinton_kd(s, t, 0.0)


def test_generalized_distillation_hand_computed_and_limits():
    s = torch.tensor([[math.log(3.0), 0.0]])  # untempered student softmax: (3/4, 1/4)
    t = torch.zeros(1, 2)  # teacher softmax at any T: (1/2, 1/2)
    y = torch.tensor([1])
    hard = -math.log(0.25)
    soft = -(0.5 * math.log(0.75) + 0.5 * math.log(0.25))
    assert generalized_distillation(s, t, y, 3.0, 0.25).item() == pytest.approx(0.75 * hard + 0.25 * soft, rel=1e-6)
    # λ = 0 is the plain task loss; λ = 1 ignores the labels.
    assert generalized_distillation(s, t, y, 3.0, 0.0).item() == pytest.approx(task_loss(s, y).item(), rel=1e-6)
    assert generalized_distillation(s, t, y, 3.0, 1.0).item() == pytest.approx(
        generalized_distillation(s, t, torch.tensor([0]), 3.0, 1.0).item(), rel=1e-6
    )
    # The student is not tempered: identical logits at T = 1 leave the teacher's entropy, not zero.
    z = torch.tensor([[2.0, 0.0, -1.0]])
    p = F.softmax(z, -1)
    entropy = -(p * p.log()).sum().item()
    assert generalized_distillation(z, z, torch.tensor([0]), 1.0, 1.0).item() == pytest.approx(entropy, rel=1e-6)
    with pytest.raises(ValueError, match="imitation"):
        generalized_distillation(s, t, y, 1.0, 1.5)


def _identity_recon(dim: int) -> FaceReconstructionLoss:
    loss = FaceReconstructionLoss(dim, dim)
    with torch.no_grad():
        loss.decode.weight.copy_(torch.eye(dim))
        loss.decode.bias.zero_()
    return loss


def test_face_reconstruction_reads_only_found_faces():
    loss = _identity_recon(3)
    face = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 50.0]]])  # the last frame: no face found
    mask = torch.tensor([[True, True, False]])
    at_mean = torch.tensor([[0.5, 0.5, 0.0]])
    assert loss(at_mean, face, mask).item() == pytest.approx(0.0, abs=1e-6)
    # an embedding at the unfound frame is far off: |(0,0,1) - (.5,.5,0)|^2 / |(.5,.5,0)|^2 = 1.5 / 0.5
    assert loss(torch.tensor([[0.0, 0.0, 1.0]]), face, mask).item() == pytest.approx(3.0, abs=1e-6)
    # relative: the same miss on faces ten times larger costs the same
    assert loss(torch.tensor([[0.0, 0.0, 10.0]]), 10 * face, mask).item() == pytest.approx(3.0, abs=1e-5)


def test_face_reconstruction_skips_crops_without_faces_and_keeps_the_graph():
    loss = _identity_recon(2)
    face = torch.tensor([[[1.0, 0.0]], [[0.0, 1.0]]])
    mask = torch.tensor([[True], [False]])
    enc = torch.tensor([[1.0, 1.0], [5.0, -3.0]], requires_grad=True)
    # only crop 0 counts: |(1,1) - (1,0)|^2 / |(1,0)|^2 = 1
    assert loss(enc, face, mask).item() == pytest.approx(1.0, abs=1e-6)
    none_found = loss(enc, face, torch.zeros_like(mask))
    none_found.backward()
    assert none_found.item() == 0.0 and enc.grad is not None and not enc.grad.any()
    # the decoder is still in the graph (DDP needs every parameter in every rank's backward)
    assert loss.decode.weight.grad is not None and not loss.decode.weight.grad.any()


def test_face_reconstruction_per_segment_and_shape_errors():
    loss = FaceReconstructionLoss(4, 6)
    enc, face = torch.randn(2, 3, 4), torch.randn(2, 3, 5, 6)
    mask = torch.rand(2, 3, 5) > 0.3
    value = loss(enc, face, mask)
    present = mask.any(-1)
    w = mask.unsqueeze(-1).float()
    target = (face * w).sum(-2) / w.sum(-2).clamp(min=1)
    error = (loss.decode(enc)[present] - target[present]).pow(2).sum(-1) / target[present].pow(2).sum(-1)
    expected = error.mean()
    assert value.item() == pytest.approx(expected.item(), abs=1e-6)
    with pytest.raises(ValueError, match="leading axes"):
        loss(torch.randn(2, 4), face, mask)


def test_similarity_preserving_hand_computed_and_width_free():
    from distill.train.losses import similarity_preserving

    student = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal: S_s = I
    teacher = torch.tensor([[2.0, 0.0], [1.0, 0.0]])  # parallel: S_t = all ones
    assert similarity_preserving(student, teacher).item() == pytest.approx(2 / 4)  # two off-diagonal 1s, / N²
    wide = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]])  # another width, same relations
    assert similarity_preserving(wide, teacher).item() == pytest.approx(0.5)
    assert similarity_preserving(teacher, 5 * teacher).item() == pytest.approx(0.0, abs=1e-7)  # scale-free
    seq = torch.randn(2, 3, 4)  # (B, S, D): all 6 segments are related to each other
    assert similarity_preserving(seq, seq).item() == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same batch"):
        similarity_preserving(student, teacher[:1])


def test_info_nce_hand_computed():
    from distill.train.losses import info_nce

    s = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # logits = I / τ; each row's CE = log(1 + e^{-1/τ})
    assert info_nce(s, 3 * s, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert info_nce(s, s, temperature=0.5).item() == pytest.approx(math.log(1 + math.exp(-2)))
    swapped = s.flip(0)  # each student now matches the other item's teacher best
    assert info_nce(s, swapped, temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(1)))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(s, s, temperature=0.0)


def test_embedding_loss_adds_relational_and_contrastive_terms_by_weight():
    torch.manual_seed(0)
    student, teacher = {"enc": torch.randn(4, 3, requires_grad=True)}, {"enc": torch.randn(4, 5)}
    loss = EmbeddingDistillLoss(
        {"enc": (3, 5)},
        distance="cosine",
        weights={"enc": 2.0},
        relational=0.5,
        contrastive=0.25,
        contrastive_temperature=0.2,
    )
    terms = loss(student, teacher)
    from distill.train.losses import info_nce, similarity_preserving

    projected = loss.projections["enc"](student["enc"])
    assert terms["rel_enc"].item() == pytest.approx(
        2.0 * 0.5 * similarity_preserving(student["enc"], teacher["enc"]).item()
    )
    assert terms["nce_enc"].item() == pytest.approx(2.0 * 0.25 * info_nce(projected, teacher["enc"], 0.2).item())
    assert terms["total"].item() == pytest.approx(sum(v.item() for k, v in terms.items() if k != "total"))
    alone = EmbeddingDistillLoss({"enc": (3, 5)}, pointwise=0.0, relational=1.0)
    assert set(alone(student, teacher)) == {"rel_enc", "total"} and not list(alone.parameters())
    with pytest.raises(ValueError, match="all 0"):
        EmbeddingDistillLoss({"enc": (3, 5)}, pointwise=0.0)

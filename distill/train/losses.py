"""Training losses: task cross-entropy, embedding distillation (the method), the soft-label
baselines (Hinton KD; Lopez-Paz generalized distillation), and the teacher's optional face
reconstruction term.

Conventions (stated once, used everywhere; see docs/models.md):

* Teacher inputs are targets: they are detached, so a live teacher is never trained by a student loss.
* Distances are means over every leading axis (batch, and segments in the sequential setting), and
  mse / l1 / smooth_l1 also over the embedding width, so their scale does not grow with the width.
* Losses are computed in float32, whatever precision the network ran in (AMP-safe).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distill.models.distances import DISTANCES


class EmbeddingDistillLoss(nn.Module):
    """The method: pull the student's embeddings toward the teacher's, level by level.

    ``levels`` maps a level name ("enc", and "agg" in the sequential setting) to
    ``(student_dim, teacher_dim)``. Where the widths differ, a learned ``nn.Linear`` maps the
    student into the teacher's space (the teacher's targets are fixed, so they are not
    projected); where they match there is no projection, so the student is matched directly.
    The projections are parameters of this module: give them to the optimizer.
    """

    def __init__(
        self,
        levels: Mapping[str, tuple[int, int]],
        distance: str = "mse",
        weights: Mapping[str, float] | None = None,
        relational: float = 0.0,
        contrastive: float = 0.0,
        pointwise: float = 1.0,
        contrastive_temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if not levels:
            raise ValueError("EmbeddingDistillLoss needs at least one level")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(levels))
        if unknown:
            raise ValueError(f"weights given for unknown level(s) {unknown}; levels are {sorted(levels)}")
        self.levels = {name: (int(s), int(t)) for name, (s, t) in levels.items()}
        self.weights = {name: float(weights.get(name, 1.0)) for name in self.levels}
        self.distance_name = distance
        self.distance = DISTANCES[distance]
        self.relational, self.contrastive, self.temperature = (
            float(relational),
            float(contrastive),
            contrastive_temperature,
        )
        self.pointwise = float(pointwise)
        if not (self.pointwise or self.relational or self.contrastive):
            raise ValueError("EmbeddingDistillLoss: pointwise, relational and contrastive weights are all 0")
        # the relational term needs no projection; without the others it would get no gradient (DDP)
        projected = self.pointwise or self.contrastive
        self.projections = nn.ModuleDict(
            {name: nn.Linear(s, t) for name, (s, t) in self.levels.items() if s != t and projected}
        )

    def forward(
        self, student: Mapping[str, Tensor], teacher: Mapping[str, Tensor], masks: Mapping[str, Tensor] | None = None
    ) -> dict[str, Tensor]:
        """Return ``{"embed_<level>": weighted term, ..., "total": their sum}``.

        With ``relational`` / ``contrastive`` weights, ``rel_<level>`` / ``nce_<level>`` terms are
        added per level (scaled by the level's weight too, so a level at weight 0 is off entirely);
        ``pointwise`` scales the distance term (0 drops it: relational or contrastive alone).
        ``masks`` maps a level to a bool mask over its leading axes (e.g. the (B, S) segment mask of
        whole-utterance seq): only the rows it marks enter any term, so the distance is a mean over
        valid segments and padding is neither a target nor a negative.
        """
        terms: dict[str, Tensor] = {}
        for name, (s_dim, t_dim) in self.levels.items():
            for who, given, dim in (("student", student, s_dim), ("teacher", teacher, t_dim)):
                if name not in given:
                    raise KeyError(f"{who} embeddings lack level {name!r} (have {sorted(given)})")
                if given[name].shape[-1] != dim:
                    raise ValueError(f"{who} level {name!r} has width {given[name].shape[-1]}, expected {dim}")
            s, t = student[name], teacher[name]
            mask = (masks or {}).get(name)
            if mask is not None:
                if mask.shape != s.shape[:-1] or mask.shape != t.shape[:-1] or mask.dtype != torch.bool:
                    raise ValueError(
                        f"level {name!r}: mask {mask.dtype} {tuple(mask.shape)} does not cover the "
                        f"leading axes of student {tuple(s.shape)} and teacher {tuple(t.shape)}"
                    )
                s, t = s[mask], t[mask]
            if self.relational:
                terms[f"rel_{name}"] = self.weights[name] * self.relational * similarity_preserving(s, t)
            if name in self.projections:
                s = self.projections[name](s)
            if self.pointwise:
                terms[f"embed_{name}"] = self.weights[name] * self.pointwise * self.distance(s, t)
            if self.contrastive:
                terms[f"nce_{name}"] = self.weights[name] * self.contrastive * info_nce(s, t, self.temperature)
        terms["total"] = torch.stack(list(terms.values())).sum()
        return terms

    def extra_repr(self) -> str:
        return f"distance={self.distance_name!r}, levels={self.levels}, weights={self.weights}"


def _rows(x: Tensor) -> Tensor:
    """(..., D) -> (N, D): every leading axis (batch, segments) is one set of items to relate."""
    return x.reshape(-1, x.shape[-1]).float()


def similarity_preserving(student: Tensor, teacher: Tensor) -> Tensor:
    """Relational distillation (Tung & Mori 2019, similarity-preserving KD): match the batch's
    pairwise cosine-similarity matrices, ``‖S_s − S_t‖²_F / N²``.

    Only how items relate to each other is imitated, not where they lie, so the student's
    embedding may have any width and needs no projection: what the faces say about which
    utterances go together is passed on without asking the audio to reproduce the face itself.
    """
    s, t = _rows(student), _rows(teacher).detach()
    if len(s) != len(t):
        raise ValueError(f"student has {len(s)} items and teacher {len(t)}: relations need the same batch")
    s, t = F.normalize(s, dim=-1, eps=1e-8), F.normalize(t, dim=-1, eps=1e-8)
    return (s @ s.T - t @ t.T).pow(2).sum() / len(s) ** 2


def info_nce(student: Tensor, teacher: Tensor, temperature: float = 0.1) -> Tensor:
    """Contrastive embedding distillation (InfoNCE, as in CRD, Tian et al. 2020, with in-batch
    negatives): each student embedding must pick its own teacher embedding among the batch's,
    ``CE(cos(s_i, t_j) / τ, j = i)``. Widths must match (the caller projects)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s, t = _rows(student), _rows(teacher).detach()
    if s.shape != t.shape:
        raise ValueError(f"student {tuple(s.shape)} and teacher {tuple(t.shape)} differ: project the student first")
    logits = F.normalize(s, dim=-1, eps=1e-8) @ F.normalize(t, dim=-1, eps=1e-8).T / temperature
    return F.cross_entropy(logits, torch.arange(len(s), device=s.device))


class FaceReconstructionLoss(nn.Module):
    """Teacher-side: its fused embedding must still say what the faces showed.

    A cross-entropy teacher collapses each class to a point (neural collapse), so its embeddings
    end up a class code that tells a student little beyond the label. This term asks a linear map
    of the teacher's encoder embedding (per crop, or per segment) to reconstruct the mean
    embedding of the faces found in that crop/segment, so what the faces hold within a class
    (and against a wrong label) stays in the targets. The error is relative,
    ``‖W·e + b − f̄‖² / ‖f̄‖²`` per crop, so a weight means the same for unit-norm FaceNet
    embeddings as for unnormalised ones; unlike a cosine it also keeps the faces' norm.
    Crops/segments without a found face are left out; a batch without any gives a zero term.
    """

    def __init__(self, emb_dim: int, face_dim: int) -> None:
        super().__init__()
        self.decode = nn.Linear(emb_dim, face_dim)

    def forward(self, enc: Tensor, face: Tensor, face_mask: Tensor) -> Tensor:
        """``enc`` (..., D); ``face`` (..., F, face_dim) and ``face_mask`` (..., F) on the same leading axes."""
        if face.shape[:-1] != face_mask.shape or enc.shape[:-1] != face.shape[:-2]:
            raise ValueError(
                f"embedding {tuple(enc.shape)}, faces {tuple(face.shape)} and mask "
                f"{tuple(face_mask.shape)} do not share their leading axes"
            )
        present = face_mask.any(-1)
        if not present.any():
            # zero, but through the decoder: under DDP every parameter must be in every rank's graph
            return self.decode(enc.float()).sum() * 0.0
        weight = face_mask.unsqueeze(-1).float()
        mean_face = (face.float() * weight).sum(-2) / weight.sum(-2).clamp(min=1.0)
        target = mean_face[present]
        error = (self.decode(enc.float())[present] - target).pow(2).sum(-1)
        return (error / target.pow(2).sum(-1).clamp(min=1e-8)).mean()


def task_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy with the ground-truth labels (with an AAM header, the logits already carry the margin)."""
    return F.cross_entropy(logits.float(), labels)


def labelled_task_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """:func:`task_loss` over the items that have a label (label >= 0); an item without one (-1: the
    transfer set, distill.data.transfer) adds nothing. The mean is over the labelled items, so the task
    term keeps its weight next to the label-free terms whatever a batch's mix; with none it is 0, still
    attached to the logits (every parameter keeps a gradient, as DistributedDataParallel expects)."""
    known = labels >= 0
    per_item = F.cross_entropy(logits.float(), labels.clamp(min=0), reduction="none")
    return (per_item * known).sum() / known.sum().clamp(min=1)


def _check_logits(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> None:
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} differ"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")


def hinton_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """Hinton et al. 2015 soft-label distillation: ``T² · KL(softmax(t/T) ‖ softmax(s/T))``, batch mean.

    Both sides are tempered. The ``T²`` factor keeps the gradient scale independent of ``T``, so
    ``alpha · hinton_kd + (1 - alpha) · task_loss`` weighs the two terms as ``alpha`` says.
    """
    _check_logits(student_logits, teacher_logits, temperature)
    log_p_s = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return F.kl_div(log_p_s, log_p_t, reduction="batchmean", log_target=True) * temperature**2


def generalized_distillation(
    student_logits: Tensor, teacher_logits: Tensor, labels: Tensor, temperature: float, imitation: float
) -> Tensor:
    """Lopez-Paz et al. 2016 (the LUPI baseline): ``(1-λ)·CE(y, σ(s)) + λ·CE(σ(t/T), σ(s))``.

    Only the teacher is tempered; the student's softmax is not (as in the paper), and there is
    no ``T²`` factor. The soft term is a cross-entropy, so at ``λ = 1`` with identical logits it
    equals the teacher's entropy, not zero.
    """
    _check_logits(student_logits, teacher_logits, temperature)
    if not 0.0 <= imitation <= 1.0:
        raise ValueError(f"imitation λ must lie in [0, 1], got {imitation}")
    s = student_logits.float()
    soft_targets = F.softmax(teacher_logits.detach().float() / temperature, dim=-1)
    return (1.0 - imitation) * F.cross_entropy(s, labels) + imitation * F.cross_entropy(s, soft_targets)

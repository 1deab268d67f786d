"""The loss of one training step: the weighted sum of a method's named terms.

Which terms a method has, their weights and what each reads of the teacher are declared once in
:mod:`distill.methods`; this module holds the loss of each term name (:data:`TERMS`) and sums
them. Kept apart from the loop (distill.train.trainer) because this is where the methods differ; the
loop is the same for a teacher and for every student.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from distill.config import DistillConfig
from distill.methods import TEACHER, Method, get_method
from distill.models import DistillNetwork, NetOutput
from distill.precision import full_precision
from distill.train.losses import (
    EmbeddingDistillLoss,
    FaceReconstructionLoss,
    generalized_distillation,
    hinton_kd,
    task_loss,
)


@dataclass(frozen=True)
class Shapes:
    """What sizes a term's parameters: the student's (and teacher's) widths per level, the face width,
    and for a teacher's audio-branch classifier that branch's width and the number of classes."""

    student: dict[str, int]
    teacher: dict[str, int] | None = None
    face_dim: int | None = None
    audio_dim: int | None = None
    n_classes: int | None = None


@dataclass
class StepInputs:
    """What a term may read: the student's outputs and labels, the teacher's targets, the faces."""

    out: NetOutput
    labels: torch.Tensor
    teacher: dict[str, torch.Tensor]
    task: torch.Tensor  # the ground-truth loss on out.logits (computed once, always logged)
    soft: torch.Tensor  # the student's logits for soft-label terms: margin-free when the header adds one
    face: torch.Tensor | None = None
    face_mask: torch.Tensor | None = None
    seg_mask: torch.Tensor | None = None  # (B, S) valid segments of whole-utterance seq: padding enters no term


#: A term's value (what its weight multiplies; None: not applicable to this batch) and what it logs.
TermResult = tuple[torch.Tensor | None, dict[str, torch.Tensor]]


class TaskTerm(nn.Module):
    """Cross-entropy on the ground-truth labels (with the header's margin, if any); logged as ``task``
    by the objective for every method, whether or not it is one of the method's terms."""

    def __init__(self, _cfg: DistillConfig, _shapes: Shapes):
        super().__init__()

    def term(self, x: StepInputs) -> TermResult:
        return x.task, {}


class SoftLabelTerm(nn.Module):
    """Hinton KD: tempered KL between the teacher's and the student's margin-free logits."""

    def __init__(self, cfg: DistillConfig, _shapes: Shapes):
        super().__init__()
        self.temperature = cfg.temperature

    def term(self, x: StepInputs) -> TermResult:
        kd = hinton_kd(x.soft.float(), x.teacher["logits"].float(), self.temperature)
        return kd, {"kd": kd}


class GeneralizedDistillationTerm(nn.Module):
    """Lopez-Paz et al.: (1-λ)·CE(y, s) + λ·CE(σ(t/T), σ(s)), the label part on the margin logits as
    the task loss is, the imitation part on the margin-free ones; logged whole as ``gkd``."""

    def __init__(self, cfg: DistillConfig, _shapes: Shapes):
        super().__init__()
        self.temperature, self.imitation = cfg.temperature, cfg.imitation

    def term(self, x: StepInputs) -> TermResult:
        imitate = generalized_distillation(x.soft, x.teacher["logits"], x.labels, self.temperature, imitation=1.0)
        gkd = (1.0 - self.imitation) * x.task + self.imitation * imitate
        return gkd, {"gkd": gkd}


class EmbeddingTerm(EmbeddingDistillLoss):
    """Distance (and the optional relational / contrastive terms) to the teacher's embeddings at
    every level both networks have, through a learned projection where widths differ; logs its
    per-level parts (``embed_enc``, ``rel_agg``, ``nce_enc``, ...)."""

    def __init__(self, cfg: DistillConfig, shapes: Shapes):
        teacher = shapes.teacher or {}
        levels = {k: (shapes.student[k], teacher[k]) for k in shapes.student if k in teacher}
        weights = {"enc": cfg.weight_enc, "agg": cfg.weight_agg}
        super().__init__(
            levels=levels,
            distance=cfg.distance,
            weights={k: weights[k] for k in levels},
            pointwise=cfg.pointwise,
            relational=cfg.relational,
            contrastive=cfg.contrastive,
            contrastive_temperature=cfg.contrastive_temperature,
        )

    def term(self, x: StepInputs) -> TermResult:
        student = {k: v.float() for k, v in x.out.levels().items() if k in x.teacher}
        masks = {"enc": x.seg_mask} if x.seg_mask is not None else None
        parts = self(student, {k: x.teacher[k].float() for k in student}, masks)
        return parts["total"], {k: v for k, v in parts.items() if k != "total"}


class FaceReconTerm(FaceReconstructionLoss):
    """Teacher only: a linear map of the encoder embedding reconstructs the crop's mean face
    (relative squared error), so the teacher's targets keep what the faces show."""

    def __init__(self, _cfg: DistillConfig, shapes: Shapes):
        if shapes.face_dim is None:
            raise ValueError("distill.face_recon > 0 needs the teacher's face_dim")
        super().__init__(shapes.student["enc"], shapes.face_dim)

    def term(self, x: StepInputs) -> TermResult:
        if x.face is None:
            return None, {}
        value = self(x.out.enc, x.face, x.face_mask)
        return value, {"face_recon": value}


class AudioAuxTerm(nn.Module):
    """Teacher only: a classifier on the audio branch's embedding before fusion (per crop, or per
    valid segment with its item's label), so the branch learns the task from the audio alone as
    well as through the fusion: a modality-specific head (docs/method.md, ``distill.audio_aux``)."""

    def __init__(self, _cfg: DistillConfig, shapes: Shapes):
        super().__init__()
        if shapes.audio_dim is None or shapes.n_classes is None:
            raise ValueError("distill.audio_aux > 0 needs the teacher's audio_dim and n_classes")
        self.head = nn.Linear(shapes.audio_dim, shapes.n_classes)

    def term(self, x: StepInputs) -> TermResult:
        value = audio_aux_loss(self.head, x.out.audio, x.labels, x.seg_mask)
        return value, {"audio_aux": value}


def audio_aux_loss(
    head: nn.Module, audio: torch.Tensor | None, labels: torch.Tensor, seg_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Cross-entropy of ``head`` on audio-branch embeddings: nonseq (B, D); seq (B, S, D), every
    segment with its item's label, the padded segments of ``seg_mask`` left out."""
    if audio is None:
        raise ValueError("distill.audio_aux needs a teacher network (its NetOutput carries no audio-branch embedding)")
    per_row = labels.view(-1, *([1] * (audio.dim() - 2))).expand(audio.shape[:-1])
    if seg_mask is not None:
        return task_loss(head(audio[seg_mask].float()), per_row[seg_mask])
    return task_loss(head(audio.float()).flatten(0, -2), per_row.flatten())


#: The loss of every term name a method may list (distill.methods). A term is an ``nn.Module``
#: built from the ``distill`` config and the networks' widths, with ``term(StepInputs)`` giving
#: its value and what it logs; it is registered on the objective under its name, so its
#: parameters (a projection, a decoder) are checkpointed as ``<name>.*``.
TERMS: dict[str, Callable[[DistillConfig, Shapes], nn.Module]] = {
    "task": TaskTerm,
    "kd": SoftLabelTerm,
    "gkd": GeneralizedDistillationTerm,
    "embed": EmbeddingTerm,
    "face_recon": FaceReconTerm,
    "audio_aux": AudioAuxTerm,
}


class Objective(nn.Module):
    """The loss of one batch, as named terms (each logged) plus their weighted ``total``.

    The terms and weights are the method's (:data:`distill.methods.METHODS`; a teacher's are
    :data:`distill.methods.TEACHER`): ``total = Σ weight · term`` in the table's order. A term
    whose weight is zero and that the table marks ``optional`` (the teacher's ``face_recon``) is
    not built at all. ``face_dim`` sizes the face reconstruction term, ``audio_dim`` and
    ``n_classes`` the teacher's audio-branch classifier (``distill.audio_aux``).
    """

    def __init__(
        self,
        distill: DistillConfig,
        role: str,
        student_dims: dict[str, int],
        teacher_dims: dict[str, int] | None = None,
        face_dim: int | None = None,
        audio_dim: int | None = None,
        n_classes: int | None = None,
    ):
        super().__init__()
        self.cfg = distill
        self.method: Method = TEACHER if role == "teacher" else get_method(distill.method)
        shapes = Shapes(
            dict(student_dims), dict(teacher_dims) if teacher_dims is not None else None, face_dim, audio_dim, n_classes
        )
        self.weights: dict[str, float] = {}
        for t in self.method.terms:
            weight = t.weight(distill)
            if t.optional and not weight:
                continue
            if t.name not in TERMS:
                raise ValueError(f"method {self.method.name}: no loss for term {t.name!r} in objective.TERMS")
            self.weights[t.name] = weight
            self.add_module(t.name, TERMS[t.name](distill, shapes))

    @property
    def detach_emb(self) -> bool:
        """distill-only: the header learns from labels, the encoder only from the teacher."""
        return self.method.reads_embeddings and self.cfg.encoder_grad == "distill-only"

    @property
    def uses_teacher_logits(self) -> bool:
        return self.method.reads_logits

    def forward(
        self,
        out: NetOutput,
        labels: torch.Tensor,
        teacher: dict[str, torch.Tensor],
        soft_logits: torch.Tensor | None = None,
        face: torch.Tensor | None = None,
        face_mask: torch.Tensor | None = None,
        seg_mask: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """``soft_logits``: the student's label-free logits for the soft-label terms, when the header
        adds a training margin to ``out.logits`` (AAM); the teacher's cached logits are margin-free,
        so imitating them with margin-shifted student logits would compare unlike things.
        ``face``/``face_mask``: the batch's faces, read by the teacher's face reconstruction term.
        ``seg_mask`` (B, S): the valid segments of whole-utterance seq; padded ones enter no term
        (their faces are all masked, so the face reconstruction term skips them as well).

        The terms run with autocast off (their inputs cast to float32), so a loss is float32 even
        when the network ran under bf16/fp16 autocast."""
        soft = out.logits if soft_logits is None else soft_logits
        with full_precision(out.logits.device):  # every term in float32, also inside a step's autocast
            task = task_loss(out.logits, labels)
            x = StepInputs(out, labels, teacher, task, soft, face, face_mask, seg_mask)
            terms = {"task": task}
            total = None
            for name, weight in self.weights.items():
                value, logged = self.get_submodule(name).term(x)
                terms.update(logged)
                if value is not None:
                    total = weight * value if total is None else total + weight * value
        terms["total"] = total
        return terms


class StepModule(nn.Module):
    """Network + objective as one module, so DDP syncs the projection's gradients as well."""

    def __init__(self, net: DistillNetwork, objective: Objective):
        super().__init__()
        self.net, self.objective = net, objective

    def forward(self, batch: dict[str, torch.Tensor], teacher: dict[str, torch.Tensor]):
        detach = self.objective.detach_emb
        seg_mask = batch.get("seg_mask")
        out = self.net(
            batch["fbank"],
            face=batch.get("face"),
            face_mask=batch.get("face_mask"),
            labels=batch["label"],
            detach_emb=detach,
            seg_mask=seg_mask,
        )
        soft = None
        if self.objective.uses_teacher_logits and self.net.head.uses_labels:
            soft = self.net.head(out.emb.detach() if detach else out.emb)
        return self.objective(
            out,
            batch["label"],
            teacher,
            soft_logits=soft,
            face=batch.get("face"),
            face_mask=batch.get("face_mask"),
            seg_mask=seg_mask,
        )

"""The loss of one training step, per method: which terms, their weights, what each imitates.

Kept apart from the loop (distill.train) because this is where the methods differ; the loop is
the same for a teacher and for every student.
"""
from __future__ import annotations

import torch
from torch import nn

from distill.config import DistillConfig
from distill.losses import (EmbeddingDistillLoss, FaceReconstructionLoss, generalized_distillation, hinton_kd,
                             task_loss)
from distill.models import DistillNetwork, NetOutput


class Objective(nn.Module):
    """The loss of one batch, as named terms (each logged) plus their weighted ``total``.

    Methods: ``none`` (labels), ``embed`` (labels + embedding distance to the teacher's encoder
    [and aggregated] embeddings, through a learned projection when widths differ), ``softlabel``
    (Hinton KD), ``gkd`` (Lopez-Paz generalized distillation), ``embed+softlabel``. A teacher
    uses the labels, plus, with ``distill.face_recon > 0``, a term keeping its encoder
    embeddings able to reconstruct the faces it saw (``face_dim`` sizes that term).
    """

    def __init__(self, distill: DistillConfig, role: str, student_dims: dict[str, int],
                 teacher_dims: dict[str, int] | None = None, face_dim: int | None = None):
        super().__init__()
        self.cfg = distill
        self.method = "none" if role == "teacher" else distill.method
        self.face_recon = None
        if role == "teacher" and distill.face_recon > 0:
            if face_dim is None:
                raise ValueError("distill.face_recon > 0 needs the teacher's face_dim")
            self.face_recon = FaceReconstructionLoss(student_dims["enc"], face_dim)
        self.embed = None
        if self.method in ("embed", "embed+softlabel"):
            levels = {k: (student_dims[k], teacher_dims[k]) for k in student_dims if k in (teacher_dims or {})}
            weights = {"enc": distill.weight_enc, "agg": distill.weight_agg}
            self.embed = EmbeddingDistillLoss(levels=levels, distance=distill.distance,
                                              weights={k: weights[k] for k in levels},
                                              pointwise=distill.pointwise, relational=distill.relational,
                                              contrastive=distill.contrastive,
                                              contrastive_temperature=distill.contrastive_temperature)

    @property
    def detach_emb(self) -> bool:
        """distill-only: the header learns from labels, the encoder only from the teacher."""
        return self.embed is not None and self.cfg.encoder_grad == "distill-only"

    @property
    def uses_teacher_logits(self) -> bool:
        return self.method in ("softlabel", "embed+softlabel", "gkd")

    def forward(self, out: NetOutput, labels: torch.Tensor, teacher: dict[str, torch.Tensor],
                soft_logits: torch.Tensor | None = None, face: torch.Tensor | None = None,
                face_mask: torch.Tensor | None = None, seg_mask: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``soft_logits``: the student's label-free logits for the soft-label terms, when the header
        adds a training margin to ``out.logits`` (AAM); the teacher's cached logits are margin-free,
        so imitating them with margin-shifted student logits would compare unlike things.
        ``face``/``face_mask``: the batch's faces, read by the teacher's face reconstruction term.
        ``seg_mask`` (B, S): the valid segments of whole-utterance seq; padded ones enter no term
        (their faces are all masked, so the face reconstruction term skips them as well)."""
        cfg = self.cfg
        task = task_loss(out.logits, labels)
        soft = out.logits if soft_logits is None else soft_logits
        terms = {"task": task}
        if self.method == "none":
            terms["total"] = task
            if self.face_recon is not None and face is not None:
                terms["face_recon"] = self.face_recon(out.enc, face, face_mask)
                terms["total"] = task + cfg.face_recon * terms["face_recon"]
            return terms
        total = task.new_zeros(())
        if self.embed is not None:
            student = {k: v.float() for k, v in out.levels().items() if k in teacher}
            masks = {"enc": seg_mask} if seg_mask is not None else None
            emb_terms = self.embed(student, {k: teacher[k].float() for k in student}, masks)
            terms.update({k: v for k, v in emb_terms.items() if k != "total"})
            total = total + emb_terms["total"] + cfg.task_weight * task
        if self.method in ("softlabel", "embed+softlabel"):
            kd = hinton_kd(soft.float(), teacher["logits"].float(), cfg.temperature)
            terms["kd"] = kd
            task_part = 0.0 if self.embed is not None else (1 - cfg.alpha) * task  # embed already adds it
            total = total + task_part + cfg.alpha * kd
        if self.method == "gkd":
            # (1-λ)·CE(y, s) + λ·CE(σ(t/T), σ(s)), the label term on the margin logits as the task loss is
            imitate = generalized_distillation(soft, teacher["logits"], labels, cfg.temperature, imitation=1.0)
            total = terms["gkd"] = (1.0 - cfg.imitation) * task + cfg.imitation * imitate
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
        out = self.net(batch["fbank"], face=batch.get("face"), face_mask=batch.get("face_mask"),
                       labels=batch["label"], detach_emb=detach, seg_mask=seg_mask)
        soft = None
        if self.objective.uses_teacher_logits and self.net.head.uses_labels:
            soft = self.net.head(out.emb.detach() if detach else out.emb)
        return self.objective(out, batch["label"], teacher, soft_logits=soft, face=batch.get("face"),
                              face_mask=batch.get("face_mask"), seg_mask=seg_mask)

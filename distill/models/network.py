"""Teacher and student networks assembled from the registries, with one output type for both.

    teacher: (audio encoder ⊕ visual encoder → fusion) per crop/segment [→ aggregator] → header
    student:  audio encoder                            per crop/segment [→ aggregator] → header

In the sequential setting the segment axis is folded into the batch for the encoder, so one
encoder call covers all segments, then unfolded for the aggregator.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn

from distill.models.aggregation import AGGREGATORS
from distill.models.audio import AUDIO_ENCODERS
from distill.models.config import ModelConfig
from distill.models.fusion import FUSIONS
from distill.models.heads import HEADS
from distill.models.normalize import FbankNorm, NormalizedAudio
from distill.models.visual import VISUAL_ENCODERS

Role = Literal["teacher", "student"]
Setting = Literal["nonseq", "seq"]  # one crop per item, or segments + an aggregator
ROLES: tuple[str, ...] = get_args(Role)
SETTINGS: tuple[str, ...] = get_args(Setting)


@dataclass
class NetOutput:
    """What every network returns. ``emb`` is what the header sees and what verification scores."""

    enc: Tensor  # nonseq (B, D); seq (B, S, D) per-segment encoder embeddings
    agg: Tensor | None  # seq (B, D_agg); nonseq None
    emb: Tensor  # = enc (nonseq) or agg (seq)
    logits: Tensor  # (B, C); an AAM header adds its margin only when labels were given
    audio: Tensor | None = None  # teacher only: its audio branch's embedding before fusion, shaped like enc

    def levels(self) -> dict[str, Tensor]:
        """The distillable embeddings by level name, as ``EmbeddingDistillLoss`` and the target cache key them."""
        return {"enc": self.enc} if self.agg is None else {"enc": self.enc, "agg": self.agg}


class AudioVisualEncoder(nn.Module):
    """The teacher's per-crop encoder: audio and face embeddings fused into one vector.

    ``face=None`` (or an all-False mask) is "video missing": the visual branch then yields its
    learned "no face" embedding, so the teacher still runs, on audio alone.
    """

    def __init__(self, audio: nn.Module, visual: nn.Module, fusion: nn.Module) -> None:
        super().__init__()
        self.audio, self.visual, self.fusion = audio, visual, fusion
        self.out_dim = fusion.out_dim

    def forward(self, fbank: Tensor, face: Tensor | None = None, face_mask: Tensor | None = None) -> Tensor:
        return self.branches(fbank, face, face_mask)[1]

    def branches(
        self, fbank: Tensor, face: Tensor | None = None, face_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(audio, fused)``: the audio branch's embedding before fusion (what ``distill.target: audio``
        imitates) and the fused one."""
        if face is None:
            face = fbank.new_zeros(fbank.shape[0], 1, self.visual.face_dim)
            face_mask = torch.zeros(fbank.shape[0], 1, dtype=torch.bool, device=fbank.device)
        elif face_mask is None:
            face_mask = torch.ones(face.shape[:2], dtype=torch.bool, device=face.device)
        if face.shape[0] != fbank.shape[0]:
            raise ValueError(f"face batch {face.shape[0]} does not match fbank batch {fbank.shape[0]}")
        audio = self.audio(fbank)
        return audio, self.fusion(audio, self.visual(face, face_mask))


class DistillNetwork(nn.Module):
    """Encoder [+ aggregator] + header, for one role and one setting.

    Attributes the trainer sizes things by: ``encoder_dim``, ``agg_dim`` (None for nonseq),
    ``emb_dim``, ``level_dims`` ({"enc": ..., "agg": ...}), ``role``, ``setting``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        head: nn.Module,
        aggregator: nn.Module | None = None,
        *,
        role: str,
        n_mels: int,
        face_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")
        if role == "student" and face_dropout:
            raise ValueError("face_dropout only applies to a teacher; a student never sees faces")
        self.encoder, self.aggregator, self.head = encoder, aggregator, head
        self.role, self.n_mels, self.face_dropout = role, n_mels, face_dropout
        self.setting = "nonseq" if aggregator is None else "seq"
        self.encoder_dim: int = encoder.out_dim
        self.agg_dim: int | None = None if aggregator is None else aggregator.out_dim
        self.emb_dim: int = self.encoder_dim if aggregator is None else aggregator.out_dim
        self.n_classes: int = head.n_classes

    @property
    def level_dims(self) -> dict[str, int]:
        return {"enc": self.encoder_dim} if self.agg_dim is None else {"enc": self.encoder_dim, "agg": self.agg_dim}

    def _fold_faces(
        self, face: Tensor | None, face_mask: Tensor | None, fbank: Tensor, lead: int, seg_mask: Tensor | None = None
    ) -> tuple[Tensor | None, Tensor | None]:
        """Check faces against fbank, apply face dropout, fold segments into the batch (only the
        valid ones when a ``seg_mask`` is given)."""
        if face is None:
            return None, None
        if face.shape[:lead] != fbank.shape[:lead]:
            raise ValueError(f"face {tuple(face.shape)} does not match fbank {tuple(fbank.shape)} in its leading dims")
        if face_mask is None:
            face_mask = torch.ones(face.shape[:-1], dtype=torch.bool, device=face.device)
        if self.face_dropout >= 1.0:
            # Never sees a face, in evaluation either: the audio-only teacher of the control. Its
            # visual branch never trained on faces, so showing it some at test time would feed
            # the fusion untrained features.
            face_mask = torch.zeros_like(face_mask)
        elif self.training and self.face_dropout > 0:
            hidden = torch.rand(fbank.shape[0], device=fbank.device) < self.face_dropout
            face_mask = face_mask & ~hidden.view(-1, *([1] * (face_mask.dim() - 1)))
        return self._fold(face, lead, seg_mask), self._fold(face_mask, lead, seg_mask)

    @staticmethod
    def _fold(x: Tensor, lead: int, seg_mask: Tensor | None) -> Tensor:
        """Segments into the batch axis, (B, S, ...) -> (B·S or valid segments, ...); nonseq as it is."""
        return x[seg_mask] if seg_mask is not None else x.flatten(0, lead - 1)

    @staticmethod
    def _unfold(x: Tensor, fbank: Tensor, lead: int, seg_mask: Tensor | None) -> Tensor:
        """Per-segment rows back to (B, S, D); segments left out by ``seg_mask`` are zeros."""
        if seg_mask is None:
            return x.unflatten(0, fbank.shape[:lead])
        return x.new_zeros((*seg_mask.shape, x.shape[-1])).masked_scatter(seg_mask.unsqueeze(-1), x)

    def forward(
        self,
        fbank: Tensor,
        face: Tensor | None = None,
        face_mask: Tensor | None = None,
        labels: Tensor | None = None,
        detach_emb: bool = False,
        seg_mask: Tensor | None = None,
    ) -> NetOutput:
        """Shapes: nonseq fbank (B, T, M), face (B, F, 512), face_mask (B, F);
        seq fbank (B, S, T, M), face (B, S, F, 512), face_mask (B, S, F), seg_mask (B, S).

        A student ignores ``face``/``face_mask`` (one batch dict fits both roles).
        ``detach_emb`` stops the task loss's gradient at the embedding (``--encoder-grad distill-only``).
        ``seg_mask`` (seq only; utterances of different lengths padded to one S): only the valid
        segments are encoded (padding never reaches the encoder's BatchNorm statistics, and costs
        nothing), the padded rows of ``enc`` are zero, and the aggregator ignores them.
        """
        lead = 1 if self.setting == "nonseq" else 2
        if fbank.dim() != lead + 2 or fbank.shape[-1] != self.n_mels:
            want = "(B, T, n_mels)" if lead == 1 else "(B, S, T, n_mels)"
            raise ValueError(
                f"{self.setting} {self.role} expects fbank {want} with n_mels={self.n_mels}, got {tuple(fbank.shape)}"
            )
        if labels is not None and labels.shape != fbank.shape[:1]:
            raise ValueError(f"labels must have shape ({fbank.shape[0]},), got {tuple(labels.shape)}")

        audio = None
        if seg_mask is not None and (
            self.aggregator is None or seg_mask.shape != fbank.shape[:2] or seg_mask.dtype != torch.bool
        ):
            raise ValueError(
                f"seg_mask must be a bool (B, S) = {tuple(fbank.shape[:2])} mask of a seq network, got "
                f"{seg_mask.dtype} {tuple(seg_mask.shape)} for {self.setting}"
            )
        segments = self._fold(fbank, lead, seg_mask)
        if self.role == "student":
            enc = self.encoder(segments)
        else:
            face, face_mask = self._fold_faces(face, face_mask, fbank, lead, seg_mask)
            audio, enc = self.encoder.branches(segments, face, face_mask)

        if self.aggregator is None:
            agg, emb = None, enc
        else:
            enc, audio = (None if x is None else self._unfold(x, fbank, lead, seg_mask) for x in (enc, audio))
            agg = emb = self.aggregator(enc, seg_mask)
        logits = self.head(emb.detach() if detach_emb else emb, labels)
        return NetOutput(enc=enc, agg=agg, emb=emb, logits=logits, audio=audio)


def build_network(
    cfg: ModelConfig, *, role: str, setting: str, n_mels: int, n_classes: int, face_dim: int = 512
) -> DistillNetwork:
    """Assemble a teacher (audio + faces) or student (audio only) for the nonseq or seq setting."""
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; choose one of {ROLES}")
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; choose one of {SETTINGS}")
    audio = NormalizedAudio(
        FbankNorm(n_mels, cfg.fbank_norm), AUDIO_ENCODERS[cfg.audio_encoder].from_config(cfg, n_mels=n_mels)
    )
    if role == "teacher":
        visual = VISUAL_ENCODERS[cfg.visual_encoder].from_config(cfg, face_dim=face_dim)
        fusion = FUSIONS[cfg.fusion].from_config(cfg, audio_dim=audio.out_dim, visual_dim=visual.out_dim)
        encoder: nn.Module = AudioVisualEncoder(audio, visual, fusion)
    else:
        encoder = audio
    aggregator = None
    if setting == "seq":
        aggregator = AGGREGATORS[cfg.aggregator].from_config(cfg, in_dim=encoder.out_dim)
    emb_dim = encoder.out_dim if aggregator is None else aggregator.out_dim
    head = HEADS[cfg.header].from_config(cfg, in_dim=emb_dim, n_classes=n_classes)
    face_dropout = cfg.face_dropout if role == "teacher" else 0.0
    return DistillNetwork(encoder, head, aggregator, role=role, n_mels=n_mels, face_dropout=face_dropout)

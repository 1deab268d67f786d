"""What each way of training a student is, declared once: its loss terms, their weights, and what
of the teacher it reads.

Every other module asks this table instead of testing method names: the config checks a method
against it, the trainer opens only the target fields a method reads, the objective builds and
sums exactly its terms (:mod:`distill.objective` holds the loss of each term name), the CLI and
the sweep take their choices from it and the report its row order.

A method's loss is a weighted sum of named terms, in the order listed (torchdistill's style:
``total = Σ weight_i · term_i``). A weight is read from the run's ``distill`` config section when
the loss is built, so ``distill.alpha`` or ``distill.task_weight`` reach the sum without code.

Adding a method: one :class:`Method` entry in :data:`METHODS`, plus, if it needs a loss term no
method has yet, that term in :data:`distill.train.objective.TERMS`. Nothing else names methods.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: Teacher outputs a student can read, as the targets file stores them: the encoder embedding
#: (per segment in seq), the aggregated embedding (seq only; absent in nonseq) and the logits.
EMBEDDING_LEVELS = ("enc", "agg")
TEACHER_OUTPUTS = (*EMBEDDING_LEVELS, "logits")

#: A term's weight, computed from the run's ``DistillConfig`` when the objective is built.
Weight = Callable[[Any], float]


def const(value: float) -> Weight:
    """A fixed weight."""
    return lambda _cfg: value


def option(name: str) -> Weight:
    """The weight is ``distill.<name>``."""
    return lambda cfg: getattr(cfg, name)


def one_minus(name: str) -> Weight:
    """The weight is ``1 - distill.<name>`` (the other side of a convex mix)."""
    return lambda cfg: 1 - getattr(cfg, name)


@dataclass(frozen=True)
class Term:
    """One named loss term and its weight in the total. ``name`` keys :data:`distill.train.objective.TERMS`."""

    name: str
    weight: Weight = const(1.0)
    optional: bool = False  # a zero weight drops the term (and its parameters) instead of adding 0 · term


@dataclass(frozen=True)
class Method:
    """A way to train a student: the weighted terms of its loss and the teacher outputs it reads."""

    name: str
    terms: tuple[Term, ...]
    reads: tuple[str, ...] = ()  # of TEACHER_OUTPUTS; empty: no teacher needed
    summary: str = ""

    def __post_init__(self):
        unknown = sorted(set(self.reads) - set(TEACHER_OUTPUTS))
        if unknown:
            raise ValueError(f"method {self.name}: unknown teacher output(s) {unknown}; known: {TEACHER_OUTPUTS}")

    @property
    def needs_teacher(self) -> bool:
        return bool(self.reads)

    @property
    def reads_embeddings(self) -> bool:
        return any(level in self.reads for level in EMBEDDING_LEVELS)

    @property
    def reads_logits(self) -> bool:
        return "logits" in self.reads

    @property
    def term_names(self) -> tuple[str, ...]:
        return tuple(t.name for t in self.terms)

    def weights(self, cfg) -> dict[str, float]:
        """Term name -> weight under the ``distill`` config section ``cfg``, in summing order."""
        return {t.name: t.weight(cfg) for t in self.terms}


#: The methods, in the order results tables list them: the baseline, the LUPI baselines, the method.
METHODS: dict[str, Method] = {
    m.name: m
    for m in (
        Method("none", (Term("task"),), summary="ground-truth labels only: the audio-only baseline"),
        Method(
            "softlabel",
            (Term("task", one_minus("alpha")), Term("kd", option("alpha"))),
            reads=("logits",),
            summary="Hinton soft-label KD on the teacher's logits",
        ),
        Method(
            "gkd",
            (Term("gkd"),),
            reads=("logits",),
            summary="Lopez-Paz generalized distillation (its loss holds the label term, weighted by 1 - imitation)",
        ),
        Method(
            "embed",
            (Term("embed"), Term("task", option("task_weight"))),
            reads=EMBEDDING_LEVELS,
            summary="imitate the teacher's embeddings at every level, next to the labels",
        ),
        Method(
            "embed+softlabel",
            (Term("embed"), Term("task", option("task_weight")), Term("kd", option("alpha"))),
            reads=TEACHER_OUTPUTS,
            summary="embed and softlabel together",
        ),
    )
}

#: The student that learns from labels alone: the reference every gain is measured against.
BASELINE = "none"

#: What a teacher run trains with: the labels, with ``distill.face_recon > 0`` the term that keeps
#: its encoder embedding able to reconstruct the faces it saw, and with ``distill.audio_aux > 0`` a
#: classifier on its audio branch alone (a zero weight drops a term).
TEACHER = Method(
    "teacher",
    (
        Term("task"),
        Term("face_recon", option("face_recon"), optional=True),
        Term("audio_aux", option("audio_aux"), optional=True),
    ),
)


def get_method(name: str) -> Method:
    """The table entry of ``name``; a ``ValueError`` naming the choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; one of {', '.join(METHODS)}") from None

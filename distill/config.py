"""Run configuration: dataclasses with documented defaults, YAML in, YAML out.

A run is fully described by its resolved ``config.yaml``; the CLI flags are sugar for dotted
overrides (``--epochs 3`` is ``train.epochs=3``). Defaults are chosen for the small demo corpus on
CPU; docs/method.md says why each open choice of the paper got the default it has.
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import io
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

import yaml

from common.files import atomic_write_text
from distill.methods import METHODS, Method, get_method
from distill.models import AGGREGATORS, AUDIO_ENCODERS, FUSIONS, HEADS, VISUAL_ENCODERS, ModelConfig
from distill.models.distances import DISTANCES
from distill.models.network import Role, Setting

# The allowed values of every closed option are the Literal of its field: one source for the check
# when a config is loaded, the CLI's choices (option_choices) and configs/base.yaml.
Task = Literal["speaker", "emotion"]  # the label column is the task's name unless data.label_column says otherwise
EncoderGrad = Literal["joint", "distill-only"]
Target = Literal["fused", "audio"]  # distill.target: which teacher embedding the student's encoder level imitates
Optimizer = Literal["adamw", "adam", "sgd"]
Scheduler = Literal["cosine", "step", "none"]
Amp = Literal["auto", "on", "off"]
AmpDtype = Literal["auto", "bf16", "fp16"]  # train.amp_dtype
Compile = Literal["auto", "on", "off"]  # train.compile
Select = Literal["auto", "eer", "accuracy", "uar", "loss"]  # train.select: the val metric of the best checkpoint
ScoreNorm = Literal["none", "asnorm"]  # eval.score_norm
SeqSpan = Literal["window", "utterance"]  # data.seq_span: fixed windows | the whole utterance
EvalSpan = Literal["crop", "utterance"]  # data.eval_span (nonseq): mean over crops | the whole utterance at once
TASKS: tuple[str, ...] = get_args(Task)
SETTINGS: tuple[str, ...] = get_args(Setting)
SELECTS: tuple[str, ...] = get_args(Select)
#: Open options: their values are the names registered in a registry (a model family, a distance),
#: so a plug-in registered at import time is accepted without touching this file.
REGISTRY_OPTIONS = {
    "model.audio_encoder": AUDIO_ENCODERS,
    "model.visual_encoder": VISUAL_ENCODERS,
    "model.fusion": FUSIONS,
    "model.aggregator": AGGREGATORS,
    "model.header": HEADS,
    "distill.distance": DISTANCES,
}


class ConfigError(ValueError):
    """A config file or override that cannot describe a run."""


@dataclass
class DataConfig:
    """What the networks see: labels, splits and the fixed crop/segment grid over the cache."""

    task: Task = "speaker"
    setting: Setting = (
        "nonseq"  # nonseq: one crop -> encoder -> header; seq: segments -> encoder -> aggregator -> header
    )
    label_column: str | None = None  # None: derived from task (speaker -> speaker, emotion -> emotion)
    split_column: str = "split"  # train/val/test column; absent -> seeded split via manifests.splits
    split_seed: int = 0  # seed of that fallback split (fixed apart from train.seed: same split per seed)
    # Cross-validation (a sweep's `folds:` sets these per run): with fold_column set, the split is fold
    # `fold` over that column (manifests.splits.fold_split: test that fold, val the next, train the rest)
    # and split_column is not read. None: no folds.
    fold_column: str | None = None  # e.g. session (IEMOCAP) or speaker (CREMA-D, RAVDESS)
    n_folds: int = 0  # 0: one fold per value of fold_column; k >= 3: values dealt into k folds seeded by split_seed
    fold: int = 0  # the test fold (0-based)
    # The transfer set (docs/method.md, "Few labels, many unlabelled clips"): items with an empty label
    # or split `unlabeled` train a distilling student's label-free terms only; a teacher never trains on
    # them (it embeds them). labels_per_class k hides the labels of all but k training items per class
    # (drawn with labels_seed; the rest join the transfer set), so one cache serves a label-scarcity
    # curve. None: every training label is used. A student inherits both from its teacher.
    labels_per_class: int | None = None
    labels_seed: int = 0  # seed of the k labelled items per class (draws are nested: k=1's item is in k=5's)
    # Non-sequential grid: crops of `crop` fbank frames every `crop_hop` frames.
    crop: int = 100
    crop_hop: int = 50
    # Sequential grid: windows of n_segments segments of seg_len frames, segments seg_hop apart;
    # windows are `crop_hop` frames apart, like the crops.
    seg_len: int = 50
    seg_hop: int = 25
    n_segments: int = 4
    # seq only. window: a cell is n_segments segments (the fixed windows above). utterance: a cell is
    # the whole utterance cut into segments of seg_len frames every seg_hop frames (the paper's mode;
    # a variable number per item, padded per batch with a segment mask); n_segments and crop_hop
    # then do not apply. docs/method.md, "Whole-utterance settings".
    seq_span: SeqSpan = "window"
    # seq_span=utterance: at most this many segments go through the aggregator at once (memory: a
    # step encodes up to batch_size * max_segments segments). A longer utterance is split into
    # ceil(n / max_segments) interleaved cells (segments i, i+k, i+2k, ...), each spanning the whole
    # utterance; training draws one, evaluation averages all.
    max_segments: int = 64
    # nonseq evaluation (val, test, distill eval/embed): crop = the mean over the crops' embeddings;
    # utterance = the encoder over the whole utterance in one pass (its pooling takes any length).
    # Training and teacher targets stay on crops either way.
    eval_span: EvalSpan = "crop"
    max_faces: int = 8  # face frames per crop (nonseq) or per segment (seq); padded with a mask
    batch_size: int = 32
    num_workers: int = 0
    trials: str | None = None  # verification trial list (label,enrol,test); None -> built from test split
    # minDCF operating point (the VoxCeleb convention by default; NIST SRE 2008 used 0.01, 10, 1)
    p_target: float = 0.01  # prior of a target trial
    c_miss: float = 1.0  # cost of a miss
    c_fa: float = 1.0  # cost of a false alarm

    @property
    def costs(self) -> dict[str, float]:
        return {"p_target": self.p_target, "c_miss": self.c_miss, "c_fa": self.c_fa}

    @property
    def label(self) -> str:
        return self.label_column or self.task


@dataclass
class TrainConfig:
    # The budget rule (docs/training.md): a run stops when its val score (`select`) has not improved for
    # `patience` epochs, or at `epochs`, the cap, whichever comes first; stopping.json says which.
    epochs: int = 40  # the cap; large enough that the cap rarely ends a run (measured: docs/training.md)
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: Optimizer = "adamw"
    scheduler: Scheduler = "cosine"  # stepped once per epoch
    seed: int = 0
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    amp: Amp = "auto"  # autocast; auto: on for CUDA
    # autocast dtype when amp is on. auto: bf16 where the device supports it (CPU, CUDA from Ampere),
    # fp16 with a gradient scaler on CUDA without bf16; losses are float32 either way
    amp_dtype: AmpDtype = "auto"
    compile: Compile = "auto"  # torch.compile the training step (network + loss); auto: on for CUDA
    grad_clip: float = 5.0  # max grad norm; 0 disables
    patience: int = 5  # epochs without val improvement before stopping; 0: no early stopping (always the cap)
    # optimiser steps before patience may stop a run (0: no floor); for few-label runs, whose epochs are
    # a step or two: patience counted in epochs would judge them on a dozen steps
    min_steps: int = 0
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    tensorboard: bool = True  # TensorBoard event files in the run dir, next to train_log.csv
    # Val metric of the best checkpoint. auto: emotion -> uar; speaker -> accuracy when every val
    # speaker is a training class, else eer (open-set val).
    select: Select = "auto"


@dataclass
class DistillConfig:
    """How a student learns from the teacher (ignored for role=teacher), and what a teacher keeps
    for it (``face_recon``, ``audio_aux``)."""

    method: str = "none"  # see docs/method.md
    distance: str = "cosine"  # embed's pointwise term (cosine: the teacher's norm is arbitrary)
    weight_enc: float = 1.0  # embedding loss weight, encoder level (per segment in seq)
    weight_agg: float = 1.0  # embedding loss weight, aggregated level (seq only)
    task_weight: float = 1.0  # weight of the ground-truth loss next to the embedding loss
    temperature: float = 2.0  # softlabel / gkd temperature
    alpha: float = 0.5  # softlabel: weight of the KD term, (1 - alpha) on the hard labels
    imitation: float = 0.5  # gkd: imitation parameter lambda
    encoder_grad: EncoderGrad = "joint"  # does the task loss reach the encoder?
    # embed: what of the teacher's embeddings the student imitates (docs/method.md). pointwise: the
    # `distance` term; relational: batch similarity-matrix matching (Tung & Mori 2019); contrastive:
    # in-batch InfoNCE between student and teacher embeddings (Tian et al. 2020), temperature below.
    pointwise: float = 1.0
    relational: float = 0.0
    contrastive: float = 0.0
    contrastive_temperature: float = 0.1
    # embed: which teacher embedding the student's encoder level imitates. fused: the teacher's
    # encoder output, audio and faces fused (the paper's). audio: the teacher's own audio branch
    # before fusion, trained next to the faces (give that teacher `audio_aux` > 0). In seq the
    # aggregated level stays the teacher's fused aggregate: the teacher has no audio-only one.
    target: Target = "fused"
    # Teacher only: weight of an auxiliary cross-entropy head on its audio-branch embedding (per
    # crop/segment), so the branch also learns the task on its own; the fused loss still trains it
    # too. 0 = no head (the paper's teacher). The head lives in the objective, not in best.pt.
    audio_aux: float = 0.0
    # Teacher only: weight of a term asking a linear map of the teacher's encoder embedding to
    # reconstruct the mean face embedding of its crop/segment (relative squared error), so its
    # targets keep what the faces show instead of collapsing to a class code. 0 = the paper's
    # cross-entropy-only teacher.
    face_recon: float = 0.0
    teacher: str | None = None  # teacher run dir (from --teacher)

    @property
    def spec(self) -> Method:
        """The method's entry in the methods table: its loss terms and the teacher outputs it reads."""
        return get_method(self.method)


@dataclass
class AugmentConfig:
    """Training-time augmentation of the fbank cells a network sees (docs/training.md#augmentation).

    Training cells only: evaluation, validation and teacher targets always see clean cells, so a
    student learns noisy audio in -> the clean teacher embedding out. Every draw is a function of
    (train.seed, epoch, item), so a resumed run sees the same inputs. All off by default.
    """

    noise: str | None = None  # noise cache dir (`extract run` over noise audio); null: no additive noise
    p_noise: float = 0.5  # probability that a training cell gets noise (when `noise` is set)
    snr: list[float] = field(default_factory=lambda: [0.0, 15.0])  # dB, drawn uniformly from [low, high]
    time_masks: int = 0  # SpecAugment: time masks per cell (0: none)
    time_mask_width: int = 10  # most frames one time mask covers (width drawn from 0..this)
    freq_masks: int = 0  # SpecAugment: frequency masks per cell (0: none)
    freq_mask_width: int = 8  # most mel bands one frequency mask covers (width drawn from 0..this)

    @property
    def active(self) -> bool:
        return bool(self.noise) or self.time_masks > 0 or self.freq_masks > 0


@dataclass
class EvalConfig:
    """How test metrics are scored (speaker runs), and whether the run's figures are drawn."""

    # asnorm: metrics.json also gets eer_asnorm / min_dcf_asnorm, AS-norm scores with a cohort of the
    # run's training speakers (the cohort.npy of distill verify); docs/metrics.md.
    score_norm: ScoreNorm = "none"
    top_k: int = 300  # AS-norm: each side's top_k highest cohort scores standardise it
    # curves.png, det.png (speaker) or confusion.png, embeddings.png next to metrics.json; false skips
    # them (most of a tiny test run's time); metrics.json and confusion_matrix.csv are the same either way.
    plots: bool = True


@dataclass
class RunConfig:
    role: Role = "teacher"
    cache: str | None = None  # feature cache dir (from --cache)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training cells only; all off by default
    eval: EvalConfig = field(default_factory=EvalConfig)  # how test metrics are scored; the run's figures

    def validate(self) -> RunConfig:
        # the Literal options are also checked on load; this catches values set in code
        for name in (*_literal_options(), *REGISTRY_OPTIONS, "distill.method"):
            _check_choice(name, _get_dotted(self, name), option_choices(name))
        if self.data.setting == "seq" and self.data.eval_span != "crop":
            raise ConfigError(
                "data.eval_span applies to nonseq; seq covers the whole utterance with data.seq_span=utterance"
            )
        if not 0.0 <= self.model.face_dropout <= 1.0:
            raise ConfigError(f"model.face_dropout must lie in [0, 1], got {self.model.face_dropout}")
        if not 0.0 < self.data.p_target < 1.0 or self.data.c_miss <= 0 or self.data.c_fa <= 0:
            raise ConfigError(
                f"data.p_target must lie in (0, 1) and data.c_miss, data.c_fa be > 0, got "
                f"{self.data.p_target}, {self.data.c_miss}, {self.data.c_fa}"
            )
        if (
            self.data.n_folds < 0
            or self.data.n_folds in (1, 2)
            or self.data.fold < 0
            or (self.data.n_folds and self.data.fold >= self.data.n_folds)
        ):
            raise ConfigError(
                f"data.n_folds must be 0 (one fold per value) or >= 3 and data.fold lie in "
                f"[0, n_folds), got n_folds={self.data.n_folds}, fold={self.data.fold}"
            )
        for name in ("crop", "crop_hop", "seg_len", "seg_hop", "n_segments", "max_segments", "max_faces", "batch_size"):
            if getattr(self.data, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self.data, name)}")
        k = self.data.labels_per_class
        if k is not None and k < 1:
            raise ConfigError(f"data.labels_per_class must be >= 1 or null (all labels), got {k}")
        if self.train.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.train.epochs}")
        for name in ("patience", "min_steps"):
            if getattr(self.train, name) < 0:
                raise ConfigError(f"train.{name} must be >= 0, got {getattr(self.train, name)}")
        if not 0.0 <= self.distill.alpha <= 1.0 or not 0.0 <= self.distill.imitation <= 1.0:
            raise ConfigError("distill.alpha and distill.imitation must lie in [0, 1]")
        if self.distill.temperature <= 0:
            raise ConfigError(f"distill.temperature must be > 0, got {self.distill.temperature}")
        d = self.distill
        if min(d.pointwise, d.relational, d.contrastive) < 0 or not (d.pointwise or d.relational or d.contrastive):
            raise ConfigError("distill.pointwise, relational and contrastive must be >= 0, and one of them > 0")
        if d.contrastive_temperature <= 0:
            raise ConfigError(f"distill.contrastive_temperature must be > 0, got {d.contrastive_temperature}")
        if self.distill.face_recon < 0:
            raise ConfigError(f"distill.face_recon must be >= 0, got {self.distill.face_recon}")
        if self.distill.audio_aux < 0:
            raise ConfigError(f"distill.audio_aux must be >= 0, got {self.distill.audio_aux}")
        self._validate_augment_eval()
        return self

    def _validate_augment_eval(self) -> None:
        a = self.augment
        if (
            len(a.snr) != 2
            or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in a.snr)
            or a.snr[0] > a.snr[1]
        ):
            raise ConfigError(f"augment.snr must be [low, high] dB with low <= high, got {a.snr}")
        a.snr = [float(x) for x in a.snr]
        if not 0.0 <= a.p_noise <= 1.0:
            raise ConfigError(f"augment.p_noise must lie in [0, 1], got {a.p_noise}")
        for name in ("time_masks", "time_mask_width", "freq_masks", "freq_mask_width"):
            if getattr(a, name) < 0:
                raise ConfigError(f"augment.{name} must be >= 0, got {getattr(a, name)}")
        if self.eval.top_k < 1:
            raise ConfigError(f"eval.top_k must be >= 1, got {self.eval.top_k}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


def _get_dotted(obj: Any, dotted: str) -> Any:
    for key in dotted.split("."):
        obj = getattr(obj, key)
    return obj


def _field_hint(dotted: str) -> Any:
    cls: Any = RunConfig
    *sections, name = dotted.split(".")
    for section in sections:
        cls = _field_types(cls)[section]
    return _field_types(cls)[name]


def _literal_options(cls: type | None = None, prefix: str = "") -> list[str]:
    """Dotted names of every option whose type is a ``Literal`` (a closed set of values)."""
    out = []
    for name, hint in _field_types(cls or RunConfig).items():
        if dataclasses.is_dataclass(hint):
            out += _literal_options(hint, f"{prefix}{name}.")
        elif typing.get_origin(hint) is Literal:
            out.append(prefix + name)
    return out


def option_choices(dotted: str) -> tuple[str, ...]:
    """The allowed values of an option (``"data.setting"`` -> ``("nonseq", "seq")``): its Literal,
    the names of its registry, or the methods; what the CLI offers as ``choices``."""
    if dotted in REGISTRY_OPTIONS:
        return tuple(REGISTRY_OPTIONS[dotted].names())
    if dotted == "distill.method":
        return tuple(METHODS)  # the methods table (distill.methods): a method added there is accepted
    hint = _field_hint(dotted)
    if typing.get_origin(hint) is not Literal:
        raise KeyError(f"{dotted} is not an option with a closed set of values")
    return typing.get_args(hint)


def _field_types(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _from_dict(cls: type, values: dict, where: str) -> Any:
    """Build dataclass `cls` from `values`, refusing keys the dataclass does not have."""
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown key(s) {', '.join(where + k for k in unknown)}; valid: {', '.join(sorted(names))}")
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _from_dict(hint, value or {}, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(value, hint, f"{where}{key}")
    return cls(**kwargs)


def _coerce(value: Any, hint: Any, name: str) -> Any:
    """Check a scalar against its annotation; ints are accepted where floats are expected."""
    origin = typing.get_origin(hint)
    if origin is Literal:
        if isinstance(value, bool) and {"on", "off"} <= set(typing.get_args(hint)):
            value = "on" if value else "off"  # YAML 1.1 reads a bare on/off as a boolean
        _check_choice(name, value, typing.get_args(hint))
        return value
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        hint = next(t for t in options if t is not type(None))
        origin = typing.get_origin(hint)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{name}: expected a list, got {value!r}")
        return list(value) if origin is list else tuple(value)
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint in (int, float, str, bool) and not (
        isinstance(value, hint) and not (hint is int and isinstance(value, bool))
    ):
        raise ConfigError(f"{name}: expected {hint.__name__}, got {value!r}")
    return value


def set_dotted(tree: dict, dotted: str, value: Any) -> None:
    """Write ``value`` at ``dotted`` (``train.min_steps``) into a config tree, making its sections."""
    keys = dotted.split(".")
    node = tree
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {dotted}: {key} is not a section")
    node[keys[-1]] = value


def parse_override(text: str) -> tuple[str, Any]:
    """``"distill.distance=cosine"`` -> ``("distill.distance", "cosine")``; values parse as YAML scalars."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {text!r} is not key=value (e.g. distill.distance=cosine)")
    return key.strip(), yaml.safe_load(raw) if raw.strip() else None


def merge(base: dict, extra: dict) -> dict:
    """Deep-merge `extra` into a copy of `base` (sections merge, scalars replace)."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    path: str | Path | None = None, overrides: list[str] | dict | None = None, base: dict | None = None
) -> RunConfig:
    """Defaults <- `base` dict <- YAML file <- overrides (``key=value`` strings or a dotted dict)."""
    tree: dict = copy.deepcopy(base or {})  # dotted overrides write into sections: never into the caller's
    if path is not None:
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"cannot read config {path}: {exc}") from exc
        tree = merge(tree, loaded)
    pairs = overrides.items() if isinstance(overrides, dict) else map(parse_override, overrides or [])
    for key, value in pairs:
        set_dotted(tree, key, value)
    return _from_dict(RunConfig, tree, "").validate()


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    atomic_write_text(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


# --------------------------------------------------------------------------- configs/base.yaml

BASE_YAML_HEADER = """\
# The defaults of every run, written out. Generated from the dataclasses in distill/config.py and
# distill/models/config.py (their comments included): do not edit; run `python -m distill.config >
# configs/base.yaml` after changing a default (a test keeps the two equal). docs/method.md says why
# each open choice got its default. Use as `--config configs/base.yaml` and edit a copy.
"""


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix("\n...").strip()


def _body_entries(cls: type) -> list[tuple[str, str, str]]:
    """A dataclass body in source order: ``("field", name, its comment)`` and ``("comment", "", text)``
    for comment lines of their own (section headings, continued explanations); methods are skipped."""
    source = textwrap.dedent(inspect.getsource(cls))
    klass = next(node for node in ast.parse(source).body if isinstance(node, ast.ClassDef))
    body = klass.body
    comments = {
        token.start[0]: token.string[1:].strip()
        for token in tokenize.generate_tokens(io.StringIO(source).readline)
        if token.type == tokenize.COMMENT
    }
    code, fields = set(), {}
    for node in body:
        lines = range(node.lineno, node.end_lineno + 1)
        code.update(lines)
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            fields[node.lineno] = (node.target.id, " ".join(comments[n] for n in lines if n in comments))
    out = []
    for line in sorted(set(comments) | set(fields)):
        if line in fields:
            out.append(("field", *fields[line]))
        elif line not in code and line > klass.lineno:
            out.append(("comment", "", comments[line]))
    return out


def _render_section(cls: type, values: Any, indent: str, prefix: str = "") -> list[str]:
    out = []
    hints = _field_types(cls)
    for kind, name, comment in _body_entries(cls):
        if kind == "comment":
            out.append(f"{indent}# {comment}")
            continue
        value = getattr(values, name)
        if dataclasses.is_dataclass(hints[name]):
            out.append(f"{indent}{name}:" + (f"  # {comment}" if comment else ""))
            out += _render_section(hints[name], value, indent + "  ", f"{prefix}{name}.")
        else:
            try:
                choices = " | ".join(option_choices(prefix + name))
                comment = f"{choices}; {comment}" if comment else choices
            except KeyError:
                pass
            out.append(f"{indent}{name}: {_yaml_scalar(value)}" + (f"  # {comment}" if comment else ""))
    return out


def defaults_yaml() -> str:
    """Every option at its default, with the comment its field carries: configs/base.yaml."""
    return BASE_YAML_HEADER + "\n".join(_render_section(RunConfig, RunConfig(), "")) + "\n"


if __name__ == "__main__":
    print(defaults_yaml(), end="")

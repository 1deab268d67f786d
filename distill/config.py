"""Run configuration: dataclasses with documented defaults, YAML in, YAML out.

A run is fully described by its resolved ``config.yaml``; the CLI flags are sugar for dotted
overrides (``--epochs 3`` is ``train.epochs=3``). Defaults are chosen for the small demo corpus on
CPU; docs/method.md says why each open choice of the paper got the default it has.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from distill.methods import METHODS, Method, get_method
from distill.models import ModelConfig
from distill.models.normalize import FACE_NORMS, FBANK_NORMS

TASK_LABEL_COLUMNS = {"speaker": "speaker", "emotion": "emotion"}
SETTINGS = ("nonseq", "seq")
DISTANCES = ("mse", "cosine", "l1", "smooth_l1")
ENCODER_GRADS = ("joint", "distill-only")
ROLES = ("teacher", "student")
SELECTS = ("auto", "eer", "accuracy", "uar", "loss")  # train.select: the val metric of the best checkpoint


class ConfigError(ValueError):
    """A config file or override that cannot describe a run."""


@dataclass
class DataConfig:
    """What the networks see: labels, splits and the fixed crop/segment grid over the cache."""

    task: str = "speaker"  # speaker | emotion
    setting: str = "nonseq"  # nonseq | seq
    label_column: str | None = None  # None: derived from task (speaker -> speaker, emotion -> emotion)
    split_column: str = "split"  # train/val/test column; absent -> seeded split via manifests.splits
    split_seed: int = 0  # seed of that fallback split (fixed apart from train.seed: same split per seed)
    # Non-sequential grid: crops of `crop` fbank frames every `crop_hop` frames.
    crop: int = 100
    crop_hop: int = 50
    # Sequential grid: windows of n_segments segments of seg_len frames, segments seg_hop apart;
    # windows are `crop_hop` frames apart, like the crops.
    seg_len: int = 50
    seg_hop: int = 25
    n_segments: int = 4
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
        return self.label_column or TASK_LABEL_COLUMNS[self.task]


@dataclass
class TrainConfig:
    epochs: int = 5
    lr: float = 2e-3
    weight_decay: float = 1e-4
    optimizer: str = "adamw"  # adamw | adam | sgd
    scheduler: str = "cosine"  # cosine | step | none (stepped once per epoch)
    seed: int = 0
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    amp: str = "auto"  # auto (on for CUDA) | on | off
    grad_clip: float = 5.0  # max grad norm; 0 disables
    patience: int = 0  # epochs without val improvement before stopping; 0 = train all epochs
    threads: int = 0  # torch intra-op threads; 0 = leave torch's default
    tensorboard: bool = True  # TensorBoard event files in the run dir, next to train_log.csv
    # Val metric of the best checkpoint: auto | eer | accuracy | uar | loss. auto: emotion -> uar;
    # speaker -> accuracy when every val speaker is a training class, else eer (open-set val).
    select: str = "auto"


@dataclass
class DistillConfig:
    """How a student learns from the teacher (ignored for role=teacher), and what a teacher keeps for it (``face_recon``)."""

    method: str = "none"  # none | softlabel | gkd | embed | embed+softlabel (distill.methods says what each is)
    distance: str = "cosine"  # mse | cosine | l1 | smooth_l1 (cosine: the teacher's norm is arbitrary)
    weight_enc: float = 1.0  # embedding loss weight, encoder level (per segment in seq)
    weight_agg: float = 1.0  # embedding loss weight, aggregated level (seq only)
    task_weight: float = 1.0  # weight of the ground-truth loss next to the embedding loss
    temperature: float = 2.0  # softlabel / gkd temperature
    alpha: float = 0.5  # softlabel: weight of the KD term, (1 - alpha) on the hard labels
    imitation: float = 0.5  # gkd: imitation parameter lambda
    encoder_grad: str = "joint"  # joint | distill-only: does the task loss reach the encoder?
    # embed: what of the teacher's embeddings the student imitates (docs/method.md). pointwise: the
    # `distance` term; relational: batch similarity-matrix matching (Tung & Mori 2019); contrastive:
    # in-batch InfoNCE between student and teacher embeddings (Tian et al. 2020), temperature below.
    pointwise: float = 1.0
    relational: float = 0.0
    contrastive: float = 0.0
    contrastive_temperature: float = 0.1
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
class RunConfig:
    role: str = "teacher"  # teacher | student
    cache: str | None = None  # feature cache dir (from --cache)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    def validate(self) -> "RunConfig":
        _check_choice("role", self.role, ROLES)
        _check_choice("data.task", self.data.task, tuple(TASK_LABEL_COLUMNS))
        _check_choice("data.setting", self.data.setting, SETTINGS)
        _check_choice("distill.method", self.distill.method, tuple(METHODS))  # the methods table
        _check_choice("distill.distance", self.distill.distance, DISTANCES)
        _check_choice("distill.encoder_grad", self.distill.encoder_grad, ENCODER_GRADS)
        _check_choice("model.fbank_norm", self.model.fbank_norm, FBANK_NORMS)
        _check_choice("model.face_norm", self.model.face_norm, FACE_NORMS)
        if not 0.0 <= self.model.face_dropout <= 1.0:
            raise ConfigError(f"model.face_dropout must lie in [0, 1], got {self.model.face_dropout}")
        _check_choice("train.optimizer", self.train.optimizer, ("adamw", "adam", "sgd"))
        _check_choice("train.scheduler", self.train.scheduler, ("cosine", "step", "none"))
        _check_choice("train.amp", self.train.amp, ("auto", "on", "off"))
        _check_choice("train.select", self.train.select, SELECTS)
        if not 0.0 < self.data.p_target < 1.0 or self.data.c_miss <= 0 or self.data.c_fa <= 0:
            raise ConfigError(f"data.p_target must lie in (0, 1) and data.c_miss, data.c_fa be > 0, got "
                              f"{self.data.p_target}, {self.data.c_miss}, {self.data.c_fa}")
        for name in ("crop", "crop_hop", "seg_len", "seg_hop", "n_segments", "max_faces", "batch_size"):
            if getattr(self.data, name) < 1:
                raise ConfigError(f"data.{name} must be >= 1, got {getattr(self.data, name)}")
        if self.train.epochs < 1:
            raise ConfigError(f"train.epochs must be >= 1, got {self.train.epochs}")
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
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not one of {', '.join(map(str, choices))}")


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
    if hint in (int, float, str, bool) and not (isinstance(value, hint) and not (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{name}: expected {hint.__name__}, got {value!r}")
    return value


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
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


def load_config(path: str | Path | None = None, overrides: list[str] | dict | None = None,
                base: dict | None = None) -> RunConfig:
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
        _set_dotted(tree, key, value)
    return _from_dict(RunConfig, tree, "").validate()


def dump_config(cfg: RunConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))

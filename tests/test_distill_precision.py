"""Mixed precision on CPU: every network and every loss under bf16 and fp16 autocast, forward and
backward, the paths a GPU run takes by default (``train.amp: auto`` is on for CUDA).

CPU and CUDA autocast differ in what they cast: CUDA runs ``layer_norm`` in float32 (its float32
list), CPU keeps it in the lower dtype. So on CUDA the teacher's frame pooling received float32
frames next to bf16 attention scores, and a fill value taken from the frames' dtype overflowed
bf16: a crash no CPU run showed. These tests run both policies on CPU: the CPU one as it is, and
CUDA's for the ops where the two differ in these networks (:func:`cuda_policy`), and they call the
masked modules with float32 inputs directly.

Coverage without a cartesian explosion: for each role x setting x dtype x policy a few networks
are built, network ``i`` taking entry ``i`` (mod its size) of every registry, so every registered
audio encoder, visual encoder, fusion, aggregator and header runs at least once in each role,
setting, dtype and policy where it applies (visual encoders and fusions only in a teacher,
aggregators only in seq); a new entry joins by being registered. Each method's loss (the methods
table, and the teacher's with its optional terms on) runs once per dtype on a seq network, which has
both embedding levels, with an AAM header (the margin-free soft-label path) and every optional
embedding term switched on.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import nn

from distill.config import DistillConfig
from distill.methods import METHODS, TEACHER
from distill.models import (
    AGGREGATORS,
    AUDIO_ENCODERS,
    FUSIONS,
    HEADS,
    ROLES,
    SETTINGS,
    VISUAL_ENCODERS,
    ModelConfig,
    build_network,
)
from distill.models.pooling import MaskedAttentivePooling
from distill.train.objective import Objective, StepModule

torch.set_num_threads(1)

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
N_MELS, N_CLASSES, B, S, T, F_FRAMES = 16, 5, 4, 3, 24, 5
TINY = ModelConfig(
    audio_channels=8,
    emb_dim=12,
    res2net_scale=4,
    visual_dim=8,
    agg_dim=10,
    agg_heads=2,
    resnet_blocks=[1, 1, 1, 1],
    dropout=0.0,
)
FAMILIES = {
    "audio_encoder": AUDIO_ENCODERS,
    "visual_encoder": VISUAL_ENCODERS,
    "fusion": FUSIONS,
    "aggregator": AGGREGATORS,
    "header": HEADS,
}
N_VARIANTS = max(len(r.names()) for r in FAMILIES.values())


def variant(i: int) -> ModelConfig:
    """Network ``i`` of the covering set: entry ``i`` (mod its size) of every registry."""
    return replace(TINY, **{field: reg.names()[i % len(reg.names())] for field, reg in FAMILIES.items()})


def cuda_policy(module: nn.Module) -> nn.Module:
    """Give a CPU autocast run CUDA's dtypes where the two policies differ for these networks:
    CUDA autocast runs ``layer_norm`` in float32, CPU autocast in the lower dtype. A forward hook
    returning float32 from every LayerNorm (visual frames, transformer) does what CUDA does."""
    for m in module.modules():
        if isinstance(m, nn.LayerNorm):
            m.register_forward_hook(lambda _m, _inputs, out: out.float())
    return module


def inputs(setting: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lead = (B,) if setting == "nonseq" else (B, S)
    mask = torch.rand(*lead, F_FRAMES, generator=g) > 0.4
    mask[..., 0] = True
    mask[0, ..., 1:] = False  # masked frames in every crop/segment of item 0
    if setting == "nonseq":
        mask[1] = False  # item 1: no face at all (the learned "no face" embedding)
    return {
        "fbank": torch.randn(*lead, T, N_MELS, generator=g),
        "face": torch.randn(*lead, F_FRAMES, 512, generator=g),
        "face_mask": mask,
        "labels": torch.arange(B) % N_CLASSES,
    }


def grads_finite(module: nn.Module) -> bool:
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    return bool(grads) and all(torch.isfinite(g).all() for g in grads)


@pytest.mark.parametrize("policy", ["cpu", "cuda"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("role", ROLES)
def test_every_registry_entry_trains_under_autocast(role, setting, dtype, policy):
    for i in range(N_VARIANTS):
        cfg = variant(i)
        torch.manual_seed(i)
        net = build_network(cfg, role=role, setting=setting, n_mels=N_MELS, n_classes=N_CLASSES).train()
        if policy == "cuda":
            cuda_policy(net)
        x = inputs(setting, seed=i)
        with torch.autocast("cpu", dtype=DTYPES[dtype]):
            out = net(**x)
            loss = nn.functional.cross_entropy(out.logits.float(), x["labels"]) + out.emb.float().pow(2).mean()
        loss.backward()
        where = f"network {i} ({cfg.audio_encoder}, {cfg.visual_encoder}, {cfg.fusion}, {cfg.aggregator}, {cfg.header})"
        assert torch.isfinite(loss), where
        assert all(torch.isfinite(t).all() for t in (out.enc, out.emb, out.logits)), where
        assert grads_finite(net), where


POOLED = {
    "pooling": lambda: MaskedAttentivePooling(8),
    **{f"aggregator={n}": (lambda n=n: AGGREGATORS[n].from_config(TINY, in_dim=8)) for n in AGGREGATORS.names()},
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", POOLED)
def test_masked_modules_take_float32_input_under_autocast(name, dtype):
    """What a CUDA run feeds them after a float32 op: float32 elements with some masked; the fill
    of a masked score must fit the scores' dtype, and masked elements must still not count."""
    torch.manual_seed(0)
    module = POOLED[name]().train()
    x = torch.randn(3, 5, 8, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    poisoned = x.detach().clone()
    poisoned[~mask] = 1e4
    with torch.autocast("cpu", dtype=DTYPES[dtype]):
        out = module(x, mask)
        moved = module(poisoned, mask)
    out, moved = (o[0] if isinstance(o, tuple) else o for o in (out, moved))
    out.float().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(x.grad).all() and grads_finite(module)
    torch.testing.assert_close(out, moved)
    assert not x.grad[~mask].any()  # no gradient reaches a masked element


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("visual", VISUAL_ENCODERS.names())
def test_visual_encoders_under_cuda_autocast_policy(visual, dtype):
    """The crash as CUDA showed it: layer-normed frames in float32 reach the pooling."""
    torch.manual_seed(0)
    encoder = cuda_policy(VISUAL_ENCODERS[visual].from_config(TINY, face_dim=512).train())
    x = inputs("nonseq")
    with torch.autocast("cpu", dtype=DTYPES[dtype]):
        out = encoder(x["face"], x["face_mask"])
    out.float().sum().backward()
    assert torch.isfinite(out).all() and grads_finite(encoder)


def step_module(role: str, method: str) -> tuple[StepModule, dict[str, torch.Tensor]]:
    """A seq network (both levels) with an AAM header and every optional term on, and teacher
    targets of other widths than the student's (so the projections run)."""
    cfg = DistillConfig(method=method, relational=0.5, contrastive=0.5, face_recon=1.0, audio_aux=1.0)
    model = replace(TINY, header="aam")
    net = build_network(model, role=role, setting="seq", n_mels=N_MELS, n_classes=N_CLASSES).train()
    teacher_dims = None if role == "teacher" else {"enc": 14, "agg": 6}
    objective = Objective(
        cfg,
        role,
        net.level_dims,
        teacher_dims,
        face_dim=512 if role == "teacher" else None,
        audio_dim=net.encoder.audio.out_dim if role == "teacher" else None,
        n_classes=N_CLASSES,
    )
    g = torch.Generator().manual_seed(1)
    teacher = {}
    if role == "student":
        teacher = {
            "enc": torch.randn(B, S, 14, generator=g),
            "agg": torch.randn(B, 6, generator=g),
            "logits": torch.randn(B, N_CLASSES, generator=g) * 3,
        }
    return StepModule(net, objective), teacher


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("method", [TEACHER.name, *METHODS])
def test_every_methods_loss_under_autocast_matches_full_precision(method, dtype):
    role = "teacher" if method == TEACHER.name else "student"
    torch.manual_seed(0)
    step, teacher = step_module(role, method if role == "student" else "none")
    x = inputs("seq")
    batch = {"fbank": x["fbank"], "label": x["labels"]}
    if role == "teacher":
        batch.update(face=x["face"], face_mask=x["face_mask"])
    full = step(batch, teacher)
    with torch.autocast("cpu", dtype=DTYPES[dtype]):
        terms = step(batch, teacher)
    terms["total"].backward()
    assert set(terms) == set(full) and {"task", "total"} <= set(terms)
    for name, value in terms.items():
        value, want = float(value.detach()), float(full[name].detach())
        assert terms[name].dtype == torch.float32 and abs(value - want) <= 0.02 + 0.02 * abs(want), name
    assert grads_finite(step)


# --------------------------------------------------------------------------- the policy and whole runs


def test_precision_picks_the_dtype_and_scales_only_fp16(monkeypatch):
    from distill.precision import Precision

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert Precision.of("auto", cpu).dtype is None and Precision.of("off", cuda).dtype is None
    assert Precision.of("on", cpu).dtype == torch.bfloat16
    assert Precision.of("on", cpu, "fp16").dtype == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert Precision.of("auto", cuda).dtype == torch.bfloat16
    assert Precision.of("auto", cuda, "fp16").dtype == torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)  # e.g. a V100
    assert Precision.of("auto", cuda).dtype == torch.float16
    with pytest.raises(ValueError, match="does not support bfloat16"):
        Precision.of("auto", cuda, "bf16")
    assert Precision.of("on", cpu, "fp16").grad_scaler().is_enabled()
    assert not Precision.of("on", cpu, "bf16").grad_scaler().is_enabled()
    assert not Precision.of("off", cpu).grad_scaler().is_enabled()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    from distill.testing import make_lupi_cache

    return make_lupi_cache(tmp_path_factory.mktemp("amp") / "cache", n_classes=3, per_class=8, n_frames=90)


def finite_log(run) -> bool:
    import pandas as pd

    log = pd.read_csv(run / "train_log.csv")
    return bool(len(log)) and bool(log.select_dtypes("number").notna().all().all())


def test_whole_bf16_teacher_run_and_its_targets_in_full_precision(cache, tmp_path):
    """What every default CUDA teacher run does (amp on, bf16), end to end; the targets it writes
    are a full-precision forward pass of its best network, stored as float32."""
    import h5py

    from distill.data.dataset import Grid, GridDataset
    from distill.precision import Precision
    from distill.run import RunData, RunDir
    from distill.testing import tiny_config
    from distill.train.targets import compute_targets
    from distill.train.trainer import Trainer
    from extract import open_cache

    cfg = tiny_config(cache, "teacher", train__amp="on", data__num_workers=1)
    trainer = Trainer(cfg, tmp_path / "t", progress=False)
    assert trainer.precision.dtype == torch.bfloat16 and not trainer.scaler.is_enabled()
    metrics = trainer.fit()
    assert 0.0 <= metrics["accuracy"] <= 1.0 and finite_log(tmp_path / "t")
    data = RunData.load(cfg, open_cache(cache))
    items = data.all_items(faces=True)
    assert isinstance(items, GridDataset) and isinstance(items.grid, Grid)
    net = RunDir(tmp_path / "t").load_network("cpu").net
    expected = compute_targets(net, items, Precision(torch.device("cpu")), batch_size=5, progress=False)
    with h5py.File(tmp_path / "t" / RunDir.TARGETS, "r") as h5:
        for name in ("enc", "logits"):
            assert h5[name].dtype == "float32"
            torch.testing.assert_close(torch.from_numpy(h5[name][:]), torch.from_numpy(expected[name]))


def test_whole_fp16_runs_go_through_the_gradient_scaler(cache, tmp_path):
    """train.amp_dtype=fp16 (what a CUDA device without bf16 gets): a seq teacher and a distilling
    student from it, each step scaled, unscaled for clipping and stepped by the GradScaler."""
    import pandas as pd

    from distill.run import RunDir
    from distill.testing import tiny_config
    from distill.train.trainer import Trainer

    fp16 = {"train__amp": "on", "train__amp_dtype": "fp16", "data__setting": "seq", "train__epochs": 2}
    runs = {
        "teacher": tiny_config(cache, "teacher", **fp16),
        "student": tiny_config(
            cache, "student", distill__method="embed+softlabel", distill__teacher=str(tmp_path / "teacher"), **fp16
        ),
    }
    for role, cfg in runs.items():
        trainer = Trainer(cfg, tmp_path / role, progress=False)
        assert trainer.precision.dtype == torch.float16 and trainer.scaler.is_enabled(), role
        metrics = trainer.fit()
        assert 0.0 <= metrics["accuracy"] <= 1.0 and finite_log(tmp_path / role), role
        scaler = torch.load(tmp_path / role / RunDir.LAST, weights_only=True)["scaler"]
        steps = len(pd.read_csv(tmp_path / role / "train_log.csv")) * (len(trainer.train_dataset()) // 8)
        # every step went through scaler.update: counted since the last back-off, or the scale backed
        # off from its initial 2^16 after an overflowing (skipped) step
        assert steps > 0 and scaler["_growth_tracker"] <= steps, (role, scaler)
        assert scaler["_growth_tracker"] == steps or scaler["scale"] < 2.0**16, (role, scaler)


@pytest.mark.parametrize("dtype", DTYPES)
def test_the_aam_cosine_is_float32_under_autocast(dtype):
    """Near its class weight an embedding's bf16 cosine rounds to 1 (bf16 steps by 0.004 there): the
    margin's clamp then passes no gradient, and the logits move in steps of 0.12. The header computes
    the cosine in float32, so logits and gradients are float32's whatever the network runs in."""
    torch.manual_seed(0)
    head = HEADS["aam"].from_config(TINY, in_dim=12, n_classes=N_CLASSES)
    w = head.weight.detach()
    direction = torch.randn(2, 12)
    direction -= (direction * w[:2]).sum(-1, keepdim=True) * w[:2] / w[:2].pow(2).sum(-1, keepdim=True)
    # cos 0.999 to classes 0 and 1: bf16 rounds it to 1.0
    unit_w, unit_d = nn.functional.normalize(w[:2], dim=-1), nn.functional.normalize(direction, dim=-1)
    emb = 0.999 * unit_w + (1 - 0.999**2) ** 0.5 * unit_d
    labels = torch.tensor([0, 1])

    def run(autocast: bool) -> tuple[torch.Tensor, torch.Tensor]:
        x = emb.clone().requires_grad_(True)
        with torch.autocast("cpu", dtype=DTYPES[dtype], enabled=autocast):
            logits = head(x, labels)
        nn.functional.cross_entropy(logits.float(), labels).backward()
        return logits.detach().float(), x.grad

    (logits, grad), (ref_logits, ref_grad) = run(True), run(False)
    torch.testing.assert_close(logits, ref_logits, rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-5, atol=1e-7)
    assert ref_grad.abs().sum() > 0

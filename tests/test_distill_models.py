"""distill.models: shapes for every registry entry, mask semantics, video-missing, gradient routing."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F

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
from distill.models.heads import AAMHead

torch.set_num_threads(1)

N_MELS, N_CLASSES, B, S, T, F_FRAMES = 20, 5, 3, 4, 40, 6
# Tiny widths keep the whole file at a few seconds; teacher and student differ on purpose.
TINY = ModelConfig(audio_channels=16, emb_dim=24, res2net_scale=4, visual_dim=16, agg_dim=20, agg_heads=2, dropout=0.0)


def inputs(setting: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lead = (B,) if setting == "nonseq" else (B, S)
    mask = torch.rand(*lead, F_FRAMES, generator=g) > 0.4
    mask[..., 0] = True  # at least one face per crop/segment
    mask[0, ..., 1:] = False  # item 0: exactly one found frame, the rest missing
    return {
        "fbank": torch.randn(*lead, T, N_MELS, generator=g),
        "face": torch.randn(*lead, F_FRAMES, 512, generator=g),
        "face_mask": mask,
    }


def build(cfg: ModelConfig, role: str, setting: str, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_network(cfg, role=role, setting=setting, n_mels=N_MELS, n_classes=N_CLASSES).eval()


# One variant per registry entry, the rest at TINY defaults.
VARIANTS = (
    [("audio_encoder", n) for n in AUDIO_ENCODERS]
    + [("visual_encoder", n) for n in VISUAL_ENCODERS]
    + [("fusion", n) for n in FUSIONS]
    + [("aggregator", n) for n in AGGREGATORS]
    + [("header", n) for n in HEADS]
)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("field,name", VARIANTS, ids=[f"{f}={n}" for f, n in VARIANTS])
def test_output_shapes_for_every_registry_entry(field, name, role, setting):
    net = build(replace(TINY, **{field: name}), role, setting)
    x = inputs(setting)
    out = net(**x, labels=torch.tensor([0, 1, 4]))
    d_enc = TINY.emb_dim
    if setting == "nonseq":
        assert out.enc.shape == (B, d_enc) and out.agg is None and out.emb is out.enc
        assert net.level_dims == {"enc": d_enc} and net.agg_dim is None
    else:
        assert out.enc.shape == (B, S, d_enc) and out.agg.shape == (B, TINY.agg_dim) and out.emb is out.agg
        assert net.level_dims == {"enc": d_enc, "agg": TINY.agg_dim}
    assert out.logits.shape == (B, N_CLASSES) and net.emb_dim == out.emb.shape[-1]
    assert set(out.levels()) == set(net.level_dims)
    assert all(torch.isfinite(t).all() for t in (out.enc, out.emb, out.logits))


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("visual", list(VISUAL_ENCODERS))
def test_frames_without_a_face_are_never_evidence(visual, setting):
    net = build(replace(TINY, visual_encoder=visual), "teacher", setting)
    x = inputs(setting)
    base = net(**x)
    poisoned = x["face"].clone()
    missing = ~x["face_mask"]
    poisoned[missing] = torch.randn(int(missing.sum()), 512) * 100
    poisoned[tuple(missing.nonzero()[0])] = float("nan")  # one missing frame holds NaN
    moved = net(fbank=x["fbank"], face=poisoned, face_mask=x["face_mask"])
    assert torch.equal(base.enc, moved.enc) and torch.equal(base.logits, moved.logits)
    # ...while a found frame does move the output, so the comparison above can fail.
    changed = x["face"].clone()
    changed[x["face_mask"]] += 1.0
    assert not torch.allclose(base.enc, net(fbank=x["fbank"], face=changed, face_mask=x["face_mask"]).enc)


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("fusion", list(FUSIONS))
def test_video_missing_is_finite_and_same_as_no_face_input(fusion, setting):
    net = build(replace(TINY, fusion=fusion), "teacher", setting).train()
    x = inputs(setting)
    no_face = torch.zeros_like(x["face_mask"])
    out = net(fbank=x["fbank"], face=x["face"], face_mask=no_face, labels=torch.tensor([0, 1, 2]))
    loss = F.cross_entropy(out.logits, torch.tensor([0, 1, 2]))
    loss.backward()
    assert torch.isfinite(out.enc).all() and torch.isfinite(out.logits).all()
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)
    net.eval()
    with torch.no_grad():
        all_false = net(fbank=x["fbank"], face=x["face"], face_mask=no_face)
        absent = net(fbank=x["fbank"])
        present = net(**x)
    torch.testing.assert_close(all_false.enc, absent.enc)
    assert not torch.allclose(present.enc, absent.enc)


def test_teacher_trains_the_visual_branch_and_no_face_only_when_a_face_is_missing():
    net = build(TINY, "teacher", "nonseq").train()
    x, labels = inputs("nonseq"), torch.tensor([0, 1, 2])
    F.cross_entropy(net(**x, labels=labels).logits, labels).backward()
    visual = net.encoder.visual
    assert visual.frame[0].weight.grad.abs().sum() > 0
    assert visual.no_face.grad is None or not visual.no_face.grad.any()
    net.zero_grad()
    x["face_mask"][2] = False
    F.cross_entropy(net(**x, labels=labels).logits, labels).backward()
    assert visual.no_face.grad.abs().sum() > 0


def test_resnet_blocks_set_each_stage_depth_and_bad_counts_are_refused():
    net = build(replace(TINY, audio_encoder="resnet", resnet_blocks=[1, 2, 1, 3]), "student", "nonseq")
    resnet = net.encoder.encoder.net  # behind the log-mel normaliser
    assert [len(stage) for stage in (resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4)] == [1, 2, 1, 3]
    for bad in ([3, 4, 6], [1, 0, 1, 1]):
        with pytest.raises(ValueError, match="4 positive counts"):
            build(replace(TINY, audio_encoder="resnet", resnet_blocks=bad), "student", "nonseq")


@pytest.mark.parametrize("encoder", ["ecapa", "resnet"])
def test_training_batch_of_one_is_a_clear_error_for_batchnorm_pooled_encoders(encoder):
    net = build(replace(TINY, audio_encoder=encoder), "student", "nonseq").train()
    with pytest.raises(ValueError, match="at least 2"):
        net(torch.randn(1, T, N_MELS))
    assert net.eval()(torch.randn(1, T, N_MELS)).enc.shape == (1, TINY.emb_dim)


def test_face_dropout_hides_the_whole_face_track_in_training_only():
    cfg = replace(TINY, face_dropout=1.0 - 1e-9)  # a probability below 1: every item hidden (but not by rule)
    net = build(cfg, "teacher", "nonseq").train()
    x = inputs("nonseq")
    torch.testing.assert_close(net(**x).enc, net(fbank=x["fbank"]).enc)  # BN in batch mode: same batch, same stats
    net.eval()
    assert not torch.allclose(net(**x).enc, net(fbank=x["fbank"]).enc)
    with pytest.raises(ValueError, match="face_dropout"):
        type(net)(net.encoder.audio, net.head, role="student", n_mels=N_MELS, face_dropout=0.5)


@pytest.mark.parametrize("setting", SETTINGS)
def test_face_dropout_of_one_is_an_audio_only_teacher_in_evaluation_too(setting):
    """The control teacher never saw a face; showing it faces at test time would feed its fusion
    features of an untrained visual branch, so it never looks at them."""
    net = build(replace(TINY, face_dropout=1.0), "teacher", setting)
    x = inputs(setting)
    torch.testing.assert_close(net(**x).enc, net(fbank=x["fbank"]).enc)


@pytest.mark.parametrize("setting", SETTINGS)
def test_student_never_looks_at_faces(setting):
    net = build(TINY, "student", setting)
    x = inputs(setting)
    assert torch.equal(net(**x).enc, net(fbank=x["fbank"]).enc)
    assert not any("visual" in name for name, _ in net.named_parameters())


@pytest.mark.parametrize("setting", SETTINGS)
@pytest.mark.parametrize("header", list(HEADS))
def test_detach_emb_keeps_task_loss_out_of_the_encoder(header, setting):
    net = build(replace(TINY, header=header), "student", setting).train()
    x, labels = inputs(setting), torch.tensor([0, 1, 2])
    below_header = [p for n, p in net.named_parameters() if not n.startswith("head.")]

    F.cross_entropy(net(fbank=x["fbank"], labels=labels, detach_emb=True).logits, labels).backward()
    assert all(p.grad is None or not p.grad.any() for p in below_header)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.head.parameters())

    net.zero_grad()
    F.cross_entropy(net(fbank=x["fbank"], labels=labels).logits, labels).backward()
    assert sum(p.grad.abs().sum() for p in net.encoder.parameters() if p.grad is not None) > 0


def test_aam_margin_only_with_labels():
    torch.manual_seed(0)
    head = AAMHead(8, 4, margin=0.3, scale=10.0)
    emb, labels = torch.randn(6, 8), torch.tensor([0, 1, 2, 3, 0, 1])
    cosine = F.normalize(emb) @ F.normalize(head.weight).T
    plain, margined = head(emb), head(emb, labels)
    torch.testing.assert_close(plain, 10.0 * cosine)
    true = F.one_hot(labels, 4).bool()
    torch.testing.assert_close(margined[~true], plain[~true])  # other classes untouched
    theta = torch.acos(cosine[true].clamp(-1 + 1e-7, 1 - 1e-7))
    expected = torch.where(
        theta + 0.3 < math.pi, 10.0 * torch.cos(theta + 0.3), 10.0 * (cosine[true] - math.sin(math.pi - 0.3) * 0.3)
    )
    torch.testing.assert_close(margined[true], expected, atol=1e-4, rtol=1e-4)
    assert (margined[true] < plain[true]).all()


@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_padded_segments_do_not_move_the_aggregate(name):
    torch.manual_seed(0)
    agg = AGGREGATORS[name].from_config(TINY, in_dim=12).eval()
    x = torch.randn(3, 5, 12)
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0], [1, 0, 0, 0, 0]], dtype=torch.bool)
    noisy = x.clone()
    noisy[~mask] = torch.randn(int((~mask).sum()), 12) * 50
    out = agg(x, mask)
    torch.testing.assert_close(out, agg(noisy, mask))
    torch.testing.assert_close(out[1:2], agg(x[1:2, :3]))  # padding == truncation
    assert not torch.allclose(out, agg(noisy))  # without the mask the padding would count
    with pytest.raises(ValueError, match="no valid segment"):
        agg(x, torch.zeros(3, 5, dtype=torch.bool))


def test_bilstm_rejects_padding_in_the_middle():
    agg = AGGREGATORS["bilstm"].from_config(TINY, in_dim=12)
    with pytest.raises(ValueError, match="prefix"):
        agg(torch.randn(1, 3, 12), torch.tensor([[True, False, True]]))


def test_bad_names_and_shapes_fail_with_a_clear_message():
    with pytest.raises(KeyError, match=r"unknown aggregator 'lstm'; choose one of: attention, bilstm"):
        build(replace(TINY, aggregator="lstm"), "student", "seq")
    with pytest.raises(ValueError, match="unknown role"):
        build(TINY, "pupil", "seq")
    net = build(TINY, "student", "seq")
    with pytest.raises(ValueError, match=r"seq student expects fbank \(B, S, T, n_mels\)"):
        net(torch.randn(B, T, N_MELS))
    with pytest.raises(ValueError, match="face_mask must be bool"):
        build(TINY, "teacher", "nonseq")(torch.randn(2, T, N_MELS), torch.randn(2, 3, 512), torch.ones(2, 3))
    with pytest.raises(ValueError, match="divisible by res2net_scale"):
        build(replace(TINY, audio_channels=18), "student", "nonseq")

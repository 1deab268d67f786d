"""Whole-utterance settings: seq over every segment (data.seq_span), nonseq evaluation on whole
utterances (data.eval_span); the grid, the segment mask from data to losses, targets and inference."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from distill.config import ConfigError, DataConfig
from distill.data.dataset import Grid, collate
from distill.models import AGGREGATORS, AUDIO_ENCODERS, ModelConfig, build_network
from distill.testing import make_lupi_cache, tiny_config
from distill.train.losses import EmbeddingDistillLoss
from distill.train.trainer import LiveTeacher, Trainer, run_training

torch.set_num_threads(1)

UTTERANCE = {"data__setting": "seq", "data__seq_span": "utterance", "data__max_segments": 4}


def utterance_grid(max_segments: int = 4) -> Grid:
    return Grid.from_config(
        DataConfig(setting="seq", seq_span="utterance", seg_len=30, seg_hop=15, max_segments=max_segments)
    )


@pytest.mark.parametrize("n_frames", [10, 30, 44, 45, 90, 151, 400])
def test_utterance_cells_partition_every_segment_and_span_the_utterance(n_frames):
    grid = utterance_grid()
    starts = grid.segment_starts(n_frames)
    cells = [grid.utterance_cells(n_frames, c) for c in range(grid.n_cells(n_frames))]
    assert sorted(np.concatenate(cells).tolist()) == starts.tolist()  # every segment in exactly one cell
    assert all(1 <= len(c) <= grid.max_segments for c in cells)
    assert len(cells) == 1 or all(c[0] < grid.seg_hop * len(cells) and c[-1] >= starts[-len(cells)] for c in cells)
    rows = grid.frame_index(n_frames, 0)
    assert rows.shape == (len(cells[0]), grid.seg_len) and rows.max() < n_frames
    if n_frames >= grid.seg_len:  # the tail is covered, nothing wraps
        assert starts[-1] + grid.seg_len == n_frames and (np.diff(rows, axis=1) == 1).all()


def test_window_grids_keep_their_targets_key_and_whole_utterance_grids_record_theirs():
    window = Grid.from_config(DataConfig(setting="seq"))
    assert set(window.spec()) == {"setting", "crop", "hop", "seg_len", "seg_hop", "n_segments", "max_faces"}
    assert Grid(**window.spec()) == window  # grids recorded before the option (exports) still load
    spec = utterance_grid().spec()
    assert spec["span"] == "utterance" and spec["max_segments"] == 4
    # n_segments / crop_hop do not apply to whole utterances: changing them keeps the targets valid
    assert (
        Grid.from_config(DataConfig(setting="seq", seq_span="utterance", n_segments=9, crop_hop=7)).spec()
        == Grid.from_config(DataConfig(setting="seq", seq_span="utterance")).spec()
    )
    nonseq = DataConfig(eval_span="utterance")
    assert Grid.from_config(nonseq).span == "window" and Grid.for_eval(nonseq).span == "utterance"
    assert Grid.for_eval(nonseq).n_cells(1234) == 1 and len(Grid.for_eval(nonseq).frame_index(1234, 0)) == 1234


def test_bad_span_options_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.seq_span='whole' is not one of window, utterance"):
        tiny_config(tmp_path, data__seq_span="whole")
    with pytest.raises(ConfigError, match="data.eval_span applies to nonseq"):
        tiny_config(tmp_path, data__setting="seq", data__eval_span="utterance")
    with pytest.raises(ConfigError, match="data.max_segments must be >= 1"):
        tiny_config(tmp_path, data__max_segments=0)


def test_collate_pads_segments_with_a_prefix_mask():
    samples = [
        {
            "fbank": torch.randn(s, 5, 3),
            "face": torch.randn(s, 2, 4),
            "face_mask": torch.ones(s, 2, dtype=torch.bool),
            "t_enc": torch.randn(s, 6),
            "t_agg": torch.randn(7),
            "seg_mask": torch.ones(s, dtype=torch.bool),
            "label": 0,
            "utt_id": f"u{s}",
        }
        for s in (2, 4, 1)
    ]
    batch = collate(samples)
    assert batch["fbank"].shape == (3, 4, 5, 3) and batch["t_enc"].shape == (3, 4, 6) and batch["t_agg"].shape == (3, 7)
    assert batch["seg_mask"].tolist() == [[True, True, False, False], [True] * 4, [True, False, False, False]]
    assert not batch["face_mask"][~batch["seg_mask"]].any()  # a padded segment shows no face
    torch.testing.assert_close(batch["fbank"][0, :2], samples[0]["fbank"])
    assert (batch["fbank"][~batch["seg_mask"]] == 0).all()


@pytest.mark.parametrize("role", ["student", "teacher"])
@pytest.mark.parametrize("aggregator", list(AGGREGATORS))
def test_padding_segments_do_not_change_an_items_embeddings(aggregator, role):
    """Whatever the padded segments hold, an item's encoder and aggregated embeddings are those it
    has alone (eval), and in training the padding never reaches the encoder's BatchNorm statistics."""
    cfg = ModelConfig(
        audio_channels=16,
        emb_dim=12,
        res2net_scale=4,
        visual_dim=8,
        agg_dim=10,
        agg_heads=2,
        aggregator=aggregator,
        dropout=0.0,
    )
    torch.manual_seed(0)
    net = build_network(cfg, role=role, setting="seq", n_mels=20, n_classes=3)
    g = torch.Generator().manual_seed(1)
    fbank, face = torch.randn(3, 5, 30, 20, generator=g), torch.randn(3, 5, 4, 512, generator=g)
    seg_mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=torch.bool)
    face_mask = seg_mask[..., None].expand(-1, -1, 4).clone()
    garbage = fbank.clone()
    garbage[~seg_mask] = 100 * torch.randn(int((~seg_mask).sum()), 30, 20, generator=g)

    def run(x, **kw):
        return net(x, face=face, face_mask=face_mask, **kw)

    net.train()
    torch.testing.assert_close(run(fbank, seg_mask=seg_mask).agg, run(garbage, seg_mask=seg_mask).agg)
    net.eval()
    with torch.no_grad():
        padded = run(garbage, seg_mask=seg_mask)
        for i in range(3):
            n = int(seg_mask[i].sum())
            alone = net(fbank[i : i + 1, :n], face=face[i : i + 1, :n], face_mask=face_mask[i : i + 1, :n])
            torch.testing.assert_close(padded.agg[i : i + 1], alone.agg, atol=1e-5, rtol=1e-5)
            torch.testing.assert_close(padded.enc[i : i + 1, :n], alone.enc, atol=1e-5, rtol=1e-5)
        assert (padded.enc[~seg_mask] == 0).all()


@pytest.mark.parametrize("encoder", list(AUDIO_ENCODERS))
def test_every_audio_encoder_embeds_a_whole_utterance_of_any_length(encoder):
    """eval_span=utterance runs the encoder on each utterance's own length: every encoder pools over time."""
    cfg = ModelConfig(audio_encoder=encoder, audio_channels=8, emb_dim=6, res2net_scale=4, resnet_blocks=[1, 1, 1, 1])
    net = build_network(cfg, role="student", setting="nonseq", n_mels=20, n_classes=3).eval()
    with torch.no_grad():
        for frames in (37, 100, 523):
            assert net(torch.randn(1, frames, 20)).emb.shape == (1, 6)


def test_embedding_losses_count_valid_segments_only():
    torch.manual_seed(0)
    loss = EmbeddingDistillLoss({"enc": (6, 8)}, distance="cosine", relational=0.5, contrastive=0.3)
    student, teacher = torch.randn(3, 4, 6), torch.randn(3, 4, 8)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.bool)
    noisy_s, noisy_t = student.clone(), teacher.clone()
    noisy_s[~mask], noisy_t[~mask] = 1e3, -1e3
    masked = loss({"enc": noisy_s}, {"enc": noisy_t}, masks={"enc": mask})
    flat = loss({"enc": student[mask]}, {"enc": teacher[mask]})
    assert set(masked) == {"embed_enc", "rel_enc", "nce_enc", "total"}
    for key in masked:
        torch.testing.assert_close(masked[key], flat[key])
    assert not torch.allclose(loss({"enc": noisy_s}, {"enc": noisy_t})["total"], flat["total"])
    with pytest.raises(ValueError, match="mask"):
        loss({"enc": student}, {"enc": teacher}, masks={"enc": mask[:, :3]})


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    # 30-150 frames: 1 to 9 segments of 30 frames every 15, so one batch mixes utterance lengths
    # and the longest are split into interleaved cells (max_segments 4)
    return make_lupi_cache(
        tmp_path_factory.mktemp("utt") / "cache", n_classes=3, per_class=8, n_frames=90, length_jitter=60
    )


@pytest.fixture(scope="module")
def teacher(cache, tmp_path_factory):
    run = tmp_path_factory.mktemp("utt_teacher") / "teacher"
    run_training(tiny_config(cache, "teacher", **UTTERANCE), run, progress=False)
    return run


@pytest.mark.slow
def test_whole_utterance_seq_teacher_then_embed_student(cache, teacher, tmp_path):
    student = tiny_config(
        cache, "student", distill__method="embed+softlabel", distill__teacher=str(teacher), **UTTERANCE
    )
    trainer = Trainer(student, tmp_path / "probe", progress=False)
    dataset = trainer.data.dataset("train", faces=True, train=True, targets=trainer.teacher.store)
    assert len({int(n) for n in dataset.n_cells}) > 1  # some utterances need several cells
    batch = collate([dataset[i] for i in range(8)])
    counts = batch["seg_mask"].sum(1)
    assert counts.min() < counts.max() == batch["fbank"].shape[1]  # lengths differ within the batch
    # the cached targets are the teacher's outputs on exactly these (padded) cells
    cached, live = trainer.teacher(batch), LiveTeacher(teacher, torch.device("cpu"))(batch)
    valid = batch["seg_mask"]
    torch.testing.assert_close(cached["enc"][valid], live["enc"][valid], atol=1e-4, rtol=1e-4)
    assert (cached["enc"][~valid] == 0).all()
    for key in ("agg", "logits"):
        torch.testing.assert_close(cached[key], live[key], atol=1e-4, rtol=1e-4)
    metrics = run_training(student, tmp_path / "student", progress=False)
    log = (tmp_path / "student" / "train_log.csv").read_text().splitlines()[0].split(",")
    assert {"train_embed_enc", "train_embed_agg", "train_kd"} <= set(log)
    assert 0.0 <= metrics["accuracy"] <= 1.0 and 0.0 <= metrics["eer"] <= 1.0


def test_a_student_on_another_span_is_refused(cache, teacher, tmp_path):
    from distill.train.targets import TargetMismatchError

    window = tiny_config(cache, "student", distill__method="embed", distill__teacher=str(teacher), data__setting="seq")
    with pytest.raises(TargetMismatchError, match="span: teacher utterance vs student window"):
        Trainer(window, tmp_path / "s", progress=False)
    fewer = tiny_config(
        cache,
        "student",
        distill__method="embed",
        distill__teacher=str(teacher),
        **{**UTTERANCE, "data__max_segments": 3},
    )
    with pytest.raises(TargetMismatchError, match="max_segments: teacher 4 vs student 3"):
        Trainer(fewer, tmp_path / "s2", progress=False)


@pytest.mark.slow
def test_whole_utterance_model_embeds_as_evaluation_does(cache, teacher):
    """distill embed's grouping of equal-shape cells gives the embeddings evaluation scored."""
    from distill.eval.run_eval import load_run
    from distill.serve.export import export_run
    from distill.serve.model import Model

    trainer = load_run(teacher)
    test = trainer.data.dataset("test", faces=False, train=False)
    expected = trainer.predict(test, video=False)
    fbanks = [np.asarray(trainer.cache.read(u, fields=("fbank",))["fbank"], np.float32) for u in expected.utt_ids]
    emb, _ = Model.from_run(teacher).forward_fbanks(fbanks, batch_size=3)
    np.testing.assert_allclose(emb, expected.emb, atol=1e-5)
    with pytest.raises(ConfigError, match="whole utterances"):
        export_run(teacher, "torchscript", teacher.parent / "export")


@pytest.mark.slow
def test_nonseq_whole_utterance_evaluation_writes_metrics(cache, tmp_path):
    run = tmp_path / "t"
    metrics = run_training(tiny_config(cache, "teacher", data__eval_span="utterance"), run, progress=False)
    assert json.loads((run / "metrics.json").read_text())["accuracy"] == metrics["accuracy"]
    from distill.eval.run_eval import load_run

    trainer = load_run(run)
    test = trainer.data.dataset("test", faces=False, train=False)
    assert len(test) == len(test.utt_ids)  # one cell per utterance: the whole of it
    pred = trainer.predict(test, video=False)
    fbank = np.asarray(trainer.cache.read(pred.utt_ids[0], fields=("fbank",))["fbank"], np.float32)
    with torch.no_grad():
        whole = trainer.net.eval()(torch.from_numpy(fbank)[None]).emb
    np.testing.assert_allclose(pred.emb[0], whole[0].numpy(), atol=1e-5)
    assert (run / "targets.h5").is_file()  # the targets stay on crops: any nonseq student can use them


def test_whole_utterance_audio_branch_targets_are_packed_per_segment_like_enc(cache, teacher, tmp_path):
    """``distill.target: audio`` over whole utterances: the stored audio-branch rows of each cell's
    valid segments come back as the live teacher's audio branch, padding zero."""
    student = tiny_config(
        cache, "student", distill__method="embed", distill__target="audio", distill__teacher=str(teacher), **UTTERANCE
    )
    trainer = Trainer(student, tmp_path / "probe", progress=False)
    dataset = trainer.data.dataset("train", faces=True, train=True, targets=trainer.teacher.store)
    batch = collate([dataset[i] for i in range(8)])
    valid = batch["seg_mask"]
    cached = trainer.teacher(batch)
    with torch.no_grad():
        out = LiveTeacher(teacher, torch.device("cpu")).net(
            batch["fbank"], face=batch["face"], face_mask=batch["face_mask"], seg_mask=valid
        )
    torch.testing.assert_close(cached["enc"][valid], out.audio[valid], atol=1e-4, rtol=1e-4)
    assert (cached["enc"][~valid] == 0).all()

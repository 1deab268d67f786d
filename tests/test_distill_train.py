"""The trainer: every method x setting x task, checkpoints, the NaN guard, live vs cached teacher."""

from __future__ import annotations

import csv
import json
import math
import warnings

import pytest
import torch

from distill.methods import METHODS
from distill.run import RunDir
from distill.testing import make_lupi_cache, make_lupi_items, tiny_config
from distill.train.trainer import LiveTeacher, NonFiniteLossError, Trainer, run_training
from extract.cache import build_cache

TASK_KEYS = {
    "speaker": {"accuracy", "top5_accuracy", "eer", "min_dcf"},
    "emotion": {"accuracy", "uar", "war", "macro_f1"},
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_lupi_cache(tmp_path_factory.mktemp("train") / "cache", n_classes=3, per_class=8, n_frames=90)


@pytest.fixture(scope="module")
def teachers(cache, tmp_path_factory):
    """One trained teacher per task x setting (1 epoch each)."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for task in ("speaker", "emotion"):
        for setting in ("nonseq", "seq"):
            run = root / f"{task}-{setting}"
            cfg = tiny_config(cache, "teacher", data__task=task, data__setting=setting, eval__plots=True)
            run_training(cfg, run, progress=False)
            out[task, setting] = run
    return out


def read_log(run) -> list[dict]:
    with open(run / "train_log.csv") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("task", ["speaker", "emotion"])
@pytest.mark.parametrize("setting", ["nonseq", "seq"])
def test_teacher_run_directory(teachers, task, setting):
    run = teachers[task, setting]
    metrics = json.loads((run / "metrics.json").read_text())
    assert TASK_KEYS[task] <= set(metrics) and TASK_KEYS[task] <= set(metrics["video_missing"])
    for value in [metrics[k] for k in TASK_KEYS[task]] + [metrics["video_missing"][k] for k in TASK_KEYS[task]]:
        assert 0.0 <= value <= 1.0
    for name in ("config.yaml", RunDir.BEST, RunDir.LAST, "targets.h5", "curves.png", "embeddings.png"):
        assert (run / name).is_file(), name
    assert (run / ("det.png" if task == "speaker" else "confusion.png")).is_file()
    assert set(read_log(run)[0]) >= {"epoch", "train_task", "train_total", "lr", "seconds"}
    assert "train_face_recon" not in read_log(run)[0]  # the paper's teacher: cross-entropy only


@pytest.mark.parametrize("task", ["speaker", "emotion"])
def test_without_plots_a_run_draws_no_figure_and_scores_the_same(cache, teachers, task, tmp_path):
    """``eval.plots: false`` (what TINY sets) leaves out the PNGs only: the same metrics, confusion matrix
    and verification record as the run that drew them."""
    drawn = teachers[task, "nonseq"]
    run_training(tiny_config(cache, "teacher", data__task=task), tmp_path / "t", progress=False)
    assert not list((tmp_path / "t").glob("*.png")) and len(list(drawn.glob("*.png"))) == 3
    for name in (RunDir.METRICS, RunDir.CONFUSION_CSV if task == "emotion" else RunDir.VERIFICATION):
        assert (tmp_path / "t" / name).read_text() == (drawn / name).read_text(), name


@pytest.mark.parametrize("setting", ["nonseq", "seq"])
def test_teacher_face_reconstruction_is_weighted_logged_learned_and_checkpointed(cache, tmp_path, setting):
    cfg = tiny_config(
        cache, "teacher", data__setting=setting, distill__face_recon=2.5, train__epochs=12, train__lr=0.02
    )
    run_training(cfg, tmp_path / "t", progress=False)
    rows = read_log(tmp_path / "t")
    for row in rows:  # per-epoch means of per-batch terms: the total is the same weighted sum
        assert float(row["train_total"]) == pytest.approx(
            float(row["train_task"]) + 2.5 * float(row["train_face_recon"]), rel=1e-4
        )
    assert float(rows[-1]["train_face_recon"]) < 0.8 * float(rows[0]["train_face_recon"])
    objective = torch.load(tmp_path / "t" / RunDir.LAST, weights_only=True)["objective"]
    assert {"face_recon.decode.weight", "face_recon.decode.bias"} <= set(objective)
    # a student ignores the option: no decoder, no term
    student = tiny_config(
        cache,
        "student",
        data__setting=setting,
        distill__method="embed",
        distill__face_recon=2.5,
        distill__teacher=str(tmp_path / "t"),
    )
    run_training(student, tmp_path / "s", progress=False)
    assert "train_face_recon" not in read_log(tmp_path / "s")[0]


EXPECTED_TERMS = {
    "none": {"task"},
    "embed": {"task", "embed_enc"},
    "softlabel": {"task", "kd"},
    "gkd": {"task", "gkd"},
    "embed+softlabel": {"task", "embed_enc", "kd"},
}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(
    "task,setting", [("speaker", "nonseq"), ("speaker", "seq"), ("emotion", "nonseq"), ("emotion", "seq")]
)
def test_every_student_method_trains_and_logs_each_loss_term(cache, teachers, tmp_path, method, task, setting):
    cfg = tiny_config(
        cache,
        "student",
        data__task=task,
        data__setting=setting,
        distill__method=method,
        distill__teacher=str(teachers[task, setting]),
    )
    metrics = run_training(cfg, tmp_path / "s", progress=False)
    assert TASK_KEYS[task] <= set(metrics) and "video_missing" not in metrics
    assert all(0.0 <= metrics[k] <= 1.0 for k in TASK_KEYS[task])
    terms = EXPECTED_TERMS[method] | ({"embed_agg"} if setting == "seq" and "embed" in method else set())
    row = read_log(tmp_path / "s")[0]
    logged = {k[len("train_") :] for k in row if k.startswith("train_")}
    assert logged == terms | {"total"}
    assert all(math.isfinite(float(row[f"train_{t}"])) for t in terms)


@pytest.mark.parametrize("setting", ["nonseq", "seq"])
def test_relational_and_contrastive_embedding_terms_train_and_are_logged(cache, teachers, tmp_path, setting):
    cfg = tiny_config(
        cache,
        "student",
        data__setting=setting,
        distill__method="embed",
        distill__pointwise=0.0,
        distill__relational=1.0,
        distill__contrastive=0.5,
        distill__teacher=str(teachers["speaker", setting]),
    )
    run_training(cfg, tmp_path / "s", progress=False)
    levels = ("enc", "agg") if setting == "seq" else ("enc",)
    row = read_log(tmp_path / "s")[0]
    logged = {k[len("train_") :] for k in row if k.startswith("train_")}
    assert logged == {"task", "total"} | {f"{t}_{lv}" for t in ("rel", "nce") for lv in levels}


def test_a_teacher_on_a_cache_without_any_face_warns(tmp_path):
    items = make_lupi_items(n_classes=3, per_class=8, n_frames=90)  # 2 test items a class: verification runs
    for item in items:
        item["face_found"][:] = False
    cache = build_cache(tmp_path / "cache", items, shard_size=8)
    with pytest.warns(UserWarning, match="no face found in any item.*face_recon has nothing to reconstruct"):
        run_training(tiny_config(cache, "teacher", distill__face_recon=1.0), tmp_path / "t", progress=False)
    items[0]["face_found"][0] = True  # one found face is enough: no warning
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_training(
            tiny_config(build_cache(tmp_path / "c2", items, shard_size=8), "teacher"), tmp_path / "t2", progress=False
        )
    assert not [w for w in caught if "no face found" in str(w.message)]


def test_checkpoints_load_with_weights_only(teachers):
    run = teachers["speaker", "nonseq"]
    last = torch.load(run / RunDir.LAST, weights_only=True)
    assert {"model", "optimizer", "scheduler", "epoch", "rng", "history"} <= set(last)
    best = torch.load(run / RunDir.BEST, weights_only=True)
    assert best["meta"]["labels"] == ["spk0", "spk1", "spk2"]


def test_distill_only_keeps_the_task_gradient_out_of_the_encoder(cache, teachers, tmp_path):
    cfg = tiny_config(
        cache,
        "student",
        distill__method="embed",
        distill__encoder_grad="distill-only",
        distill__weight_enc=0.0,
        distill__teacher=str(teachers["speaker", "nonseq"]),
    )
    trainer = Trainer(cfg, tmp_path / "s", progress=False)
    before = {k: v.clone() for k, v in trainer.net.encoder.state_dict().items() if v.dtype.is_floating_point}
    trainer.train_epoch(trainer.train_loader(trainer.train_dataset())[0], 1)
    after = trainer.net.encoder.state_dict()
    # with the embedding weight at 0 and the task loss detached, only weight decay moves the encoder
    moved = max(
        float((after[k] - v).abs().max() / (v.abs().max() + 1e-12))
        for k, v in before.items()
        if not k.endswith(("running_mean", "running_var"))
    )
    assert moved < 1e-2


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(cache, tmp_path):
    cfg = tiny_config(cache, "teacher", train__epochs=2)
    trainer = Trainer(cfg, tmp_path / "t", progress=False)
    cfg.train.epochs = 1
    trainer.fit()
    good = torch.load(tmp_path / "t" / RunDir.LAST, weights_only=True)
    cfg.train.epochs = 2
    with torch.no_grad():  # a diverged weight: every later loss is NaN
        next(trainer.net.head.parameters()).fill_(float("nan"))
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 1; batch items: c\d_u\d+"):
        trainer.fit()
    kept = torch.load(tmp_path / "t" / RunDir.LAST, weights_only=True)
    assert kept["epoch"] == 1
    assert all(torch.equal(kept["model"][k], good["model"][k]) for k in good["model"])
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.dtype.is_floating_point)


@pytest.mark.parametrize("target", ["fused", "audio"])
@pytest.mark.parametrize("setting", ["nonseq", "seq"])
def test_cached_targets_equal_the_live_teachers_outputs(cache, teachers, tmp_path, setting, target):
    teacher_dir = teachers["speaker", setting]
    cfg = tiny_config(
        cache,
        "student",
        data__setting=setting,
        distill__method="embed+softlabel",
        distill__teacher=str(teacher_dir),
        distill__target=target,
    )
    cached = Trainer(cfg, tmp_path / "a", progress=False)
    live = LiveTeacher(teacher_dir, device=torch.device("cpu"), target=target)
    dataset = cached.data.dataset("train", faces=True, train=True, seed=0, targets=cached.teacher.store)
    from distill.data.dataset import collate

    batch = collate([dataset[i] for i in range(6)])
    from_cache, from_net = cached.teacher(batch), live(batch)
    assert set(from_cache) == {"enc", "logits"} | ({"agg"} if setting == "seq" else set())
    for key in from_cache:
        torch.testing.assert_close(from_cache[key], from_net[key], atol=1e-4, rtol=1e-4)
    # what the student's encoder level imitates: the fused embedding, or the audio branch before fusion
    with torch.no_grad():
        out = live.net(batch["fbank"], face=batch["face"], face_mask=batch["face_mask"])
    torch.testing.assert_close(from_cache["enc"], out.enc if target == "fused" else out.audio, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out.enc, out.audio, atol=1e-3)


def test_teacher_audio_head_is_weighted_logged_learned_and_its_branch_distilled(cache, tmp_path):
    """``distill.audio_aux``: a classifier on the teacher's audio branch (per segment in seq) adds a
    weighted term that decreases, lives in the objective's checkpoint, and a student imitates that
    branch with ``distill.target: audio``."""
    cfg = tiny_config(cache, "teacher", data__setting="seq", distill__audio_aux=0.5, train__epochs=8, train__lr=0.02)
    run_training(cfg, tmp_path / "t", progress=False)
    rows = read_log(tmp_path / "t")
    for row in rows:
        assert float(row["train_total"]) == pytest.approx(
            float(row["train_task"]) + 0.5 * float(row["train_audio_aux"]), rel=1e-4
        )
    assert float(rows[-1]["train_audio_aux"]) < 0.8 * float(rows[0]["train_audio_aux"])
    objective = torch.load(tmp_path / "t" / RunDir.LAST, weights_only=True)["objective"]
    assert {"audio_aux.head.weight", "audio_aux.head.bias"} <= set(objective)
    student = tiny_config(
        cache,
        "student",
        data__setting="seq",
        distill__method="embed",
        distill__target="audio",
        distill__audio_aux=0.5,
        distill__teacher=str(tmp_path / "t"),
    )
    metrics = run_training(student, tmp_path / "s", progress=False)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    logged = {k[len("train_") :] for k in read_log(tmp_path / "s")[0] if k.startswith("train_")}
    assert logged == {"task", "embed_enc", "embed_agg", "total"}  # a student has no audio head


def test_autocast_path_runs_on_cpu_in_bfloat16(cache, teachers, tmp_path):
    """train.amp=on is what CUDA runs get by default; on CPU it autocasts to bfloat16."""
    cfg = tiny_config(
        cache,
        "student",
        train__amp="on",
        data__setting="seq",
        distill__method="embed+softlabel",
        distill__teacher=str(teachers["speaker", "seq"]),
    )
    trainer = Trainer(cfg, tmp_path / "s", progress=False)
    assert trainer.precision.dtype == torch.bfloat16
    metrics = trainer.fit()
    assert all(0.0 <= metrics[k] <= 1.0 for k in TASK_KEYS["speaker"])
    assert all(math.isfinite(float(v)) for v in read_log(tmp_path / "s")[0].values())


@pytest.mark.parametrize("encoder", ["xvector", "resnet"])
def test_alternative_audio_encoders_train_a_student_from_the_config(cache, teachers, tmp_path, encoder):
    """The registry name and its options travel through config.yaml, and `distill eval` rebuilds the net."""
    from distill.eval.run_eval import reevaluate

    overrides = {"model__audio_encoder": encoder, "model__resnet_blocks": [1, 1, 1, 1]}
    cfg = tiny_config(
        cache, "student", distill__method="embed", distill__teacher=str(teachers["speaker", "nonseq"]), **overrides
    )
    metrics = run_training(cfg, tmp_path / "s", progress=False)
    saved = RunDir(tmp_path / "s").config().model
    assert saved.audio_encoder == encoder and saved.resnet_blocks == [1, 1, 1, 1]
    assert reevaluate(tmp_path / "s")["accuracy"] == pytest.approx(metrics["accuracy"])


def test_face_width_comes_from_the_cache(tmp_path):
    """A face model of another width (dlib's ResNet: 128-d) plugs in: the teacher is sized from the cache."""
    from distill.testing import make_shared_direction_items
    from extract import open_cache

    items = make_shared_direction_items(n_classes=3, per_split=(4, 2, 2), n_frames=70, face_dim=128)
    cache = build_cache(tmp_path / "cache", items)
    assert open_cache(cache).face_dim == 128 and open_cache(cache).config["face_dim"] == 128
    metrics = run_training(tiny_config(cache, "teacher", data__task="emotion"), tmp_path / "teacher", progress=False)
    assert "video_missing" in metrics
    trained = RunDir(tmp_path / "teacher").load_network()
    net, meta = trained.net, trained.meta
    assert meta["face_dim"] == 128 and net.encoder.visual.face_dim == 128
    assert net.encoder.visual.norm.mean.shape == (128,)
    run_training(
        tiny_config(
            cache, "student", data__task="emotion", distill__method="embed", distill__teacher=str(tmp_path / "teacher")
        ),
        tmp_path / "student",
        progress=False,
    )


def test_a_teacher_killed_while_writing_its_targets_is_not_finished(cache, tmp_path, monkeypatch):
    """metrics.json is written last: a teacher whose targets never reached the disk must be resumed,
    not taken for finished by the sweep and its students."""

    def killed(self):
        raise KeyboardInterrupt("killed while writing targets")

    monkeypatch.setattr(Trainer, "write_targets", killed)
    run = RunDir(tmp_path / "t")
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny_config(cache, "teacher"), run.path, progress=False)
    assert run.started and not run.finished and not run.targets.exists()

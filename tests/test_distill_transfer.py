"""The transfer set: unlabelled items train a student's label-free terms, never a teacher or a metric."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from distill.config import ConfigError, DataConfig, DistillConfig
from distill.methods import METHODS, NEEDS_LABELS
from distill.models import ModelConfig, build_network
from distill.run import RunData, RunDir
from distill.testing import make_lupi_items, tiny_config
from distill.train.objective import LOG_COUNTS, Objective, StepModule
from distill.train.targets import TargetMismatchError, TargetStore
from distill.train.trainer import Trainer
from distill.transfer import TRANSFER, UNLABELED, UNUSED, assign_roles, keep_labels
from extract.cache import build_cache, open_cache

# --------------------------------------------------------------------------- roles from the index


def index_of(n_classes=3, train=6, val=2, test=2, **columns) -> pd.DataFrame:
    rows = []
    for c in range(n_classes):
        for split, n in (("train", train), ("val", val), ("test", test)):
            rows += [{"utt_id": f"c{c}_{split}{i}", "speaker": f"spk{c}", "split": split} for i in range(n)]
    df = pd.DataFrame(rows).set_index("utt_id", drop=False)
    for name, values in columns.items():
        df[name] = values
    return df


def test_blank_labels_and_split_unlabeled_make_the_transfer_set():
    index = index_of()
    index.loc["c0_train0", "speaker"] = ""
    index.loc["c1_train0", "speaker"] = None
    index.loc["c2_train0", "speaker"] = "  "
    index.loc["c2_train1", "split"] = UNLABELED  # its label is there, but declared hidden
    roles = assign_roles(index, DataConfig(task="speaker"))
    transfer = {"c0_train0", "c1_train0", "c2_train0", "c2_train1"}
    assert set(roles.index[roles == TRANSFER]) == transfer
    assert (roles[~roles.index.isin(transfer)] == index["split"][~index.index.isin(transfer)]).all()


def test_a_val_or_test_item_without_a_label_is_an_error_naming_it():
    index = index_of()
    index.loc["c1_val1", "speaker"] = ""
    with pytest.raises(ConfigError, match=r"1 val/test item\(s\) have no 'speaker' label \(e.g. 'c1_val1'\)"):
        assign_roles(index, DataConfig(task="speaker"))


def test_unlabelled_items_of_a_held_out_fold_are_in_no_set():
    index = index_of(train=4, val=4, test=4)
    index["session"] = [f"s{i % 4}" for i in range(len(index))]
    blank = index.index[::3]
    index.loc[blank, "speaker"] = ""
    data = DataConfig(task="speaker", fold_column="session", fold=0)
    roles = assign_roles(index, data)
    labelled = assign_roles(index.assign(speaker="spk"), data)  # the same folds, every item labelled
    assert (roles[blank] == labelled[blank].map({"train": TRANSFER, "val": UNUSED, "test": UNUSED})).all()
    assert {UNUSED, TRANSFER} <= set(roles[blank])
    assert (roles.drop(blank) == labelled.drop(blank)).all()


def test_the_seeded_fallback_split_is_over_the_labelled_items():
    index = index_of(train=8, val=0, test=0).drop(columns="split")
    index.iloc[::4, index.columns.get_loc("speaker")] = ""
    roles = assign_roles(index, DataConfig(task="speaker", split_column="split"))
    unlabelled = index["speaker"] == ""
    assert (roles[unlabelled] == TRANSFER).all()
    assert set(roles[~unlabelled]) == {"train", "val", "test"}


def test_labels_per_class_keeps_exactly_k_seeded_nested_items_per_class():
    index = index_of(n_classes=4, train=7)
    roles = {
        (k, seed): assign_roles(index, DataConfig(task="speaker", labels_per_class=k, labels_seed=seed))
        for k in (1, 3)
        for seed in (0, 1)
    }
    kept = {key: set(r.index[r == "train"]) for key, r in roles.items()}
    for (k, _), names in kept.items():
        assert index.loc[sorted(names), "speaker"].value_counts().to_dict() == {f"spk{c}": k for c in range(4)}
    for r in roles.values():  # the hidden training items are the transfer set; val/test untouched
        assert ((r == "train") | (r == TRANSFER)).sum() == 4 * 7
        assert (r[index["split"] != "train"] == index["split"][index["split"] != "train"]).all()
    assert kept[1, 0] == set(
        assign_roles(index, DataConfig(task="speaker", labels_per_class=1)).pipe(lambda r: r.index[r == "train"])
    )  # same seed, same subset
    assert kept[3, 0] != kept[3, 1]  # another seed, another subset
    assert kept[1, 0] < kept[3, 0] and kept[1, 1] < kept[3, 1]  # nested: a curve over k adds labels


def test_a_class_with_fewer_than_k_items_keeps_all_and_says_so():
    labels = pd.Series(["a"] * 5 + ["b"] * 2)
    with pytest.warns(UserWarning, match=r"1 class\(es\) have fewer labelled training items \(e.g. 'b': 2\)"):
        keep = keep_labels(labels, 3, seed=0)
    assert keep[:5].sum() == 3 and keep[5:].all()


def test_labels_per_class_must_be_positive():
    with pytest.raises(ConfigError, match="labels_per_class must be >= 1"):
        tiny_config("c", data__labels_per_class=0)


# --------------------------------------------------------------------------- the loss of a mixed batch

N_CLASSES = 4


def mixed_step(method: str, header: str = "linear") -> StepModule:
    torch.manual_seed(0)
    net = build_network(
        ModelConfig(audio_encoder="xvector", emb_dim=16, header=header),
        role="student",
        setting="nonseq",
        n_mels=20,
        n_classes=N_CLASSES,
    )
    objective = Objective(DistillConfig(method=method), "student", net.level_dims, net.level_dims)
    return StepModule(net, objective).eval()


LABELS = torch.tensor([0, -1, 2, -1, 1, 3])  # -1: a transfer item
KNOWN = LABELS >= 0


def mixed_batch():
    g = torch.Generator().manual_seed(1)
    batch = {"fbank": torch.randn(6, 60, 20, generator=g), "label": LABELS}
    teacher = {"logits": torch.randn(6, N_CLASSES, generator=g) * 3, "enc": torch.randn(6, 16, generator=g)}
    return batch, teacher


def fbank_grad_norms(step, batch, teacher, term: str) -> torch.Tensor:
    """Per item: how much ``term`` depends on that item's input."""
    fbank = batch["fbank"].clone().requires_grad_(True)
    terms = step({**batch, "fbank": fbank}, teacher)
    (grad,) = torch.autograd.grad(terms[term], fbank, allow_unused=True)
    return torch.zeros(len(fbank)) if grad is None else grad.flatten(1).norm(dim=1)


def test_the_task_loss_is_the_mean_over_the_labelled_items_only():
    step = mixed_step("embed")
    batch, teacher = mixed_batch()
    terms = step(batch, teacher)
    logits = step.net(batch["fbank"]).logits
    assert terms["task"].item() == pytest.approx(F.cross_entropy(logits[KNOWN], LABELS[KNOWN]).item(), rel=1e-4)
    grads = fbank_grad_norms(step, batch, teacher, "task")
    assert (grads[~KNOWN] == 0).all() and (grads[KNOWN] > 0).all()
    assert terms[LOG_COUNTS] == {"task": 4}  # the epoch's mean of task weighs this batch by 4 items


@pytest.mark.parametrize("method,term", [("embed", "embed_enc"), ("softlabel", "kd"), ("gkd", "gkd")])
def test_unlabelled_items_receive_the_label_free_terms(method, term):
    step = mixed_step(method)
    batch, teacher = mixed_batch()
    grads = fbank_grad_norms(step, batch, teacher, term)
    assert (grads > 0).all()  # every item, labelled or not
    total = fbank_grad_norms(step, batch, teacher, "total")
    assert (total[~KNOWN] > 0).all()


def test_a_batch_without_a_label_keeps_the_header_in_the_graph():
    step = mixed_step("embed")
    batch, teacher = mixed_batch()
    batch["label"] = torch.full((6,), -1)
    terms = step(batch, teacher)
    assert terms["task"].item() == 0.0 and terms[LOG_COUNTS] == {"task": 0}
    terms["total"].backward()
    assert all(p.grad is not None for p in step.net.head.parameters())


def test_aam_gives_no_margin_to_unlabelled_items():
    step = mixed_step("softlabel", header="aam")
    batch, _ = mixed_batch()
    with torch.no_grad():
        emb = step.net(batch["fbank"]).emb
        plain = step.net.head(emb)
        margin = step.net.head(emb, LABELS)
    assert torch.allclose(margin[~KNOWN], plain[~KNOWN])
    assert not torch.allclose(margin[KNOWN], plain[KNOWN])


def test_the_methods_table_declares_which_terms_need_labels():
    assert NEEDS_LABELS == {"task", "audio_aux"}
    learns = {name for name, m in METHODS.items() if m.learns_without_labels}
    assert learns == set(METHODS) - {"none"}


# --------------------------------------------------------------------------- teacher, targets and students


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """3 speakers x (6 train, 2 val, 2 test); per speaker one train item split `unlabeled` and one with
    an empty label; `alt_split` swaps train and val (a split that leaks)."""
    items = make_lupi_items(3, 10, n_frames=70, split_ratios=(0.6, 0.2, 0.2))
    swap = {"train": "val", "val": "train", "test": "test"}
    for item in items:
        item["alt_split"] = swap[item["split"]]
        k = int(item["utt_id"].split("_u")[1])
        if k == 0:
            item["split"] = item["alt_split"] = UNLABELED
        elif k == 1:
            item["speaker"], item["alt_split"] = "", "train"
    return build_cache(tmp_path_factory.mktemp("transfer") / "cache", items, shard_size=32)


@pytest.fixture(scope="module")
def teacher(cache, tmp_path_factory):
    """A teacher that keeps 2 labels per speaker: 4 more training items per speaker join the transfer set."""
    run = tmp_path_factory.mktemp("teacher") / "t"
    cfg = tiny_config(cache, "teacher", data__labels_per_class=2)
    trainer = Trainer(cfg, run, progress=False)
    trainer.fit()
    return run, trainer


def test_roles_of_the_cache(cache):
    data = RunData.load(tiny_config(cache, data__labels_per_class=2), open_cache(cache))
    assert data.labels.names == ["spk0", "spk1", "spk2"]  # the empty label is no class
    assert [len(data.ids[s]) for s in ("train", "val", "test", TRANSFER)] == [6, 6, 6, 12]
    assert (data.y[TRANSFER] == -1).all() and (data.y["train"] >= 0).all()
    transfer = data.utt_ids(TRANSFER)
    assert {f"c{c}_u000" for c in range(3)} | {f"c{c}_u001" for c in range(3)} <= set(transfer)


def test_the_teacher_trains_on_the_labelled_items_and_embeds_the_transfer_set(teacher):
    run, trainer = teacher
    labelled = set(trainer.data.utt_ids("train"))
    assert trainer.train_splits == ("train",)
    assert set(trainer.train_dataset().utt_ids) == labelled and len(labelled) == 6
    assert set(RunDir(run).train_ids.read_text().split()) == labelled
    store = TargetStore(RunDir(run).targets)
    for utt in trainer.data.utt_ids(TRANSFER):
        assert store.lookup(utt, 0)["enc"].shape == (16,)


def test_a_distilling_student_trains_on_the_transfer_set_and_none_does_not(cache, teacher, tmp_path):
    run, _ = teacher
    cfg = tiny_config(  # the CLI and sweeps inherit the teacher's data section; tiny_config is told
        cache, "student", distill__method="embed", distill__teacher=str(run), data__labels_per_class=2
    )
    student = Trainer(cfg, tmp_path / "s", progress=False)
    dataset = student.train_dataset()
    transfer = set(student.data.utt_ids(TRANSFER))
    assert set(dataset.utt_ids) == set(student.data.utt_ids("train")) | transfer
    assert all(dataset[i]["label"] == -1 for i, u in enumerate(dataset.utt_ids) if u in transfer)
    assert all(dataset[i]["t_enc"].shape == (16,) for i in range(len(dataset)))  # a target for every item
    metrics = student.fit()
    assert 0.0 <= metrics["accuracy"] <= 1.0
    none = Trainer(tiny_config(cache, "student", data__labels_per_class=2), tmp_path / "n", progress=False)
    assert set(none.train_dataset().utt_ids) == set(none.data.utt_ids("train"))


@pytest.mark.parametrize(
    "overrides,error",
    [
        ({"data__labels_per_class": 1}, "unlabelled \\(transfer\\) items were in the teacher's training set"),
        ({"data__labels_per_class": 2, "data__labels_seed": 1}, "unlabelled \\(transfer\\) items"),
        ({"data__labels_per_class": 2, "data__split_column": "alt_split"}, "val/test items were in the teacher"),
        ({"data__labels_per_class": 3}, None),  # nested draws: the teacher's 2 are among the student's 3
        ({"data__labels_per_class": 2}, None),
        ({}, None),  # every label: the teacher's are among them; the manifest's unlabelled items still transfer
    ],
)
def test_the_guard_refuses_a_teacher_that_saw_a_label_the_student_must_not(cache, teacher, tmp_path, overrides, error):
    run, _ = teacher
    cfg = tiny_config(cache, "student", distill__method="softlabel", distill__teacher=str(run), **overrides)
    if error is None:
        student = Trainer(cfg, tmp_path, progress=False)
        transfer = {3: 9, 2: 12, None: 6}[cfg.data.labels_per_class]
        assert student.train_splits == ("train", TRANSFER) and len(student.data.ids[TRANSFER]) == transfer
    else:
        with pytest.raises(TargetMismatchError, match=error):
            Trainer(cfg, tmp_path, progress=False)


def test_a_label_term_of_the_table_sees_the_labelled_items_of_a_mixed_batch():
    """audio_aux (a teacher's) is in NEEDS_LABELS: on a mixed batch it is computed on the labelled items."""
    torch.manual_seed(0)
    net = build_network(
        ModelConfig(audio_encoder="xvector", emb_dim=16, visual_dim=16),
        role="teacher",
        setting="nonseq",
        n_mels=20,
        n_classes=N_CLASSES,
        face_dim=32,
    ).eval()
    objective = Objective(
        DistillConfig(audio_aux=1.0),
        "teacher",
        net.level_dims,
        audio_dim=net.encoder.audio.out_dim,
        n_classes=N_CLASSES,
    )
    batch, _ = mixed_batch()
    with torch.no_grad():
        out = net(batch["fbank"], face=torch.randn(6, 2, 32), face_mask=torch.ones(6, 2, dtype=torch.bool))
        terms = objective(out, LABELS, {})
        expected = F.cross_entropy(objective.audio_aux.head(out.audio[KNOWN]), LABELS[KNOWN])
    assert terms["audio_aux"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert terms[LOG_COUNTS] == {"task": 4, "audio_aux": 4}

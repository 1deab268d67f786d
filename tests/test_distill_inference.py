"""distill.serve.model: the Model API (embed, predict, score), batching, and `distill predict`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from inference_runs import assert_close, trained_runs

from distill.cli import main
from distill.serve.model import Model, Segment, run_items, sources_from


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return trained_runs(tmp_path_factory)


@pytest.fixture(scope="module")
def speaker(runs):
    return Model.from_run(runs.speaker)


def _split_fbanks(runs, run_dir, split: str):
    from distill.eval.run_eval import load_run

    trainer = load_run(run_dir)
    ids = trainer.cache.utt_ids(trainer.data.ids[split])
    return trainer, ids, [trainer.cache.read(u, fields=("fbank",))["fbank"] for u in ids]


@pytest.mark.parametrize("which", ["speaker", "emotion"])
def test_batched_over_lengths_equals_one_at_a_time(runs, which):
    model = Model.from_run(getattr(runs, which))
    files = [str(p) for p in runs.wavs]
    batched = model.embed(files, batch_size=5)  # chunks cut across items
    alone = np.stack([model.embed(f, batch_size=1)[0] for f in files])
    assert batched.shape == (len(files), model.embed_dim)
    assert_close(batched, alone)
    assert np.abs(batched[0] - batched[1]).max() > 1e-3  # different clips, different embeddings
    probs = model.predict(files, batch_size=3).probs
    assert_close(probs, np.concatenate([model.predict(f, batch_size=1).probs for f in files]))


def test_padded_waveforms_are_cut_to_their_lengths(runs, speaker):
    from extract.decode import decode_audio

    waves = [decode_audio(p, speaker.sample_rate) for p in runs.wavs]
    lengths = [len(w) for w in waves]
    padded = np.random.default_rng(0).standard_normal((len(waves), max(lengths))).astype(np.float32)  # loud padding
    for row, w in zip(padded, waves):
        row[: len(w)] = w
    want = speaker.embed([str(p) for p in runs.wavs])
    assert_close(speaker.embed(padded, lengths=lengths, batch_size=4), want)
    assert_close(speaker.embed(waves), want)  # a list of unequal waveforms
    with pytest.raises(ValueError, match="lengths"):
        speaker.embed(padded, lengths=lengths[:2])


def test_predict_reproduces_the_runs_test_metrics(runs):
    """The cell grid, averaging and classes of the API are those of evaluation: same accuracy."""
    for run_dir in (runs.speaker, runs.emotion):
        model = Model.from_run(run_dir)
        trainer, ids, fbanks = _split_fbanks(runs, run_dir, "test")
        emb, logits = model.forward_fbanks(fbanks, batch_size=16)
        pred = trainer.predict(trainer.data.dataset("test", faces=False, train=False), video=False)
        assert_close(emb, pred.emb)
        assert_close(logits, pred.logits)
        names = np.array(model.classes)[logits.argmax(1)]
        truth = trainer.cache.index.loc[ids, trainer.config.data.label].astype(str).to_numpy()
        metrics = json.loads((run_dir / "metrics.json").read_text())
        key = metrics.get("video_missing", metrics)
        assert (names == truth).mean() == pytest.approx(key["accuracy"])


def test_prediction_table(speaker, runs):
    pred = speaker.predict([str(p) for p in runs.wavs[:2]])
    table = pred.table(["a", "b"])
    assert list(table.columns) == ["utt_id", "top", "top_prob"] + [f"prob_{c}" for c in speaker.classes]
    assert_close(pred.probs.sum(1), np.ones(2))
    assert table["top"].tolist() == [speaker.classes[i] for i in pred.probs.argmax(1)]


def test_score_and_the_recorded_val_threshold(runs, speaker):
    from distill.eval import metrics as M
    from distill.eval.evaluate import build_trials

    a, b = [str(p) for p in runs.wavs[:2]], [str(p) for p in runs.wavs[2:]]
    scores = speaker.score(a, b)
    assert_close(scores, speaker.score(b, a))
    assert_close(speaker.score(a, a), np.ones(2))
    # verification.json was written at evaluation: the val EER point of the audio-only embeddings
    recorded = json.loads((runs.speaker / "verification.json").read_text())
    assert speaker.threshold == recorded and recorded["split"] == "val"
    trainer, ids, fbanks = _split_fbanks(runs, runs.speaker, "val")
    emb = speaker.forward_fbanks(fbanks)[0]
    trials = build_trials(trainer.cache.index, ids, "speaker", None)
    row = {u: i for i, u in enumerate(ids)}
    s = M.cosine_scores(emb[[row[u] for u in trials["enrol"]]], emb[[row[u] for u in trials["test"]]])
    again = M.verification_metrics(s, trials["label"].to_numpy().astype(bool))
    assert recorded["threshold"] == pytest.approx(again["eer_threshold"], abs=1e-6)
    assert recorded["eer"] == pytest.approx(again["eer"], abs=1e-9)
    t = recorded["threshold"]
    assert speaker.decide(np.array([t - 1e-4, t, t + 1e-4])).tolist() == [False, True, True]
    assert not (runs.emotion / "verification.json").exists()  # emotion runs do not verify


def test_features_of_a_file_are_those_extraction_stores(runs, speaker, tmp_path):
    """Same decode, same log-mel, same storage rounding: bit for bit what `extract run` caches."""
    from extract import open_cache
    from extract.config import ExtractConfig
    from extract.run import RunOptions, run_extraction

    manifest = tmp_path / "m.csv"
    pd.DataFrame({"utt_id": [f"u{i}" for i in range(3)], "path": [str(p) for p in runs.wavs[:3]]}).to_csv(
        manifest, index=False
    )
    cfg = ExtractConfig(n_mels=20, face_weights="random")
    summary = run_extraction(manifest, tmp_path / "cache", cfg, RunOptions(workers=1, threads=1, progress=False))
    cache = open_cache(summary.cache_dir)
    for i, path in enumerate(runs.wavs[:3]):
        np.testing.assert_array_equal(speaker.fbank(str(path)), cache[f"u{i}"]["fbank"])


def test_bad_files_fail_alone(runs, speaker, tmp_path):
    files = [
        str(runs.wavs[0]),
        str(runs.too_short),
        str(tmp_path / "missing.wav"),
        str(runs.not_audio),
        str(runs.wavs[1]),
    ]
    results = list(run_items(speaker, sources_from(files), chunk=2))
    ids = [u for chunk_ids, *_ in results for u in chunk_ids]
    failures = {f.item_id: f.reason for *_, fails in results for f in fails}
    assert ids == [files[0], files[4]]
    assert set(failures) == set(files[1:4])
    assert "shorter than one feature window" in failures[files[1]]
    emb = np.concatenate([e for chunk_ids, e, *_ in results if chunk_ids])
    assert_close(emb, speaker.embed([files[0], files[4]]))
    with pytest.raises(ValueError, match="shorter than one feature window"):
        speaker.embed(str(runs.too_short))


def test_segments_of_a_manifest_are_decoded_with_start_and_end(speaker, runs, tmp_path):
    manifest = tmp_path / "m.csv"
    pd.DataFrame(
        {"utt_id": ["whole", "part"], "path": [runs.wavs[2].name] * 2, "start": [None, 0.2], "end": [None, 0.8]}
    ).to_csv(manifest, index=False)
    (tmp_path / runs.wavs[2].name).write_bytes(runs.wavs[2].read_bytes())
    sources = sources_from(manifest=str(manifest))
    assert [u for u, _ in sources] == ["whole", "part"] and sources[1][1] == Segment(
        str(tmp_path / runs.wavs[2].name), 0.2, 0.8
    )
    whole, part = speaker.embed([s for _, s in sources])
    assert_close(whole, speaker.embed(str(runs.wavs[2]))[0])
    assert np.abs(whole - part).max() > 1e-4


def test_predict_cli(runs, tmp_path, capsys):
    files = [str(p) for p in runs.wavs]
    assert main(["predict", str(runs.emotion), *files, "--out", str(tmp_path / "p.csv"), "--quiet"]) == 0
    table = pd.read_csv(tmp_path / "p.csv")
    model = Model.from_run(runs.emotion)
    want = model.predict(files)
    assert table["utt_id"].tolist() == files and table["top"].tolist() == want.top
    assert_close(table[[f"prob_{c}" for c in model.classes]].to_numpy(), want.probs)
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith(f"predicted {len(files)} file(s) (emotion:")
    # JSON, with a bad file among good ones: its error line, the rest still written, exit 1
    out = tmp_path / "p.json"
    assert (
        main(["predict", str(runs.emotion), files[0], str(runs.not_audio), files[1], "--out", str(out), "--quiet"]) == 1
    )
    rows = json.loads(out.read_text())
    assert [r["utt_id"] for r in rows] == [files[0], files[1]]
    err = capsys.readouterr().err
    assert "notes.wav" in err and err.count("error:") == 1
    # stdout lines without --out; usage errors exit 2
    assert main(["predict", str(runs.speaker), files[0], "--quiet"]) == 0
    line = capsys.readouterr().out.splitlines()[0].split("\t")
    assert line[0] == files[0] and line[1] in model.classes + Model.from_run(runs.speaker).classes
    assert main(["predict", str(runs.speaker), "--quiet"]) == 2
    assert main(["predict", str(runs.speaker), files[0], "--out", str(tmp_path / "p.txt")]) == 2


def test_docs_example_runs(runs, tmp_path, monkeypatch):
    """docs/inference.md's Python example, run as a doctest on a tiny run and real clips."""
    import doctest
    import shutil
    from pathlib import Path

    shutil.copytree(runs.speaker, tmp_path / "runs" / "speaker")
    (tmp_path / "clips").mkdir()
    for name, src in zip("abc", runs.wavs):
        shutil.copy(src, tmp_path / "clips" / f"{name}.wav")
    monkeypatch.chdir(tmp_path)
    doc = Path(__file__).resolve().parents[1] / "docs" / "inference.md"
    result = doctest.testfile(str(doc), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 15 and result.failed == 0


def test_a_run_on_a_synthetic_cache_embeds_logmels_but_not_files(runs, tmp_path, capsys):
    from distill.testing import make_lupi_cache, tiny_config
    from distill.train.trainer import run_training

    cache = make_lupi_cache(tmp_path / "cache", n_classes=3, per_class=8, n_frames=90, n_mels=20)
    run_training(tiny_config(cache, "student", train__tensorboard=False), tmp_path / "run", progress=False)
    model = Model.from_run(tmp_path / "run")
    emb, logits = model.forward_fbanks([np.zeros((50, 20), np.float32), np.ones((120, 20), np.float32)])
    assert emb.shape == (2, 16) and logits.shape == (2, 3)
    assert main(["predict", str(tmp_path / "run"), str(runs.wavs[0])]) == 2
    assert "synthetic cache" in capsys.readouterr().err

"""distill.serve.export: self-contained TorchScript / ONNX folders that equal the run they came from."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from inference_runs import assert_close, trained_runs

from distill.cli import main
from distill.serve.export import export_run
from distill.serve.model import Model


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return trained_runs(tmp_path_factory)


@pytest.mark.parametrize("fmt", ["torchscript", "onnx"])
@pytest.mark.parametrize("which", ["speaker", "emotion"])  # student nonseq; teacher seq (video missing)
def test_export_loads_without_run_or_cache_and_equals_the_run(runs, tmp_path, monkeypatch, fmt, which):
    run = tmp_path / "run"
    shutil.copytree(getattr(runs, which), run)
    out, diff = export_run(run, fmt, tmp_path / "model", cells=4)
    assert diff <= 1e-5
    shutil.rmtree(run)  # the folder must stand alone

    def no_cache(*args, **kw):
        raise AssertionError("an exported model must not open a cache")

    monkeypatch.setattr("extract.open_cache", no_cache)
    monkeypatch.setattr("distill.train.trainer.open_cache", no_cache)
    exported, original = Model.load(out), Model.from_run(getattr(runs, which))
    files = [str(p) for p in runs.wavs]
    # 4 files -> more cells than the graph's 4 per call, so chunks and a padded last chunk are exercised
    assert_close(exported.embed(files, batch_size=9), original.embed(files))
    assert_close(exported.predict(files).probs, original.predict(files).probs)
    assert exported.classes == original.classes and exported.threshold == original.threshold
    assert exported.identity == original.identity
    if which == "speaker":  # the AS-norm cohort travels with the model
        assert_close(exported.cohort, original.cohort, 0)
        assert_close(
            exported.score(files[:2], files[2:], norm="asnorm"), original.score(files[:2], files[2:], norm="asnorm")
        )
    info = json.loads((out / "model.json").read_text())
    assert info["format"] == fmt and (out / info["file"]).is_file() and info["check"]["max_abs_diff"] <= 1e-5
    assert info["features"]["n_mels"] == 20 and info["grid"]["setting"] == info["setting"]


def test_onnx_graph_runs_in_onnxruntime_alone(runs, tmp_path):
    """The .onnx file is a plain ONNX graph: onnxruntime runs it with no torch code of ours."""
    ort = pytest.importorskip("onnxruntime")
    out, _ = export_run(runs.speaker, "onnx", tmp_path / "m", cells=3)
    info = json.loads((out / "model.json").read_text())
    session = ort.InferenceSession(str(out / "network.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal(info["input"]["shape"]).astype(np.float32)
    emb, logits = session.run(["emb", "logits"], {"fbank": x})
    want = Model.from_run(runs.speaker).backend(x)
    assert_close(emb, want[0])
    assert_close(logits, want[1])


def test_export_cli_and_model_card(runs, tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["export", str(runs.speaker), "--format", "torchscript", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"exported {runs.speaker} as torchscript -> {out}")
    card = (out / "README.md").read_text()
    metrics = json.loads((runs.speaker / "metrics.json").read_text())
    assert f"| accuracy | {metrics['accuracy']:.4f} |" in card and f"| eer | {metrics['eer']:.4f} |" in card
    assert "Verification threshold" in card and "emb_dim: 16" in card  # the training config is in the card
    assert (out / "config.yaml").read_text() == (runs.speaker / "config.yaml").read_text()
    # re-exporting into an export folder replaces it; a foreign non-empty folder is refused (usage error)
    assert main(["export", str(runs.speaker), "--format", "onnx", "--out", str(out)]) == 0
    assert json.loads((out / "model.json").read_text())["format"] == "onnx" and not (out / "network.pt").exists()
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "keep.txt").write_text("mine")
    assert main(["export", str(runs.speaker), "--out", str(tmp_path / "busy")]) == 2
    assert (tmp_path / "busy" / "keep.txt").read_text() == "mine"
    # the exported folder serves the other commands too
    assert main(["predict", str(out), str(runs.wavs[0]), "--quiet"]) == 0

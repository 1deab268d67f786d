"""--face-weights dlib: dlib's ResNet (128-d) behind MTCNN, its weights from a registry package."""

from __future__ import annotations

import importlib.util
import json
import sys

import numpy as np
import pytest

from extract.config import ExtractConfig
from extract.faces import FACE_EMBEDDERS, DlibEmbedding, FaceEmbedder, FaceWeightsError, resolve_face_weights
from manifests.media import face_frame, lfw_faces, write_video
from tests.conftest import tone, write_manifest

needs_dlib = pytest.mark.skipif(
    importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None,
    reason="the faces-dlib extra (dlib-bin, face_recognition_models) is not installed",
)
CFG = ExtractConfig(face_weights="dlib", face_batch=8)


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder(CFG, resolve_face_weights("dlib"))


@needs_dlib
def test_dlib_is_registered_with_its_width_and_identity():
    weights = resolve_face_weights("dlib")
    assert FACE_EMBEDDERS["dlib"] is DlibEmbedding and weights.face_dim == 128
    assert weights.identity.startswith("dlib-resnet-v1:sha256=") and ",shape5:sha256=" in weights.identity
    # another network, another cache; the record carries its width and dlib's version
    assert CFG.hash(weights.identity) != CFG.hash(resolve_face_weights("random").identity)
    record = CFG.to_record(weights.identity, weights.face_dim, weights.versions())
    assert record["face_dim"] == 128 and record["versions"]["dlib"] and "facenet_pytorch" in record["versions"]
    assert "dlib" not in ExtractConfig(face_weights="random").to_record("random")["versions"]


@needs_dlib
def test_dlib_embeds_what_dlibs_own_pipeline_embeds(embedder):
    """Our chip (5-point landmarks on MTCNN's box, get_face_chip) + batched descriptor = dlib's
    one-call descriptor from the same landmarks, L2-normalised; 128-d; no-face frames stay zero."""
    import dlib

    frames = np.stack([face_frame(f, (128, 128)) for f in lfw_faces()[:3]])
    frames[1] = 90  # flat grey: nothing to detect
    emb, found = embedder(frames)
    assert emb.shape == (3, 128) and found.tolist() == [True, False, True]
    assert not emb[1].any()
    np.testing.assert_allclose(np.linalg.norm(emb[found], axis=1), 1.0, atol=1e-5)

    model = embedder.embedder
    for k in (0, 2):
        box = embedder.boxes(frames[k : k + 1])[0][0]
        landmarks = model.shape(frames[k], dlib.rectangle(*(int(round(v)) for v in box)))
        reference = np.asarray(model.net.compute_face_descriptor(frames[k], landmarks))
        np.testing.assert_allclose(emb[k], reference / np.linalg.norm(reference), atol=1e-5)

    chips, _ = embedder.crops(frames)
    assert tuple(chips.shape) == (2, 150, 150, 3) and str(chips.dtype) == "torch.uint8"
    empty, none = embedder(np.zeros((0, 128, 128, 3), np.uint8))
    assert empty.shape == (0, 128) and none.shape == (0,)


@needs_dlib
def test_dlib_keeps_a_face_nearer_its_own_copies_than_other_people(embedder):
    """Real LFW faces: a re-framed (shifted, resized) copy and a mirror image of a face are nearer
    to it than any of the other people are, by a clear margin."""
    faces = lfw_faces()[:8]
    centred, found = embedder(np.stack([face_frame(f, (128, 128)) for f in faces]))
    shifted, found_s = embedder(np.stack([face_frame(f, (128, 128), box=(30, 20, 80, 80)) for f in faces]))
    mirrored, found_m = embedder(np.stack([face_frame(f[:, ::-1], (128, 128)) for f in faces]))
    assert found.all() and found_s.all() and found_m.all()
    others = ~np.eye(len(faces), dtype=bool)
    for copy in (shifted, mirrored):
        dist = np.linalg.norm(copy[:, None] - centred[None], axis=2)
        assert (dist.argmin(axis=1) == np.arange(len(faces))).all()
        assert np.diag(dist).mean() < 0.5 * dist[others].mean()


def test_dlib_missing_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # what an environment without the extra raises
    with pytest.raises(FaceWeightsError, match=r"avpi\[faces-dlib\]"):
        resolve_face_weights("dlib")


@needs_dlib
@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:.*no verification")  # one test clip per person: no target trials
def test_extract_with_dlib_writes_a_128_d_cache_a_teacher_trains_on(tmp_path):
    from distill.run import RunDir
    from distill.testing import tiny_config
    from distill.train.trainer import run_training
    from extract import open_cache
    from extract.cli import main
    from extract.info import cache_info

    rows = []
    for s, face in enumerate(lfw_faces()[[4, 17, 42]]):  # three people, two clips each in train, one in val, test
        for k, split in enumerate(("train", "train", "val", "test")):
            frames = np.stack([face_frame(face, (96, 96), box=(14 + j, 14 + k, 64, 64)) for j in range(10)])
            path = write_video(tmp_path / f"s{s}_{k}.mp4", frames, 10, tone(1.0, 16000, 140 + 40 * s, seed=k), 16000)
            rows.append({"utt_id": f"s{s}_{k}", "path": path.name, "speaker": f"spk{s}", "split": split})
    manifest = write_manifest(tmp_path / "m.csv", rows)
    args = [
        "run",
        "--manifest",
        str(manifest),
        "--cache-root",
        str(tmp_path / "c"),
        "--face-weights",
        "dlib",
        "--fps",
        "2",
        "--n-mels",
        "20",
        "--threads",
        "1",
        "--no-progress",
        "--strict",
    ]
    assert main(args) == 0
    (cache_dir,) = (tmp_path / "c").iterdir()
    cache = open_cache(cache_dir)
    assert len(cache) == 12 and cache.face_dim == 128
    config = json.loads((cache_dir / "config.json").read_text())
    assert config["face_dim"] == 128 and config["face_weights_identity"].startswith("dlib-resnet-v1")
    assert cache_info(cache_dir)["settings"]["face_dim"] == 128  # what `extract info` shows
    item = cache["s1_0"]
    assert item["face"].shape == (2, 128) and item["face_found"].all()
    np.testing.assert_allclose(np.linalg.norm(item["face"].astype(np.float32), axis=1), 1.0, atol=2e-3)
    # the same person's clips are nearer each other than another person's
    mean = {s: np.mean([cache[f"s{s}_{k}"]["face"].astype(np.float32).mean(0) for k in range(4)], 0) for s in range(3)}
    for s in range(3):
        own = np.linalg.norm(cache[f"s{s}_3"]["face"].astype(np.float32).mean(0) - mean[s])
        assert all(own < np.linalg.norm(mean[s] - mean[t]) for t in range(3) if t != s)

    metrics = run_training(tiny_config(cache_dir, "teacher"), tmp_path / "teacher", progress=False)
    assert "video_missing" in metrics
    trained = RunDir(tmp_path / "teacher").load_network()
    assert trained.meta["face_dim"] == 128 and trained.net.encoder.visual.face_dim == 128

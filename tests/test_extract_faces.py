"""extract.faces: standardisation applied once, no-face frames stay empty, weights resolve or fail early."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from facenet_pytorch import MTCNN
from facenet_pytorch.models.mtcnn import fixed_image_standardization

from extract.config import ExtractConfig
from extract.faces import FaceEmbedder, FaceWeightsError, resolve_face_weights
from manifests.media import face_frame, lfw_faces
from tests.conftest import face_frames

CFG = ExtractConfig(face_weights="random", face_batch=4)


@pytest.fixture(scope="module")
def embedder() -> FaceEmbedder:
    return FaceEmbedder(CFG, resolve_face_weights("random", seed=0))


def test_standardisation_is_applied_exactly_once(embedder):
    frames = face_frames(3, (128, 128))
    crops, found = embedder.crops(frames)
    assert found.all()
    # the same detector without post-processing gives raw 0..255 crops; standardising them once
    # must reproduce ours (twice would squash them to ~[-0.01, 0.01])
    raw = MTCNN(image_size=160, post_process=False, device="cpu")(torch.tensor(frames))
    expected = fixed_image_standardization(torch.stack(raw))
    torch.testing.assert_close(crops, expected)
    assert crops.min() < -0.5 and crops.max() > 0.5

    emb, _ = embedder(frames)
    with torch.inference_mode():
        direct = embedder.embedder.net(expected).numpy()
    np.testing.assert_allclose(emb, direct, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-4)


def test_frames_without_faces_are_never_filled(embedder):
    frames = face_frames(6, (128, 128))
    frames[[1, 4]] = 90  # flat grey: nothing to detect
    emb, found = embedder(frames)
    assert found.tolist() == [True, False, True, True, False, True]
    assert not emb[~found].any() and np.abs(emb[found]).sum(axis=1).min() > 0
    emb0, found0 = embedder(np.zeros((0, 128, 128, 3), np.uint8))
    assert emb0.shape == (0, 512) and found0.shape == (0,)
    with pytest.raises(ValueError, match="uint8 RGB"):
        embedder(frames.astype(np.float32))


def test_random_weights_are_seeded(embedder):
    frames = face_frames(2, (128, 128))
    again = FaceEmbedder(CFG, resolve_face_weights("random", seed=0))(frames)[0]
    other = FaceEmbedder(ExtractConfig(face_weights="random", face_seed=1), resolve_face_weights("random", 1))(frames)[
        0
    ]
    np.testing.assert_array_equal(embedder(frames)[0], again)
    assert np.abs(embedder(frames)[0] - other).max() > 1e-3


def test_random_weights_keep_different_people_apart(embedder):
    """With PyTorch's default init every face collapses onto one vector (cosine ≈ 0.99996)."""
    faces = lfw_faces()[:8]
    centred = np.stack([face_frame(f, (128, 128)) for f in faces])
    shifted = np.stack([face_frame(f, (128, 128), box=(30, 20, 80, 80)) for f in faces])
    a, found_a = embedder(centred)
    b, found_b = embedder(shifted)
    assert found_a.all() and found_b.all()
    cosine = a @ a.T
    assert cosine[~np.eye(8, dtype=bool)].mean() < 0.999
    # a re-framed copy of a face is nearer to itself than to the other seven people
    assert ((b @ a.T).argmax(axis=1) == np.arange(8)).mean() >= 7 / 8


def test_weights_from_a_file_and_identity(tmp_path, embedder):
    path = tmp_path / "face.pt"
    torch.save(embedder.embedder.net.state_dict(), path)
    weights = resolve_face_weights(str(path))
    assert weights.identity.startswith("file:sha256=")
    frames = face_frames(2, (128, 128))
    np.testing.assert_allclose(FaceEmbedder(CFG, weights)(frames)[0], embedder(frames)[0], atol=1e-6)
    # the identity, not the name, goes into the cache id: other bytes at the same path → other cache
    assert CFG.hash(weights.identity) != CFG.hash("file:sha256=0000")

    bad = tmp_path / "bad.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(FaceWeightsError, match="not an InceptionResnetV1 state dict"):
        resolve_face_weights(str(bad))
    with pytest.raises(FaceWeightsError, match="neither a known name"):
        resolve_face_weights(str(tmp_path / "nothing.pt"))


def test_pretrained_offline_fails_naming_the_ways_out(tmp_path, monkeypatch):
    # Empty torch hub cache, and every download goes to a closed local port: offline, honestly.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    for var in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    monkeypatch.setenv("NO_PROXY", "")
    with pytest.raises(FaceWeightsError) as err:
        resolve_face_weights("vggface2")
    message = str(err.value)
    assert "--face-weights PATH" in message and "--face-weights random" in message and "--face-weights dlib" in message
    assert str(tmp_path / "torch") in message  # says where it looked


def test_random_embedder_is_the_same_while_another_thread_draws_random_numbers():
    """Two threads of one process build models (extract run's driver beside its pool): the seeded
    embedder must not depend on torch's global random stream."""
    import threading

    import torch

    from extract.faces import random_embedder

    reference = random_embedder(0).state_dict()
    stop = threading.Event()

    def draw() -> None:
        while not stop.is_set():
            torch.randn(64)

    thread = threading.Thread(target=draw)
    thread.start()
    try:
        again = random_embedder(0).state_dict()
    finally:
        stop.set()
        thread.join()
    assert all(torch.equal(reference[k], again[k]) for k in reference)
    assert not torch.equal(random_embedder(1).state_dict()["last_linear.weight"], reference["last_linear.weight"])

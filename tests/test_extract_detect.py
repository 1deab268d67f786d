"""extract.detect: the batched MTCNN finds what facenet-pytorch's finds, its tensor ops equal the
per-box code they replace, detect-every-k carries boxes within clips, and the settings are recorded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from facenet_pytorch.models.utils.detect_face import batched_nms_numpy
from torchvision.ops import batched_nms

from extract.config import ExtractConfig
from extract.detect import FACE_DETECTORS, BatchedMTCNN, FacenetMTCNN, carry, keyframes
from extract.detect_ops import area_crops, integral_image, largest_per_frame, min_nms_per_frame, nms_per_frame
from extract.faces import FaceEmbedder, FaceWeights, check_face_config, resolve_face_weights
from manifests.demo import EMOTIONS, FACE, DemoConfig, make_speakers, render_frames
from manifests.media import face_frame, lfw_faces

CPU = torch.device("cpu")


def _frames() -> np.ndarray:
    """80² frames: centred faces, faces cut by the frame's edges, two faces, blank and noise."""
    faces = lfw_faces()
    rng = np.random.default_rng(0)
    frames = [face_frame(faces[i], (80, 80)) for i in range(6)]
    frames += [face_frame(faces[i], (80, 80), box=(0, 36, 56, 44)) for i in range(6, 9)]  # touches two edges
    two = face_frame(faces[9], (80, 80), box=(2, 2, 40, 36))
    two[36:, 38:] = face_frame(faces[10], (80, 80), box=(36, 38, 44, 42))[36:, 38:]
    frames += [two, np.full((80, 80, 3), 90, np.uint8), rng.integers(0, 256, (80, 80, 3), dtype=np.uint8)]
    return np.stack(frames)


@pytest.mark.parametrize(
    "cfg",
    [ExtractConfig(), ExtractConfig(face_thresholds=(0.3, 0.3, 0.3), min_face_size=12)],
    ids=["defaults", "low-thresholds"],  # low: many candidates per frame, several survive O-Net's NMS
)
def test_batched_mtcnn_finds_what_facenet_finds(cfg):
    frames = torch.tensor(_frames())
    ref_boxes, ref_found = FacenetMTCNN(cfg, CPU).detect(frames)
    boxes, found = BatchedMTCNN(cfg, CPU).detect(frames)
    assert found.tolist() == ref_found.tolist()
    assert found[:10].all() and not found[13:14].any()  # faces found (also at the edges); grey is not
    torch.testing.assert_close(boxes, ref_boxes, atol=1e-3, rtol=0)  # float noise of the networks only
    assert not boxes[~found].any()
    empty_boxes, empty_found = BatchedMTCNN(cfg, CPU).detect(frames[:0])
    assert empty_boxes.shape == (0, 4) and empty_found.shape == (0,)
    tiny_boxes, tiny_found = BatchedMTCNN(cfg, CPU).detect(frames[:2, :16, :16])  # smaller than any face
    assert tiny_boxes.shape == (2, 4) and not tiny_found.any()


def test_new_path_embeds_demo_faces_as_the_old_one_did():
    """Old path: facenet's detect_face, one extract_face per face, stacked; new: FaceEmbedder's default."""
    cfg = DemoConfig(frame_size=128)
    cast = make_speakers(cfg)[:4]
    frames = np.concatenate(
        [render_frames(cfg, lfw_faces()[s.face], FACE[e], 2, np.random.default_rng(i), s.tint)
         for i, (s, e) in enumerate(zip(cast, EMOTIONS))]
    )  # fmt: skip
    faces = FaceEmbedder(ExtractConfig(face_weights="random"), resolve_face_weights("random"))
    new, found = faces(frames)
    model = faces.embedder
    boxes, old_found = FacenetMTCNN(ExtractConfig(), CPU).detect(torch.tensor(frames))
    crops = [model.crop(torch.tensor(frames[i]), boxes[i].double().numpy(), 0) for i in np.flatnonzero(old_found)]
    old = model.embed(model.stack(crops))
    assert found.all() and np.array_equal(found, old_found.numpy())
    assert (old * new[found]).sum(1).min() > 0.9999


def test_box_crops_equal_per_box_area_resizes():
    """One summed-area table, four gathers = facenet's interpolate(mode="area") on each box, bit for bit."""
    rng = np.random.default_rng(1)
    frames = torch.tensor(rng.integers(0, 256, (3, 40, 50, 3), dtype=np.uint8))
    n = 40
    frame = torch.tensor(rng.integers(0, 3, n))
    y0, x0 = torch.tensor(rng.integers(0, 39, n)), torch.tensor(rng.integers(0, 49, n))
    y1 = torch.minimum(y0 + torch.tensor(rng.integers(1, 40, n)), torch.tensor(40))  # smaller and larger than 24
    x1 = torch.minimum(x0 + torch.tensor(rng.integers(1, 50, n)), torch.tensor(50))
    got = area_crops(integral_image(frames), frame, y0, x0, y1, x1, 24)
    images = frames.permute(0, 3, 1, 2).float()
    want = torch.cat(
        [F.interpolate(images[f : f + 1, :, a:b, c:d], size=(24, 24), mode="area") for f, a, c, b, d in
         zip(frame.tolist(), y0.tolist(), x0.tolist(), y1.tolist(), x1.tolist())]
    )  # fmt: skip
    assert torch.equal(got, want)


@pytest.mark.parametrize("margin", [0, 24])
def test_embedder_crops_equal_extract_face(margin):
    weights = resolve_face_weights("random")
    model = weights.build(0)
    rng = np.random.default_rng(2)
    frames = torch.tensor(rng.integers(0, 256, (5, 64, 72, 3), dtype=np.uint8))
    boxes = torch.tensor(
        [[10.3, 5.7, 50.2, 48.9], [-4.5, -2.2, 30.1, 40.6], [40.0, 30.0, 80.4, 70.2], [1.0, 1.0, 9.5, 7.2],
         [20.5, 20.5, 21.6, 22.4]],
        dtype=torch.float32,
    )  # fmt: skip  # inside, over the top-left edge, over the bottom-right edge, small, tiny
    got = model.crop_batch(frames, boxes, margin)
    want = model.stack([model.crop(f, b.double().numpy(), margin) for f, b in zip(frames, boxes)])
    assert torch.equal(got, want)  # same pixels, standardised once
    assert got.min() >= -1.0 and got.max() <= 1.0 and got.min() < -0.5


def test_nms_ops_equal_the_per_frame_references():
    rng = np.random.default_rng(3)
    n = 300
    frame = torch.tensor(rng.integers(0, 7, n))
    centre = torch.tensor(rng.uniform(20, 100, (n, 2)), dtype=torch.float32)
    side = torch.tensor(rng.uniform(8, 40, (n, 1)), dtype=torch.float32)
    boxes = torch.cat([centre - side / 2, centre + side / 2], dim=1)  # many overlaps within each frame
    scores = torch.tensor(rng.uniform(0, 1, n), dtype=torch.float32)

    kept = nms_per_frame(boxes, scores, frame, 0.5)
    assert sorted(kept.tolist()) == sorted(batched_nms(boxes, scores, frame, 0.5).tolist())
    assert 7 < len(kept) < n
    in_groups = nms_per_frame(boxes, scores, frame, 0.5, limit=50)  # frames split into groups of ~50 boxes
    assert sorted(in_groups.tolist()) == sorted(kept.tolist())

    keep = min_nms_per_frame(boxes, scores, frame, 0.7)  # O-Net's: intersection over the smaller box
    reference = batched_nms_numpy(boxes, scores, frame, 0.7, "Min")
    assert sorted(keep.nonzero()[:, 0].tolist()) == sorted(reference.tolist())
    assert not min_nms_per_frame(boxes[:0], scores[:0], frame[:0], 0.7).any()

    best, found = largest_per_frame(boxes, scores, frame, 9)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).numpy()
    for f in range(9):
        mine = np.flatnonzero(frame.numpy() == f)
        assert found[f] == (len(mine) > 0)
        if len(mine):
            assert torch.equal(best[f], boxes[mine[np.argmax(area[mine])]])
        else:
            assert not best[f].any()


def test_keyframes_and_carried_boxes():
    keys = keyframes([5, 1, 0, 4], 2)
    assert keys.tolist() == [0, 2, 4, 5, 6, 8, 9]  # every 2nd frame of each clip, and each clip's last
    assert keyframes([3, 2], 1).tolist() == [0, 1, 2, 3, 4]
    boxes = torch.tensor([[0.0, 0, 10, 10], [2, 2, 12, 12], [4, 4, 14, 14], [50, 50, 60, 60], [0, 0, 20, 20],
                          [0, 0, 0, 0], [6, 6, 26, 26]])  # fmt: skip
    found = torch.tensor([True, True, True, True, True, False, True])
    got, got_found = carry(boxes, found, keys, 10)
    assert got_found.tolist() == [True] * 8 + [False, True]
    torch.testing.assert_close(got[1], torch.tensor([1.0, 1, 11, 11]))  # halfway: interpolated
    torch.testing.assert_close(got[3], torch.tensor([3.0, 3, 13, 13]))
    assert torch.equal(got[5], boxes[3])  # a one-frame clip keeps its own detection
    # frame 7 lies halfway between a found detection (6) and a missed one (8): the earlier decides
    assert torch.equal(got[7], boxes[4])
    assert not got_found[8] and torch.equal(got[9], boxes[6])


def _moving_clip(n: int, face: int, seed: int) -> np.ndarray:
    return render_frames(DemoConfig(frame_size=80), lfw_faces()[face], FACE["neutral"], n, np.random.default_rng(seed))


def test_detect_every_k_frames_within_clips():
    weights = resolve_face_weights("random")
    clips = [_moving_clip(7, 0, 0), _moving_clip(0, 1, 1), _moving_clip(5, 2, 2)]
    every1 = FaceEmbedder(ExtractConfig(face_weights="random", face_batch=4), weights)
    every3 = FaceEmbedder(ExtractConfig(face_weights="random", face_batch=4, face_detect_every=3), weights)
    ones, threes = every1.embed_clips(clips), every3.embed_clips(clips)
    assert [len(e) for e, _ in threes] == [7, 0, 5]
    for frames, (e1, f1), (e3, f3), key in zip(clips[::2], ones[::2], threes[::2], ([0, 3, 6], [0, 3, 4])):
        assert f1.all() and f3.all()
        # key frames (every 3rd and the last) are detected, so they are embedded exactly as with k = 1
        np.testing.assert_allclose(e3[key], e1[key], atol=1e-5)
        assert (e1 * e3).sum(1).min() > 0.98  # the others: a box carried less than a frame away
        # one clip at a time gives what the batches spanning clips give
        alone, found_alone = every3(frames)
        np.testing.assert_allclose(alone, e3, atol=1e-5)
        assert np.array_equal(found_alone, f3)
        carried, direct = every3.boxes(frames)[0], every1.boxes(frames)[0]
        np.testing.assert_allclose(carried[key], direct[key], atol=1e-4)
        np.testing.assert_allclose(carried[1], direct[0] + (direct[3] - direct[0]) / 3, atol=1e-3)
    with pytest.raises(ValueError, match="one size"):
        every1.embed_clips([clips[0], np.zeros((2, 64, 64, 3), np.uint8)])


def test_autocast_embedding_on_cpu_keeps_the_embeddings():
    weights = resolve_face_weights("random")
    frames = np.stack([face_frame(f, (80, 80)) for f in lfw_faces()[:6]])
    faces = FaceEmbedder(ExtractConfig(face_weights="random"), weights)
    full, found = faces(frames)
    assert found.all()
    for precision in ("bfloat16", "float16"):
        low, found_low = FaceEmbedder(ExtractConfig(face_weights="random", face_precision=precision), weights)(frames)
        assert np.array_equal(found, found_low)  # the detector stays float32
        assert (full * low).sum(1).min() > 0.99
        assert np.abs(full - low).max() > 2e-5  # it did run in 16 bits (float32 rounding alone: ~1e-7)
        np.testing.assert_allclose(np.linalg.norm(low, axis=1), 1.0, atol=1e-5)


def test_face_settings_are_validated_recorded_and_hashed():
    from extract.cli import _config, _parser

    base = ExtractConfig()
    assert base.face_detector == "mtcnn" and set(FACE_DETECTORS) == {"mtcnn", "mtcnn-facenet"}
    changed = [{"face_detector": "mtcnn-facenet"}, {"face_detect_every": 2}, {"face_precision": "bfloat16"}]
    hashes = {ExtractConfig(**c).hash() for c in changed} | {base.hash()}
    assert len(hashes) == 4  # each is a feature setting: caches made otherwise never mix
    record = base.to_record("random")
    assert ExtractConfig.from_record(record) == base
    legacy = {k: v for k, v in record.items() if k not in ("face_detector", "face_detect_every", "face_precision")}
    assert ExtractConfig.from_record(legacy).face_detector == "mtcnn-facenet"  # what made caches before
    # ... and at those values a config keeps the id caches had before the settings existed
    # (the two ids were computed by the code that had no face_detector, face_detect_every, face_precision)
    old = ExtractConfig(face_detector="mtcnn-facenet")
    assert old.hash("random(seed=0,init=he,rng=own)") == "82022df094680a6a"
    assert ExtractConfig(face_detector="mtcnn-facenet", face_weights="random", fps=2.5).hash() == "ff67d52dbe428dda"

    with pytest.raises(ValueError, match="face_detect_every"):
        ExtractConfig(face_detect_every=0)
    with pytest.raises(ValueError, match="face_precision"):
        ExtractConfig(face_precision="int8")
    random = resolve_face_weights("random")
    with pytest.raises(ValueError, match="face_detector 'haar'"):
        check_face_config(ExtractConfig(face_detector="haar"), random)
    dlib = FaceWeights("dlib", None, "dlib")  # the family's class, without loading dlib
    with pytest.raises(ValueError, match="needs a torch embedder"):
        check_face_config(ExtractConfig(face_weights="dlib", face_precision="bfloat16"), dlib)

    args = _parser().parse_args(
        ["run", "--manifest", "m.csv", "--face-detector", "mtcnn-facenet", "--face-detect-every", "3",
         "--face-precision", "float16"]
    )  # fmt: skip
    cfg = _config(args)
    assert (cfg.face_detector, cfg.face_detect_every, cfg.face_precision) == ("mtcnn-facenet", 3, "float16")

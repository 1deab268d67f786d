"""Face embedders compared (``python benchmarks/bench_faces.py``): facenet (InceptionResnetV1) vs dlib.

(a) CPU cost per face, one thread: the crop step (facenet: MTCNN's 160×160 crop; dlib: 5-point
    landmarks + ``get_face_chip``) and the embedding network, CPU-time medians over rounds on the same
    crops; MTCNN's detection, shared by both, per frame; ratio dlib / facenet.
(b) On the demo corpus's faces (manifests.demo: 10 speakers, one real LFW face each, 4 emotions that
    tilt, stretch and re-light the face; 6 renders per speaker × emotion, one frame each = 240 frames,
    160² like the demo): nearest-class-mean speaker and emotion accuracy on standardised embeddings,
    mean over random half splits; and the mean pairwise cosine of the raw embeddings.
(c) On the 100 LFW faces: a re-framed copy (shifted, resized) of each face vs the originals: top-1
    and the mean distance to its own original over the mean distance to the other people (lower is
    better); this is also the check of dlib's alignment (landmarks + chip) against a plain resized
    MTCNN crop.

facenet runs with ``random`` weights (He init, seeded): same network and cost as vggface2, whose
weights cannot be downloaded here. Its accuracies are those of a random network, not of vggface2.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from extract.config import ExtractConfig
from extract.faces import FaceEmbedder, resolve_face_weights
from manifests.demo import EMOTIONS, FACE, DemoConfig, make_speakers, render_frames
from manifests.media import face_frame, lfw_faces


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--renders", type=int, default=6, help="renders (one frame each) per speaker × emotion")
    p.add_argument("--timed-faces", type=int, default=48, help="faces per timing round")
    p.add_argument("--rounds", type=int, default=3, help="timing rounds (CPU-time median)")
    p.add_argument("--splits", type=int, default=50, help="random half splits for the accuracies")
    p.add_argument("--out", type=Path, default=Path(".bench/faces.json"), help="figures as JSON")
    return p.parse_args()


def demo_frames(renders: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 160, 160, 3) frames of the demo corpus's faces, with speaker and emotion labels."""
    cfg = DemoConfig()
    faces = lfw_faces()
    frames, speakers, emotions = [], [], []
    for s, spk in enumerate(make_speakers(cfg)):
        for e, emotion in enumerate(EMOTIONS):
            for k in range(renders):
                rng = np.random.default_rng([cfg.seed, s, e, k])
                frames.append(render_frames(cfg, faces[spk.face], FACE[emotion], 10, rng)[5])
                speakers.append(s)
                emotions.append(e)
    return np.stack(frames), np.array(speakers), np.array(emotions)


class PlainDlib:
    """dlib's network on MTCNN's box, squared-up with dlib's 25 % padding and resized, unaligned."""

    def __init__(self, faces: FaceEmbedder) -> None:
        from facenet_pytorch.models.utils.detect_face import extract_face

        self.model, self.extract_face = faces.embedder, extract_face

    def crop(self, frame: torch.Tensor, box: np.ndarray, margin: int) -> torch.Tensor:
        x1, y1, x2, y2 = box
        pad_w, pad_h = 0.25 * (x2 - x1), 0.25 * (y2 - y1)
        chip = self.extract_face(frame, [x1 - pad_w, y1 - pad_h, x2 + pad_w, y2 + pad_h], self.model.chip_size, 0)
        return chip.permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).contiguous()


def largest_boxes(faces: FaceEmbedder, frames: np.ndarray) -> list[np.ndarray | None]:
    """The detector's box per frame (float64, as the per-face crops take it), None where no face."""
    boxes, found = faces.boxes(frames)
    return [box.astype(np.float64) if hit else None for box, hit in zip(boxes, found)]


def embed(faces: FaceEmbedder, frames: np.ndarray, cropper=None) -> np.ndarray:
    """Embeddings of frames whose every face is found (the demo's and LFW's faces all are)."""
    with torch.inference_mode():
        boxes = largest_boxes(faces, frames)
    assert all(b is not None for b in boxes), "a face was not found"
    video = torch.tensor(frames)
    crop = (cropper or faces.embedder).crop
    crops = faces.embedder.stack([crop(video[i], b, 0) for i, b in enumerate(boxes)])
    return faces.embedder.embed(crops)


def cpu_ms(fn, rounds: int, n: int) -> float:
    """Median CPU milliseconds per face of fn() over rounds (fn handles n faces)."""
    times = []
    for _ in range(rounds):
        started = time.process_time()
        fn()
        times.append((time.process_time() - started) / n * 1000)
    return statistics.median(times)


def timings(models: dict[str, FaceEmbedder], frames: np.ndarray, rounds: int) -> dict[str, dict[str, float]]:
    video = torch.tensor(frames)
    with torch.inference_mode():
        boxes = largest_boxes(models["facenet"], frames)
    out = {}
    for name, faces in models.items():
        model = faces.embedder
        crops = model.stack([model.crop(video[i], b, 0) for i, b in enumerate(boxes)])
        crop_all = lambda m=model: [m.crop(video[i], b, 0) for i, b in enumerate(boxes)]  # noqa: E731
        out[name] = {
            "crop_ms": cpu_ms(crop_all, rounds, len(boxes)),
            "embed_ms": cpu_ms(lambda m=model, c=crops: m.embed(c), rounds, len(boxes)),
        }
    with torch.inference_mode():
        mtcnn = cpu_ms(lambda: largest_boxes(models["facenet"], frames), rounds, len(frames))
    for row in out.values():
        row["mtcnn_ms"] = mtcnn
        row["total_ms"] = row["crop_ms"] + row["embed_ms"] + mtcnn
    return out


def ncm_accuracy(emb: np.ndarray, labels: np.ndarray, splits: int, seed: int = 0) -> float:
    """Nearest class mean on embeddings standardised with the train half's statistics; mean over
    random half splits (each class split in half)."""
    rng = np.random.default_rng(seed)
    scores = []
    for _ in range(splits):
        train = np.zeros(len(labels), bool)
        for c in np.unique(labels):
            idx = rng.permutation(np.flatnonzero(labels == c))
            train[idx[: len(idx) // 2]] = True
        mean, std = emb[train].mean(0), emb[train].std(0) + 1e-8
        z = (emb - mean) / std
        classes = np.unique(labels)
        centres = np.stack([z[train & (labels == c)].mean(0) for c in classes])
        pred = classes[np.linalg.norm(z[~train, None] - centres[None], axis=2).argmin(1)]
        scores.append(float((pred == labels[~train]).mean()))
    return float(np.mean(scores))


def mean_cosine(emb: np.ndarray) -> float:
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    cos = unit @ unit.T
    return float(cos[~np.eye(len(emb), dtype=bool)].mean())


def reframed(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """b[i] is a re-framed copy of a[i]: top-1 of b against a, and own / other mean distance."""
    dist = np.linalg.norm(b[:, None] - a[None], axis=2)
    others = ~np.eye(len(a), dtype=bool)
    return {
        "top1": float((dist.argmin(1) == np.arange(len(a))).mean()),
        "own_over_other": float(np.diag(dist).mean() / dist[others].mean()),
    }


def main() -> int:
    args = parse_args()
    torch.set_num_threads(1)
    models = {
        name: FaceEmbedder(ExtractConfig(face_weights=name, frame_size=160), resolve_face_weights(name))
        for name in ("random", "dlib")
    }
    models["facenet"] = models.pop("random")
    plain = PlainDlib(models["dlib"])

    frames, speakers, emotions = demo_frames(args.renders)
    results: dict = {"timing": timings(models, frames[: args.timed_faces], args.rounds)}
    t = results["timing"]
    dlib, facenet = t["dlib"], t["facenet"]
    results["timing"]["ratio_dlib_over_facenet"] = {
        "embed": dlib["embed_ms"] / facenet["embed_ms"],
        "crop+embed": (dlib["crop_ms"] + dlib["embed_ms"]) / (facenet["crop_ms"] + facenet["embed_ms"]),
        "per_frame": dlib["total_ms"] / facenet["total_ms"],
    }

    demo = {
        "facenet (random)": embed(models["facenet"], frames),
        "dlib": embed(models["dlib"], frames),
        "dlib, unaligned crop": embed(models["dlib"], frames, plain),
    }
    results["demo"] = {
        name: {
            "speaker_acc": ncm_accuracy(e, speakers, args.splits),
            "emotion_acc": ncm_accuracy(e, emotions, args.splits),
            "mean_cosine": mean_cosine(e),
        }
        for name, e in demo.items()
    }

    lfw = lfw_faces()
    centred = np.stack([face_frame(f, (128, 128)) for f in lfw])
    shifted = np.stack([face_frame(f, (128, 128), box=(30, 20, 80, 80)) for f in lfw])
    results["lfw_reframed"] = {
        "facenet (random)": reframed(embed(models["facenet"], centred), embed(models["facenet"], shifted)),
        "dlib": reframed(embed(models["dlib"], centred), embed(models["dlib"], shifted)),
        "dlib, unaligned crop": reframed(embed(models["dlib"], centred, plain), embed(models["dlib"], shifted, plain)),
    }

    print(f"(a) CPU ms per face, 1 thread, median of {args.rounds} rounds over {args.timed_faces} demo faces")
    print(f"{'':18}{'crop':>8}{'embed':>8}{'MTCNN/frame':>13}{'total':>8}")
    for name in ("facenet", "dlib"):
        row = t[name]
        print(f"{name:18}{row['crop_ms']:8.1f}{row['embed_ms']:8.1f}{row['mtcnn_ms']:13.1f}{row['total_ms']:8.1f}")
    ratio = t["ratio_dlib_over_facenet"]
    print(
        f"dlib / facenet: embed {ratio['embed']:.2f}x, crop+embed {ratio['crop+embed']:.2f}x, "
        f"per frame with MTCNN {ratio['per_frame']:.2f}x"
    )
    print(f"\n(b) demo faces ({len(frames)} frames, 10 speakers x 4 emotions), NCM over {args.splits} half splits")
    print(f"{'':24}{'speaker':>9}{'emotion':>9}{'mean cos':>10}")
    for name, row in results["demo"].items():
        print(f"{name:24}{row['speaker_acc']:9.3f}{row['emotion_acc']:9.3f}{row['mean_cosine']:10.4f}")
    print("\n(c) 100 LFW faces vs a re-framed copy of each")
    print(f"{'':24}{'top-1':>7}{'own/other dist':>16}")
    for name, row in results["lfw_reframed"].items():
        print(f"{name:24}{row['top1']:7.2f}{row['own_over_other']:16.3f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"\nfigures → {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Post-install smoke check: load every compiled piece the product uses, fail in one line.

`make setup` runs it right after installing, so a broken environment stops before any test or
run starts, with the package that broke and the likely cause instead of a traceback from deep
inside speechbrain. `make check-deps` runs it in a throwaway environment of the newest releases
pyproject.toml allows, to see registry drift before it reaches a fresh machine.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path

_PAIR_HINT = (
    "its compiled library must be built for the installed torch {torch}; install the set pinned in "
    "requirements.lock (`make setup`), or pin matching torch/torchaudio/torchvision releases"
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def check_torch() -> None:
    import torch

    torch.ones(2, 2) @ torch.ones(2, 2)


def check_torchaudio() -> None:
    import torch
    import torchaudio
    import torchaudio.functional as F

    F.resample(torch.zeros(1, 1600), 16000, 8000)
    del torchaudio


def check_torchvision() -> None:
    import torch
    from torchvision.ops import batched_nms

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0]])
    batched_nms(boxes, torch.tensor([0.9, 0.8]), torch.tensor([0, 0]), 0.5)


def check_speechbrain() -> None:
    import torch
    from speechbrain.lobes.features import Fbank

    feats = Fbank(n_mels=40)(torch.zeros(1, 16000))
    assert feats.shape[-1] == 40, feats.shape


def check_facenet() -> None:
    import numpy as np
    from facenet_pytorch import MTCNN

    boxes, _ = MTCNN(device="cpu").detect(np.zeros((64, 64, 3), dtype=np.uint8))
    assert boxes is None, "MTCNN found a face in a blank image"


def check_dlib() -> None:
    """The optional faces-dlib extra (`--face-weights dlib`): when installed, its wheel and models load."""
    import importlib.util

    if importlib.util.find_spec("dlib") is None:
        return  # not installed: nothing to check (requirements.lock installs it)
    import dlib
    import numpy as np

    spec = importlib.util.find_spec("face_recognition_models")  # found, not imported (its __init__ needs pkg_resources)
    assert spec is not None and spec.submodule_search_locations, "face_recognition_models is not installed"
    models = Path(list(spec.submodule_search_locations)[0]) / "models"
    dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    net = dlib.face_recognition_model_v1(str(models / "dlib_face_recognition_resnet_model_v1.dat"))
    emb = np.asarray(net.compute_face_descriptor(np.full((150, 150, 3), 128, dtype=np.uint8)))  # a grey chip
    assert emb.shape == (128,) and np.isfinite(emb).all(), emb.shape


def check_h5py() -> None:
    import h5py
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "smoke.h5"
        with h5py.File(path, "w") as f:
            f["x"] = np.arange(6, dtype=np.float32)
        with h5py.File(path, "r") as f:
            assert f["x"][:].sum() == 15


def check_ffmpeg() -> None:
    from common.ffmpeg import ffmpeg_exe  # the project is installed (editable) before this runs

    exe = ffmpeg_exe()
    subprocess.run([exe, "-version"], check=True, capture_output=True, timeout=30)


CHECKS: dict[str, tuple[Callable[[], None], str]] = {
    "torch": (check_torch, "the torch wheel does not load on this machine (platform or Python version)"),
    "torchaudio": (check_torchaudio, _PAIR_HINT),
    "torchvision": (check_torchvision, _PAIR_HINT),
    "speechbrain": (check_speechbrain, "speechbrain's Fbank failed; it needs torchaudio, check that first"),
    "facenet-pytorch": (check_facenet, "facenet-pytorch must be 2.5.3 (2.6.0 pins torch<2.3 and numpy<2)"),
    "dlib-bin": (
        check_dlib,
        "dlib's wheel or face_recognition_models' .dat files do not load; reinstall both "
        "from requirements.lock (they are the faces-dlib extra)",
    ),
    "h5py": (check_h5py, "h5py's HDF5 library does not load; reinstall h5py from a wheel"),
    "ffmpeg": (check_ffmpeg, "no ffmpeg found: imageio-ffmpeg ships one; reinstall it or put ffmpeg on PATH"),
}


def main() -> int:
    torch_version = _version("torch")
    failed = 0
    for name, (check, hint) in CHECKS.items():
        try:
            check()
        except Exception as err:  # noqa: BLE001 - any failure here is the message
            failed += 1
            reason = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            dist = "imageio-ffmpeg" if name == "ffmpeg" else name
            print(
                f"smoke check FAILED: {name} {_version(dist)}: {type(err).__name__}: {reason[:300]} "
                f"-> likely cause: {hint.format(torch=torch_version)}",
                file=sys.stderr,
            )
    if failed:
        return 1
    print(
        f"smoke check ok: torch {torch_version}, torchaudio {_version('torchaudio')}, "
        f"torchvision {_version('torchvision')}, speechbrain {_version('speechbrain')}, "
        f"facenet-pytorch {_version('facenet-pytorch')}, dlib-bin {_version('dlib-bin')}, h5py {_version('h5py')}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``train.compile``: the training step under torch.compile trains as eager does, resumes, saves plain
checkpoint keys and evaluates.

Inductor's C++ code generation for this step costs about 4 minutes cold on a 2-core CPU (measured:
docs/performance.md), so the suite compiles with torch's own backend override to ``aot_eager``:
the same dynamo capture and AOTAutograd forward/backward graphs that inductor would be handed, run
without generated kernels. What inductor changes on top is rounding, which the GPU check measures.
"""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from distill.run import RunDir
from distill.testing import make_lupi_cache, tiny_config
from distill.train.trainer import Trainer, compiles, run_training

#: torch's backend override (torch._dynamo.config.debug_backend_override): every graph to aot_eager
AOT_EAGER = ">=0:aot_eager"


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return make_lupi_cache(tmp_path_factory.mktemp("compile") / "cache", n_classes=3, per_class=8, n_frames=90)


def test_compile_setting_is_on_for_cuda_only_by_default():
    assert compiles("auto", torch.device("cuda")) and not compiles("auto", torch.device("cpu"))
    assert compiles("on", torch.device("cpu")) and not compiles("off", torch.device("cuda"))


def config(cache, epochs: int, compile: str = "off"):
    # bf16 autocast as on a GPU (the losses' autocast-off block inside the compiled step); a constant
    # learning rate, so one epoch resumed for a second is the same run as two epochs
    return tiny_config(
        cache, "student", train__epochs=epochs, train__compile=compile, train__scheduler="none", train__amp="on"
    )


def test_compiled_training_matches_eager_resumes_and_keeps_checkpoints_plain(cache, tmp_path):
    eager = run_training(config(cache, 2), tmp_path / "eager", progress=False)
    # one eager epoch, then resumed from last.pt for a second epoch by a compiled trainer (one compile
    # in the test: ~10 s with aot_eager), which checkpoints, evaluates and writes metrics
    run_training(config(cache, 1), tmp_path / "compiled", progress=False)
    with torch._dynamo.config.patch(debug_backend_override=AOT_EAGER):
        trainer = Trainer(config(cache, 2, "on"), tmp_path / "compiled", progress=False)
        assert trainer.compiled and trainer.step_module._compiled_call_impl is not None
        assert trainer.resume()
        compiled = trainer.fit()
    logs = [pd.read_csv(tmp_path / run / "train_log.csv") for run in ("eager", "compiled")]
    assert len(logs[0]) == len(logs[1]) == 2
    for column in ("train_total", "val_loss", "val_accuracy"):
        assert logs[1][column].tolist() == pytest.approx(logs[0][column].tolist(), rel=1e-4, abs=1e-5), column
    assert compiled.keys() == eager.keys() and compiled["best_epoch"] == eager["best_epoch"]
    for key in ("accuracy", "eer", "min_dcf"):
        assert compiled[key] == pytest.approx(eager[key], abs=1e-6), key
    for name in (RunDir.BEST, RunDir.LAST):
        keys = [set(torch.load(tmp_path / run / name, weights_only=True)["model"]) for run in ("eager", "compiled")]
        assert keys[0] == keys[1] and not any("_orig_mod" in k for k in keys[1])
    RunDir(tmp_path / "compiled").load_network("cpu")  # strict load into a freshly built network

"""distill.eval.teacher_labels: an item's prediction from a targets file (the demo test scores real teachers)."""

import json

import h5py
import numpy as np

from distill.eval.teacher_labels import TeacherLabels, item_predictions


def test_an_items_prediction_is_the_mean_of_its_cells_logits(tmp_path):
    path = tmp_path / "targets.h5"
    logits = np.array([[3.0, 0.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]], dtype=np.float32)
    with h5py.File(path, "w") as h5:  # the layout distill.train.targets writes: item-major cells
        h5.create_dataset("logits", data=logits)
        h5.create_dataset("utt_id", data=np.array(["a", "b", "c"], dtype=h5py.string_dtype()))
        h5.create_dataset("n_cells", data=np.array([2, 1, 1]))
        h5.create_dataset("cell_offset", data=np.array([0, 2, 3]))
        h5.attrs["key"] = json.dumps({"labels": ["x", "y", "z"]})
    # a: cells (3, 0, 0) and (0, 5, 0) average to (1.5, 2.5, 0): y, though its first cell says x
    assert item_predictions(path) == {"a": "y", "b": "z", "c": "x"}
    assert TeacherLabels(4, 3).accuracy == 0.75 and np.isnan(TeacherLabels(0, 0).accuracy)

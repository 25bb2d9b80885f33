"""PreparedData: the shapes, the summary and the base rate, for tables and for images alike."""

from __future__ import annotations

import numpy as np

from nnstudy.data import prepare_arrays
from nnstudy.prepared import PreparedData
from nnstudy.preprocessing import Preprocessing


def _table(x: np.ndarray, y: np.ndarray) -> PreparedData:
    pre = Preprocessing(task="binary", target="t", input_columns=["a", "b"], categories={}, impute={},
                        feature_names=["a", "b"], mean=[0.0, 0.0], scale=[1.0, 1.0], classes=[0, 1])
    return PreparedData(x_train=x, y_train=y, x_val=x[:2], y_val=y[:2], x_test=None, y_test=None, task="binary",
                        n_classes=1, preprocessing=pre, source="t.csv", digest="abc")


def test_a_table_has_flat_rows_and_its_summary_no_input_shape() -> None:
    data = _table(np.zeros((8, 2), dtype=np.float32), np.array([0, 1, 1, 1, 0, 1, 1, 1], dtype=np.float32))
    assert data.input_shape == (2,) and data.n_features == 2
    assert data.target_mean == 0.75
    assert data.summary() == {"source": "t.csv", "task": "binary", "n_features": 2, "n_classes": 1,
                              "train_rows": 8, "val_rows": 2, "test_rows": 0, "digest": "abc"}


def test_images_keep_their_shape_and_say_it_in_the_summary() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.random((40, 4, 4, 1)).astype(np.float32), np.arange(40) % 4
    data = prepare_arrays(x, y, source="img.npz", task_requested="auto", validation_fraction=0.25,
                          test_fraction=0.25, seed=1, scale="unit")
    assert data.input_shape == (4, 4, 1) and data.n_features == 16
    assert data.n_classes == 4 and data.task == "multiclass"
    summary = data.summary()
    assert summary["input_shape"] == [4, 4, 1]
    assert summary["train_rows"] + summary["val_rows"] + summary["test_rows"] == 40

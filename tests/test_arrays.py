"""Array and image data (nnstudy.arrays): .npz files, digits_images, scaling, split, bad input."""

from __future__ import annotations

import os
import pickle
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from nnstudy.arrays import (
    ArrayPreprocessing,
    digits_images,
    load_npz,
)
from nnstudy.data import prepare_arrays
from nnstudy.errors import DataError, SpecError
from nnstudy.prepared import split_indices


def prep(x: Any, y: Any, **kw: Any) -> Any:
    args: dict[str, Any] = {"source": "t.npz", "task_requested": "auto", "validation_fraction": 0.2,
                            "test_fraction": 0.2, "seed": 0, "scale": "none"}
    args.update(kw)
    return prepare_arrays(x, y, **args)


def images(n: int = 100, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 4, 4, 1)).astype(np.uint8), np.arange(n) % 3


# --------------------------------------------------------------------------- good input


def test_digits_images() -> None:
    x, y = digits_images()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert sorted(np.unique(y).tolist()) == list(range(10))
    assert x.min() == 0 and x.max() == 16
    data = prep(x, y, scale="unit")
    assert data.task == "multiclass" and data.n_classes == 10 and data.y_train.dtype == np.int32
    assert data.input_shape == (8, 8, 1) and data.n_features == 64
    assert data.summary()["train_rows"] + data.summary()["val_rows"] + data.summary()["test_rows"] == 1797


def test_npz_round_trip_custom_keys(tmp_path: Path) -> None:
    x, y = images()
    path = tmp_path / "imgs.npz"
    np.savez_compressed(path, pixels=x, label=y)
    x2, y2 = load_npz(path, x_key="pixels", y_key="label")
    assert np.array_equal(x, x2) and np.array_equal(y, y2) and x2.dtype == np.uint8


def test_scale_none_standard_unit() -> None:
    x, y = images()
    none = prep(x, y, scale="none")
    assert none.x_train.dtype == np.float32 and none.x_train.max() <= 255
    unit = prep(x, y, scale="unit")
    assert unit.x_train.max() == pytest.approx(1.0) and np.abs(unit.x_train).max() == pytest.approx(1.0)
    assert unit.preprocessing.max_abs == float(none.x_train.max())
    assert np.allclose(unit.x_val, none.x_val / none.x_train.max())
    std = prep(x, y, scale="standard")
    assert std.x_train.shape[1:] == (4, 4, 1)
    assert np.allclose(std.x_train.mean(axis=0), 0, atol=1e-5) and np.allclose(std.x_train.std(axis=0), 1, atol=1e-4)
    const = x.astype(np.float32)
    const[:, 0, 0, 0] = 7  # a constant pixel: std 0 -> divided by 1
    assert np.all(prep(const, y, scale="standard").x_train[:, 0, 0, 0] == 0)


def test_split_is_stratified_and_seeded() -> None:
    x, y = images(90)
    a, b, c = prep(x, y, seed=1), prep(x, y, seed=1), prep(x, y, seed=2)
    assert a.digest == b.digest and np.array_equal(a.x_train, b.x_train)
    assert a.digest != c.digest
    assert np.bincount(a.y_test).tolist() == [6, 6, 6] and np.bincount(a.y_val).tolist() == [6, 6, 6]
    no_test = prep(x, y, test_fraction=0.0)
    assert no_test.x_test is None and no_test.y_test is None and len(no_test.x_val) == 18
    train, val, test = split_indices(90, None, 0.2, 0.2, 0, "s")
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(90))


def test_preprocessing_json_round_trip_and_transform() -> None:
    """The saved record turns the same raw rows into exactly the prepared arrays (every scale)."""
    for (x, y), seed in ((images(), 0), (digits_images(), 3)):
        ids = np.searchsorted(np.unique(y), y).astype(np.int32)
        train, val, test = split_indices(len(x), ids, 0.2, 0.2, seed, "s")
        for scale in ("none", "standard", "unit"):
            data = prep(x, y, scale=scale, seed=seed)
            pre = ArrayPreprocessing.from_json(data.preprocessing.to_json())
            assert pre == data.preprocessing and pre.input_shape == list(x.shape[1:])
            assert np.array_equal(pre.transform(x[train]), data.x_train)
            assert np.array_equal(pre.transform(x[val]), data.x_val)
            assert np.array_equal(pre.transform(x[test]), data.x_test)
            assert np.array_equal(pre.transform(x[test][..., 0]), data.x_test)  # no channel axis: accepted


def test_string_labels_decoded_back() -> None:
    x = np.random.default_rng(0).normal(size=(60, 3))
    y = np.array(["cat", "dog"] * 30)
    data = prep(x, y)
    assert data.task == "binary" and data.y_train.dtype == np.float32 and data.preprocessing.classes == ["cat", "dog"]
    pre = ArrayPreprocessing.from_json(data.preprocessing.to_json())
    assert pre.decode(np.array([1, 0, 1])).tolist() == ["dog", "cat", "dog"]
    bytes_y = prep(x, np.array([b"a", b"b", b"c"] * 20))
    assert bytes_y.task == "multiclass" and bytes_y.preprocessing.classes == ["a", "b", "c"]


def test_label_shapes_and_tasks() -> None:
    x = np.random.default_rng(0).normal(size=(60, 2)).astype(np.float32)
    assert prep(x, (np.arange(60) % 2).reshape(60, 1)).task == "binary"
    assert prep(x, np.linspace(0, 1, 60)).task == "regression"
    assert prep(x, np.arange(60) % 2, task_requested="multiclass").n_classes == 2
    assert prep(x, np.arange(60), task_requested="regression").y_train.dtype == np.float32


# --------------------------------------------------------------------------- bad input


def refuses(exc: type[Exception], match: str, fn: Any, *args: Any, **kw: Any) -> str:
    with pytest.raises(exc, match=match) as info:
        fn(*args, **kw)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_bad_files(tmp_path: Path) -> None:
    refuses(DataError, "missing.npz: file not found", load_npz, tmp_path / "missing.npz")
    (tmp_path / "dir.npz").mkdir()
    refuses(DataError, "is a directory; allowed: a regular .npz file", load_npz, tmp_path / "dir.npz")
    (tmp_path / "text.npz").write_text("not a zip")
    refuses(DataError, "text.npz: not a valid .npz archive", load_npz, tmp_path / "text.npz")
    (tmp_path / "empty.npz").write_bytes(b"")
    refuses(DataError, "not a valid .npz archive", load_npz, tmp_path / "empty.npz")
    (tmp_path / "trunc.npz").write_bytes(b"PK\x03\x04" + b"\0" * 20)
    refuses(DataError, "not a valid .npz archive", load_npz, tmp_path / "trunc.npz")
    np.save(tmp_path / "one.npy", np.zeros((3, 2)))
    refuses(DataError, "single .npy array", load_npz, tmp_path / "one.npy")


def test_pickle_never_loaded(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    (tmp_path / "evil.npz").write_bytes(pickle.dumps(Evil(str(marker))))
    refuses(DataError, "not a valid .npz archive", load_npz, tmp_path / "evil.npz")
    np.savez(tmp_path / "obj.npz", x=np.array([[1], ["a"]], dtype=object), y=np.array([0, 1]))
    refuses(DataError, r"array 'x' holds Python objects: object arrays are not allowed", load_npz, tmp_path / "obj.npz")
    assert not marker.exists()


class Evil:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (self.path, "w"))


def test_fifo_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.npz"
    os.mkfifo(fifo)
    errors: list[BaseException] = []

    def load() -> None:
        try:
            load_npz(fifo)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    thread = threading.Thread(target=load, daemon=True)
    thread.start()
    thread.join(timeout=5)
    assert not thread.is_alive(), "load_npz blocked on a FIFO"
    assert len(errors) == 1 and isinstance(errors[0], DataError)
    assert "not a regular file" in str(errors[0])


def test_missing_keys(tmp_path: Path) -> None:
    path = tmp_path / "d.npz"
    np.savez(path, images=np.zeros((4, 2)), labels=np.zeros(4))
    msg = refuses(DataError, r"no array 'x'; allowed: the keys present: 'images', 'labels'", load_npz, path)
    assert msg.startswith(str(path))
    refuses(DataError, r"no array 'label' \(did you mean 'labels'\?\)", load_npz, path, x_key="images",
            y_key="label")
    msg = refuses(SpecError, r"\[data\]\.y: .*d\.npz: no array 'label'", load_npz, path, x_key="images",
                  y_key="label", spec_file="study.toml")
    assert msg.startswith("study.toml: [data].y")
    np.savez(tmp_path / "none.npz")
    refuses(DataError, "none \\(the archive is empty\\)", load_npz, tmp_path / "none.npz")


@pytest.mark.parametrize(("x", "y", "match"), [
    (np.zeros((10, 2)), np.zeros(9), r"'y' has 9 labels but x has 10 samples"),
    (np.arange(50.0), np.arange(50) % 2, r"'x' has shape \(50,\); a sample needs at least one feature"),
    (np.array([["a", "b"]] * 50), np.arange(50) % 2, r"'x' has dtype <U1; allowed: real numbers"),
    (np.ones((50, 2), dtype=complex), np.arange(50) % 2, r"'x' has dtype complex128"),
    (np.array([[1, "a"]] * 50, dtype=object), np.arange(50) % 2, "object arrays are not allowed"),
    (np.zeros((0, 3)), np.zeros(0), r"'x' has shape \(0, 3\), no values"),
    (np.zeros((50, 0)), np.zeros(50), r"'x' has shape \(50, 0\), no values"),
    (np.full((50, 2), 1e300), np.arange(50) % 2, "beyond the float32 range"),
    (np.zeros((50, 2)), np.zeros((50, 2, 1)), r"allowed: one label per row \(class ids or names\), not one-hot"),
    (np.zeros((50, 2)), np.eye(5)[np.arange(50) % 5], r"shape \(50, 5\); allowed: one label per row .*not one-hot"),
    (np.zeros((50, 2)), np.zeros(50), r"'y' has a single class 0.0; allowed: at least two classes"),
    (np.zeros((50, 2)), np.where(np.arange(50) % 7 == 0, np.nan, 1.0), r"missing label\(s\) \(NaN\)"),
    (np.zeros((50, 2)), np.array([1 + 1j] * 50), r"'y' has dtype complex128"),
    (np.zeros((50, 2)), np.array([{}] * 50, dtype=object), "'y': object arrays are not allowed"),
])
def test_bad_arrays(x: Any, y: Any, match: str) -> None:
    msg = refuses(DataError, match, prep, x, y)
    assert msg.startswith("t.npz: ")


def test_bad_values_and_settings() -> None:
    x, y = images(50)
    bad = x.astype(np.float64)
    bad[7, 1, 1, 0] = np.nan
    bad[9, 0, 0, 0] = np.inf
    refuses(DataError, r"2 NaN or infinite value\(s\), the first in sample 7; allowed: finite numbers", prep, bad, y)
    refuses(DataError, "3 rows are too few for validation_fraction = 0.2", prep, x[:3], y[:3])
    refuses(DataError, "task = 'binary' but 'y' has 3 classes; allowed: exactly 2", prep, x, y, task_requested="binary")
    refuses(DataError, "task = 'regression' needs numeric labels in 'y', found text such as 'a'", prep, x,
            np.array(["a", "b"] * 25), task_requested="regression")
    refuses(DataError, "all zeros in the training split, so scale = 'unit'", prep, np.zeros((50, 3)), y, scale="unit")
    refuses(SpecError, r"\[data\]\.scale: 'units' \(did you mean 'unit'\?\); allowed: none, standard, unit", prep,
            x, y, scale="units")
    refuses(SpecError, r"\[data\]\.task: 'multi'", prep, x, y, task_requested="multi")
    refuses(DataError, "test_fraction = -0.1; allowed: 0 or more and below 1", prep, x, y, test_fraction=-0.1)
    refuses(DataError, "validation_fraction = nan; allowed: above 0", prep, x, y, validation_fraction=float("nan"))
    refuses(DataError, "infinite or too large labels", prep, x, np.full(50, np.inf), task_requested="regression")


def test_transform_refuses_wrong_shape() -> None:
    x, y = images()
    pre = prep(x, y, scale="unit").preprocessing
    refuses(DataError, r"^new\.npz: samples have shape \(4, 4, 3\) .*allowed: samples of shape \(4, 4, 1\) or "
            r"\(4, 4\)", pre.transform, np.zeros((2, 4, 4, 3)), "new.npz")
    refuses(DataError, r"samples have shape \(16,\)", pre.transform, np.zeros((2, 16)))
    refuses(DataError, "NaN or infinite", pre.transform, np.full((2, 4, 4, 1), np.nan))
    refuses(DataError, "dtype <U1", pre.transform, np.full((2, 4, 4, 1), "a"))
    refuses(DataError, "not an array preprocessing record", ArrayPreprocessing.from_json, '{"task": "binary"}')

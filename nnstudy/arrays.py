"""Array and image data: ``.npz`` files and the built-in ``digits_images``, checked, split and scaled.

``x`` has any shape ``(n, ...)`` with ndim >= 2, ``y`` one label per row. ``nnstudy.data.prepare_arrays`` returns float32
splits plus a JSON :class:`ArrayPreprocessing` that turns raw ``x`` into model inputs again. Files are read
with ``allow_pickle=False`` and only when regular (a FIFO is never opened). No Keras, Optuna or MLflow.
"""

from __future__ import annotations

import json
import os
import stat
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from nnstudy.errors import DataError, SpecError
from nnstudy.space import did_you_mean

ARRAY_SUFFIXES = (".npz",)  # a .npy holds one array, so it cannot carry both x and y
SCALES = ("none", "standard", "unit")
TASKS = ("auto", "binary", "multiclass", "regression")
MAX_CLASSES_AUTO = 20  # as in data.py: an integer y with at most this many values is taken as classes
_SHAPES = "(samples, features) or (samples, height, width, channels), any (samples, ...) with ndim >= 2"
_READ_ERRORS = (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error, RuntimeError)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0][:160] if text else type(exc).__name__)


def _irregular(path: Path, mode: int) -> DataError:
    kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file (FIFO, socket or device)"
    return DataError(path, f"is {kind}; allowed: a regular .npz file")


def load_npz(path: Path, *, x_key: str = "x", y_key: str = "y",
             spec_file: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """Read arrays ``x_key`` and ``y_key`` from a ``.npz`` (no pickle). A missing key is a
    :class:`SpecError` on ``[data].x``/``[data].y`` when ``spec_file`` is given, else a DataError."""
    x, y = _read_npz(Path(path), (("x", x_key), ("y", y_key)), spec_file)
    return x, y


def load_npz_inputs(path: Path, *, x_key: str = "x") -> np.ndarray:
    """Read the inputs array ``x_key`` of a ``.npz`` to predict from (labels, if any, are ignored)."""
    return _read_npz(Path(path), (("x", x_key),), None)[0]


def _read_npz(path: Path, wanted: tuple[tuple[str, str], ...], spec_file: Any) -> list[np.ndarray]:
    fd = -1
    try:
        mode = os.stat(path).st_mode  # before any open: opening a FIFO would block
        if stat.S_ISREG(mode):
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        raise DataError(path, "file not found; allowed: an existing .npz file "
                        "(a relative [data].source is relative to the spec)") from None
    except OSError as exc:
        raise DataError(path, f"cannot be read ({exc.strerror}); allowed: a readable .npz file") from None
    if fd < 0:
        raise _irregular(path, mode)
    with os.fdopen(fd, "rb") as handle:
        mode = os.fstat(handle.fileno()).st_mode  # the path may have been swapped since the stat
        if not stat.S_ISREG(mode):
            raise _irregular(path, mode)
        try:
            loaded = np.load(handle, allow_pickle=False)
        except _READ_ERRORS as exc:
            why = "not a zip archive" if "pickled" in str(exc) else _first_line(exc)  # numpy's guess: a pickle
            raise DataError(path, f"not a valid .npz archive ({why}); allowed: a file written by "
                            "numpy.savez or numpy.savez_compressed") from None
        if isinstance(loaded, np.ndarray):
            raise DataError(path, "holds a single .npy array; allowed: a .npz archive with arrays for x and y "
                            "(numpy.savez(path, x=..., y=...))")
        keys = [str(k) for k in loaded.files]
        out: list[np.ndarray] = []
        for field_name, key in wanted:
            if key not in keys:
                present = ", ".join(repr(k) for k in keys) or "none (the archive is empty)"
                problem = f"no array {key!r}{did_you_mean(key, keys)}; allowed: the keys present: {present}"
                if spec_file is not None:
                    raise SpecError(spec_file, f"[data].{field_name}", f"{path}: {problem}")
                raise DataError(path, problem)
            try:
                out.append(np.asarray(loaded[key]))
            except _READ_ERRORS as exc:
                if "object arrays" in str(exc).lower():
                    raise DataError(path, f"array {key!r} holds Python objects: object arrays are not allowed; "
                                    "allowed: numeric (x) or numeric/text (y) arrays") from None
                raise DataError(path, f"array {key!r} cannot be read ({_first_line(exc)}); "
                                "allowed: an intact .npz") from None
    return out


def digits_images() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits as images: x (1797, 8, 8, 1) float32 in 0..16, y int64 digits 0..9."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.asarray(bunch.images, dtype=np.float32)[..., np.newaxis]
    return x, np.asarray(bunch.target, dtype=np.int64)


BUILTIN_ARRAYS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {"digits_images": digits_images}


def as_inputs(x: Any, source: Any, name: str) -> np.ndarray:
    """Check ``x`` (shape, dtype, finite) and return it as float32, unscaled."""
    arr = np.asarray(x)
    if arr.dtype.kind == "O":
        raise DataError(source, f"array {name!r}: object arrays are not allowed; allowed: numbers")
    if arr.dtype.kind not in "biuf":
        raise DataError(source, f"array {name!r} has dtype {arr.dtype}; allowed: real numbers "
                        "(bool, integer or float; no text, no complex)")
    if arr.ndim < 2:
        raise DataError(source, f"array {name!r} has shape {arr.shape}; a sample needs at least one feature; "
                        f"allowed: {_SHAPES}")
    if arr.shape[0] == 0 or arr.size == 0:
        raise DataError(source, f"array {name!r} has shape {arr.shape}, no values; allowed: at least one "
                        "sample with at least one feature")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            first = int(np.argmax(bad.reshape(len(arr), -1).any(axis=1)))
            raise DataError(source, f"array {name!r} has {int(bad.sum())} NaN or infinite value(s), the first "
                            f"in sample {first}; allowed: finite numbers")
    with np.errstate(over="ignore"):
        xf = arr.astype(np.float32)
    if not np.isfinite(xf).all():
        raise DataError(source, f"array {name!r} has values beyond the float32 range; allowed: |x| < 3.4e38")
    return xf


def label_array(y: Any, n: int, source: str, name: str) -> np.ndarray:
    """Check ``y`` (one label per row) and return it 1-D: numbers, bools or str."""
    arr = np.asarray(y)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise DataError(source, f"array {name!r} has shape {arr.shape}; allowed: one label per row "
                        "(class ids or names), not one-hot: shape (samples,) or (samples, 1)")
    if len(arr) != n:
        raise DataError(source, f"array {name!r} has {len(arr)} labels but x has {n} samples; "
                        "allowed: the same number of rows")
    if arr.dtype.kind == "S":
        try:
            arr = np.char.decode(arr, "utf-8")
        except UnicodeDecodeError:
            raise DataError(source, f"array {name!r} holds bytes that are not UTF-8; allowed: text or "
                            "numbers") from None
    if arr.dtype.kind == "O":
        if not all(isinstance(v, str) for v in arr.tolist()):
            raise DataError(source, f"array {name!r}: object arrays are not allowed; allowed: numbers or text")
        arr = arr.astype(str)
    if arr.dtype.kind not in "biufU":
        raise DataError(source, f"array {name!r} has dtype {arr.dtype}; allowed: class ids, class names "
                        "or real numbers")
    if arr.dtype.kind == "f" and np.isnan(arr).any():
        raise DataError(source, f"array {name!r} has {int(np.isnan(arr).sum())} missing label(s) (NaN); "
                        "allowed: a label in every row")
    return arr


def infer_array_task(y: np.ndarray, requested: str, source: str, name: str = "y") -> str:
    """binary / multiclass / regression, as data.py's ``infer_task`` (``requested`` wins unless auto)."""
    numeric = y.dtype.kind in "iuf"
    classes = np.unique(y)
    if requested == "regression":
        if not numeric:
            found = "booleans" if y.dtype.kind == "b" else f"text such as {str(y[0])!r}"
            raise DataError(source, f"task = 'regression' needs numeric labels in {name!r}, found {found}; "
                            "allowed: numbers (or task = 'binary'/'multiclass')")
        return "regression"
    if requested in ("binary", "multiclass"):
        kind = requested
    elif not numeric:
        kind = "binary" if len(classes) == 2 else "multiclass"
    else:
        integral = y.dtype.kind in "iu" or bool(np.all(np.mod(y, 1) == 0))
        if integral and len(classes) == 2:
            kind = "binary"
        elif integral and len(classes) <= MAX_CLASSES_AUTO:
            kind = "multiclass"
        else:
            return "regression"
    if len(classes) < 2:
        raise DataError(source, f"array {name!r} has a single class {classes[0].item()!r}; allowed: at least "
                        "two classes (or task = 'regression')")
    if kind == "binary" and len(classes) != 2:
        raise DataError(source, f"task = 'binary' but {name!r} has {len(classes)} classes; allowed: exactly 2 "
                        "(or task = 'multiclass')")
    return kind


@dataclass
class ArrayPreprocessing:
    """Everything needed to turn raw ``x`` into model inputs, as plain JSON-able data.

    ``mean``/``std`` (scale = 'standard') are flat C-order lists of ``prod(input_shape)`` values;
    ``max_abs`` (scale = 'unit') is the training split's maximum absolute value."""

    task: str
    input_shape: list[int]
    scale: str
    mean: list[float] | None = None
    std: list[float] | None = None
    max_abs: float | None = None
    classes: list[Any] = field(default_factory=list)  # original labels, index = class id
    kind: str = "arrays"  # tells this record from the tabular Preprocessing

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ArrayPreprocessing:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("kind") != "arrays":
            raise DataError("preprocessing.json", "not an array preprocessing record; allowed: "
                            "the output of ArrayPreprocessing.to_json")
        return cls(**data)

    def apply_scale(self, xf: np.ndarray, source: Any) -> np.ndarray:
        """Scale float32 ``xf``: the one code path of data.prepare_arrays and transform (equal results)."""
        with np.errstate(over="ignore"):
            if self.scale == "standard" and self.mean is not None and self.std is not None:
                xf = ((xf - np.asarray(self.mean, dtype=np.float32).reshape(self.input_shape))
                      / np.asarray(self.std, dtype=np.float32).reshape(self.input_shape))
            elif self.scale == "unit" and self.max_abs is not None:
                xf = xf / np.float32(self.max_abs)
        if not np.isfinite(xf).all():
            raise DataError(source, "scaled values overflow float32; allowed: scale = 'none' or smaller values")
        return xf.astype(np.float32, copy=False)

    def transform(self, x: np.ndarray, source: Any = "<input>") -> np.ndarray:
        """Raw samples -> scaled float32 model inputs. Samples must have ``input_shape``; when it ends in
        a channel axis of size 1, samples without that axis are accepted (e.g. (n, 8, 8) for [8, 8, 1])."""
        arr = np.asarray(x)
        expected = tuple(self.input_shape)
        if arr.ndim >= 1 and arr.shape[1:] != expected:
            if expected[-1:] == (1,) and arr.shape[1:] == expected[:-1]:
                arr = arr[..., np.newaxis]
            else:
                alt = f" or {expected[:-1]}" if expected[-1:] == (1,) else ""
                raise DataError(source, f"samples have shape {arr.shape[1:]} (array {arr.shape}); "
                                f"allowed: samples of shape {expected}{alt}, as the model was trained on")
        return self.apply_scale(as_inputs(arr, source, "x"), source)

    def decode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids -> original labels."""
        if self.task == "regression":
            raise ValueError("a regression model has no classes to decode")
        labels: np.ndarray = np.asarray(self.classes, dtype=object)[np.asarray(class_ids, dtype=np.int64)]
        return labels

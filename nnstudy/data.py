"""Data: the spec's table checked, split and scaled once per process.

``prepare(spec)`` returns a :class:`PreparedData` with float32 arrays for the train,
validation and (optional) test splits plus a JSON-serialisable
:class:`~nnstudy.preprocessing.Preprocessing` record that turns raw rows into model inputs
again. No Keras, no Optuna, no MLflow.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from nnstudy.errors import DataError, SpecError
from nnstudy.arrays import SCALES, TASKS, ArrayPreprocessing, as_inputs, infer_array_task, label_array
from nnstudy.prepared import PreparedData, split_indices
from nnstudy.preprocessing import Preprocessing, categories_of, check_missing, encode
from nnstudy.space import did_you_mean
from nnstudy.spec import StudySpec
from nnstudy.tables import check_regular_file, load_frame, resolve_source

MAX_CLASSES_AUTO = 20  # an integer target with at most this many values is taken as classes by task = "auto"


def infer_task(y: pd.Series, requested: str, source: str, target: str) -> str:
    """Decide binary / multiclass / regression (``requested`` wins unless it is ``auto``)."""
    values = y.dropna()
    numeric = pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values)
    n_unique = values.nunique()
    if requested == "regression":
        if not numeric:
            if pd.api.types.is_bool_dtype(values):
                sample = values.iloc[0]
            else:
                sample = values[pd.to_numeric(values, errors="coerce").isna()].iloc[0]
            raise DataError(source, f"task = 'regression' needs a numeric target, found text such as {sample!r}; "
                            "allowed: numbers (or task = 'binary'/'multiclass')", column=target)
        return "regression"
    if requested in ("binary", "multiclass"):
        kind = requested
    elif not numeric:
        kind = "binary" if n_unique == 2 else "multiclass"
    else:
        integral = bool(np.all(np.mod(values.to_numpy(dtype=float), 1) == 0))
        if integral and n_unique == 2:
            kind = "binary"
        elif integral and n_unique <= MAX_CLASSES_AUTO:
            kind = "multiclass"
        else:
            return "regression"
    if n_unique < 2:
        raise DataError(source, f"has a single class {values.iloc[0]!r}; allowed: at least two classes "
                        "(or task = 'regression')", column=target)
    if kind == "binary" and n_unique != 2:
        raise DataError(source, f"task = 'binary' but the target has {n_unique} classes; allowed: exactly 2 "
                        "(or task = 'multiclass')", column=target)
    return kind


EXAMPLE_ROWS = 5  # raw rows kept as the input example of logged models


def prepare(spec: StudySpec) -> PreparedData:
    """Load, check, split and scale the spec's data (a table, or arrays). Deterministic for a given spec."""
    section = spec.data
    if section.is_arrays:
        return _prepare_arrays(spec)
    frame, target, source = load_frame(section, spec.base_dir, spec.path)
    if target not in frame.columns and section.is_builtin:
        raise SpecError(spec.path, "[data].target", f"{target!r} is not a column of the built-in set {source!r}; "
                        f"allowed: {', '.join(map(str, frame.columns))} (or leave target out)")
    if target not in frame.columns:
        raise DataError(source, f"target column not found{did_you_mean(target, [str(c) for c in frame.columns])}; "
                        f"allowed: {', '.join(map(str, frame.columns))}", column=target)
    for col in section.exclude:
        if col not in frame.columns:
            raise SpecError(spec.path, "[data].exclude", f"{col!r} is not a column of {source}; allowed: "
                            + ", ".join(map(str, frame.columns)))
    inputs = [str(c) for c in frame.columns if c != target and c not in section.exclude]
    if not inputs:
        raise DataError(source, "no feature columns left after the target and [data].exclude")
    frame = frame[[*inputs, target]]
    if frame[target].isna().any():
        raise DataError(source, f"{int(frame[target].isna().sum())} row(s) have no target value; "
                        "allowed: a value in every row", column=target)
    check_missing(frame[inputs], section.missing, source)
    if section.missing == "drop":
        frame = frame.dropna()
        if len(frame) == 0:
            raise DataError(source, "no rows left after dropping rows with missing values")
    task = infer_task(frame[target], section.task, source, target)
    spec.check_task(task, source=source)

    y_raw = frame[target]
    classes: list[Any] = []
    if task == "regression":
        y = pd.to_numeric(y_raw).to_numpy(dtype=np.float32)
        if not np.all(np.isfinite(y)):
            raise DataError(source, "infinite target values; allowed: finite numbers", column=target)
        if len(y) and float(np.ptp(y)) == 0.0:
            raise DataError(source, f"every row has the same target value {float(y[0]):g}: nothing to learn; allowed: "
                            "a target that varies", column=target)
    else:
        classes = sorted(pd.unique(y_raw).tolist(), key=lambda v: (str(type(v)), v))
        y = pd.Series(y_raw).map({c: i for i, c in enumerate(classes)}).to_numpy()
        y = y.astype(np.float32 if task == "binary" else np.int32)
        classes = [c.item() if hasattr(c, "item") else c for c in classes]

    categories = categories_of(frame[inputs], source)
    idx_train, idx_val, idx_test = split_indices(len(frame), y if task != "regression" else None,
                                          section.validation_fraction, section.test_fraction,
                                          spec.study.seed, source)
    x_frame = frame[inputs].reset_index(drop=True)
    impute: dict[str, float] = {}
    if section.missing in ("mean", "median"):
        train_part = x_frame.iloc[idx_train]
        for col in inputs:
            if col not in categories and x_frame[col].isna().any():
                stat = train_part[col].mean() if section.missing == "mean" else train_part[col].median()
                impute[col] = float(stat)
    encoded = encode(x_frame, categories, impute, source)
    values = encoded.to_numpy(dtype=np.float64)
    if not np.all(np.isfinite(values)):
        bad_col = encoded.columns[~np.isfinite(values).all(axis=0)][0]
        raise DataError(source, "infinite values; allowed: finite numbers", column=str(bad_col))
    mean = values[idx_train].mean(axis=0)
    scale = values[idx_train].std(axis=0)
    scale[scale == 0] = 1.0
    x = ((values - mean) / scale).astype(np.float32)
    pre = Preprocessing(task=task, target=target, input_columns=inputs, categories=categories, impute=impute,
                        feature_names=[str(c) for c in encoded.columns], mean=mean.tolist(),
                        scale=scale.tolist(), classes=classes)
    return PreparedData.from_split(x, y, (idx_train, idx_val, idx_test), task=task, n_classes=len(classes),
                                   preprocessing=pre, source=source,
                                   example=x_frame.iloc[idx_train[:EXAMPLE_ROWS]].reset_index(drop=True))


def _prepare_arrays(spec: StudySpec) -> PreparedData:
    """A ``.npz`` file (arrays ``[data].x`` and ``[data].y``) or a built-in image set."""
    from nnstudy.arrays import BUILTIN_ARRAYS, load_npz

    section = spec.data
    if section.source in BUILTIN_ARRAYS:
        x, y = BUILTIN_ARRAYS[section.source]()
        source = section.source
        scale = "unit" if section.scale == "auto" else section.scale
    else:
        path = resolve_source(section.source, spec.base_dir)
        check_regular_file(path, spec.path)
        x, y = load_npz(path, x_key=section.x, y_key=section.y, spec_file=spec.path)
        source = str(path)
        scale = "standard" if section.scale == "auto" else section.scale
    data = prepare_arrays(x, y, source=source, task_requested=section.task,
                          validation_fraction=section.validation_fraction, test_fraction=section.test_fraction,
                          seed=spec.study.seed, scale=scale, x_name=section.x, y_name=section.y, spec_file=spec.path)
    spec.check_task(data.task, source=source)
    return data


def prepare_arrays(x: np.ndarray, y: np.ndarray, *, source: str, task_requested: str, validation_fraction: float,
                   test_fraction: float, seed: int, scale: str, x_name: str = "x", y_name: str = "y",
                   spec_file: Any = None) -> PreparedData:
    """Check, split (stratified, seeded) and scale arrays; statistics come from the training split only."""
    if scale not in SCALES:
        raise SpecError(spec_file, "[data].scale", f"{scale!r}{did_you_mean(str(scale), SCALES)}; "
                        f"allowed: {', '.join(SCALES)}")
    if task_requested not in TASKS:
        raise SpecError(spec_file, "[data].task", f"{task_requested!r}{did_you_mean(str(task_requested), TASKS)}; "
                        f"allowed: {', '.join(TASKS)}")
    xf = as_inputs(x, source, x_name)
    labels = label_array(y, len(xf), source, y_name)
    task = infer_array_task(labels, task_requested, source, y_name)
    classes: list[Any] = []
    if task == "regression":
        with np.errstate(over="ignore"):
            y_enc = labels.astype(np.float32)
        if not np.isfinite(y_enc).all():
            raise DataError(source, f"array {y_name!r} has infinite or too large labels; allowed: finite numbers")
        if float(np.ptp(y_enc)) == 0.0:
            raise DataError(source, f"array {y_name!r} has the same value {float(y_enc[0]):g} in every row: nothing "
                            "to learn; allowed: targets that vary")
    else:
        uniq = np.unique(labels)
        y_enc = np.searchsorted(uniq, labels).astype(np.float32 if task == "binary" else np.int32)
        classes = uniq.tolist()
    train, val, test = split_indices(len(xf), None if task == "regression" else y_enc, validation_fraction,
                                     test_fraction, seed, source)
    pre = ArrayPreprocessing(task=task, input_shape=[int(d) for d in xf.shape[1:]], scale=scale, classes=classes)
    if scale == "standard":
        part = xf[train]
        std = part.std(axis=0, dtype=np.float64)
        std[std == 0] = 1.0
        pre.mean, pre.std = part.mean(axis=0, dtype=np.float64).ravel().tolist(), std.ravel().tolist()
    elif scale == "unit":
        max_abs = float(np.max(np.abs(xf[train])))
        if max_abs == 0:
            raise DataError(source, f"array {x_name!r} is all zeros in the training split, so scale = 'unit' "
                            "has nothing to divide by; allowed: data with a non-zero value (or scale = 'none')")
        pre.max_abs = max_abs
    xs = pre.apply_scale(xf, source)
    return PreparedData.from_split(xs, y_enc, (train, val, test), task=task, n_classes=len(classes), preprocessing=pre,
                                   source=source, digest_prefix=str(xs.shape).encode(),
                                   example=np.asarray(x)[train[:5]])


__all__ = ["PreparedData", "infer_task", "prepare", "prepare_arrays"]

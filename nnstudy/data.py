"""Data: built-in sets and user files, checked, split and scaled once per process.

``prepare(spec)`` returns a :class:`PreparedData` with float32 arrays for the train,
validation and (optional) test splits plus a JSON-serialisable :class:`Preprocessing`
record that turns raw rows into model inputs again (feature columns, one-hot
categories, imputation values, scaler, class labels). No Keras, no Optuna, no MLflow.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from nnstudy.errors import DataError, SpecError
from nnstudy.spec import DataSection, StudySpec
from nnstudy.space import did_you_mean

MAX_CATEGORIES = 50  # a text feature with more distinct values than this is rejected, not one-hot encoded
MAX_CLASSES_AUTO = 20  # an integer target with at most this many values is taken as classes by task = "auto"


# --------------------------------------------------------------------------- built-in sets

def pass_fail_frame(n_samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """The course's running example: lectures attended and project hours -> passed (0/1).

    The boundary is curved (attending lectures makes project hours count for more) and
    10% of labels are noisy, so no model reaches 100% and overfitting is visible.
    """
    frame = _course_inputs(n_samples, seed)
    rng = np.random.default_rng(seed + 1)
    lectures, hours = frame["lectures"].to_numpy(), frame["hours"].to_numpy()
    logit = 0.28 * (lectures - 10) + 0.20 * (hours - 12) + 0.012 * (lectures - 10) * (hours - 12)
    passed = rng.random(n_samples) < 1.0 / (1.0 + np.exp(-logit))
    flip = rng.random(n_samples) < 0.10
    frame["passed"] = np.where(flip, ~passed, passed).astype(int)
    return frame


def grades_frame(n_samples: int = 1000, seed: int = 0) -> pd.DataFrame:
    """Same inputs as :func:`pass_fail_frame`, target is the final grade 0..100 (regression)."""
    frame = _course_inputs(n_samples, seed)
    rng = np.random.default_rng(seed + 2)
    lectures, hours = frame["lectures"].to_numpy(), frame["hours"].to_numpy()
    grade = 20 + 1.6 * lectures + 2.2 * hours - 0.035 * hours**2 + 0.02 * lectures * hours
    frame["grade"] = np.clip(grade + rng.normal(0, 7, n_samples), 0, 100).round(1)
    return frame


def _course_inputs(n_samples: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lectures = rng.integers(0, 25, n_samples)  # of 24 lectures
    hours = np.clip(rng.gamma(2.0, 6.0, n_samples), 0, 60).round(1)
    return pd.DataFrame({"lectures": lectures, "hours": hours})


def _sklearn_frame(name: str) -> pd.DataFrame:
    from sklearn import datasets

    loader = {"digits": datasets.load_digits, "breast_cancer": datasets.load_breast_cancer}[name]
    bunch = loader(as_frame=True)
    frame: pd.DataFrame = bunch.frame
    if name == "breast_cancer":  # name the classes, so predictions read "malignant"/"benign"
        frame["target"] = np.asarray(bunch.target_names)[frame["target"].to_numpy()]
    return frame


BUILTIN_TARGETS = {"pass_fail": "passed", "grades": "grade", "digits": "target", "breast_cancer": "target"}


def load_frame(section: DataSection, base_dir: Path, spec_file: Any = None) -> tuple[pd.DataFrame, str, str]:
    """Load the raw table. Returns ``(frame, target column, source label)``."""
    if section.is_builtin:
        if section.source == "pass_fail":
            frame = pass_fail_frame(section.n_samples, section.seed)
        elif section.source == "grades":
            frame = grades_frame(section.n_samples, section.seed)
        else:
            frame = _sklearn_frame(section.source)
        target = section.target or BUILTIN_TARGETS[section.source]
        return frame, target, section.source
    path = Path(section.source)
    if not path.is_absolute():
        path = base_dir / path
    return read_table(path, spec_file), str(section.target), str(path)


def read_table(path: Path, spec_file: Any = None) -> pd.DataFrame:
    """Read a CSV (delimiter sniffed) or Parquet file, rejecting what cannot be a training table."""
    if not path.exists():
        raise SpecError(spec_file, "[data].source", f"{str(path)!r}: no such file; allowed: a built-in set "
                        f"({', '.join(BUILTIN_TARGETS)}) or a .csv/.parquet file relative to the spec")
    if path.is_dir():
        raise DataError(path, "is a directory; allowed: a .csv or .parquet file")
    suffix = path.suffix.lower()
    if suffix in (".parquet", ".pq"):
        try:
            frame = pd.read_parquet(path)
        except Exception as err:  # pyarrow raises several types for a bad file
            raise DataError(path, f"cannot be read as Parquet: {err}") from None
    elif suffix in (".csv", ".tsv", ".txt"):
        frame = _read_csv(path)
    else:
        raise DataError(path, f"unknown file type {suffix!r}; allowed: .csv, .tsv, .txt, .parquet")
    if frame.columns.duplicated().any():
        dup = frame.columns[frame.columns.duplicated()][0]
        raise DataError(path, "duplicate column name; allowed: unique column names", column=str(dup))
    if len(frame) == 0:
        raise DataError(path, "has a header but no rows; allowed: at least one data row")
    return frame


def _read_csv(path: Path) -> pd.DataFrame:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(path, "is not UTF-8 text; allowed: a UTF-8 CSV file") from None
    if not text.strip():
        raise DataError(path, "is empty; allowed: a CSV file with a header row and data rows")
    sample = text[:65536]
    try:
        dialect = csv.Sniffer().sniff(sample.splitlines()[0] if "\n" not in sample.strip() else sample,
                                      delimiters=",;\t| ")
        delimiter = dialect.delimiter
    except csv.Error:
        delimiter = ","
    header = next(csv.reader([sample.splitlines()[0]], delimiter=delimiter))
    names = [h.strip() for h in header]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise DataError(path, "duplicate column name; allowed: unique column names", column=dups[0])
    try:
        return pd.read_csv(path, sep=delimiter, skipinitialspace=True, encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(path, f"cannot be parsed as CSV: {err}") from None


# --------------------------------------------------------------------------- preprocessing

@dataclass
class Preprocessing:
    """Everything needed to turn raw rows into model inputs, as plain JSON-able data."""

    task: str
    target: str
    input_columns: list[str]  # raw columns used, in order
    categories: dict[str, list[str]]  # one-hot categories per text column
    impute: dict[str, float]  # fill values per numeric column ({} when missing = "error")
    feature_names: list[str]  # model input columns after one-hot encoding
    mean: list[float]
    scale: list[float]
    classes: list[Any] = field(default_factory=list)  # original labels, index = class id

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> Preprocessing:
        return cls(**json.loads(text))

    def transform(self, frame: pd.DataFrame, source: Any = "<input>") -> np.ndarray:
        """Raw rows -> scaled float32 model inputs (missing columns are an error)."""
        missing = [c for c in self.input_columns if c not in frame.columns]
        if missing:
            raise DataError(source, f"missing input column; allowed columns: {', '.join(self.input_columns)}",
                            column=missing[0])
        x = _encode(frame[self.input_columns], self.categories, self.impute, source)
        x = x.reindex(columns=self.feature_names, fill_value=0.0)
        values = x.to_numpy(dtype=np.float64)
        return ((values - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)

    def decode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids -> original labels."""
        return np.asarray(self.classes, dtype=object)[class_ids]


def _encode(frame: pd.DataFrame, categories: dict[str, list[str]], impute: dict[str, float],
            source: Any) -> pd.DataFrame:
    frame = frame.copy()
    for col, fill in impute.items():
        frame[col] = frame[col].fillna(fill)
    parts = []
    for col in frame.columns:
        if col in categories:
            values = frame[col].astype("string")
            onehot = pd.DataFrame({f"{col}={c}": (values == c).astype(float) for c in categories[col]},
                                  index=frame.index)
            parts.append(onehot)
        else:
            numeric = pd.to_numeric(frame[col], errors="coerce")
            if numeric.isna().any():
                bad = int(numeric.isna().sum())
                raise DataError(source, f"{bad} row(s) not numeric or missing; allowed: numbers", column=str(col))
            parts.append(numeric.astype(float).to_frame(col))
    return pd.concat(parts, axis=1) if parts else pd.DataFrame(index=frame.index)


@dataclass
class PreparedData:
    """Train/validation/test arrays ready for Keras, plus how they were made."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    task: str
    n_classes: int  # 1 for binary and regression
    preprocessing: Preprocessing
    source: str
    digest: str  # sha256 of the prepared arrays: equal digests mean equal data

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def target_mean(self) -> float:
        return float(np.mean(self.y_train))

    def summary(self) -> dict[str, Any]:
        return {
            "source": self.source, "task": self.task, "n_features": self.n_features,
            "n_classes": self.n_classes, "train_rows": len(self.x_train), "val_rows": len(self.x_val),
            "test_rows": 0 if self.x_test is None else len(self.x_test), "digest": self.digest,
        }


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


def prepare(spec: StudySpec) -> PreparedData:
    """Load, check, split and scale the spec's data. Deterministic for a given spec."""
    section = spec.data
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
    _check_missing(frame[inputs], section.missing, source)
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
    else:
        classes = sorted(pd.unique(y_raw).tolist(), key=lambda v: (str(type(v)), v))
        y = pd.Series(y_raw).map({c: i for i, c in enumerate(classes)}).to_numpy()
        y = y.astype(np.float32 if task == "binary" else np.int32)
        classes = [c.item() if hasattr(c, "item") else c for c in classes]

    categories = _categories(frame[inputs], source)
    idx_train, idx_val, idx_test = _split(len(frame), y if task != "regression" else None,
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
    encoded = _encode(x_frame, categories, impute, source)
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
    digest = hashlib.sha256()
    for part in (x, y, idx_train, idx_val, idx_test):
        digest.update(np.ascontiguousarray(part).tobytes())
    has_test = len(idx_test) > 0
    return PreparedData(
        x_train=x[idx_train], y_train=y[idx_train], x_val=x[idx_val], y_val=y[idx_val],
        x_test=x[idx_test] if has_test else None, y_test=y[idx_test] if has_test else None,
        task=task, n_classes=len(classes) if task == "multiclass" else 1, preprocessing=pre,
        source=source, digest=digest.hexdigest()[:16],
    )


def _check_missing(frame: pd.DataFrame, policy: str, source: str) -> None:
    counts = frame.isna().sum()
    if policy == "error" and counts.any():
        col = counts[counts > 0].index[0]
        raise DataError(source, f"{int(counts[col])} row(s) have missing values; allowed: complete rows "
                        "(or set [data].missing = 'drop', 'mean' or 'median')", column=str(col))
    if policy in ("mean", "median"):
        for col in counts[counts > 0].index:
            if not pd.api.types.is_numeric_dtype(frame[col]):
                raise DataError(source, f"{int(counts[col])} missing value(s) in a text column cannot be "
                                f"imputed with {policy!r}; allowed: missing = 'drop'", column=str(col))


def _categories(frame: pd.DataFrame, source: str) -> dict[str, list[str]]:
    categories: dict[str, list[str]] = {}
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            coerced = pd.to_numeric(series, errors="coerce")
            if not pd.api.types.is_bool_dtype(series) and coerced.notna().sum() == series.notna().sum():
                continue  # numbers stored as text
            levels = sorted(series.dropna().astype("string").unique().tolist())
            if len(levels) > MAX_CATEGORIES:
                raise DataError(source, f"text column with {len(levels)} distinct values; allowed: at most "
                                f"{MAX_CATEGORIES} categories (list ID-like columns in [data].exclude)",
                                column=str(col))
            categories[str(col)] = levels
    return categories


def _split(n: int, y: np.ndarray | None, val_fraction: float, test_fraction: float, seed: int,
           source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    idx = np.arange(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * val_fraction))
    if n - n_test - n_val < 2 or n_val < 1 or (test_fraction > 0 and n_test < 1):
        raise DataError(source, f"{n} rows are too few for validation_fraction = {val_fraction:g} and "
                        f"test_fraction = {test_fraction:g}; allowed: at least 2 training rows and 1 validation row")

    def cut(pool: np.ndarray, size: int, rng_seed: int) -> tuple[np.ndarray, np.ndarray]:
        strata = y[pool] if y is not None else None
        if strata is not None:
            _, counts = np.unique(strata, return_counts=True)
            if counts.min() < 2 or size < len(counts) or len(pool) - size < len(counts):
                strata = None  # too few rows per class to stratify
        rest, part = train_test_split(pool, test_size=size, random_state=rng_seed, stratify=strata)
        return np.sort(rest), np.sort(part)

    pool, test = cut(idx, n_test, seed) if n_test else (idx, idx[:0])
    train, val = cut(pool, n_val, seed + 1)
    return train, val, test

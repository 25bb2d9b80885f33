"""Turning raw rows into model inputs and back: one-hot categories, imputation, standard
scaling and class labels, kept as JSON so that a saved model predicts from raw rows."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from nnstudy.errors import DataError

MAX_CATEGORIES = 50  # a text feature with more distinct values than this is rejected, not one-hot encoded


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
        x = encode(frame[self.input_columns], self.categories, self.impute, source)
        x = x.reindex(columns=self.feature_names, fill_value=0.0)
        values: np.ndarray = x.to_numpy(dtype=np.float64)
        scaled: np.ndarray = ((values - np.asarray(self.mean)) / np.asarray(self.scale)).astype(np.float32)
        return scaled

    def decode(self, class_ids: np.ndarray) -> np.ndarray:
        """Class ids -> original labels."""
        labels: np.ndarray = np.asarray(self.classes, dtype=object)[class_ids]
        return labels


def encode(frame: pd.DataFrame, categories: dict[str, list[str]], impute: dict[str, float],
           source: Any) -> pd.DataFrame:
    """Impute, one-hot encode the text columns and check the rest are numbers (no scaling)."""
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


def categories_of(frame: pd.DataFrame, source: str) -> dict[str, list[str]]:
    """The one-hot categories of every text column (numbers stored as text are numbers)."""
    categories: dict[str, list[str]] = {}
    for col in frame.columns:
        series = frame[col]
        if pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
            coerced = pd.to_numeric(series, errors="coerce")
            if not pd.api.types.is_bool_dtype(series) and coerced.notna().sum() == series.notna().sum():
                continue  # numbers stored as text
            levels = sorted(series.dropna().astype("string").unique().tolist())
            comma_numbers = series.dropna().astype("string").str.fullmatch(r"\s*[-+]?\d+,\d+\s*")
            if len(comma_numbers) and comma_numbers.mean() >= 0.9:
                raise DataError(source, f"looks like numbers written with a decimal comma ({levels[0]!r}); allowed: "
                                "numbers -- set [data].decimal = \",\" (and [data].delimiter = \";\" if the "
                                "columns are separated by semicolons)", column=str(col))
            if len(levels) > MAX_CATEGORIES:
                raise DataError(source, f"text column with {len(levels)} distinct values; allowed: at most "
                                f"{MAX_CATEGORIES} categories (list ID-like columns in [data].exclude)",
                                column=str(col))
            categories[str(col)] = levels
    return categories


def check_missing(frame: pd.DataFrame, policy: str, source: str) -> None:
    """Refuse missing values under ``missing = "error"`` and text gaps that cannot be imputed."""
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

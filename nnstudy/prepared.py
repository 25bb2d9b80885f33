"""Prepared data: train/validation/test arrays ready for Keras, and the record of how raw inputs
become them again (tables: :class:`~nnstudy.preprocessing.Preprocessing`; arrays and images:
:class:`~nnstudy.arrays.ArrayPreprocessing`)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from nnstudy.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

    from nnstudy.arrays import ArrayPreprocessing
    from nnstudy.preprocessing import Preprocessing


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
    preprocessing: Preprocessing | ArrayPreprocessing
    source: str
    digest: str  # sha256 of the prepared arrays: equal digests mean equal data
    example: pd.DataFrame | np.ndarray | None = None  # a few raw input rows, as a user would pass them to predict

    @classmethod
    def from_split(cls, x: np.ndarray, y: np.ndarray, split: tuple[np.ndarray, np.ndarray, np.ndarray], *,
                   task: str, n_classes: int, preprocessing: Preprocessing | ArrayPreprocessing, source: str,
                   digest_prefix: bytes = b"", example: pd.DataFrame | np.ndarray | None = None) -> PreparedData:
        """The splits of prepared ``x`` and ``y`` by ``split`` (train, validation, test row indices; an
        empty test part means none), digested: equal digests mean equal data and split. ``example``: a few
        raw input rows (the MLflow Model's input example and signature)."""
        digest = hashlib.sha256(digest_prefix)
        for part in (x, y, *split):
            digest.update(np.ascontiguousarray(part).tobytes())
        train, val, test = split
        has_test = len(test) > 0
        return cls(x_train=x[train], y_train=y[train], x_val=x[val], y_val=y[val],
                   x_test=x[test] if has_test else None, y_test=y[test] if has_test else None, task=task,
                   n_classes=n_classes if task == "multiclass" else 1, preprocessing=preprocessing, source=source,
                   digest=digest.hexdigest()[:16], example=example)

    @property
    def input_shape(self) -> tuple[int, ...]:
        """One example's shape (no batch axis): ``(features,)`` for tables, e.g. ``(8, 8, 1)`` for images."""
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def target_mean(self) -> float:
        return float(np.mean(self.y_train))

    def rows(self) -> dict[str, int]:
        """Rows by split: train_rows, val_rows, test_rows."""
        return {"train_rows": len(self.x_train), "val_rows": len(self.x_val),
                "test_rows": 0 if self.x_test is None else len(self.x_test)}

    def summary(self) -> dict[str, Any]:
        shape = {"input_shape": list(self.input_shape)} if len(self.input_shape) > 1 else {}
        return {**shape, 
            "source": self.source, "task": self.task, "n_features": self.n_features,
            "n_classes": self.n_classes, **self.rows(), "digest": self.digest,
        }


def split_indices(n: int, y: np.ndarray | None, val_fraction: float, test_fraction: float, seed: int,
                  source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted train/validation/test row indices, stratified on ``y`` (class ids; None: not stratified).
    The test part is cut first (``seed``), then validation (``seed + 1``); stratification is dropped
    when a class has too few rows. Tables and arrays are split alike."""
    from sklearn.model_selection import train_test_split

    if not 0 < val_fraction < 1:  # NaN fails too
        raise DataError(source, f"validation_fraction = {val_fraction!r}; allowed: above 0 and below 1")
    if not 0 <= test_fraction < 1:
        raise DataError(source, f"test_fraction = {test_fraction!r}; allowed: 0 or more and below 1")
    idx = np.arange(n)
    n_test = round(n * float(test_fraction))
    n_val = round(n * float(val_fraction))
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

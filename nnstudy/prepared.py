"""Prepared data: train/validation/test arrays ready for Keras, and the record of how raw inputs
become them again (tables: :class:`~nnstudy.preprocessing.Preprocessing`; arrays and images:
:class:`~nnstudy.arrays.ArrayPreprocessing`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
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

    def summary(self) -> dict[str, Any]:
        shape = {"input_shape": list(self.input_shape)} if len(self.input_shape) > 1 else {}
        return {**shape, 
            "source": self.source, "task": self.task, "n_features": self.n_features,
            "n_classes": self.n_classes, "train_rows": len(self.x_train), "val_rows": len(self.x_val),
            "test_rows": 0 if self.x_test is None else len(self.x_test), "digest": self.digest,
        }

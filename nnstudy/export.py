"""The trained model as a portable bundle: a ``.keras`` file plus its preprocessing as JSON.

A bundle turns raw rows (a CSV with the original columns) into predictions with the original
class labels. Models are saved in the ``.keras`` format and always loaded with Keras' safe
mode; no pickle is written or read.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import keras
import numpy as np
import pandas as pd

from nnstudy.arrays import ArrayPreprocessing
from nnstudy.preprocessing import Preprocessing
from nnstudy.errors import DataError

if TYPE_CHECKING:
    from nnstudy.tracking import Tracker

MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
INFO_FILE = "info.json"
ARTIFACT_DIR = "model"  # where bundles live among a run's artifacts


AnyPreprocessing = Union[Preprocessing, ArrayPreprocessing]


def load_preprocessing(text: str) -> AnyPreprocessing:
    """The preprocessing record of a bundle: a table's or an array's (``"kind": "arrays"``)."""
    return ArrayPreprocessing.from_json(text) if json.loads(text).get("kind") == "arrays" else \
        Preprocessing.from_json(text)


def save_bundle(model: keras.Model, preprocessing: AnyPreprocessing, directory: Path, info: dict[str, Any]) -> Path:
    """Write ``model.keras``, ``preprocessing.json`` and ``info.json`` into ``directory``."""
    directory.mkdir(parents=True, exist_ok=True)
    model.save(directory / MODEL_FILE)
    (directory / PREPROCESSING_FILE).write_text(preprocessing.to_json())
    (directory / INFO_FILE).write_text(json.dumps(info, indent=2, default=str))
    return directory


@dataclass
class Bundle:
    """A loaded model with its preprocessing."""

    model: keras.Model
    preprocessing: AnyPreprocessing
    info: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> Bundle:
        model = keras.saving.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)
        pre = load_preprocessing((directory / PREPROCESSING_FILE).read_text())
        info_path = directory / INFO_FILE
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        return cls(model=model, preprocessing=pre, info=info)

    def predict(self, rows: pd.DataFrame | np.ndarray, source: Any = "<input>") -> pd.DataFrame:
        """Raw rows (a table's columns, or an array of inputs) -> a frame with ``prediction`` (the
        original labels or values) and, for classes, one probability column per class."""
        if len(rows) == 0:
            raise DataError(source, "has no rows to predict")
        pre = self.preprocessing
        if isinstance(pre, ArrayPreprocessing):
            if not isinstance(rows, np.ndarray):
                raise DataError(source, "is a table; allowed: a .npz file with the input array x (this model "
                                "was trained on arrays)")
            x = pre.transform(rows, source)
        else:
            if not isinstance(rows, pd.DataFrame):
                raise DataError(source, "holds arrays; allowed: a .csv or .parquet file with the columns "
                                f"{', '.join(pre.input_columns)}")
            x = pre.transform(rows, source)
        out = np.asarray(self.model.predict(x, verbose=0))
        result = pd.DataFrame(index=rows.index if isinstance(rows, pd.DataFrame) else None)
        if pre.task == "binary":
            prob = out[:, 0]
            result["prediction"] = pre.decode((prob >= 0.5).astype(int))
            result[f"p({pre.classes[1]})"] = prob
        elif pre.task == "multiclass":
            result["prediction"] = pre.decode(out.argmax(axis=1))
            for i, label in enumerate(pre.classes):
                result[f"p({label})"] = out[:, i]
        else:
            result["prediction"] = out[:, 0]
        return result


def log_bundle(tracker: Tracker, run_id: str, model: keras.Model, preprocessing: AnyPreprocessing,
               info: dict[str, Any]) -> None:
    """Save a bundle into the run's artifacts under ``model/`` (how studies before the MLflow Model kept
    models; :func:`download_bundle` still reads them)."""
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(model, preprocessing, Path(tmp), info)
        tracker.log_artifacts(run_id, Path(tmp), ARTIFACT_DIR)


def download_bundle(client: Any, run_id: str, destination: Path) -> Bundle:
    """Fetch a run's ``model/`` artifacts (studies made before models were MLflow Models) and load
    them (safe mode)."""
    local = client.download_artifacts(run_id, ARTIFACT_DIR, str(destination))
    return Bundle.load(Path(local))

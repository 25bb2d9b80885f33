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
from typing import Any

import keras
import numpy as np
import pandas as pd

from nnstudy.data import Preprocessing
from nnstudy.errors import DataError

MODEL_FILE = "model.keras"
PREPROCESSING_FILE = "preprocessing.json"
INFO_FILE = "info.json"
ARTIFACT_DIR = "model"  # where bundles live among a run's artifacts


def save_bundle(model: keras.Model, preprocessing: Preprocessing, directory: Path, info: dict[str, Any]) -> Path:
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
    preprocessing: Preprocessing
    info: dict[str, Any]

    @classmethod
    def load(cls, directory: Path) -> Bundle:
        model = keras.saving.load_model(directory / MODEL_FILE, compile=False, safe_mode=True)
        pre = Preprocessing.from_json((directory / PREPROCESSING_FILE).read_text())
        info_path = directory / INFO_FILE
        info = json.loads(info_path.read_text()) if info_path.exists() else {}
        return cls(model=model, preprocessing=pre, info=info)

    def predict(self, frame: pd.DataFrame, source: Any = "<input>") -> pd.DataFrame:
        """Raw rows -> a frame with ``prediction`` (original labels) and, for classes, probabilities."""
        if len(frame) == 0:
            raise DataError(source, "has no rows to predict")
        x = self.preprocessing.transform(frame, source)
        out = np.asarray(self.model.predict(x, verbose=0))
        pre = self.preprocessing
        result = pd.DataFrame(index=frame.index)
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


def log_bundle(tracker: Any, run_id: str, model: keras.Model, preprocessing: Preprocessing,
               info: dict[str, Any]) -> None:
    """Save a bundle into the run's artifacts under ``model/``."""
    with tempfile.TemporaryDirectory() as tmp:
        save_bundle(model, preprocessing, Path(tmp), info)
        tracker.log_artifacts(run_id, Path(tmp), ARTIFACT_DIR)


def download_bundle(client: Any, run_id: str, destination: Path) -> Bundle:
    """Fetch a run's ``model/`` artifacts and load them (safe mode)."""
    local = client.download_artifacts(run_id, ARTIFACT_DIR, str(destination))
    return Bundle.load(Path(local))

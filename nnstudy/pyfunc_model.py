"""The code of nnstudy's MLflow Model (MLflow's models-from-code: no pickle is written or read).

MLflow runs this file when a logged model is loaded (``mlflow.pyfunc.load_model``, ``mlflow models
serve``). It loads the bundle kept among the model's artifacts (``model.keras`` in Keras' safe mode
and ``preprocessing.json``) and predicts from raw rows exactly as ``nnstudy predict`` does: the
original class labels, and one probability column per class. Logged by :mod:`nnstudy.mlflow_model`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import mlflow.models
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.pyfunc.model import PythonModel

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TensorFlow's start-up lines, before Keras loads it

BUNDLE_ARTIFACT = "bundle"  # the artifact key of the bundle folder


class NnstudyModel(PythonModel):
    """Raw rows (a table's columns, or an array of inputs) in, ``nnstudy predict``'s frame out."""

    def load_context(self, context: Any) -> None:
        import json

        folder = Path(context.artifacts[BUNDLE_ARTIFACT])
        info = folder / "info.json"
        backend = json.loads(info.read_text()).get("keras_backend") if info.is_file() else None
        if backend:  # the backend it was trained on, unless Keras is loaded already or the user chose one
            os.environ.setdefault("KERAS_BACKEND", str(backend))
        from nnstudy.export import Bundle

        self.bundle = Bundle.load(folder)

    # MLflow reads this hint: a DataFrame (or ndarray) hint means "validate against the logged signature,
    # infer nothing"; models trained on arrays are given an ndarray
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None) -> pd.DataFrame:
        from nnstudy.errors import DataError

        try:
            return self.bundle.predict(model_input, "model input")
        except DataError as err:  # bad rows: MLflow's "invalid input" (HTTP 400 when served), with nnstudy's words
            raise MlflowException.invalid_parameter_value(str(err)) from None


mlflow.models.set_model(NnstudyModel())

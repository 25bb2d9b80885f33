"""End to end with the user's own network: ``[model]`` layers on ``.npz`` images (also in two worker
processes), and a Keras-Tuner-style hypermodel ported unchanged -- each with its MLflow record
(every parameter, ``n_params``, ``model/summary.txt``), an exact reproduction and predictions."""

from __future__ import annotations

import subprocess
import sys

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from nnstudy.cli import cli

pytestmark = pytest.mark.slow

LAYERS_SPEC = """
[study]
name = "shades"
n_trials = 2
pruner = "none"
seed = 5

[data]
source = "shades.npz"
scale = "unit"

[train]
max_epochs = 15
early_stopping_patience = 15

[search]
learning_rate = 0.03
filters = [4, 8]
kernel = [2, 3]
units = [8, 16]

[model]
layers = [
  {{ type = "Conv2D", filters = "$filters", kernel_size = "$kernel", activation = "relu", padding = "same" }},
  {{ type = "GlobalAveragePooling2D" }},
  {{ repeat = 1, layers = [{{ type = "Dense", units = "$units", activation = "relu" }}] }},
]
"""

# a Keras Tuner hypermodel, as its users write it: nothing in it knows nnstudy
HYPERMODEL = '''
import keras


def build_model(hp):
    model = keras.Sequential([keras.Input(shape=(2,))])
    for i in range(hp.Int("num_layers", 1, 2)):
        model.add(keras.layers.Dense(units=hp.Int(f"units_{i}", min_value=8, max_value=32, step=8),
                                     activation=hp.Choice("activation", ["relu", "tanh"])))
    if hp.Boolean("dropout"):
        model.add(keras.layers.Dropout(rate=hp.Float("rate", 0.1, 0.4, parent_name="dropout", parent_values=[True])))
    model.add(keras.layers.Dense(1, activation="sigmoid"))
    lr = hp.Float("lr", min_value=1e-3, max_value=3e-2, sampling="log")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=lr), loss="binary_crossentropy")
    return model
'''

BUILDER_SPEC = """
[study]
name = "tuner-port"
n_trials = 3
pruner = "none"
seed = 3

[data]
source = "pass_fail"
n_samples = 300

[train]
max_epochs = 4

[model]
builder = "hypermodel.py:build_model"
"""


def _shades(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(n, 6, 6, 1)).astype(np.float32)
    bright = rng.random(n) < 0.5
    x[bright] = np.minimum(x[bright] + 90, 255)
    return x, np.where(bright, "light", "dark")


def _run(root: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> str:
    monkeypatch.chdir(root)
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def _trial_runs(root: Path) -> list:  # type: ignore[type-arg]
    client = MlflowClient(f"sqlite:///{root}/mlruns/mlflow.db")
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    return [r for r in runs if r.data.tags.get("nnstudy.role") == "trial"]


def test_layers_on_images_in_two_workers_reproduce_and_predict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    x, y = _shades(160, 0)
    np.savez(tmp_path / "shades.npz", x=x, y=y)
    (tmp_path / "shades.toml").write_text(LAYERS_SPEC.format())
    _run(tmp_path, monkeypatch, "run", "shades.toml", "--no-progress", "--workers", "2")

    runs = _trial_runs(tmp_path)
    assert len(runs) == 2 and all(r.info.status == "FINISHED" for r in runs)
    client = MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    for run in runs:
        assert {"filters", "kernel", "units", "learning_rate", "seed"} <= set(run.data.params)
        n_params = run.data.metrics["n_params"]
        filters, kernel, units = (int(run.data.params[k]) for k in ("filters", "kernel", "units"))
        assert n_params == (kernel * kernel + 1) * filters + (filters + 1) * units + (units + 1)
        summary = client.download_artifacts(run.info.run_id, "model/summary.txt", str(tmp_path))
        assert "Conv2D" in Path(summary).read_text() and "global_average_pooling2d" in Path(summary).read_text()

    # in a fresh process, as a user runs it: it trains with the worker's one thread (this test process
    # started TensorFlow with more, and a Conv2D sums in another order then)
    done = subprocess.run([str(Path(sys.executable).parent / "nnstudy"), "reproduce"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "max abs difference of val_loss: 0.0" in done.stdout, done.stdout + done.stderr

    new_x, new_y = _shades(40, 1)
    np.savez(tmp_path / "new.npz", x=new_x)
    _run(tmp_path, monkeypatch, "predict", "--input", "new.npz", "--output", "pred.csv")
    predictions = pd.read_csv(tmp_path / "pred.csv")
    assert len(predictions) == 40 and set(predictions["prediction"]) <= {"dark", "light"}
    assert (predictions["prediction"] == new_y).mean() > 0.5  # it learned something in 15 epochs


def test_a_keras_tuner_hypermodel_runs_unchanged(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    (tmp_path / "hypermodel.py").write_text(HYPERMODEL)
    (tmp_path / "tuner.toml").write_text(BUILDER_SPEC)
    _run(tmp_path, monkeypatch, "run", "tuner.toml", "--no-progress")

    runs = _trial_runs(tmp_path)
    assert len(runs) == 3
    for run in runs:
        params = run.data.params
        assert {"num_layers", "units_0", "activation", "dropout", "lr", "batch_size"} <= set(params)
        assert ("rate" in params) == (params["dropout"] == "True")  # the conditional parameter
        assert ("units_1" in params) == (params["num_layers"] == "2")
        assert "depth" not in params and "units" not in params  # the built-in MLP's parameters are not used
        # it compiles its own optimizer: that one, not [search]'s default, is what the run records
        assert params["optimizer"] == "adam" and float(params["learning_rate"]) == pytest.approx(float(params["lr"]))
        assert run.data.metrics["n_params"] > 0

    # in a fresh process, as a user runs it: it trains with the worker's one thread (this test process
    # started TensorFlow with more, and a Conv2D sums in another order then)
    done = subprocess.run([str(Path(sys.executable).parent / "nnstudy"), "reproduce"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "max abs difference of val_loss: 0.0" in done.stdout, done.stdout + done.stderr
    pd.DataFrame({"lectures": [22, 1], "hours": [30.0, 0.5]}).to_csv(tmp_path / "students.csv", index=False)
    _run(tmp_path, monkeypatch, "predict", "--input", "students.csv", "--output", "pred.csv")
    predictions = pd.read_csv(tmp_path / "pred.csv")
    assert list(predictions["prediction"]) == [1, 0]  # a diligent student passes, an absent one fails
    assert os.path.exists(tmp_path / "mlruns" / "optuna.db")

"""The naive peer: what a user would write instead of nnstudy.

Follows optuna-examples' Keras example (``keras/keras_integration.py``: build a Sequential model
in the objective, ``model.fit`` on numpy arrays with ``KerasPruningCallback``, return the
validation score of ``model.evaluate``) plus MLflow's documented hyperparameter-tuning pattern
(one parent ``mlflow.start_run()``, a nested ``mlflow.start_run(nested=True)`` child run per
trial, ``mlflow.keras.MlflowCallback`` for per-epoch metrics). Data: scikit-learn's digits as
numpy arrays, stratified train/validation/test split and standard scaling as nnstudy does.
Default ``compile``/``fit`` settings (no tf.data, ``steps_per_execution=1``).

    .venv/bin/python benchmarks/peer.py --configs benchmarks/configs.json --workdir /tmp/x --out /tmp/x/peer.json

Everything is stored under --workdir (``optuna.db``, ``mlflow.db``, ``mlartifacts/``). The
script also writes timing records (trial start, every epoch end, time inside the MLflow
callback) to --out for ``compare.py``; the timing callback is two ``time.time()`` calls per
epoch and does not change what is measured.
"""

from __future__ import annotations

import time

T_PROCESS = time.time()  # before the heavy imports: startup cost is measured from here

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import mlflow  # noqa: E402
import mlflow.keras  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
from optuna_integration import KerasPruningCallback  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402

T_IMPORTED = time.time()

SEED = 42
MAX_EPOCHS = 30
PATIENCE = 5


def load_data(val_fraction: float, test_fraction: float) -> tuple[np.ndarray, ...]:
    x, y = load_digits(return_X_y=True)
    n = len(x)
    x_rest, x_test, y_rest, y_test = train_test_split(x, y, test_size=round(n * test_fraction),
                                                      random_state=SEED, stratify=y)
    x_train, x_val, y_train, y_val = train_test_split(x_rest, y_rest, test_size=round(n * val_fraction),
                                                      random_state=SEED + 1, stratify=y_rest)
    scaler = StandardScaler().fit(x_train)
    x_train, x_val, x_test = (scaler.transform(a).astype("float32") for a in (x_train, x_val, x_test))
    return x_train, y_train, x_val, y_val, x_test, y_test


OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
              "adagrad": keras.optimizers.Adagrad, "adadelta": keras.optimizers.Adadelta,
              "adamw": keras.optimizers.AdamW, "nadam": keras.optimizers.Nadam}


def create_model(trial: optuna.Trial) -> keras.Model:
    depth = trial.suggest_int("depth", 0, 4)
    units = trial.suggest_categorical("units", [16, 32, 64, 128])
    activation = trial.suggest_categorical("activation", ["relu", "tanh", "sigmoid", "elu"])
    dropout = trial.suggest_float("dropout", 0.0, 0.5)
    model = keras.Sequential([keras.Input(shape=(64,))])
    for _ in range(depth):
        model.add(keras.layers.Dense(units, activation=activation))
        if dropout > 0:
            model.add(keras.layers.Dropout(dropout))
    model.add(keras.layers.Dense(10, activation="softmax"))
    optimizer = trial.suggest_categorical("optimizer", list(OPTIMIZERS))
    learning_rate = trial.suggest_float("learning_rate", 1e-4, 1e-1, log=True)
    model.compile(loss="sparse_categorical_crossentropy", optimizer=OPTIMIZERS[optimizer](learning_rate=learning_rate),
                  metrics=["accuracy"])
    return model


class TimedMlflowCallback(mlflow.keras.MlflowCallback):
    """mlflow.keras.MlflowCallback, with the time spent in it added up (for the benchmark only)."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds = 0.0

    def _timed(self, method: str, *args: object, **kwargs: object) -> None:
        start = time.perf_counter()
        getattr(super(), method)(*args, **kwargs)
        self.seconds += time.perf_counter() - start

    def on_train_begin(self, logs=None):  # type: ignore[no-untyped-def]
        self._timed("on_train_begin", logs)

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        self._timed("on_epoch_end", epoch, logs)

    def on_test_end(self, logs=None):  # type: ignore[no-untyped-def]
        self._timed("on_test_end", logs)


class EpochClock(keras.callbacks.Callback):
    """Wall-clock time at the end of every epoch (for the benchmark only)."""

    def __init__(self, record: dict) -> None:
        super().__init__()
        self.record = record

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        self.record["epoch_ends"].append(time.time())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", required=True, help="JSON list of parameter dicts, enqueued in order")
    parser.add_argument("--workdir", required=True, help="folder for optuna.db, mlflow.db and artifacts")
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--out", required=True, help="timing records (JSON)")
    args = parser.parse_args()
    workdir = Path(args.workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    configs = json.loads(Path(args.configs).read_text())
    records: list[dict] = []

    x_train, y_train, x_val, y_val, x_test, y_test = load_data(args.validation_fraction, args.test_fraction)
    mlflow.set_tracking_uri(f"sqlite:///{workdir}/mlflow.db")
    if mlflow.get_experiment_by_name("digits-peer") is None:
        mlflow.create_experiment("digits-peer", artifact_location=(workdir / "mlartifacts").as_uri())
    mlflow.set_experiment("digits-peer")

    def objective(trial: optuna.Trial) -> float:
        record = {"number": trial.number, "t_start": time.time(), "epoch_ends": []}
        records.append(record)
        start_mlflow = time.perf_counter()
        with mlflow.start_run(nested=True, run_name=f"trial-{trial.number}"):
            record["mlflow_setup_s"] = time.perf_counter() - start_mlflow
            keras.backend.clear_session()
            keras.utils.set_random_seed(SEED + trial.number)
            model = create_model(trial)
            batch_size = trial.suggest_categorical("batch_size", [16, 32, 64, 128])
            start_mlflow = time.perf_counter()
            mlflow.log_params(trial.params)
            record["mlflow_setup_s"] += time.perf_counter() - start_mlflow
            mlflow_cb = TimedMlflowCallback()
            history = model.fit(
                x_train, y_train, batch_size=batch_size, epochs=MAX_EPOCHS, validation_data=(x_val, y_val),
                callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE,
                                                         restore_best_weights=True),
                           KerasPruningCallback(trial, "val_loss"), mlflow_cb, EpochClock(record)],
                verbose=0,
            )
            record["t_fit_end"] = time.time()
            val_loss, val_accuracy = model.evaluate(x_val, y_val, verbose=0)
            test_loss, test_accuracy = model.evaluate(x_test, y_test, verbose=0)
            start = time.perf_counter()
            mlflow.log_metrics({"best_val_loss": val_loss, "best_val_accuracy": val_accuracy,
                                "test_loss": test_loss, "test_accuracy": test_accuracy,
                                "stopped_epoch": len(history.history["loss"])})
            end_start = time.perf_counter()
        record["mlflow_end_s"] = time.perf_counter() - end_start  # flushes the callback's async metric queue
        record["mlflow_callback_s"] = mlflow_cb.seconds
        record["mlflow_summary_s"] = end_start - start
        record["epochs"] = len(history.history["loss"])
        record["value"] = float(val_loss)
        record["t_end"] = time.time()
        return float(val_loss)

    with mlflow.start_run(run_name="digits-peer-study"):
        study = optuna.create_study(study_name="digits-peer", storage=f"sqlite:///{workdir}/optuna.db",
                                    direction="minimize", sampler=optuna.samplers.RandomSampler(seed=SEED),
                                    pruner=optuna.pruners.NopPruner(), load_if_exists=True)
        for params in configs:
            study.enqueue_trial(params)
        study.optimize(objective, n_trials=len(configs))
        mlflow.log_params({f"best_{k}": v for k, v in study.best_params.items()})
        mlflow.log_metric("best_val_loss", study.best_value)
    Path(args.out).write_text(json.dumps({"t_process": T_PROCESS, "t_imported": T_IMPORTED, "trials": records,
                                          "best_value": study.best_value, "t_done": time.time()}, indent=1))


if __name__ == "__main__":
    main()

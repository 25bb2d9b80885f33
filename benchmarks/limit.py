"""The limit: a bare, hand-tuned Keras training loop over the same configurations.

No search library, no tracking: for each configuration build the same network nnstudy builds,
train it on the same digits split (same rows, same order, same scaling, same per-trial seeds)
with the fastest input path measured on this CPU (``tf.data`` cached once, seeded shuffle per
trial, up to 50 steps per compiled call), ``gc.freeze()`` after the set-up (Python's automatic
collections during tf.function tracing then skip the import-time objects), early stopping with
restored best weights, and evaluate the test split. This is what nnstudy's training would cost with zero framework
overhead.

    .venv/bin/python benchmarks/limit.py --configs benchmarks/configs.json --out /tmp/limit.json

Writes timing records (trial start, every epoch end, epochs, value) to --out for ``compare.py``.
"""

from __future__ import annotations

import time

T_PROCESS = time.time()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
from pathlib import Path  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402
from sklearn.model_selection import train_test_split  # noqa: E402

T_IMPORTED = time.time()

SEED = 42
MAX_EPOCHS = 30
PATIENCE = 5
MAX_STEPS_PER_EXECUTION = 50
OPTIMIZERS = {"sgd": keras.optimizers.SGD, "adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
              "adagrad": keras.optimizers.Adagrad, "adadelta": keras.optimizers.Adadelta,
              "adamw": keras.optimizers.AdamW, "nadam": keras.optimizers.Nadam}


def load_data(val_fraction: float, test_fraction: float) -> tuple[np.ndarray, ...]:
    """nnstudy's split: stratified test cut (seed), then validation cut (seed + 1), sorted rows, train scaling."""
    x, y = load_digits(return_X_y=True)
    n = len(x)
    idx = np.arange(n)
    rest, test = train_test_split(idx, test_size=round(n * test_fraction), random_state=SEED, stratify=y)
    rest, test = np.sort(rest), np.sort(test)
    train, val = train_test_split(rest, test_size=round(n * val_fraction), random_state=SEED + 1, stratify=y[rest])
    train, val = np.sort(train), np.sort(val)
    mean, scale = x[train].mean(axis=0), x[train].std(axis=0)
    scale[scale == 0] = 1.0
    x = ((x - mean) / scale).astype(np.float32)
    y = y.astype(np.int32)
    return x[train], y[train], x[val], y[val], x[test], y[test]


def trial_seed(study_seed: int, number: int) -> int:
    return (study_seed * 1_000_003 + number * 7919 + 1) % (2**31 - 1)


def build(params: dict, n_features: int, n_classes: int) -> keras.Model:
    layers: list = [keras.Input(shape=(n_features,))]
    for _ in range(int(params["depth"])):
        layers.append(keras.layers.Dense(int(params["units"]), activation=params["activation"]))
        if params["dropout"] > 0:
            layers.append(keras.layers.Dropout(float(params["dropout"])))
    layers.append(keras.layers.Dense(n_classes, activation="softmax"))
    return keras.Sequential(layers)


class EpochClock(keras.callbacks.Callback):
    def __init__(self, record: dict) -> None:
        super().__init__()
        self.record = record

    def on_epoch_end(self, epoch, logs=None):  # type: ignore[no-untyped-def]
        self.record["epoch_ends"].append(time.time())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", required=True)
    parser.add_argument("--validation-fraction", type=float, default=0.2)
    parser.add_argument("--test-fraction", type=float, default=0.2)
    parser.add_argument("--out", required=True)
    parser.add_argument("--no-determinism", action="store_true",
                        help="skip tf.config.experimental.enable_op_determinism() (nnstudy enables it)")
    parser.add_argument("--jit", action="store_true", help="compile with XLA (jit_compile=True)")
    parser.add_argument("--no-eval", action="store_true", help="skip the test-split evaluation")
    parser.add_argument("--no-gc-freeze", action="store_true",
                        help="skip gc.collect(); gc.freeze() before the first trial (by default Python's automatic "
                        "collections skip the ~0.5 M objects of the imports: measured ~150 ms less per trial)")
    args = parser.parse_args()
    configs = json.loads(Path(args.configs).read_text())
    if not args.no_determinism:
        tf.config.experimental.enable_op_determinism()

    x_train, y_train, x_val, y_val, x_test, y_test = load_data(args.validation_fraction, args.test_fraction)
    train_ds = tf.data.Dataset.from_tensor_slices((x_train, y_train)).cache()
    val_ds = tf.data.Dataset.from_tensor_slices((x_val, y_val)).cache().batch(4096)
    test_ds = tf.data.Dataset.from_tensor_slices((x_test, y_test)).cache().batch(4096)
    n = len(x_train)
    if not args.no_gc_freeze:
        gc.collect()
        gc.freeze()
    records = []
    for number, params in enumerate(configs):
        record: dict = {"number": number, "t_start": time.time(), "epoch_ends": []}
        records.append(record)
        seed = trial_seed(SEED, number)
        keras.backend.clear_session()
        keras.utils.set_random_seed(seed)
        batch_size = int(params["batch_size"])
        model = build(params, x_train.shape[1], 10)
        model.compile(optimizer=OPTIMIZERS[params["optimizer"]](learning_rate=float(params["learning_rate"])),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"],
                      steps_per_execution=max(1, min(MAX_STEPS_PER_EXECUTION, math.ceil(n / batch_size))),
                      jit_compile=bool(args.jit))
        train = train_ds.shuffle(n, seed=seed, reshuffle_each_iteration=True).batch(batch_size) \
            .prefetch(tf.data.AUTOTUNE)
        history = model.fit(train, validation_data=val_ds, epochs=MAX_EPOCHS, verbose=0, shuffle=False, callbacks=[
            EpochClock(record),
            keras.callbacks.EarlyStopping(monitor="val_loss", patience=PATIENCE, restore_best_weights=True)])
        record["t_fit_end"] = time.time()
        if not args.no_eval:
            model.evaluate(test_ds, verbose=0)
        val = history.history["val_loss"]
        record["epochs"] = len(val)
        record["value"] = float(min(val))
        record["t_end"] = time.time()
    Path(args.out).write_text(json.dumps({"t_process": T_PROCESS, "t_imported": T_IMPORTED, "trials": records,
                                          "best_value": min(r["value"] for r in records), "t_done": time.time()},
                                         indent=1))


if __name__ == "__main__":
    main()

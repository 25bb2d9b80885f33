"""Evidence for the profile: what one full ``gc.collect()`` costs inside a process that has imported
what ``nnstudy run`` imports and trained a few digits models, with and without ``gc.freeze()``.

    .venv/bin/python benchmarks/gc_probe.py

nnstudy collects twice per trial: ``keras.backend.clear_session(free_memory=True)`` at the start of
``train()`` and Optuna's ``gc_after_trial=True`` after each trial. ``gc.freeze()`` (Python >= 3.7)
moves every object alive at that moment into a permanent generation that later collections skip.
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import mlflow  # noqa: E402,F401
import numpy as np  # noqa: E402
import optuna  # noqa: E402,F401
import pandas  # noqa: E402,F401
from sklearn.datasets import load_digits  # noqa: E402


def fit_once(x: np.ndarray, y: np.ndarray) -> None:
    keras.backend.clear_session()
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(64, activation="relu"),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"], steps_per_execution=34)
    model.fit(x, y, batch_size=32, epochs=2, validation_data=(x[:300], y[:300]), verbose=0)


def timed_collect(n: int = 5) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        gc.collect()
        out.append(1000 * (time.perf_counter() - start))
    return out


def main() -> None:
    x, y = load_digits(return_X_y=True)
    x = x.astype("float32") / 16
    results = {}
    for i in range(3):
        fit_once(x, y)
    results["objects tracked"] = len(gc.get_objects())
    results["gc.collect() ms, no freeze"] = round(statistics.median(timed_collect()), 1)
    gc.freeze()
    results["objects frozen"] = gc.get_freeze_count()
    for i in range(3):  # what a later trial leaves behind is still collected
        fit_once(x, y)
    results["gc.collect() ms after gc.freeze()"] = round(statistics.median(timed_collect()), 1)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""The model builder: a Keras Sequential network from one configuration. Knows nothing of Optuna.

``input -> depth x [Dense(units, activation) -> Dropout(dropout)] -> output``, with the
output layer and loss following the task: sigmoid + binary cross-entropy, softmax +
sparse categorical cross-entropy, or linear + mean squared error.
"""

from __future__ import annotations

import math
from typing import Any

import keras

OUTPUTS: dict[str, tuple[str, str, list[str]]] = {
    # task: (output activation, loss, metrics)
    "binary": ("sigmoid", "binary_crossentropy", ["accuracy"]),
    "multiclass": ("softmax", "sparse_categorical_crossentropy", ["accuracy"]),
    "regression": ("linear", "mean_squared_error", ["mae"]),
}

_OPTIMIZERS: dict[str, type[keras.optimizers.Optimizer]] = {
    "sgd": keras.optimizers.SGD,
    "adam": keras.optimizers.Adam,
    "adamw": keras.optimizers.AdamW,
    "nadam": keras.optimizers.Nadam,
    "rmsprop": keras.optimizers.RMSprop,
    "adagrad": keras.optimizers.Adagrad,
    "adadelta": keras.optimizers.Adadelta,
}


def make_optimizer(name: str, learning_rate: float) -> keras.optimizers.Optimizer:
    """An optimizer by name (``sgd``, ``adam``, ``rmsprop``, ``adagrad``, ``adadelta``, ...)."""
    return _OPTIMIZERS[name](learning_rate=learning_rate)


def build_model(params: dict[str, Any], *, n_features: int, task: str, n_classes: int = 1,
                target_mean: float | None = None) -> keras.Sequential:
    """Build (not compile) the network for one configuration.

    ``target_mean`` initialises the output bias (the mean for regression, the log-odds of
    the positive class for binary), so training starts from the base rate instead of zero.
    """
    activation, _, _ = OUTPUTS[task]
    layers: list[keras.layers.Layer] = [keras.Input(shape=(n_features,), name="features")]
    for i in range(int(params["depth"])):
        layers.append(keras.layers.Dense(int(params["units"]), activation=params["activation"], name=f"dense_{i + 1}"))
        if params["dropout"] > 0:
            layers.append(keras.layers.Dropout(float(params["dropout"]), name=f"dropout_{i + 1}"))
    units = n_classes if task == "multiclass" else 1
    bias: Any = "zeros"
    if target_mean is not None and task == "regression":
        bias = keras.initializers.Constant(target_mean)
    elif target_mean is not None and task == "binary" and 0.0 < target_mean < 1.0:
        bias = keras.initializers.Constant(math.log(target_mean / (1.0 - target_mean)))
    layers.append(keras.layers.Dense(units, activation=activation, bias_initializer=bias, name="output"))
    return keras.Sequential(layers, name="nnstudy_mlp")


def compile_model(model: keras.Model, params: dict[str, Any], *, task: str, steps_per_execution: int = 1) -> None:
    """Compile with the optimizer and learning rate of ``params`` and the task's loss and metrics."""
    _, loss, metrics = OUTPUTS[task]
    model.compile(
        optimizer=make_optimizer(str(params["optimizer"]), float(params["learning_rate"])),
        loss=loss,
        metrics=metrics,
        steps_per_execution=steps_per_execution,
    )

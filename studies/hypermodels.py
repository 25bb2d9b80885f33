"""Keras-Tuner-style model builders for nnstudy: ``[model] builder = "hypermodels.py:build_cnn"``.

Each function takes ``hp`` (Keras Tuner's HyperParameters API, backed by the Optuna trial) and,
optionally, ``info`` (input_shape, n_outputs, task), and returns a ``keras.Sequential``. This is
ordinary Python: it runs only because a spec names it.
"""

import keras


def build_cnn(hp, info):
    """A CNN whose depth, widths, pooling and regularisation are searched; compiled here with its own
    optimizer (nnstudy keeps it and adds the task's metrics)."""
    model = keras.Sequential([keras.Input(shape=info.input_shape)])
    for i in range(hp.Int("conv_blocks", 1, 2)):
        model.add(keras.layers.Conv2D(hp.Choice(f"filters_{i}", [8, 16, 32]), 3, padding="same",
                                      activation=hp.Choice("activation", ["relu", "elu"])))
    if hp.Boolean("pooling"):
        with hp.conditional_scope("pooling", [True]):
            kind = hp.Choice("pool", ["max", "average"])
        model.add(keras.layers.MaxPooling2D(2) if kind == "max" else keras.layers.AveragePooling2D(2))
    model.add(keras.layers.Flatten())
    model.add(keras.layers.Dense(hp.Int("units", 32, 128, step=32), activation="relu"))
    model.add(keras.layers.Dropout(hp.Float("dropout", 0.0, 0.5, step=0.1)))
    model.add(keras.layers.Dense(info.n_outputs, activation="softmax"))
    model.compile(optimizer=keras.optimizers.Adam(hp.Float("learning_rate", 1e-4, 1e-2, sampling="log")),
                  loss="sparse_categorical_crossentropy")
    return model

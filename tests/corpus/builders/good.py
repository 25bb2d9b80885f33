import keras


def build(hp):
    return keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(hp.Int("units", 4, 8)),
                             keras.layers.Dense(1, activation="sigmoid")])

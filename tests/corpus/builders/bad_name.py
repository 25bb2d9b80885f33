import keras


def build(hp):
    units = hp.Int("units[0]", 4, 8)
    return keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(units),
                             keras.layers.Dense(1, activation="sigmoid")])

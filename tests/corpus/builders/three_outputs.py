import keras


def build(hp):
    return keras.Sequential([keras.Input(shape=(2,)), keras.layers.Dense(3, activation="softmax")])

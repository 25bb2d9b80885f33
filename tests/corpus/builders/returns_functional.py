import keras


def build(hp):
    x = keras.Input(shape=(2,))
    return keras.Model(x, keras.layers.Dense(1, activation="sigmoid")(x))

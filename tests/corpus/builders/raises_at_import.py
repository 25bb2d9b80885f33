import keras

RATE = 1 / 0


def build(hp):
    return None

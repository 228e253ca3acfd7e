"""Write the Keras fixtures of tests/test_formats.py with Keras itself (not run by the tests).

    KERAS_BACKEND=torch python tests/data/make_keras.py

One small model with every kernel layout Keras has (Conv2D, DepthwiseConv2D,
SeparableConv2D, Conv2DTranspose, Conv1D, MultiHeadAttention, LSTM, Dense), trained one
step with Adam so that the files hold optimizer state too, saved in the three formats:
``model.keras`` (Keras 3 zip), ``model.weights.h5`` (Keras 3 weights) and ``model.h5``
(legacy full model). Made with keras 3.15.1 and torch 2.13.0.
"""

from pathlib import Path

import keras
import numpy as np

HERE = Path(__file__).parent / "keras"


def main() -> None:
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(16, 3, name="stem")(inputs)
    x = keras.layers.DepthwiseConv2D(3)(x)
    x = keras.layers.SeparableConv2D(24, 3)(x)
    x = keras.layers.Conv2DTranspose(12, 3)(x)
    x = keras.layers.Reshape((-1, 12))(x)
    x = keras.layers.Conv1D(20, 5)(x)
    x = keras.layers.MultiHeadAttention(num_heads=2, key_dim=8)(x, x)
    x = keras.layers.LSTM(16)(x)
    outputs = keras.layers.Dense(12)(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="mse")
    rng = np.random.default_rng(0)
    model.fit(rng.random((4, 12, 12, 3)), rng.random((4, 12)), verbose=0)
    HERE.mkdir(exist_ok=True)
    model.save(HERE / "model.keras")
    model.save_weights(HERE / "model.weights.h5")
    model.save(HERE / "model.h5")


if __name__ == "__main__":
    main()

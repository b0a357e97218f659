"""Quickstart: make a Keras model robust with one wrapper around model.fit (digits, about a minute on CPU).

    python examples/quickstart.py
"""

import keras

import keras_advmi as kam

(x, y), (xt, yt) = kam.data.load("digits")  # 8x8 grey digits in [0, 1], bundled with scikit-learn

# Any Keras model that outputs logits.
model = keras.Sequential([
    keras.Input((8, 8, 1)),
    keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
    keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
    keras.layers.Flatten(),
    keras.layers.Dense(128, activation="relu"),
    keras.layers.Dense(10),
])

robust = kam.AdversarialModel(model, defense=kam.defenses.PGD(epsilon=0.2, steps=10, seed=0))
robust.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
history = robust.fit(x, y, epochs=20, batch_size=64, validation_data=(xt, yt), verbose=2)

report = kam.evaluate_robustness(robust, xt, yt, attacks=["clean", "fgsm", "pgd-40"], epsilons=[0.1, 0.2])
print(report)
robust.save("quickstart_robust.keras")  # keras.models.load_model(...) gives the AdversarialModel back

"""PGD-AT on digits with BackupAndRestore; prints 'epoch_begin K' and 'done K' lines (flushed)."""

import sys

import keras

import keras_advmi as kam

backup_dir, epochs = sys.argv[1], int(sys.argv[2])
(x, y), _ = kam.data.load("digits")
keras.utils.set_random_seed(0)
net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                        keras.layers.Flatten(), keras.layers.Dense(10)])
robust = kam.AdversarialModel(net, kam.defenses.PGD(epsilon=0.2, steps=20, seed=0))
robust.compile(optimizer="adam", metrics=["accuracy"])


class Report(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        print(f"epoch_begin {epoch}", flush=True)

    def on_train_end(self, logs=None):
        print(f"done {robust.optimizer.iterations.numpy()}", flush=True)


robust.fit(x, y, epochs=epochs, batch_size=16, verbose=0,
           callbacks=[keras.callbacks.BackupAndRestore(backup_dir), Report()])

"""MIAT's phases in one fit with BackupAndRestore: 64 digits per epoch in batches of 16 (4 steps), 6 epochs =
1 base + 2 estimator pretraining + 3 MIAT (1 of ramp). Prints, flushed, 'epoch_begin K counts S E M'
at each epoch's start (S: MIAT's step count, E/M: the estimator / model optimizer's iterations), 'phase K P'
at its end (the logged miat_phase) and 'done S E M' at the end. With PAUSE_AT=K:B it prints 'paused S E M' after
batch B of epoch K and waits (for the test to kill it there, mid-epoch, whatever the machine's speed)."""

import os
import sys
import time

import keras

import keras_advmi as kam

backup_dir, epochs = sys.argv[1], int(sys.argv[2])
(x, y), _ = kam.data.load("digits")
x, y = x[:64], y[:64]
keras.utils.set_random_seed(0)
net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
defense = kam.defenses.MIAT(epsilon=0.1, steps=2, seed=0, attack_chains=1,
                            estimators=kam.defenses.MIATEstimators(hsize=16, filters=(8, 8)),
                            phases=kam.defenses.MIATPhases(base_epochs=1, pretrain_epochs=2, alpha_warmup_epochs=1),
                            pretraining=kam.defenses.MIATPretraining(attack_steps=2))
robust = kam.AdversarialModel(net, defense)
robust.compile(optimizer="adam", metrics=["accuracy"])


def counts():
    return (f"{defense.schedule['step']} {int(defense.state.optimizer.iterations.numpy())} "
            f"{int(robust.optimizer.iterations.numpy())}")


PAUSE = os.environ.get("PAUSE_AT")   # "EPOCH:BATCH": print 'paused' after that batch and wait to be killed


class Report(keras.callbacks.Callback):
    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        print(f"epoch_begin {epoch} counts {counts()}", flush=True)

    def on_train_batch_end(self, batch, logs=None):
        if PAUSE == f"{self.epoch}:{batch}":
            print(f"paused counts {counts()}", flush=True)
            time.sleep(120)

    def on_epoch_end(self, epoch, logs=None):
        print(f"phase {epoch} {logs['miat_phase']:.3f}", flush=True)

    def on_train_end(self, logs=None):
        print(f"done {counts()}", flush=True)


robust.fit(x, y, epochs=epochs, batch_size=16, verbose=0,
           callbacks=[keras.callbacks.BackupAndRestore(backup_dir), Report()])

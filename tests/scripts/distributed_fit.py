"""Train every defense under MirroredStrategy over 2 logical CPU devices; save/load; print JSON results."""

import json
import sys
import tempfile

import numpy as np
import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras  # noqa: E402

import keras_advmi as kam  # noqa: E402

(x, y), (xt, yt) = kam.data.load("digits")
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
results = {"replicas": strategy.num_replicas_in_sync}
for name in sys.argv[1:]:
    base_name, _, dtype = name.partition("+")          # "trades+bfloat16": the training attack in bf16
    cls = kam.defenses.REGISTRY[base_name]
    options = {"attack_dtype": dtype} if dtype else {}
    with strategy.scope():
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                                keras.layers.Flatten(), keras.layers.Dense(10)])
        # MIAT: its phases inside fit, on the 2 replicas: base, estimator pretraining, MI term.
        defense = cls(epsilon=0.2, seed=0, alpha=1.0, estimators=kam.defenses.MIATEstimators(hsize=32),
                      pretraining=kam.defenses.MIATPretraining(required=False), **options) \
            if base_name == "miat" else cls(epsilon=0.2, seed=0, **options)
        robust = kam.AdversarialModel(net, defense)
        robust.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    hist = robust.fit(x, y, epochs=3, batch_size=64, validation_data=(xt, yt), verbose=0).history
    path = tempfile.mkdtemp() + "/m.keras"
    robust.save(path)
    loaded = keras.models.load_model(path)
    diff = float(np.abs(loaded.predict(xt, verbose=0) - robust.predict(xt, verbose=0)).max())
    results[name] = {"loss": hist["loss"], "val_accuracy": hist["val_accuracy"][-1], "max_abs_diff": diff}
print("RESULT " + json.dumps(results))

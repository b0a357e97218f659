"""Fixtures for the serving tests: tiny SavedModels in BASE/NAME/VERSION with the serving contract's
``serving_default`` and ``detect`` signatures (built with keras.export.ExportArchive), and a
running embedded server on free localhost ports."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import keras

INPUT_SHAPE = (8, 8, 1)
CLASSES = 10


def small_model(seed=0, scale=1.0):
    keras.utils.set_random_seed(seed)
    inp = keras.Input(INPUT_SHAPE)
    h = keras.layers.Conv2D(4, 3, activation="relu")(inp)
    h = keras.layers.Flatten()(h)
    out = keras.layers.Dense(CLASSES)(h)
    model = keras.Model(inp, out)
    if scale != 1.0:
        w, b = model.layers[-1].get_weights()
        model.layers[-1].set_weights([w * scale, b + scale])
    return model


def reference(model, x, threshold=0.5):
    """In-process answers of both signatures (NumPy)."""
    logits = model(x, training=False)
    p = tf.nn.softmax(logits).numpy()
    score = 1.0 - p.max(axis=1)
    return ({"probabilities": p, "class_ids": p.argmax(1).astype(np.int64)},
            {"probabilities": p, "class_ids": p.argmax(1).astype(np.int64), "adversarial_score": score,
             "is_adversarial": score > threshold, "threshold": np.full(len(x), threshold, np.float32)})


def export_version(model, path, threshold=0.5):
    """Write ``path`` (BASE/NAME/VERSION) atomically: temp dir + rename, like kam.export."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    spec = tf.TensorSpec((None,) + tuple(model.input_shape[1:]), tf.float32, name="inputs")

    def _probs(x):
        tf.debugging.assert_all_finite(x, "inputs must be finite")
        tf.debugging.assert_greater_equal(x, 0.0, message="inputs must be in [0, 1]")
        tf.debugging.assert_less_equal(x, 1.0, message="inputs must be in [0, 1]")
        return tf.nn.softmax(model(x, training=False))

    def serve(inputs):
        p = _probs(inputs)
        return {"probabilities": p, "class_ids": tf.argmax(p, axis=1)}

    def detect(inputs):
        p = _probs(inputs)
        score = 1.0 - tf.reduce_max(p, axis=1)
        return {"probabilities": p, "class_ids": tf.argmax(p, axis=1), "adversarial_score": score,
                "is_adversarial": score > threshold,
                "threshold": tf.fill(tf.shape(score), tf.constant(threshold, tf.float32))}

    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    archive.add_endpoint("detect", detect, input_signature=[spec])
    path = os.fspath(path)
    parent, version = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{version}.tmp-{os.getpid()}")
    archive.write_out(tmp, verbose=False)
    os.rename(tmp, path)
    return path


def images(n, seed=0, shape=INPUT_SHAPE):
    return np.random.default_rng(seed).uniform(0, 1, (n,) + tuple(shape)).astype(np.float32)


def mnist_cnn(seed=0):
    """A 28x28x1 CNN of MNIST size (conv 32, conv 64, dense 128) for load benchmarks."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Conv2D(64, 3, activation="relu"),
                             keras.layers.MaxPooling2D(), keras.layers.Flatten(),
                             keras.layers.Dense(128, activation="relu"), keras.layers.Dense(CLASSES)])


def half_plus_two(path):
    """TF Serving's ``saved_model_half_plus_two`` example, rebuilt with ``tf.compat.v1``: y = 0.5 x + 2
    with a ``serving_default`` predict signature on input ``x`` [-1, 1], and ``classify_x_to_y`` /
    ``regress_x_to_y`` signatures on serialized ``tf.Example``s (float feature ``x``). Written to
    ``path`` (e.g. BASE/NAME/00000123, zero-padded as TF Serving's test data lays it out)."""
    v1 = tf.compat.v1
    graph = tf.Graph()
    with graph.as_default():
        serialized = v1.placeholder(tf.string, shape=[None], name="tf_example")
        parsed = v1.parse_example(serialized, {"x": v1.FixedLenFeature([1], tf.float32)})
        x_ex = tf.identity(parsed["x"], name="x")
        x = v1.placeholder(tf.float32, shape=[None, 1], name="x_direct")
        a, b = v1.Variable(0.5, name="a"), v1.Variable(2.0, name="b")
        y, y_ex = tf.add(a * x, b, name="y"), tf.add(a * x_ex, b, name="y_ex")
        info = v1.saved_model.utils.build_tensor_info
        sig = v1.saved_model.signature_def_utils
        predict = sig.predict_signature_def({"x": x}, {"y": y})
        regress = sig.build_signature_def({"inputs": info(serialized)}, {"outputs": info(y_ex)},
                                          v1.saved_model.signature_constants.REGRESS_METHOD_NAME)
        classify = sig.build_signature_def({"inputs": info(serialized)}, {"scores": info(y_ex)},
                                           v1.saved_model.signature_constants.CLASSIFY_METHOD_NAME)
        with v1.Session(graph=graph) as sess:
            sess.run(v1.global_variables_initializer())
            builder = v1.saved_model.Builder(os.fspath(path))
            builder.add_meta_graph_and_variables(
                sess, [v1.saved_model.tag_constants.SERVING],
                signature_def_map={"serving_default": predict, "regress_x_to_y": regress,
                                   "classify_x_to_y": classify})
            builder.save()
    return path

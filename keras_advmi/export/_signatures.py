"""The SavedModel's signatures: ``serving_default`` and, with a detector, ``detect``, behind an input check."""

from __future__ import annotations

import tensorflow as tf
import keras

__all__ = ["INPUT_NAME", "SERVING_OUTPUTS", "DETECT_OUTPUTS", "build_archive"]

INPUT_NAME = "inputs"
SERVING_OUTPUTS = ("probabilities", "class_ids")
DETECT_OUTPUTS = ("adversarial_score", "is_adversarial", "threshold", "probabilities", "class_ids")


def _validated(x, input_shape):
    """x unchanged, after asserting its per-sample shape and that values lie in [0, 1] (InvalidArgument otherwise)."""
    expected = tf.constant(input_shape, tf.int32)
    shape_ok = tf.reduce_all(tf.equal(tf.shape(x)[1:], expected))
    message = f"keras_advmi: inputs must have shape (N, {', '.join(map(str, input_shape))}); got"
    shape_check = tf.debugging.Assert(shape_ok, [message, tf.shape(x)])
    with tf.control_dependencies([shape_check]):
        ok = tf.reduce_all(tf.logical_and(x >= 0.0, x <= 1.0))
        check = tf.debugging.Assert(ok, ["keras_advmi: inputs must be float32 values in [0, 1] (no NaN)"])
    with tf.control_dependencies([check]):
        return tf.identity(x)


def build_archive(logits_model: keras.Model, detector, input_shape: tuple[int, ...]) -> keras.export.ExportArchive:
    """A ``keras.export.ExportArchive`` tracking the model (and detector) with the endpoints above."""
    archive = keras.export.ExportArchive()
    archive.track(logits_model)
    spec = tf.TensorSpec((None, *input_shape), tf.float32, name=INPUT_NAME)

    def predictions(logits):
        logits = tf.cast(logits, tf.float32)
        return {"probabilities": tf.nn.softmax(logits, axis=-1), "class_ids": tf.argmax(logits, axis=-1)}

    def serve(inputs):
        return predictions(logits_model(_validated(inputs, input_shape), training=False))

    archive.add_endpoint("serving_default", serve, input_signature=[spec])
    if detector is not None:
        archive.track(detector)

        def detect(inputs):
            score, logits = detector.score_and_logits(_validated(inputs, input_shape))
            threshold = tf.cast(tf.identity(detector.threshold), tf.float32)
            return {"adversarial_score": tf.cast(score, tf.float32), "is_adversarial": score > threshold,
                    "threshold": tf.fill(tf.shape(score), threshold), **predictions(logits)}

        archive.add_endpoint("detect", detect, input_signature=[spec])
    return archive

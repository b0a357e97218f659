"""Grad-CAM (Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017), used by "Interpreting Adversarial Examples by
Activation Promotion and Suppression" (2019, arXiv 1904.02057) to link promotion/suppression to where the model looks.

For class c and a convolutional layer with feature maps A^k (h x w, k = 1..K):

    alpha_k^c = (1 / (h w)) sum_{i,j} d z_c / d A^k_ij          (z_c: the logit of class c)
    L^c       = ReLU( sum_k alpha_k^c A^k )                       (h x w)

optionally bilinearly resized to the input size and divided by its per-image maximum.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras
from numpy.typing import ArrayLike

from .._checks import check_positive_int, invalid
from .._model import check_layer, check_model_images, tap_model
from ._common import check_class_index, check_network

__all__ = ["grad_cam", "last_conv_layer"]


def last_conv_layer(model: keras.Model) -> str:
    """Name of the last layer whose output is a 4-D feature map (N, h, w, K); ValueError if none."""
    for layer in reversed(getattr(model, "layers", [])):
        try:
            shape = layer.output.shape
        except (AttributeError, ValueError):
            continue
        if len(shape) == 4:
            return layer.name
    raise invalid("layer", "a model with a layer producing 4-D feature maps (N, h, w, channels)",
                  [l.name for l in getattr(model, "layers", [])])


def grad_cam(model: keras.Model, x: ArrayLike, class_index: int | ArrayLike, layer: str | None = None,
             upsample: bool = True, normalize: bool = True, batch_size: int = 128) -> np.ndarray:
    """Grad-CAM heat maps of ``class_index`` on images x at ``layer``.

    Args:
      model: a functional/Sequential Keras model (or ``kam.AdversarialModel``: its logits model).
      x: images (N, H, W, C) in [0, 1], the model's input shape.
      class_index: an int, or an int array (N,) (one class per image, e.g. the true or adversarial
        labels), each in [0, classes).
      layer: name of a layer with 4-D output (N, h, w, K); None = the last such layer.
      upsample: resize the maps bilinearly to (H, W). normalize: divide each map by its maximum
        (maps that are all zero stay zero).
      batch_size: images per pass.
    Returns:
      float32 (N, H, W) if ``upsample`` else (N, h, w), >= 0 (in [0, 1] with ``normalize``).
    """
    model = check_network(model)
    x = check_model_images(model, x, spatial=True)
    batch_size = check_positive_int("batch_size", batch_size)
    layer = last_conv_layer(model) if layer is None else layer
    target_layer = check_layer(model, layer)
    if len(target_layer.output.shape) != 4:
        raise invalid("layer", "a layer with 4-D feature maps (N, h, w, channels)",
                      f"{layer} with output shape {tuple(target_layer.output.shape)}")
    num_classes = int(model.outputs[0].shape[-1])
    classes = check_class_index("class_index", class_index, len(x), num_classes)
    extractor = tap_model(model, [layer])

    def maps(xb, cb):  # eager: a new extractor per call would retrace a tf.function every time
        with tf.GradientTape() as tape:
            feats, logits = extractor(xb, training=False)
            score = tf.reduce_sum(tf.gather(logits, cb, batch_dims=1))
        grads = tape.gradient(score, feats)                                  # (n, h, w, K)
        alpha = tf.reduce_mean(grads, axis=[1, 2], keepdims=True)           # (n, 1, 1, K)
        cam = tf.nn.relu(tf.reduce_sum(alpha * feats, axis=-1))             # (n, h, w)
        if upsample:
            cam = tf.image.resize(cam[..., None], tf.shape(xb)[1:3], method="bilinear")[..., 0]
            cam = tf.nn.relu(cam)
        if normalize:
            peak = tf.reduce_max(cam, axis=[1, 2], keepdims=True)
            cam = tf.math.divide_no_nan(cam, peak)
        return cam

    out = [maps(tf.convert_to_tensor(x[s:s + batch_size]), tf.convert_to_tensor(classes[s:s + batch_size]
                                                                                 .astype(np.int32))).numpy()
           for s in range(0, len(x), batch_size)]
    return np.concatenate(out, axis=0).astype(np.float32)

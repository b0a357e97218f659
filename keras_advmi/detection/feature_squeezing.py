"""Feature squeezing (Xu, Evans & Qi, "Feature Squeezing: Detecting Adversarial Examples in Deep
Neural Networks", NDSS 2018).

    score(x) = max_s || softmax(f(x)) - softmax(f(s(x))) ||_1

over squeezers s: bit-depth reduction to ``bits`` bits, s(x) = round(x * (2^b - 1)) / (2^b - 1), and
a ``median`` x ``median`` median filter (per channel; window anchored at the top-left pixel, edges
padded by reflection, the value of rank floor(k^2 / 2) of the sorted window, as scipy's
``median_filter`` does for even sizes). The paper's MNIST choice is 1-bit depth and a 2x2 median
filter (the defaults here); for CIFAR/ImageNet it uses 5-bit depth and 2x2 median.

Rounding has zero gradient; the bit-depth squeezer is written as x + stop_gradient(round(x) - x)
(straight-through, the BPDA of Athalye et al. 2018), same values, so an adaptive attack gets a
useful gradient through the exported graph. No fitting beyond the model reference: ``fit`` only
records the input shape.
"""

from __future__ import annotations

import tensorflow as tf
import keras

from .._checks import check_int_at_least, check_positive_int, invalid
from .._model import logits_of
from .base import Detector


def reduce_bit_depth(x: tf.Tensor, bits: int) -> tf.Tensor:
    """round(x * (2^bits - 1)) / (2^bits - 1), straight-through gradient. x in [0, 1]."""
    levels = float(2 ** bits - 1)
    squeezed = tf.round(x * levels) / levels
    return x + tf.stop_gradient(squeezed - x)


def median_filter(x: tf.Tensor, size: int) -> tf.Tensor:
    """Per-channel size x size median filter of NHWC images (rank floor(size^2/2) of the window)."""
    if size <= 1:
        return x
    before, after = (size - 1) // 2, size // 2
    # scipy's origin-0 window covers offsets -(size//2) .. (size-1)//2; mirror it here.
    before, after = after, before
    padded = tf.pad(x, [[0, 0], [before, after], [before, after], [0, 0]], mode="SYMMETRIC")
    if size == 2:  # rank 2 of 4 values = second largest, from a min/max network (no sort)
        a, b = padded[:, :-1, :-1], padded[:, :-1, 1:]
        c, d = padded[:, 1:, :-1], padded[:, 1:, 1:]
        low_pair_max = tf.maximum(tf.minimum(a, b), tf.minimum(c, d))
        return tf.maximum(tf.minimum(tf.maximum(a, b), tf.maximum(c, d)), low_pair_max)
    channels = tf.shape(x)[-1]
    # (N, H, W, C) -> (N*C, H, W, 1) so patches stay per channel.
    per_channel = tf.reshape(tf.transpose(padded, [0, 3, 1, 2]), [-1, tf.shape(padded)[1], tf.shape(padded)[2], 1])
    patches = tf.image.extract_patches(per_channel, sizes=[1, size, size, 1], strides=[1, 1, 1, 1],
                                       rates=[1, 1, 1, 1], padding="VALID")      # (N*C, H, W, k^2)
    ranked = tf.sort(patches, axis=-1)
    med = ranked[..., (size * size) // 2]
    med = tf.reshape(med, [-1, channels, tf.shape(x)[1], tf.shape(x)[2]])
    return tf.transpose(med, [0, 2, 3, 1])


@keras.saving.register_keras_serializable(package="keras_advmi")
class FeatureSqueezingDetector(Detector):
    """Max L1 distance between the prediction on x and on squeezed copies of x (Xu et al. 2018).

    Args:
      bits: bit depth of the bit-depth squeezer (1..8; None disables it). MNIST: 1.
      median: median-filter window (>= 2; None disables it). MNIST: 2.
      batch_size: rows per forward pass in ``score``.
    """

    def __init__(self, bits: int | None = 1, median: int | None = 2, batch_size: int = 256, **kwargs):
        super().__init__(batch_size=batch_size, **kwargs)
        if bits is not None:
            bits = check_positive_int("bits", bits)
            if bits > 8:
                raise invalid("bits", "an integer in [1, 8] or None", bits)
        if median is not None:
            median = check_int_at_least("median", median, 2)
        if bits is None and median is None:
            raise invalid("bits", "at least one squeezer (bits or median not None)", bits)
        self.bits = bits
        self.median = median

    def get_config(self):
        return {**super().get_config(), "bits": self.bits, "median": self.median}

    def fit_state(self, model, x, y):
        if self.median is not None and x.ndim != 4:
            raise invalid("x_clean", "NHWC images (rank 4) for the median filter", f"array of shape {x.shape}")

    def squeezed(self, x: tf.Tensor) -> list[tf.Tensor]:
        out = []
        if self.bits is not None:
            out.append(reduce_bit_depth(x, self.bits))
        if self.median is not None:
            out.append(median_filter(x, self.median))
        return out

    def score_and_view_logits(self, x):
        views = [x] + self.squeezed(x)
        n = tf.shape(x)[0]
        logits = logits_of(self.model, tf.concat(views, axis=0))   # one batched pass
        view_logits = [logits[k * n:(k + 1) * n] for k in range(len(views))]
        base = tf.nn.softmax(view_logits[0])
        dists = [tf.reduce_sum(tf.abs(base - tf.nn.softmax(other)), axis=-1) for other in view_logits[1:]]
        return tf.reduce_max(tf.stack(dists, axis=0), axis=0), view_logits

    def score_and_logits(self, x):
        score, view_logits = self.score_and_view_logits(x)
        return score, view_logits[0]

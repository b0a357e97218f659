"""Input transforms of the texture-vs-shape probes of "Exploring adversarial examples and adversarial
robustness of convolutional neural networks by mutual information" (2022), as functions on tensors and
as Keras layers.

The paper: "Exploring adversarial examples and adversarial robustness of convolutional neural networks by
mutual information", arXiv 2207.05756 (after Zhang & Zhu, "Interpreting adversarially trained
convolutional neural networks", ICML 2019).

* Saturation (removes texture, keeps shape), p > 0: with z = 2x - 1,
  x_p = (sign(z) |z|^(2/p) + 1) / 2. p = 2 is the identity; p -> inf pushes every pixel to 0 or 1.
  Values: x = 0.75 -> p 8: 0.920448, p 1024: 0.999324; x = 0.10 -> p 8: 0.027129.
* Patch shuffle (removes shape, keeps local texture), k >= 0: split the image into a k x k grid of
  equal patches and permute the k^2 patches at random, one permutation per image (seeded,
  stateless). k in {0, 1} is the identity. The paper leaves the remainder open: when H or W is not a multiple of k (MNIST 28 with
  k = 8) the grid covers the centred (k * floor(H / k)) x (k * floor(W / k)) region and the border
  strip stays in place (MNIST's border is background).

Both work on channels-last batches (N, H, W, C) of float images in [0, 1].
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_nonnegative_int, check_positive, check_seed, invalid
from ..attacks._common import seed_pair

__all__ = ["saturate", "patch_shuffle", "patch_grid", "Saturation", "PatchShuffle"]


def _check_batch(x, name="x"):
    """Rank-4 float32 tensor (N, H, W, C)."""
    if tf.is_tensor(x) or isinstance(x, tf.Variable):
        x = tf.cast(x, tf.float32)
    else:
        arr = np.asarray(x)
        if not np.issubdtype(arr.dtype, np.number):
            raise invalid(name, "a numeric array of images (N, H, W, C)", f"array of dtype {arr.dtype}")
        x = tf.convert_to_tensor(arr, tf.float32)
    if x.shape.rank != 4:
        raise invalid(name, "images of shape (N, H, W, C) (channels-last)", f"shape {tuple(x.shape)}")
    return x


def saturate(x, p: float) -> tf.Tensor:
    """Saturation transform x_p = (sign(2x - 1) |2x - 1|^(2/p) + 1) / 2 (after Zhang & Zhu, "Interpreting adversarially trained convolutional neural networks", 2019).

    Args:
      x: images in [0, 1], any shape (arrays or tensors). p: saturation level > 0 (2 = identity).
    Returns:
      float32 of x's shape, in [0, 1] (a NumPy array for array input, a tensor for tensor input).
    """
    p = check_positive("p", p)
    is_tensor = tf.is_tensor(x)
    t = tf.cast(x, tf.float32) if is_tensor else tf.convert_to_tensor(np.asarray(x, np.float32))
    z = 2.0 * t - 1.0
    out = (tf.sign(z) * tf.pow(tf.abs(z), 2.0 / p) + 1.0) / 2.0
    return out if is_tensor else out.numpy()


def patch_grid(height, width, k):
    """The region the k x k grid covers: (top, left, patch_height, patch_width); the grid is centred."""
    k = check_nonnegative_int("k", k)
    if k > min(height, width):
        raise invalid("k", f"at most min(H, W) = {min(height, width)} patches per side", k)
    ph, pw = height // k, width // k
    return (height - k * ph) // 2, (width - k * pw) // 2, ph, pw


def _permutations(n, k, seed):
    """(n, k*k) int32: an independent uniform permutation per image (argsort of stateless uniforms)."""
    seed = tf.reshape(tf.cast(seed, tf.int64), [2]) if tf.is_tensor(seed) else seed_pair(seed)
    noise = tf.random.stateless_uniform([n, k * k], seed)
    return tf.argsort(noise, axis=-1, stable=True)


def shuffle_with_permutations(x, k, perm):
    """Apply given per-image patch permutations: output patch j of image i = input patch perm[i, j].

    Args:
      x: float32 (N, H, W, C). k: grid size >= 2. perm: int (N, k*k), patches numbered row-major.
    Returns:
      float32 (N, H, W, C).
    """
    height, width = int(x.shape[1]), int(x.shape[2])
    top, left, ph, pw = patch_grid(height, width, k)
    channels = int(x.shape[3])
    region = x[:, top:top + k * ph, left:left + k * pw, :]
    patches = tf.reshape(region, [-1, k, ph, k, pw, channels])
    patches = tf.transpose(patches, [0, 1, 3, 2, 4, 5])                     # (N, k, k, ph, pw, C)
    patches = tf.reshape(patches, [-1, k * k, ph, pw, channels])
    patches = tf.gather(patches, perm, batch_dims=1)
    patches = tf.reshape(patches, [-1, k, k, ph, pw, channels])
    region = tf.reshape(tf.transpose(patches, [0, 1, 3, 2, 4, 5]), [-1, k * ph, k * pw, channels])
    bottom, right = height - top - k * ph, width - left - k * pw
    if top == 0 and left == 0 and bottom == 0 and right == 0:
        return region
    rows = tf.concat([x[:, top:top + k * ph, :left, :], region, x[:, top:top + k * ph, width - right:, :]], axis=2)
    return tf.concat([x[:, :top, :, :], rows, x[:, height - bottom:, :, :]], axis=1)


def patch_shuffle(x, k: int, seed=None) -> tf.Tensor:
    """Split each image into a k x k grid of patches and permute the patches (one permutation per image).

    Args:
      x: images (N, H, W, C) float in [0, 1] (array or tensor).
      k: patches per side, an int in [0, min(H, W)]; 0 and 1 return x unchanged.
      seed: int (same seed -> same permutations) or None (fresh randomness).
    Returns:
      float32 (N, H, W, C): every output patch is an input patch of the same image; the multiset of
      pixel values of each image is unchanged. NumPy for array input, tensor for tensor input.
    """
    k = check_nonnegative_int("k", k)
    is_tensor = tf.is_tensor(x)
    t = _check_batch(x)
    if k > 1:
        patch_grid(int(t.shape[1]), int(t.shape[2]), k)  # validates k against the image size
        t = shuffle_with_permutations(t, k, _permutations(tf.shape(t)[0], k, seed))
    return t if is_tensor else t.numpy()


@keras.saving.register_keras_serializable(package="keras_advmi")
class Saturation(keras.layers.Layer):
    """Keras layer applying ``saturate(x, p)`` (always, in training and inference). No weights.

    Input/output: (N, ...) float in [0, 1]. Serializable (``get_config`` holds ``p``).
    """

    def __init__(self, p: float = 8.0, **kwargs):
        super().__init__(**kwargs)
        self.p = check_positive("p", p)

    def call(self, inputs):
        z = 2.0 * tf.cast(inputs, tf.float32) - 1.0
        return (tf.sign(z) * tf.pow(tf.abs(z), 2.0 / self.p) + 1.0) / 2.0

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "p": self.p}


@keras.saving.register_keras_serializable(package="keras_advmi")
class PatchShuffle(keras.layers.Layer):
    """Keras layer applying ``patch_shuffle(x, k, seed)`` to (N, H, W, C) inputs. No weights.

    With an int ``seed`` every call on the same batch size draws the same permutations (a fixed
    probe); with ``seed=None`` each call draws new ones from a ``keras.random.SeedGenerator``.
    """

    def __init__(self, k: int = 2, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.k = check_nonnegative_int("k", k)
        self.seed = check_seed("seed", seed)
        self._generator = keras.random.SeedGenerator() if seed is None else None

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise invalid("inputs", "images of shape (N, H, W, C)", f"shape {tuple(input_shape)}")
        if self.k > 1:
            patch_grid(int(input_shape[1]), int(input_shape[2]), self.k)
        super().build(input_shape)

    def call(self, inputs):
        x = tf.cast(inputs, tf.float32)
        if self.k <= 1:
            return x
        if self.seed is None:
            seed = tf.cast(self._generator.next(), tf.int64)
        else:
            seed = tf.constant([self.seed, 0], tf.int64)
        return shuffle_with_permutations(x, self.k, _permutations(tf.shape(x)[0], self.k, seed))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "k": self.k, "seed": self.seed}

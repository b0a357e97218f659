"""Reduced-precision attacks: run a float32 Keras model in bfloat16 while a training attack is traced.

PGD-AT spends most of its step in the attack (``steps`` forward and input-gradient passes for one
weight update), and the attack only needs a direction: sign(grad) for L-inf. Computing those passes
in bfloat16 (8 bits of mantissa, float32's exponent range, so no loss scaling) follows Wong et al.
(2020, "Fast is better than free"), who ran adversarial training in mixed precision; here only the
attack is reduced. Where bf16 units exist (AVX512_BF16 / AMX CPUs, Ampere+ GPUs, TPUs) it speeds up
the whole step: a PGD-10 step of Madry's MNIST CNN ran 1.69x faster on 2 AVX512_BF16 cores
(docs/benchmarks.md). What stays in float32: the variables,
the image and perturbation (x_adv = x + eta is accumulated in float32; a bf16 pixel near 1 has a
spacing of 2^-7, coarser than a PGD step), the loss and weight gradients of the training step, and
every evaluation attack.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import keras

from .._checks import invalid

#: Accepted values of ``attack_dtype`` ("float32" means None). float16 is left out on purpose: without
#: loss scaling, the input gradients of a confident model underflow to 0 in float16 and sign(0) stalls
#: the attack.
ATTACK_DTYPES = (None, "float32", "bfloat16")


def check_attack_dtype(value):
    """``value`` as stored: None (float32) or 'bfloat16'; anything else is a ValueError naming the argument."""
    if not (value is None or isinstance(value, str)) or value not in ATTACK_DTYPES:
        raise invalid("attack_dtype", "None / 'float32' or 'bfloat16'", value)
    if value == "float32":
        return None
    if value == "bfloat16" and bf16_hardware() is False:
        warnings.warn("attack_dtype='bfloat16' on a CPU without bf16 instructions (avx512_bf16 / amx_bf16) and no "
                      "GPU: TensorFlow emulates bf16 there and the attack gets slower, not faster.", stacklevel=3)
    return value


@functools.lru_cache(maxsize=1)
def bf16_hardware():
    """True with a GPU/TPU or a Linux CPU that lists bf16 instructions, False without, None if unknown."""
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = {flag for line in f if line.startswith(("flags", "Features")) for flag in line.split()}
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@contextlib.contextmanager
def compute_dtype(model, dtype):
    """Inside the block, ``model``'s float32 layers compute in ``dtype`` (Keras' ``mixed_<dtype>`` policy:
    inputs and variables are cast on the fly; the variables themselves are untouched).

    Meant for graph tracing: ops created in the block (e.g. while a ``tf.function`` traces an attack)
    keep the reduced precision; calls after it are float32 again. Layers whose policy is not plain
    float32 (already mixed, integer, quantized) are left as they are. ``dtype=None``: no change.
    The switch is global to the layers while the block runs, so the block must not run beside other
    calls of the same model: tracing is single-threaded, and MirroredStrategy's replica threads take
    turns between merge calls, of which an attack has none (tests/test_distributed.py trains TRADES
    with a bf16 attack on 2 replicas).
    """
    if dtype is None or not isinstance(model, keras.layers.Layer):
        yield
        return
    mixed = keras.dtype_policies.get(f"mixed_{dtype}")
    switched = [(layer, layer.dtype_policy) for layer in model._flatten_layers(include_self=True)
                if layer.dtype_policy.name == "float32"]
    try:
        for layer, _ in switched:
            layer.dtype_policy = mixed
        yield
    finally:
        for layer, policy in switched:
            layer.dtype_policy = policy

"""Reduced-precision attacks: run a float32 Keras model in bfloat16 while a training attack is traced.

PGD-AT spends most of its step in the attack (``steps`` forward and input-gradient passes for one
weight update), and the attack only needs a direction: sign(grad) for L-inf. Computing those passes
in bfloat16 (8 bits of mantissa, float32's exponent range, so no loss scaling) follows Wong et al.
(2020, "Fast is better than free"), who ran adversarial training in mixed precision; here only the
attack is reduced. Where bf16 units exist (AVX512_BF16 / AMX CPUs, Ampere+ GPUs, TPUs) it speeds up
the whole step (docs/results.md). What stays in float32: the variables,
the image and perturbation (x_adv = x + eta is accumulated in float32; a bf16 pixel near 1 has a
spacing of 2^-7, coarser than a PGD step), the loss and weight gradients of the training step, and
every evaluation attack.
"""

from __future__ import annotations

import contextlib
import functools
import warnings

import keras
import tensorflow as tf

from .._checks import check_choice

#: Accepted values of ``attack_dtype`` ("float32" means None). float16 is left out on purpose: without
#: loss scaling, the input gradients of a confident model underflow to 0 in float16 and sign(0) stalls
#: the attack.
ATTACK_DTYPES = (None, "float32", "bfloat16")


def check_attack_dtype(value):
    """``value`` as stored: None (float32) or 'bfloat16'; anything else is a ValueError naming the argument."""
    value = check_choice("attack_dtype", value, ATTACK_DTYPES)
    if value == "float32":
        return None
    if value == "bfloat16" and bf16_hardware() is False:
        warnings.warn("attack_dtype='bfloat16' on a CPU without bf16 instructions (avx512_bf16 / amx_bf16) and no "
                      "GPU: TensorFlow emulates bf16 there and the attack gets slower, not faster.", stacklevel=3)
    return value


@functools.lru_cache(maxsize=1)
def bf16_hardware():
    """True with a GPU/TPU or a Linux CPU that lists bf16 instructions, False without, None if unknown."""
    if tf.config.list_physical_devices("GPU") or tf.config.list_physical_devices("TPU"):
        return True
    try:
        with open("/proc/cpuinfo") as f:
            flags = {flag for line in f if line.startswith(("flags", "Features")) for flag in line.split()}
    except OSError:
        return None
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def _sublayers(value):
    """The layers held by one attribute value: a layer, or layers in a list/tuple/dict."""
    if isinstance(value, keras.layers.Layer):
        return [value]
    if isinstance(value, (list, tuple)):
        return [v for v in value if isinstance(v, keras.layers.Layer)]
    if isinstance(value, dict):
        return [v for v in value.values() if isinstance(v, keras.layers.Layer)]
    return []


def all_layers(model):
    """``model`` and every layer inside it, each once, through public attributes only: ``keras.Model.layers``
    (recursively for nested models) and, for custom layers that hold sublayers, their public attributes
    holding layers (directly or in a list, tuple or dict)."""
    found, stack = {}, [model]
    while stack:
        layer = stack.pop()
        if id(layer) in found:
            continue
        found[id(layer)] = layer
        if isinstance(layer, keras.Model):
            stack.extend(layer.layers)
        for name, value in vars(layer).items():
            if not name.startswith("_"):
                stack.extend(_sublayers(value))
    return list(found.values())


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
    switched = [(layer, layer.dtype_policy) for layer in all_layers(model)
                if layer.dtype_policy.name == "float32"]
    try:
        for layer, _ in switched:
            layer.dtype_policy = mixed
        yield
    finally:
        for layer, policy in switched:
            layer.dtype_policy = policy

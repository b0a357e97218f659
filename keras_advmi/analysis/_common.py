"""Checks and helpers shared by the analyses: unwrap models, validate images against the model, logits in batches."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_images, check_positive_int, invalid
from ..attacks._common import logits_model


def check_model(model):
    model = logits_model(model)
    if not callable(model):
        raise invalid("model", "a Keras model or a callable returning logits", type(model).__name__)
    return model


def input_shape_of(model):
    """The model's per-sample input shape (tuple, None entries allowed) or None when unknown."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape[1:]) if shape is not None else None


def check_model_images(model, x, name="x", spatial=False):
    """float32 array (N, ...) in [0, 1] whose per-sample shape matches the model's input shape.

    ``spatial`` requires rank-4 (N, H, W, C) images.
    """
    check_images(name, x)
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise invalid(name, "at least one image", "an empty array")
    expected = input_shape_of(model)
    if expected is not None:
        ok = len(expected) == x.ndim - 1 and all(e is None or e == s for e, s in zip(expected, x.shape[1:]))
        if not ok:
            raise invalid(name, f"images of shape (N, {', '.join('?' if e is None else str(e) for e in expected)}) "
                                f"(the model's input)", f"array of shape {x.shape}")
    if spatial and x.ndim != 4:
        raise invalid(name, "images of shape (N, H, W, C)", f"array of shape {x.shape}")
    if x.min() < 0 or x.max() > 1:
        raise invalid(name, "pixel values in [0, 1]", f"values in [{x.min():.3g}, {x.max():.3g}]")
    return x


def predict_logits(model, x, batch_size=256):
    """float32 (N, C) logits, batched, ``training=False`` for Keras models."""
    batch_size = check_positive_int("batch_size", batch_size)
    out = []
    for start in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[start:start + batch_size])
        z = model(xb, training=False) if isinstance(model, keras.layers.Layer) else model(xb)
        out.append(np.asarray(z, dtype=np.float32))
    logits = np.concatenate(out, axis=0)
    if logits.ndim != 2:
        raise invalid("model", "a model returning logits of shape (N, classes)", f"output of shape {logits.shape}")
    return logits


def check_class_index(name, value, n, num_classes):
    """An int or an int array of shape (n,) with every entry in [0, num_classes); returns int64 (n,)."""
    if isinstance(value, bool):
        raise invalid(name, f"a class index in [0, {num_classes - 1}]", value)
    if isinstance(value, numbers.Integral):
        arr = np.full(n, int(value), dtype=np.int64)
    else:
        arr = np.asarray(value)
        if arr.ndim != 1 or len(arr) != n or not np.issubdtype(arr.dtype, np.integer):
            raise invalid(name, f"an int or an int array of shape ({n},)", f"{type(value).__name__} of shape "
                                                                             f"{getattr(arr, 'shape', None)}")
        arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = int(arr[(arr < 0) | (arr >= num_classes)][0])
        raise invalid(name, f"class indices in [0, {num_classes - 1}] (the model has {num_classes} outputs)", bad)
    return arr


def check_layer(model, layer, name="layer"):
    """The layer object of ``model`` called ``layer`` (str), with a clear error listing the available names."""
    if not isinstance(layer, str):
        raise invalid(name, "a layer name (str)", layer)
    names = [l.name for l in getattr(model, "layers", [])]
    if layer not in names:
        raise invalid(name, f"the name of a layer of the model (available: {names})", layer)
    return model.get_layer(layer)


def multi_output_model(model, layers):
    """A ``keras.Model`` sharing weights that returns [activation of each named layer..., logits]."""
    if not isinstance(model, keras.Model):
        raise invalid("model", "a keras.Model (functional or Sequential) to read layer activations", type(model).__name__)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise invalid("model", "a functional or Sequential model with defined inputs", type(model).__name__)
    for name in layers:
        check_layer(model, name)
    if isinstance(model, keras.Sequential):
        # A fresh graph through the same layers (shared weights). A loaded Sequential's ``layer.output``
        # can belong to another call node than ``model.outputs``, which would make the logits
        # independent of the returned activations (gradients None).
        h = inp = keras.Input(tuple(model.inputs[0].shape[1:]), dtype=model.inputs[0].dtype)
        taps = {}
        for layer in model.layers:
            h = layer(h)
            taps[layer.name] = h
        return keras.Model(inp, [taps[name] for name in layers] + [h])
    outputs = [model.get_layer(name).output for name in layers] + [model.outputs[0]]
    return keras.Model(inputs[0] if len(inputs) == 1 else inputs, outputs)

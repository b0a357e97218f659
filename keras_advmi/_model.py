"""Reaching the classifier: the network inside a wrapper, its logits, and taps on its layers.

Every module that takes "a model" goes through these functions, so that a ``kam.AdversarialModel``, a
plain ``keras.Model`` and (where logits suffice) any callable mapping images to logits are accepted the
same way everywhere:

    net = network_of(robust)                      # the wrapped keras.Model
    z = logits_of(net, x_batch)                   # float32 (N, C) tensor, graph-safe
    z = predict_logits(net, x_array, 256)         # float32 (N, C) numpy, batched, training=False
    taps = tap_model(net, ["conv2", "dense1"])    # keras.Model: [conv2 out, dense1 out, logits]
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from ._checks import check_images, check_layer_names, check_positive_int, invalid

__all__ = ["network_of", "check_network", "logits_of", "predict_logits", "input_shape_of", "check_model_images", "check_layer",
           "resolve_layers", "tap_model"]


def network_of(model):
    """The ``keras.Model`` a ``kam.AdversarialModel`` wraps, else ``model`` itself.

    An AdversarialModel is recognised by its ``defense`` attribute and a ``keras.Model`` in ``model``
    (duck typing, so that this module does not import ``models``, which imports the defenses).
    """
    inner = getattr(model, "model", None)
    return inner if getattr(model, "defense", None) is not None and isinstance(inner, keras.Model) else model


def check_network(model):
    """``network_of(model)``, which must be callable (a ValueError naming ``model`` otherwise)."""
    model = network_of(model)
    if not callable(model):
        raise invalid("model", "a Keras model (or kam.AdversarialModel) returning logits", type(model).__name__)
    return model


def logits_of(model, x, training=False):
    """Logits (float32 tensor (N, C)) of a Keras model, called with ``training``, or of any callable."""
    out = model(x, training=training) if isinstance(model, keras.layers.Layer) else model(x)
    return tf.cast(out, tf.float32)


def predict_logits(model, x, batch_size=256):
    """Logits of an array, float32 numpy (N, C), in batches of ``batch_size`` rows, ``training=False``.

    Raises a ValueError naming ``model`` when its output is not (N, classes).
    """
    batch_size = check_positive_int("batch_size", batch_size)
    model = network_of(model)
    out = [logits_of(model, tf.convert_to_tensor(x[start:start + batch_size])).numpy()
           for start in range(0, len(x), batch_size)]
    logits = np.concatenate(out, axis=0) if out else np.zeros((0, 0), np.float32)
    if logits.ndim != 2:
        raise invalid("model", "a model returning logits of shape (N, classes)", f"output of shape {logits.shape}")
    return logits


def input_shape_of(model):
    """The model's per-sample input shape (tuple, None entries allowed), or None when it is unknown."""
    try:
        shape = model.input_shape
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):
        shape = shape[0]
    return tuple(shape[1:]) if shape is not None else None


def check_model_images(model, x, name="x", spatial=False):
    """float32 array (N, ...) in [0, 1] whose per-sample shape matches the model's input shape.

    ``spatial`` requires rank-4 (N, H, W, C) images. Each failure is a ValueError naming ``name``.
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
    return x


def check_layer(model, layer, name="layer"):
    """The layer of ``model`` called ``layer`` (a str); a ValueError naming ``name`` lists the available ones."""
    if not isinstance(layer, str):
        raise invalid(name, "a layer name (str)", layer)
    names = [l.name for l in getattr(model, "layers", [])]
    if layer not in names:
        raise invalid(name, f"the name of a layer of the model (available: {names})", layer)
    return model.get_layer(layer)


def resolve_layers(model, layers, argument="layers"):
    """``layers`` (a name or a non-empty list of names, ``check_layer_names``) checked against ``model``'s
    layers; returns a list of names."""
    layers = check_layer_names(argument, layers)
    available = [layer.name for layer in getattr(model, "layers", [])]
    unknown = [name for name in layers if name not in available]
    if unknown:
        raise invalid(argument, f"names of layers of the model (available: {available})", unknown)
    return list(layers)


def tap_model(model, layers, include_logits=True):
    """A ``keras.Model`` sharing ``model``'s weights that returns the named layers' activations, in order,
    followed by the logits when ``include_logits``.

    Needs a functional or Sequential model (one with ``inputs``); a subclassed one raises a ValueError.
    A Sequential model is re-applied layer by layer to a fresh input: a loaded Sequential's
    ``layer.output`` can belong to another call node than ``model.outputs``, which would make the logits
    independent of the returned activations (their gradients None).
    """
    model = network_of(model)
    if not isinstance(model, keras.Model):
        raise invalid("model", "a keras.Model (functional or Sequential) to read layer activations",
                      type(model).__name__)
    layers = resolve_layers(model, layers)
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise invalid("model", "a functional or Sequential model with defined inputs (layer taps need the "
                               "layer graph)", type(model).__name__)
    if isinstance(model, keras.Sequential):
        h = inp = keras.Input(tuple(inputs[0].shape[1:]), dtype=inputs[0].dtype)
        taps = {}
        for layer in model.layers:
            h = layer(h)
            taps[layer.name] = h
        outputs, logits, inputs = [taps[name] for name in layers], h, inp
    else:
        outputs = [model.get_layer(name).output for name in layers]
        logits, inputs = model.outputs[0], inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, outputs + [logits] if include_logits else outputs, name=f"{model.name}_taps")

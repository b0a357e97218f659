"""The fixed probe set of the loggers that measure a model at epoch ends: its checks, its adversarial
version and its layer activations."""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from .._checks import check_images, check_labels, invalid
from ..attacks import madry_step_size, pgd


def check_probe(x_probe, y_probe, minimum: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, ...), y int64 (N,)) with N >= ``minimum``; clear errors otherwise."""
    check_images("x_probe", x_probe)
    x = np.asarray(x_probe, np.float32)
    if len(x) < minimum:
        raise invalid("x_probe", f"at least {minimum} probe image{'s' if minimum > 1 else ''}"
                                 f"{' (MI estimates need N >= 2)' if minimum >= 2 else ''}", f"{len(x)} images")
    return x, check_labels("y_probe", y_probe, n=len(x))


def check_log_dir(log_dir) -> str:
    """``log_dir`` as a str; a ValueError when it is not a non-empty path."""
    if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
        raise invalid("log_dir", "a directory path", log_dir)
    return str(log_dir)


def attack_probe(net, attack, x, y, *, epsilon, steps: int, step_size, seed: int, batch_size: int) -> np.ndarray:
    """x_adv (N, ...) float32 of the probe (x, y) against ``net``.

    ``attack``: a callable ``attack(net, x, y) -> x_adv`` (its result must have x's shape), or 'pgd':
    L-inf PGD of ``steps`` steps at ``epsilon`` with ``step_size`` (None: Madry's 2.5 * epsilon / steps),
    seeded random start, in batches of ``batch_size``.
    """
    if callable(attack):
        x_adv = np.asarray(attack(net, x, y), np.float32)
        if x_adv.shape != x.shape:
            raise invalid("attack", f"a callable returning x_adv of shape {x.shape}", x_adv.shape)
        return x_adv
    step = step_size if step_size is not None else madry_step_size(epsilon, steps)
    return np.asarray(pgd(net, x, y, epsilon=epsilon, step_size=step, steps=steps, seed=seed,
                          batch_size=batch_size))


def layer_activations(features, layers, x, kind: str, batch_size: int) -> list[np.ndarray]:
    """Per layer of ``layers``, the activations of ``x`` flattened per sample, (N, d) float32.

    ``features``: a model returning the layers' outputs in order (``tap_model(..., include_logits=False)``);
    ``kind``: the probe's name in the error ('clean', 'adv'). Non-finite activations (a diverged model)
    raise a ValueError naming the layer.
    """
    outs = [[] for _ in layers]
    for start in range(0, len(x), batch_size):
        batch = features(tf.constant(x[start:start + batch_size]), training=False)
        batch = batch if isinstance(batch, (list, tuple)) else [batch]
        for acc, b in zip(outs, batch):
            acc.append(np.asarray(b).reshape(len(b), -1))
    acts = [np.concatenate(o) for o in outs]
    for layer, h in zip(layers, acts):
        bad = int(np.sum(~np.isfinite(h)))
        if bad:
            raise ValueError(f"Layer {layer!r} of the model gives {bad} non-finite activations (NaN or Inf) on "
                             f"the {kind} probe (`x_probe`, {len(x)} images): the model has diverged "
                             "(try a lower learning rate), or drop the layer from `layers`.")
    return acts

"""``kam.export``: a SavedModel that TensorFlow Serving serves unchanged, with a ``detect`` signature.

    kam.export(robust, "models/robust/1", detector=det, metadata={"dataset": "mnist", "robustness": report})

Layout (the serving contract of DESIGN.md): ``BASE/NAME/VERSION/`` with

* ``serving_default``: inputs (N, *input_shape) float32 in [0, 1] -> ``probabilities`` (N, classes)
  float32, ``class_ids`` (N,) int64;
* ``detect`` (when a detector is given): -> ``adversarial_score`` (N,) float32, ``is_adversarial`` (N,)
  bool (score > threshold), ``threshold`` (N,) float32, ``probabilities``, ``class_ids`` — one model
  pass shared by the detector and the prediction;
* ``assets/keras_advmi.json``: input spec, defense and epsilon, dataset, robustness table, detector
  calibration, package version.

The input signature fixes shape and dtype; values outside [0, 1] (or NaN) fail with InvalidArgument
(TF Serving answers 400). The version is written to a hidden temp directory beside the target
(``.VERSION.tmp-PID-*``, not numeric, so a version watcher ignores it) and renamed into place, so
a watcher never sees half a version; a killed export leaves only that hidden directory, removed by
the next export once its process is gone. Built with ``keras.export.ExportArchive``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import tensorflow as tf
import keras

from ._checks import invalid
from ._json import to_jsonable
from ._version import __version__
from .detection.base import Detector, unwrap_model

logger = logging.getLogger(__name__)

METADATA_ASSET = "keras_advmi.json"
INPUT_NAME = "inputs"
SERVING_OUTPUTS = ("probabilities", "class_ids")
DETECT_OUTPUTS = ("adversarial_score", "is_adversarial", "threshold", "probabilities", "class_ids")
_TMP_RE = re.compile(r"^\.(\d+)\.(tmp|old)-(\d+)-")


def check_logits_model(model, input_shape, seed=0):
    """Raise ValueError when ``model`` visibly outputs probabilities (a softmax/sigmoid head).

    Two checks: the last layer is a ``Softmax`` layer or has a softmax/sigmoid activation; or, on 16
    seeded uniform inputs, every output row lies in [0, 1] and sums to 1 (1e-4).
    """
    layers = getattr(model, "layers", None) or []
    last = layers[-1] if layers else None
    act = getattr(last, "activation", None)
    names = {getattr(a, "__name__", "") for a in (act,)}
    if isinstance(last, keras.layers.Softmax) or names & {"softmax", "sigmoid", "log_softmax"}:
        raise invalid("model", "a model that outputs logits (no softmax/sigmoid on the last layer; "
                               "export adds the softmax itself)", f"last layer {last.name!r} with "
                                                                  f"{'Softmax' if act is None else act.__name__}")
    x = np.random.default_rng(seed).uniform(0, 1, (16,) + tuple(input_shape)).astype(np.float32)
    out = np.asarray(model(x, training=False) if isinstance(model, keras.layers.Layer) else model(x), np.float64)
    if out.ndim != 2:
        raise invalid("model", "a model whose output is logits of shape (N, classes)", f"output shape {out.shape}")
    if out.shape[1] > 1 and out.min() >= 0 and out.max() <= 1 and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
        raise invalid("model", "a model that outputs logits, not probabilities (its rows sum to 1)",
                      f"outputs in [{out.min():.3g}, {out.max():.3g}] summing to 1")
    return int(out.shape[1])


def _version_path(path):
    if not isinstance(path, (str, os.PathLike)):
        raise invalid("path", "a directory path BASE/NAME/VERSION (VERSION a positive integer)", path)
    target = Path(path).expanduser().absolute()
    if not target.name.isdigit() or int(target.name) < 1:
        raise invalid("path", "a directory path BASE/NAME/VERSION whose last part is a positive integer "
                              "(TensorFlow Serving only loads numeric version directories)", str(path))
    return target


def _metadata(model, logits_model, detector, metadata, input_shape, classes):
    meta = dict(metadata or {})
    defense = getattr(model, "defense", None)
    defense_info = None
    if defense is not None:
        config = defense.get_config() if hasattr(defense, "get_config") else {}
        defense_info = {"class": type(defense).__name__, "config": config}
    out = {
        "format": "keras_advmi.export/1",
        "keras_advmi_version": __version__,
        "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "model_name": getattr(logits_model, "name", None),
        "input": {"name": INPUT_NAME, "shape": [None, *input_shape], "dtype": "float32", "range": [0.0, 1.0]},
        "classes": classes,
        "signatures": {"serving_default": list(SERVING_OUTPUTS),
                       **({"detect": list(DETECT_OUTPUTS)} if detector is not None else {})},
        "defense": meta.pop("defense", defense_info),
        "epsilon": meta.pop("epsilon", getattr(defense, "epsilon", None)),
        "dataset": meta.pop("dataset", None),
        "robustness": meta.pop("robustness", None),
        "detector": detector.describe() if detector is not None else None,
    }
    out.update(meta)
    return to_jsonable(out, decimals=None)


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


def _build_archive(logits_model, detector, input_shape):
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


def _remove_stale(parent):
    """Remove hidden temp/old directories left by exports whose process is gone (e.g. killed)."""
    for child in parent.iterdir():
        m = _TMP_RE.match(child.name)
        if not m or not child.is_dir():
            continue
        pid = int(m.group(3))
        try:
            os.kill(pid, 0)
            alive = True
        except ProcessLookupError:
            alive = False
        except PermissionError:
            alive = True
        if not alive:
            shutil.rmtree(child, ignore_errors=True)


def _fsync_tree(root):
    for dirpath, _, files in os.walk(root):
        for name in files:
            with open(os.path.join(dirpath, name), "rb") as f:
                os.fsync(f.fileno())
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export(model, path, detector=None, metadata=None, overwrite=False):
    """Write ``model`` (and ``detector``) as a TF-Serving SavedModel at ``BASE/NAME/VERSION``, atomically.

    Args:
      model: a logits Keras model or a ``kam.AdversarialModel`` (its ``.model`` is exported and its
        defense recorded in the metadata). A model with a softmax/sigmoid output is rejected.
      path: ``BASE/NAME/VERSION`` with VERSION a positive integer (TF Serving's layout).
      detector: None, or a fitted and calibrated ``kam.detection`` detector fitted on this model
        and its input shape; adds the ``detect`` signature.
      metadata: dict merged into ``assets/keras_advmi.json``; known keys ``dataset``, ``epsilon``,
        ``defense``, ``robustness`` (a dict or ``RobustnessReport``); values must be JSON-serializable.
      overwrite: replace an existing version directory (otherwise FileExistsError).
    Returns:
      the absolute path of the version directory (str).
    """
    logits_model = unwrap_model(model)
    if not isinstance(logits_model, keras.Model):
        raise invalid("model", "a Keras model (or kam.AdversarialModel) that outputs logits", type(model).__name__)
    target = _version_path(path)
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("metadata", "None or a dict of JSON-serializable values", type(metadata).__name__)
    try:
        input_shape = tuple(int(d) for d in logits_model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError):
        raise invalid("model", "a built model with a fixed input shape (call it once or give keras.Input a shape)",
                      getattr(logits_model, "name", model)) from None
    classes = check_logits_model(logits_model, input_shape)
    if detector is not None:
        if not isinstance(detector, Detector):
            raise invalid("detector", "None or a kam.detection detector", type(detector).__name__)
        detector._require_calibrated("export")
        if tuple(detector.input_shape_) != input_shape:
            raise invalid("detector", f"a detector fitted on the model's input shape {input_shape}",
                          f"{type(detector).__name__} fitted on input shape {tuple(detector.input_shape_)}")
        if detector.model is not logits_model:
            raise invalid("detector", "a detector fitted on this model (detector.fit(model, x_clean))",
                          f"{type(detector).__name__} fitted on model {getattr(detector.model, 'name', '?')!r}")
    if target.exists() and not overwrite:
        raise FileExistsError(f"export path {str(target)!r} already exists; choose a new version number or "
                              f"pass overwrite=True")
    meta = _metadata(model, logits_model, detector, metadata, input_shape, classes)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-{os.getpid()}-", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)  # mkdtemp makes 0700; a server running as another user must read it
    try:
        archive = _build_archive(logits_model, detector, input_shape)
        archive.write_out(str(tmp), verbose=False)
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / METADATA_ASSET).write_text(json.dumps(meta, indent=2))
        _fsync_tree(tmp)
        old = None
        if target.exists():
            if not overwrite:
                raise FileExistsError(f"export path {str(target)!r} appeared during the export")
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-{os.getpid()}-", dir=parent))
            os.rmdir(old)
            os.rename(target, old)
        os.rename(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("exported %s (%s) to %s", logits_model.name, ", ".join(meta["signatures"]), target)
    return str(target)


def read_metadata(path):
    """The ``assets/keras_advmi.json`` dict of an exported version directory."""
    return json.loads((Path(path) / "assets" / METADATA_ASSET).read_text())

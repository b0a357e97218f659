"""``kam.export``: check, describe, build the signatures, write the version directory atomically."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import keras

from .._checks import check_bool, invalid
from .._model import check_network
from ._atomic import write_version_atomically
from ._checks import check_detector, check_logits_model, export_path, input_shape_of_export
from ._metadata import export_metadata, write_metadata
from ._signatures import build_archive
from ._warmup import write_warmup

__all__ = ["export"]

logger = logging.getLogger("keras_advmi.export")


def export(model: keras.Model, path: str | os.PathLike, detector=None, metadata: dict | None = None,
           overwrite: bool = False) -> str:
    """Write ``model`` (and ``detector``) as a TF-Serving SavedModel directory at ``path``, atomically.

    Args:
      model: a logits Keras model or a ``kam.AdversarialModel`` (its ``.model`` is exported and its
        defense recorded in the metadata). A model with a softmax/sigmoid output is rejected.
      path: the directory to write (any name). To serve it, use TF Serving's layout
        ``BASE/NAME/VERSION`` with VERSION a positive integer: servers load only numeric version
        directories under a model's base path.
      detector: None, or a fitted and calibrated ``kam.detection`` detector fitted on this model
        and its input shape; adds the ``detect`` signature.
      metadata: dict merged into ``assets.extra/keras_advmi.json``; known keys ``dataset``, ``epsilon``,
        ``defense``, ``robustness`` (a dict or ``RobustnessReport``); values must be JSON-serializable.
      overwrite: replace an existing directory (otherwise FileExistsError).
    Returns:
      the absolute path of the written directory (str). Besides the graph it holds
      ``assets.extra/keras_advmi.json`` and ``assets.extra/tf_serving_warmup_requests`` (one Predict
      request of one zero image per signature, replayed by TF Serving and ``keras-advmi serve`` before
      the version is AVAILABLE).
    """
    logits_model = check_network(model)
    if not isinstance(logits_model, keras.Model):
        raise invalid("model", "a Keras model (or kam.AdversarialModel) that outputs logits", type(model).__name__)
    target = export_path(path)
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("metadata", "None or a dict of JSON-serializable values", type(metadata).__name__)
    overwrite = check_bool("overwrite", overwrite)
    input_shape = input_shape_of_export(logits_model, model)
    classes = check_logits_model(logits_model, input_shape)
    check_detector(detector, logits_model, input_shape)
    if target.exists() and not overwrite:
        raise FileExistsError(f"export path {str(target)!r} already exists; choose a new directory (a new version "
                              f"number) or pass overwrite=True")
    meta = export_metadata(model, logits_model, detector, metadata, input_shape, classes)

    def write(tmp: Path) -> None:
        build_archive(logits_model, detector, input_shape).write_out(str(tmp), verbose=False)
        write_metadata(tmp, meta)
        write_warmup(tmp, list(meta["signatures"]), input_shape)

    write_version_atomically(target, write, overwrite)
    logger.info("exported %s (%s) to %s", logits_model.name, ", ".join(meta["signatures"]), target)
    return str(target)

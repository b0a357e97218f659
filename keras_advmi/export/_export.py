"""``kam.export``: check, describe, build the signatures, write the version directory atomically."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import keras

from .._checks import invalid
from .._model import check_network
from ._atomic import write_version_atomically
from ._checks import check_detector, check_logits_model, input_shape_of_export, version_path
from ._metadata import METADATA_ASSET, export_metadata
from ._signatures import build_archive

__all__ = ["export"]

logger = logging.getLogger("keras_advmi.export")


def export(model: keras.Model, path: str | os.PathLike, detector=None, metadata: dict | None = None,
           overwrite: bool = False) -> str:
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
    logits_model = check_network(model)
    if not isinstance(logits_model, keras.Model):
        raise invalid("model", "a Keras model (or kam.AdversarialModel) that outputs logits", type(model).__name__)
    target = version_path(path)
    if metadata is not None and not isinstance(metadata, dict):
        raise invalid("metadata", "None or a dict of JSON-serializable values", type(metadata).__name__)
    input_shape = input_shape_of_export(logits_model, model)
    classes = check_logits_model(logits_model, input_shape)
    check_detector(detector, logits_model, input_shape)
    if target.exists() and not overwrite:
        raise FileExistsError(f"export path {str(target)!r} already exists; choose a new version number or "
                              f"pass overwrite=True")
    meta = export_metadata(model, logits_model, detector, metadata, input_shape, classes)

    def write(tmp: Path) -> None:
        build_archive(logits_model, detector, input_shape).write_out(str(tmp), verbose=False)
        (tmp / "assets").mkdir(exist_ok=True)
        (tmp / "assets" / METADATA_ASSET).write_text(json.dumps(meta, indent=2))

    write_version_atomically(target, write, overwrite)
    logger.info("exported %s (%s) to %s", logits_model.name, ", ".join(meta["signatures"]), target)
    return str(target)

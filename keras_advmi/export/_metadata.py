"""``assets.extra/keras_advmi.json``: what an exported version holds (input spec, defense, dataset, robustness,
detector calibration, package version).

``assets.extra/`` is TF Serving's place for files that sit beside the graph and that the graph does not read
(the warm-up file lives there too); ``tf.saved_model.load`` ignores it.
"""

from __future__ import annotations

import datetime
import json
import os
from pathlib import Path

import keras

from .._json import to_jsonable
from .._savedmodel_files import ASSETS_EXTRA, METADATA_FILE
from .._version import __version__
from ._signatures import DETECT_OUTPUTS, INPUT_NAME, SERVING_OUTPUTS

__all__ = ["export_metadata", "read_metadata", "write_metadata"]


def export_metadata(model, logits_model: keras.Model, detector, metadata: dict | None, input_shape: tuple[int, ...],
                    classes: int) -> dict:
    """The JSON-ready metadata dict; known keys of ``metadata`` override the recorded ones, others are added."""
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


def write_metadata(directory: str | os.PathLike, meta: dict) -> Path:
    """Write ``meta`` to ``directory/assets.extra/keras_advmi.json``; returns the file's path."""
    target = Path(directory) / ASSETS_EXTRA / METADATA_FILE
    target.parent.mkdir(exist_ok=True)
    target.write_text(json.dumps(meta, indent=2))
    return target


def read_metadata(path: str | os.PathLike) -> dict:
    """The ``assets.extra/keras_advmi.json`` dict of an exported directory (FileNotFoundError names the file
    when the directory has none)."""
    return json.loads((Path(path) / ASSETS_EXTRA / METADATA_FILE).read_text())

"""``kam.export``: a SavedModel that TensorFlow Serving serves unchanged, with a ``detect`` signature.

    kam.export(robust, "models/robust/1", detector=det, metadata={"dataset": "mnist", "robustness": report})

Any directory is accepted; to serve it, use TF Serving's layout ``BASE/NAME/VERSION/`` (VERSION a
positive integer: TF Serving and ``keras-advmi serve`` load only numeric version directories under a
model's base path). The directory holds

* ``serving_default``: inputs (N, *input_shape) float32 in [0, 1] -> ``probabilities`` (N, classes)
  float32, ``class_ids`` (N,) int64;
* ``detect`` (when a detector is given): -> ``adversarial_score`` (N,) float32, ``is_adversarial`` (N,)
  bool (score > threshold), ``threshold`` (N,) float32, ``probabilities``, ``class_ids`` — one model
  pass shared by the detector and the prediction;
* ``assets.extra/keras_advmi.json``: input spec, defense and epsilon, dataset, robustness table, detector
  calibration, package version;
* ``assets.extra/tf_serving_warmup_requests``: TF Serving's warm-up file, one ``PredictionLog`` record
  per signature (one zero image), replayed before the version is AVAILABLE.

The input signature fixes shape and dtype; values outside [0, 1] (or NaN) fail with InvalidArgument
(TF Serving answers 400). The directory is written to a hidden temp directory beside the target
(``.NAME.tmp-PID-*``, not numeric, so a version watcher ignores it) and renamed into place, so
a watcher never sees half a version; a killed export leaves only that hidden directory, removed by
the next export into the same parent once its process is gone. Built with ``keras.export.ExportArchive``.

Modules: ``_checks`` (what is accepted), ``_signatures`` (the endpoints), ``_metadata`` (the metadata file),
``_warmup`` (the warm-up file), ``_atomic`` (temp directory and rename), ``_export`` (the driver).
"""

from .._savedmodel_files import ASSETS_EXTRA, METADATA_FILE, WARMUP_FILE
from ._checks import check_logits_model, version_path
from ._export import export
from ._metadata import read_metadata
from ._signatures import DETECT_OUTPUTS, INPUT_NAME, SERVING_OUTPUTS

__all__ = ["export", "read_metadata", "check_logits_model", "version_path", "ASSETS_EXTRA", "METADATA_FILE",
           "WARMUP_FILE", "INPUT_NAME", "SERVING_OUTPUTS", "DETECT_OUTPUTS"]

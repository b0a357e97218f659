"""``assets.extra/tf_serving_warmup_requests``: one Predict request per signature, replayed at load time.

TF Serving reads this file when it loads a version (``saved_model_warmup_util.cc``) and runs every
record through the loaded model before it reports the version AVAILABLE, so the first client request
does not pay for the graph's first run (kernel selection, Grappler rewrites, memory allocation). The
format is a TFRecord file whose records are serialized ``tensorflow.serving.PredictionLog`` messages;
ours are ``predict_log.request`` = a ``PredictRequest`` naming the signature in ``model_spec`` and
feeding ``inputs`` one row of zeros of the input shape (valid input: zeros lie in [0, 1]).
TF Serving caps the file at 1,000 records.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from .._savedmodel_files import ASSETS_EXTRA, WARMUP_FILE
from ._signatures import INPUT_NAME

__all__ = ["warmup_requests", "write_warmup"]


def warmup_requests(signatures: Iterable[str], input_shape: tuple[int, ...],
                    rows: int = 1) -> list[prediction_log_pb2.PredictionLog]:
    """One ``PredictionLog`` per signature: a ``PredictRequest`` of ``rows`` zero images (rows, *input_shape)
    float32 under the input ``inputs``."""
    x = tf.make_tensor_proto(np.zeros((rows, *input_shape), np.float32))
    out = []
    for name in signatures:
        request = predict_pb2.PredictRequest()
        request.model_spec.signature_name = name
        request.inputs[INPUT_NAME].CopyFrom(x)
        out.append(prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request)))
    return out


def write_warmup(directory: str | os.PathLike, signatures: Iterable[str], input_shape: tuple[int, ...]) -> Path:
    """Write ``directory/assets.extra/tf_serving_warmup_requests`` (see the module docstring); returns its path."""
    target = Path(directory) / ASSETS_EXTRA / WARMUP_FILE
    target.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(target)) as writer:
        for log in warmup_requests(signatures, input_shape):
            writer.write(log.SerializeToString())
    return target

"""Replay a version's ``assets.extra/tf_serving_warmup_requests`` before it is reported AVAILABLE.

As TF Serving's ``saved_model_warmup_util.cc``: the file is optional (a version without one loads
as before); it is a TFRecord file of serialized ``tensorflow.serving.PredictionLog`` records, each run
once through the loaded signatures: ``predict_log`` (a ``PredictRequest``), ``classify_log`` and
``regress_log`` (``tf.Example`` inputs); a record with no log type is skipped; ``multi_inference_log``
and ``session_run_log`` are refused (UNIMPLEMENTED here). A record that does not parse, a request the
version refuses, a corrupt TFRecord (DATA_LOSS) or more than 1,000 records fail the load with a
``WarmupError`` naming the record, so a broken version never becomes AVAILABLE.
"""

from __future__ import annotations

import os
import re

import tensorflow as tf
from google.protobuf.message import DecodeError
from grpc import StatusCode
from tensorflow_serving.apis import prediction_log_pb2

from .._savedmodel_files import ASSETS_EXTRA, WARMUP_FILE
from . import examples, tensors
from .errors import ServingError

__all__ = ["MAX_RECORDS", "WarmupError", "replay_warmup"]

MAX_RECORDS = 1000


class WarmupError(RuntimeError):
    """The warm-up file of a version could not be replayed; the version must not become AVAILABLE."""


def _predict(servable, request):
    sig, specs = servable.input_specs_for(request.model_spec.signature_name)
    servable.run(sig, tensors.decode_inputs(request.inputs, specs, None, None))


def _example_request(servable, request, method):
    sig = examples.signature_for(servable, request.model_spec.signature_name, method)
    batch = examples.serialized(request.input)
    outputs = servable.run(sig, {"inputs": batch})
    if method == examples.CLASSIFY:
        examples.classification_result(outputs, len(batch))
    else:
        examples.regression_result(outputs, len(batch))


def _run_record(servable, log):
    kind = log.WhichOneof("log_type")
    if kind is None:
        return False
    if kind == "predict_log":
        _predict(servable, log.predict_log.request)
    elif kind == "classify_log":
        _example_request(servable, log.classify_log.request, examples.CLASSIFY)
    elif kind == "regress_log":
        _example_request(servable, log.regress_log.request, examples.REGRESS)
    else:
        raise ServingError(StatusCode.UNIMPLEMENTED, f"Unsupported log_type for warmup: {kind}")
    return True


def replay_warmup(servable) -> int:
    """Run every record of ``servable.path``'s warm-up file through ``servable``; returns how many ran
    (0 when the version has no warm-up file). Raises ``WarmupError`` on the first failure."""
    path = os.path.join(servable.path, ASSETS_EXTRA, WARMUP_FILE)
    if not os.path.isfile(path):
        return 0
    ran = 0
    index = 0
    try:
        for index, record in enumerate(tf.data.TFRecordDataset(path).take(MAX_RECORDS + 1).as_numpy_iterator(), 1):
            if index > MAX_RECORDS:
                raise WarmupError(f"Number of warmup records exceeds the maximum ({MAX_RECORDS}) at {path}")
            try:
                log = prediction_log_pb2.PredictionLog.FromString(record)
            except DecodeError:
                raise WarmupError(f"Failed to parse warmup record {index} from {path}") from None
            try:
                ran += _run_record(servable, log)
            except ServingError as exc:
                raise WarmupError(f"warmup record {index} from {path} failed: {exc.code.name}: {exc.message}") from None
    except tf.errors.DataLossError as exc:   # "{{function_node ...}} corrupted record at 0 ... [Op:...]"
        reason = re.sub(r"\{\{.*?\}\}\s*", "", exc.message.splitlines()[0]).split(" [Op:")[0]
        raise WarmupError(f"{path} after record {index}: {reason}. Please verify your warmup data is in "
                          f"TFRecord format.") from None
    return ran

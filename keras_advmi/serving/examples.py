"""Classify and Regress on ``tf.Example`` inputs, as TF Serving serves them.

A signature with method name ``tensorflow/serving/classify`` takes the serialized examples as input
``inputs`` and answers ``classes`` (string [n, k]) and/or ``scores`` (float [n, k]); one with
``tensorflow/serving/regress`` answers ``outputs`` (float [n] or [n, 1]). The checks and their
messages are those of ``tensorflow_serving/servables/tensorflow/classifier.cc`` and
``regressor.cc``. REST ``examples`` / ``context`` JSON becomes ``tf.train.Example`` protos as
``tensorflow_serving/util/json_tensor.cc`` builds them (a number with a fraction or exponent is a
float feature, an integer or bool an int64 feature, a string or ``{"b64": ...}`` a bytes feature);
an example with context is serialized as context + example (protobuf merge, example wins), as
``InputToSerializedExampleTensor`` does.
"""

from __future__ import annotations

import json

import numpy as np
import tensorflow as tf
from tensorflow.core.example import feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from . import codec, tensors
from .errors import invalid_argument

CLASSIFY = tf.saved_model.CLASSIFY_METHOD_NAME       # "tensorflow/serving/classify"
REGRESS = tf.saved_model.REGRESS_METHOD_NAME         # "tensorflow/serving/regress"
_KIND = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


def _add_value(value, name, feature):
    kind = feature.WhichOneof("kind")

    def want(k):
        if kind not in (None, k):
            raise invalid_argument(f"Unexpected element type in feature: {name} expecting type: {_KIND[kind]}")
    if isinstance(value, bool):
        want("int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
        want("bytes_list")
        feature.bytes_list.value.append(codec.b64_bytes(value["b64"]))
    elif isinstance(value, str):
        want("bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogatepass"))
    elif isinstance(value, float):
        want("float_list")
        feature.float_list.value.append(value)
    elif isinstance(value, int):
        want("int64_list")
        if value >= 2 ** 63:
            raise invalid_argument(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        if value < -2 ** 63:
            raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: Number")
        feature.int64_list.value.append(value)
    else:
        raise invalid_argument(f"Feature: {name} has element with unexpected JSON type: {codec.json_type(value)}")


def _check_object(value):
    if not isinstance(value, dict):
        raise invalid_argument(f"Example must be JSON object but got JSON {codec.json_type(value)}")


def example_from_json(value, example):
    _check_object(value)
    for name, content in value.items():
        feature = feature_pb2.Feature()
        for v in content if isinstance(content, list) else [content]:
            _add_value(v, name, feature)
        example.features.feature[name].CopyFrom(feature)


def check_input_json(doc):
    """The structure checks of a parsed REST classify/regress body that cost O(1): ``context`` is
    an object, ``examples`` a non-empty list (TF Serving's messages); the values are checked when
    the Examples are built."""
    if "context" in doc:
        _check_object(doc["context"])
    if "examples" not in doc:
        raise invalid_argument(f"JSON Value: {_debug(doc)} When method is classify, key 'examples' is expected and was not found")
    if not isinstance(doc["examples"], list):
        raise invalid_argument(f"JSON Value: {_debug(doc)} Expecting 'examples' value to be an list/array")
    if not doc["examples"]:
        raise invalid_argument(f"JSON Value: {_debug(doc)} 'examples' value is an empty array")


def input_from_json(doc):
    """A parsed REST classify/regress body (dict) -> tensorflow.serving.Input."""
    check_input_json(doc)
    inp = input_pb2.Input()
    if "context" in doc:
        example_from_json(doc["context"], inp.example_list_with_context.context)
    target = (inp.example_list_with_context.examples if "context" in doc else inp.example_list.examples)
    for e in doc["examples"]:
        example_from_json(e, target.add())
    return inp


def _debug(doc, limit=200):
    """``doc`` as compact JSON cut at ``limit`` characters; written lazily (the pure-Python
    encoder's generator), so a 60 MB document costs what its first ``limit`` characters cost."""
    text, pieces = "", json.JSONEncoder(separators=(",", ":")).iterencode(doc)
    for piece in pieces:
        text += piece
        if len(text) > limit:
            return text[:limit] + "..."
    return text


def serialized_from_json(doc, max_rows=None, max_bytes=None):
    """A parsed REST classify/regress body -> object ndarray of serialized tf.Example (shape [n]);
    more than ``max_rows`` examples are refused before any is built."""
    check_input_json(doc)
    tensors.check_rows(len(doc["examples"]), max_rows)
    return serialized(input_from_json(doc), max_rows, max_bytes)


def serialized(inp, max_rows=None, max_bytes=None):
    """tensorflow.serving.Input -> object ndarray of serialized tf.Example (shape [n])."""
    kind = inp.WhichOneof("kind")
    out = []
    if kind == "example_list":
        out = [e.SerializeToString() for e in inp.example_list.examples]
    elif kind is not None:
        ctx = inp.example_list_with_context.context.SerializeToString()
        out = [ctx + e.SerializeToString() for e in inp.example_list_with_context.examples]
    if not out:
        raise invalid_argument("Input is empty.")
    tensors.check_rows(len(out), max_rows)
    if max_bytes is not None and sum(map(len, out)) > max_bytes:
        raise tensors.too_large_error(sum(map(len, out)), max_bytes)
    return np.array(out, dtype=object)


def signature_for(servable, name, method):
    """Resolve and check a classify/regress signature; returns its name. TF Serving's messages."""
    name = name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
    sig = servable.signature_defs.get(name)
    if sig is None:
        raise invalid_argument(f"No signature was found with the name: {name}")
    what = "classification" if method == CLASSIFY else "regression"
    if sig.method_name != method:
        raise invalid_argument(f"Expected {what} signature method_name to be {method}. Was: {sig.method_name}")
    if len(sig.inputs) != 1:
        raise invalid_argument("Expected one input Tensor.")
    if "inputs" not in sig.inputs:
        raise invalid_argument(f"No {what} inputs found in SignatureDef: {sig}")
    if method == CLASSIFY:
        if len(sig.outputs) not in (1, 2):
            raise invalid_argument(f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if "classes" not in sig.outputs and "scores" not in sig.outputs:
            raise invalid_argument('Expected classification signature outputs to contain at least one of "classes" or '
                                   f'"scores". Signature was: {sig}')
    else:
        if len(sig.outputs) != 1:
            raise invalid_argument(f"Expected one output Tensor, found {len(sig.outputs)}")
        if "outputs" not in sig.outputs:
            raise invalid_argument(f"No regression outputs found in SignatureDef: {sig}")
    return name


def classification_result(outputs, n):
    """Signature outputs -> ClassificationResult (checks of PostProcessClassificationResult)."""
    classes, scores = outputs.get("classes"), outputs.get("scores")
    for label, t, kind in (("classes", classes, "O"), ("scores", scores, "f")):
        if t is None:
            continue
        t = np.asarray(t)
        if t.ndim != 2:
            raise invalid_argument(f"Expected Tensor shape: [batch_size num_classes] but got {list(t.shape)}")
        if (t.dtype.kind in "OS") != (kind == "O") or (kind == "f" and t.dtype != np.float32):
            raise invalid_argument(f"Expected {label} Tensor of {'DT_STRING' if kind == 'O' else 'DT_FLOAT'}. Got: {t.dtype}")
        if t.shape[0] != n:
            raise invalid_argument(f"Expected {label} output batch size of {n}. Got: {t.shape[0]}")
    if classes is not None and scores is not None and np.shape(classes)[1] != np.shape(scores)[1]:
        raise invalid_argument(f"Tensors class and score should match in dim_size(1). Got {np.shape(classes)[1]} vs. "
                               f"{np.shape(scores)[1]}")
    k = np.shape(classes if classes is not None else scores)[1]
    result = classification_pb2.ClassificationResult()
    for i in range(n):
        c = result.classifications.add()
        for j in range(k):
            cl = c.classes.add()
            if classes is not None:
                label = classes[i][j]
                cl.label = label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
            if scores is not None:
                cl.score = float(scores[i][j])
    return result


def regression_result(outputs, n):
    """Signature outputs -> RegressionResult (checks of PostProcessRegressionResult)."""
    t = np.asarray(outputs["outputs"])
    if not (t.ndim == 1 or t.ndim == 2 and t.shape[1] == 1):
        raise invalid_argument(f"Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got "
                               f"{list(t.shape)}")
    if t.shape[0] != n:
        raise invalid_argument(f"Input batch size did not match output batch size: {n} vs. {t.shape[0]}")
    if t.dtype != np.float32:
        raise invalid_argument(f"Expected output Tensor of DT_FLOAT.  Got: {t.dtype}")
    result = regression_pb2.RegressionResult()
    for v in t.reshape(-1):
        result.regressions.add(value=float(v))
    return result


def _float32_json(v):
    """A float32 in its shortest round-trip digits (as TF Serving's WriteDecimal keeps float32)."""
    return float(np.format_float_positional(np.float32(v), unique=True, trim="0")) if np.isfinite(v) else v


def classification_json(result):
    if not result.classifications:
        raise invalid_argument("Cannot convert empty ClassificationResults to JSON")
    return {"results": [[[c.label, _float32_json(c.score)] for c in cls.classes]
                        for cls in result.classifications]}


def regression_json(result):
    if not result.regressions:
        raise invalid_argument("Cannot convert empty RegressionResults to JSON")
    return {"results": [_float32_json(r.value) for r in result.regressions]}

"""TF Serving's REST JSON <-> NumPy: request forms (row ``instances`` / columnar ``inputs``), response
forms (``predictions`` / ``outputs``), ``{"b64": ...}`` strings, and shape/dtype checks.

Error texts follow ``tensorflow_serving/util/json_tensor.cc`` (e.g. "Missing 'inputs' or
'instances' key", "No values in 'instances' array"); all are INVALID_ARGUMENT (HTTP 400).

Speed (docs/benchmarks.md, "REST throughput of the embedded server"): bodies are parsed with
orjson (strict RFC 8259, ~5x faster than ``json``); a body orjson refuses (``NaN``/``Infinity``
literals, which TF Serving accepts, integers beyond 64 bits, non-UTF-8, nesting deeper than
1024, where orjson >= 3.9.15 stops instead of overflowing the C stack) is parsed again by ``json``, so every accept/reject decision and error
text stays the one ``json`` gives (``json`` accepts whatever orjson accepts as long as the
recursion limit is above ~1030; it is 3000 once TensorFlow is imported). Responses of numeric,
finite outputs are written by orjson straight from the NumPy arrays; float32 values are written
in their shortest round-trip form (``0.1``, not the float64 expansion ``0.10000000149011612``),
which, like TF Serving's own ``WriteDecimal``, reads back to the same float32. Other outputs
(NaN/Inf, strings, bytes) take the ``json`` path with the same float32 digits and
``NaN``/``Infinity`` literals.
"""

from __future__ import annotations

import base64
import json

import numpy as np
import orjson

from .errors import ServingError

_ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY


def _bad(msg):
    return ServingError("INVALID_ARGUMENT", msg)


def _decode_b64(value):
    if isinstance(value, dict) and set(value) == {"b64"}:
        try:
            return base64.b64decode(value["b64"], validate=True)
        except Exception:
            raise _bad("Unable to base64 decode") from None
    if isinstance(value, list):
        return [_decode_b64(v) for v in value]
    return value


def to_array(value, spec, name):
    """A JSON value -> ndarray of the spec's dtype; checks element types, raggedness and shape."""
    dtype = spec.dtype.as_numpy_dtype
    if spec.dtype.name == "string":
        return np.asarray(_decode_b64(value), dtype=object)
    try:
        arr = np.asarray(value)
    except ValueError:
        raise _bad(f"Encountered list at unexpected size for input: {name}") from None
    if arr.dtype == object or arr.dtype.kind in "USO":
        raise _bad(f"Type: {type(value).__name__ if arr.ndim == 0 else 'mixed/string'} is not of "
                   f"expected type: {spec.dtype.name} for input: {name}")
    if arr.dtype.kind == "b" and spec.dtype.name != "bool":
        raise _bad(f"Type: Bool is not of expected type: {spec.dtype.name} for input: {name}")
    if arr.dtype.kind == "f" and np.dtype(dtype).kind in "iu":
        raise _bad(f"JSON Value: {arr.ravel()[:1].tolist()} is not of expected type: "
                   f"{spec.dtype.name} for input: {name}")
    arr = arr.astype(dtype)
    want = spec.shape
    if want.rank is not None:
        got = arr.shape
        ok = len(got) == want.rank and all(w is None or w == g for w, g in zip(want.as_list(), got))
        if not ok:
            raise _bad(f"Input to reshape / signature for input '{name}': expected shape "
                       f"{[-1 if d is None else d for d in want.as_list()]}, got {list(got)}")
    return arr


def parse_json(body):
    if not body:
        raise _bad("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:   # same accept/reject decisions and messages as json (NaN/Infinity, big ints, ...)
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise _bad(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise _bad("JSON Parse error: Is not object")
    return doc


def parse_predict(body, input_specs_for):
    """Body bytes -> (signature_name, {input: ndarray}, row_format). ``input_specs_for(sig)``
    returns (signature name resolved, {input name: tf.TensorSpec})."""
    doc = parse_json(body)
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise _bad("'signature_name' key must be a string value.")
    sig, specs = input_specs_for(sig)
    if "instances" in doc and "inputs" in doc:
        raise _bad("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in doc:
        inst = doc["instances"]
        if not isinstance(inst, list):
            raise _bad("Excepting 'instances' to be an list/array")
        if not inst:
            raise _bad("No values in 'instances' array")
        is_obj = [isinstance(e, dict) and "b64" not in e for e in inst]
        if any(is_obj):
            if not all(is_obj):
                raise _bad("Expecting object but got list at item "
                           f"{is_obj.index(False)} of input list")
            for i, e in enumerate(inst):
                if set(e) != set(specs):
                    raise _bad(f"Failed to process element: {i} of 'instances' list. JSON object must "
                               f"only have keys: {','.join(sorted(specs))}")
            cols = {k: [e[k] for e in inst] for k in specs}
        else:
            if len(specs) > 1:
                raise _bad("instances is a plain list, but expecting list of objects as multiple input "
                           "tensors required as per tensorinfo_map")
            cols = {next(iter(specs)): inst}
        return sig, {k: to_array(v, specs[k], k) for k, v in cols.items()}, True
    if "inputs" in doc:
        val = doc["inputs"]
        if isinstance(val, dict) and "b64" not in val:
            missing = [k for k in specs if k not in val]
            if missing:
                raise _bad(f"Missing named input: {missing[0]} in 'inputs' object.")
            cols = {k: val[k] for k in specs}
        else:
            if len(specs) > 1:
                raise _bad("inputs is a plain value/list, but expecting an object as multiple input "
                           "tensors required as per tensorinfo_map")
            cols = {next(iter(specs)): val}
        return sig, {k: to_array(v, specs[k], k) for k, v in cols.items()}, False
    raise _bad("Missing 'inputs' or 'instances' key")


def _jsonable(arr):
    arr = np.asarray(arr)
    if arr.dtype == object or arr.dtype.kind == "S":
        f = np.vectorize(lambda b: {"b64": base64.b64encode(b).decode()}
                         if isinstance(b, bytes) else b, otypes=[object])
        return f(arr).tolist() if arr.ndim else f(arr).item()
    if arr.dtype.kind == "f" and arr.dtype.itemsize < 8:
        # float32 digits as orjson writes them: shortest string that reads back to the same float32
        return arr.astype(str).astype(np.float64).tolist()
    return arr.tolist()


def _fast_ok(arr):
    """True when orjson writes this array exactly as the ``json`` path would (numbers only)."""
    kind = arr.dtype.kind
    if kind in "iub":
        return arr.dtype.itemsize <= 8
    if kind == "f":
        return arr.dtype.itemsize in (4, 8) and bool(np.isfinite(arr).all())
    return False


def encode_predict(outputs, row_format):
    """{name: ndarray} -> TF Serving JSON bytes (``predictions`` rows or ``outputs`` columns).

    NaN/Inf are written as ``NaN``/``Infinity`` as TF Serving does."""
    names = sorted(outputs)
    arrays = {k: np.asarray(outputs[k]) for k in names}
    arrays = {k: a if a.flags.c_contiguous else a.copy() for k, a in arrays.items()}
    if row_format:
        n = {int(arrays[k].shape[0]) for k in names if arrays[k].ndim}
        if len(n) != 1:
            raise ServingError("INVALID_ARGUMENT", "Tensor name: outputs have different batch sizes; "
                               "use the columnar 'inputs' format")
        rows = n.pop()
    if all(_fast_ok(a) for a in arrays.values()):
        arrays = {k: a[()] if a.ndim == 0 else a for k, a in arrays.items()}   # orjson wants scalars
        if row_format:
            if len(names) == 1:
                doc = {"predictions": arrays[names[0]]}
            else:
                doc = {"predictions": [{k: arrays[k][i] for k in names} for i in range(rows)]}
        else:
            doc = {"outputs": arrays[names[0]] if len(names) == 1 else arrays}
        try:
            return orjson.dumps(doc, option=_ORJSON_NUMPY)
        except orjson.JSONEncodeError:   # pragma: no cover - dtype orjson does not know
            pass
    cols = {k: _jsonable(arrays[k]) for k in names}
    if row_format:
        preds = cols[names[0]] if len(names) == 1 else [{k: cols[k][i] for k in names} for i in range(rows)]
        return json.dumps({"predictions": preds}, allow_nan=True).encode()
    return json.dumps({"outputs": cols[names[0]] if len(names) == 1 else cols}, allow_nan=True).encode()

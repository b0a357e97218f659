"""TF Serving's REST JSON <-> NumPy: request forms (row ``instances`` / columnar ``inputs``), response
forms (``predictions`` / ``outputs``), ``{"b64": ...}`` strings, and shape/dtype checks.

Error texts follow ``tensorflow_serving/util/json_tensor.cc`` (e.g. "Missing 'inputs' or
'instances' key", "No values in 'instances' array"); all are INVALID_ARGUMENT (HTTP 400).

Types (``to_array``): the JSON type of every value is checked against the signature's dtype before
anything is converted, as ``AddValueToTensor`` checks it: a float tensor takes numbers only (a
``true`` among float pixels is refused, not read as 1.0), an integer tensor integers in its range,
a bool tensor ``true``/``false``, a string tensor strings or ``{"b64": ...}``. The nested lists are
walked one level at a time with C-level passes, so the check is linear in the element count. The
columnar ``inputs`` object must hold exactly the signature's inputs: an extra key is refused, as
in the row form and over gRPC (TF Serving's own columnar parser skips one).

Size limits (``tensors.py``): ``BodyBound`` refuses, while the body streams in and before the JSON
is parsed, a body that must hold more rows or decoded bytes than allowed. In a JSON document every
array of n values has n - 1 commas, so a numeric tensor of E elements per row written as R rows
(row or columnar form, nested to any depth) carries R * E - 1 commas; ``bytes.count(b",")`` (C
speed) therefore bounds the rows and elements a body can decode to without building its millions
of Python objects (parsing them would cost seconds and many times the body's size). After parsing, the
row count and the decoded size are checked again exactly, before any array is allocated.

Speed (docs/results.md, "Serving throughput and limits"): bodies are parsed with
orjson (strict RFC 8259, faster than ``json``); a body orjson refuses (``NaN``/``Infinity``
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
import itertools
import json

import numpy as np
import orjson
from grpc import StatusCode

from . import tensors
from .errors import ServingError, invalid_argument

_ORJSON_NUMPY = orjson.OPT_SERIALIZE_NUMPY
_DEBUG_BYTES = 256       # json_tensor.cc's kMaxJsonDebugStringBytes


def b64_bytes(text):
    """The bytes of a ``{"b64": text}`` value; INVALID_ARGUMENT when ``text`` is not base64."""
    try:
        return base64.b64decode(text, validate=True)
    except ValueError:
        raise invalid_argument("Unable to base64 decode") from None


def signature_name(doc):
    """A parsed body's ``signature_name`` ("" when absent); INVALID_ARGUMENT unless a string."""
    sig = doc.get("signature_name", "")
    if not isinstance(sig, str):
        raise invalid_argument("'signature_name' key must be a string value.")
    return sig


_SLACK_COMMAS = 16     # commas a valid body may have outside its tensors (keys, signature_name)


def _per_row(spec):
    """(elements per row, item size) of a numeric spec with every non-batch dimension fixed, else None."""
    if spec.dtype.name == "string" or spec.shape.rank is None or spec.shape.rank == 0:
        return None
    dims = spec.shape.as_list()[1:]
    if any(d is None for d in dims):
        return None
    return int(np.prod(dims, dtype=np.int64)), spec.dtype.size


class BodyBound:
    """Refuse, while the body streams in, a body too big for every signature in ``signatures`` (an
    iterable of {input: tf.TensorSpec}); string inputs disable it (their text may hold any commas).

    ``feed(chunk)`` counts commas; ``exceeded`` turns true as soon as the body must hold more rows
    or decoded bytes than allowed, and the caller then stops keeping the chunks. ``error()`` is the
    refusal, with the count of the whole body once it has been read."""

    def __init__(self, signatures, max_rows=None, max_bytes=None):
        self.max_rows, self.max_bytes, self.commas, self.exceeded = max_rows, max_bytes, 0, False
        self.per_row = self.item = None
        per_sig = []
        for specs in signatures:
            if any(s.dtype.name == "string" for s in specs.values()):
                return
            rows = [_per_row(s) for s in specs.values()]
            per_sig.append((None if any(r is None for r in rows) else sum(r[0] for r in rows),
                            min(s.dtype.size for s in specs.values())))
        if not per_sig:
            return
        self.item = min(i for _, i in per_sig)
        if max_rows is not None and all(e for e, _ in per_sig):
            self.per_row = min(e for e, _ in per_sig)

    def feed(self, chunk):
        if self.item is None:
            return
        self.commas += chunk.count(b",")
        sure = self.commas + 1 - _SLACK_COMMAS      # at least this many values are tensor elements
        if self.max_bytes is not None and sure * self.item > self.max_bytes or \
                self.per_row is not None and sure // self.per_row > self.max_rows:
            self.exceeded = True

    def error(self):
        values = self.commas + 1
        if self.per_row is not None and (values - _SLACK_COMMAS) // self.per_row > self.max_rows:
            return tensors.task_size_error(values // self.per_row, self.max_rows)
        return tensors.too_large_error(values * self.item, self.max_bytes)


def _json_shape(value):
    """Shape of a nested JSON list read along its first elements (raggedness is found later)."""
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def debug_string(value, limit=_DEBUG_BYTES):
    """A JSON value printed for an error message, cut at ``limit`` characters (as TF Serving's
    ``JsonValueToDebugString`` cuts at 256 bytes); the cost is bounded by the value's size."""
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):
        text = repr(value)
    return text if len(text) <= limit else text[:limit] + "..."


def json_type(v):
    """``JsonTypeString`` of ``json_tensor.cc``."""
    if v is None:
        return "Null"
    return {bool: "True" if v else "False", dict: "Object", list: "Array", str: "String"}.get(type(v), "Number")


def type_error(value, dtype_name):
    return invalid_argument(f"JSON Value: {debug_string(value)} Type: {json_type(value)} is not of expected type: "
                            f"{dtype_name}")


def _is_b64(v):
    return type(v) is dict and len(v) == 1 and type(v.get("b64")) is str


# JSON leaf types a tensor of each NumPy kind accepts (``AddValueToTensor`` in ``json_tensor.cc``:
# rapidjson's IsNumber is false for true/false, so a boolean is never a number)
_LEAF_TYPES = {"f": {int, float}, "c": {int, float}, "i": {int}, "u": {int}, "b": {bool}}


def _leaves(value):
    """(shape, flat list of leaves) of a nested JSON list, read one level at a time with C-level
    passes (``map``, ``set``, ``chain``), so the cost is linear in the element count and nothing
    is converted. Every list of one level must have the same length and the leaves must all sit at
    the same depth; otherwise INVALID_ARGUMENT with ``json_tensor.cc``'s wording."""
    rank = len(_json_shape(value))
    shape, level = [], [value]
    while True:
        types = set(map(type, level))
        if list not in types:
            return shape, level
        depth = len(shape)
        if len(types) > 1:          # lists and values side by side
            if depth < rank:
                odd = next(v for v in level if type(v) is not list)
                raise invalid_argument(f"JSON Value: {debug_string(odd)} found at incorrect level: {depth + 1} in the JSON "
                                       f"DOM. Expected at level: {rank}")
            raise invalid_argument(f"Encountered list at unexpected level: {depth} expected < {rank}")
        sizes = set(map(len, level))
        if len(sizes) > 1:
            want = len(level[0])
            got = next(len(v) for v in level if len(v) != want)
            raise invalid_argument(f"Encountered list at unexpected size: {got} at level: {depth} expected size: {want}")
        shape.append(sizes.pop())
        if shape[-1] == 0:
            return shape, []
        level = list(itertools.chain.from_iterable(level))


def to_array(value, spec, name, max_bytes=None):
    """A JSON value -> ndarray of the spec's dtype. Checked before anything is converted: the
    element count times the item size against ``max_bytes`` (along the first elements, then
    exactly), raggedness, and the JSON type of every leaf (a number for float tensors, an integer
    for integer tensors, true/false only for bool tensors, a string or ``{"b64": ...}`` for string
    tensors); then the shape against the spec. A string is never handed to NumPy for a numeric
    tensor (NumPy would first build a ``<U{longest}`` array of 4 bytes per character per element)."""
    kind = "O" if spec.dtype.name == "string" else np.dtype(spec.dtype.as_numpy_dtype).kind
    dtype_name = tensors.type_name(spec.dtype.as_datatype_enum)
    item = 8 if kind == "O" else spec.dtype.size
    if max_bytes is not None:
        n = int(np.prod(_json_shape(value), dtype=object)) * item
        if n > max_bytes:
            raise tensors.too_large_error(n, max_bytes)
    shape, leaves = _leaves(value)
    if max_bytes is not None and len(leaves) * item > max_bytes:
        raise tensors.too_large_error(len(leaves) * item, max_bytes)
    types = set(map(type, leaves))
    if kind == "O":
        if not types <= {str, dict} or dict in types and not all(map(_is_b64, filter(_is_dict, leaves))):
            raise type_error(next(v for v in leaves if not (type(v) is str or _is_b64(v))), dtype_name)
        arr = np.empty(len(leaves), dtype=object)
        arr[:] = [b64_bytes(v["b64"]) if type(v) is dict else v for v in leaves] if dict in types else leaves
    else:
        allowed = _LEAF_TYPES.get(kind)
        if allowed is None:
            raise ServingError(StatusCode.UNIMPLEMENTED, f"Conversion of JSON Value: {debug_string(value)} "
                                                f"to type: {dtype_name}")
        if not types <= allowed:
            raise type_error(next(v for v in leaves if type(v) not in allowed), dtype_name)
        try:
            with np.errstate(over="ignore"):    # a float beyond float32 is inf, as rapidjson's GetFloat
                arr = np.array(leaves, dtype=spec.dtype.as_numpy_dtype)
        except OverflowError:                   # an integer out of the dtype's range
            info = np.iinfo(spec.dtype.as_numpy_dtype) if kind in "iu" else None
            odd = next((v for v in leaves if info is None or not info.min <= v <= info.max), leaves[0])
            raise type_error(odd, dtype_name) from None
    arr = arr.reshape(shape)
    tensors.check_shape(arr.shape, spec, name)
    return arr


def _is_dict(v):
    return type(v) is dict


def parse_json(body):
    if not body:
        raise invalid_argument("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:   # same accept/reject decisions and messages as json (NaN/Infinity, big ints, ...)
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:
            raise invalid_argument(f"JSON Parse error: {exc}") from None
    if not isinstance(doc, dict):
        raise invalid_argument("JSON Parse error: Is not object")
    return doc


def parse_predict(body, input_specs_for, max_rows=None, max_bytes=None):
    """Body bytes -> (signature_name, {input: ndarray}, row_format). ``input_specs_for(sig)``
    returns (signature name resolved, {input name: tf.TensorSpec}). Requests of more than
    ``max_rows`` rows or ``max_bytes`` decoded bytes are refused before arrays are built."""
    doc = parse_json(body)
    sig, specs = input_specs_for(signature_name(doc))
    if "instances" in doc and "inputs" in doc:
        raise invalid_argument("Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in doc:
        inst = doc["instances"]
        if not isinstance(inst, list):
            raise invalid_argument("Excepting 'instances' to be an list/array")
        if not inst:
            raise invalid_argument("No values in 'instances' array")
        tensors.check_rows(len(inst), max_rows)
        is_obj = [isinstance(e, dict) and "b64" not in e for e in inst]
        if any(is_obj):
            if not all(is_obj):
                raise invalid_argument("Expecting object but got list at item "
                                       f"{is_obj.index(False)} of input list")
            for i, e in enumerate(inst):
                if set(e) != set(specs):
                    raise invalid_argument(f"Failed to process element: {i} of 'instances' list. JSON object must "
                                           f"only have keys: {','.join(sorted(specs))}")
            cols = {k: [e[k] for e in inst] for k in specs}
        else:
            if len(specs) > 1:
                raise invalid_argument("instances is a plain list, but expecting list of objects as multiple input "
                                       "tensors required as per tensorinfo_map")
            cols = {next(iter(specs)): inst}
        return sig, {k: to_array(v, specs[k], k, max_bytes) for k, v in cols.items()}, True
    if "inputs" in doc:
        val = doc["inputs"]
        if isinstance(val, dict) and not _is_b64(val):
            missing = [k for k in specs if k not in val]
            if missing:
                raise invalid_argument(f"Missing named input: {missing[0]} in 'inputs' object.")
            extra = sorted(k for k in val if k not in specs)
            if extra:       # as the row form and gRPC refuse one (TF Serving's columnar parser skips it)
                raise tensors.unknown_alias_error(extra[0], specs)
            cols = {k: val[k] for k in specs}
        else:
            if len(specs) > 1:
                raise invalid_argument("inputs is a plain value/list, but expecting an object as multiple input "
                                       "tensors required as per tensorinfo_map")
            cols = {next(iter(specs)): val}
        for v in cols.values():
            tensors.check_rows(len(v) if isinstance(v, list) else 1, max_rows)
        return sig, {k: to_array(v, specs[k], k, max_bytes) for k, v in cols.items()}, False
    raise invalid_argument("Missing 'inputs' or 'instances' key")


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
            raise invalid_argument("Tensor name: outputs have different batch sizes; "
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

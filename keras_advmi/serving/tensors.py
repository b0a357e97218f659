"""Request tensors checked before they are queued: TensorProto <-> NumPy and the per-request checks.

Every request is checked alone against its signature before it joins a batch, so a bad request never fails its batch-mates:

- dtype: a tensor whose dtype is not the signature's is refused, never converted (TF's ``_Arg``
  kernel: "Expects arg[0] to be float but int32 is provided"), INVALID_ARGUMENT;
- a TensorProto TensorFlow's ``Tensor::FromProto`` would not parse (unknown dtype, negative
  dimension, unknown rank, ``tensor_content`` whose length is not elements x item size) gets TF
  Serving's "tensor parsing error: ALIAS", INVALID_ARGUMENT;
- rows: a request of more rows than ``max_rows`` gets the batch scheduler's "Task size N is larger
  than maximum input batch size M" (``tensorflow/core/kernels/batching_util``), INVALID_ARGUMENT;
- size: the decoded element count times the item size is checked against the request byte cap
  *before* anything is allocated (a 58-byte TensorProto can claim 512 MB: typed values shorter than
  the shape are broadcast from the last one, as ``Tensor::FromProto`` does), RESOURCE_EXHAUSTED
  over gRPC and 413 over REST;
- shape: rank and the fixed dimensions of the signature's ``TensorSpec``, INVALID_ARGUMENT.

Outputs are written as TF Serving writes them by default (``Tensor::AsProtoField``: typed value
fields, not ``tensor_content``).
"""

from __future__ import annotations

import math

import numpy as np
from grpc import StatusCode
from tensorflow.core.framework import tensor_pb2, types_pb2

from .errors import ServingError, body_too_large, invalid_argument

# DataType enum -> (numpy dtype, TensorProto field holding typed values, TF's DataTypeString)
_TYPES = {
    types_pb2.DT_FLOAT: (np.float32, "float_val", "float"),
    types_pb2.DT_DOUBLE: (np.float64, "double_val", "double"),
    types_pb2.DT_HALF: (np.float16, "half_val", "half"),
    types_pb2.DT_INT8: (np.int8, "int_val", "int8"),
    types_pb2.DT_INT16: (np.int16, "int_val", "int16"),
    types_pb2.DT_INT32: (np.int32, "int_val", "int32"),
    types_pb2.DT_INT64: (np.int64, "int64_val", "int64"),
    types_pb2.DT_UINT8: (np.uint8, "int_val", "uint8"),
    types_pb2.DT_UINT16: (np.uint16, "int_val", "uint16"),
    types_pb2.DT_UINT32: (np.uint32, "uint32_val", "uint32"),
    types_pb2.DT_UINT64: (np.uint64, "uint64_val", "uint64"),
    types_pb2.DT_BOOL: (np.bool_, "bool_val", "bool"),
    types_pb2.DT_COMPLEX64: (np.complex64, "scomplex_val", "complex64"),
    types_pb2.DT_COMPLEX128: (np.complex128, "dcomplex_val", "complex128"),
    types_pb2.DT_STRING: (object, "string_val", "string"),
}
_BY_NUMPY = {np.dtype(v[0]): k for k, v in _TYPES.items() if v[0] is not object}


def type_name(enum):
    """TF's DataTypeString for a DataType enum value ("float", "int32", "variant", ...)."""
    if enum in _TYPES:
        return _TYPES[enum][2]
    name = types_pb2.DataType.Name(enum) if enum in types_pb2.DataType.values() else f"unknown dtype {enum}"
    return name[3:].lower() if name.startswith("DT_") else name


def task_size_error(rows, max_rows):
    return invalid_argument(f"Task size {rows} is larger than maximum input batch size {max_rows}")


def too_large_error(nbytes, max_bytes):
    """Decoded tensors over the byte cap: RESOURCE_EXHAUSTED over gRPC (as for a message over the cap),
    413 over REST (``errors.body_too_large``)."""
    return body_too_large(f"Decoded request tensors of {nbytes} bytes exceed the limit of {max_bytes} bytes")


def unknown_alias_error(alias, aliases):
    """An input alias the signature lacks (``aliases``: the signature's), as ``PreProcessPrediction`` says it."""
    return invalid_argument(f"input tensor alias not found in signature: {alias}. Inputs expected to be in "
                            f"the set {{{','.join(sorted(aliases))}}}.")


def _dtype_error(index, want, got):
    return invalid_argument(f"Expects arg[{index}] to be {type_name(want)} but {type_name(got)} is provided")


def _parse_error(alias):
    return invalid_argument(f"tensor parsing error: {alias}")


def check_rows(rows, max_rows):
    if max_rows is not None and rows > max_rows:
        raise task_size_error(rows, max_rows)


_SPECS = {}     # id(TensorSpec) -> (spec, DataType enum, dims list or None); specs live with their model


def _spec_info(spec):
    info = _SPECS.get(id(spec))
    if info is None or info[0] is not spec:
        dims = spec.shape.as_list() if spec.shape.rank is not None else None
        info = _SPECS[id(spec)] = (spec, spec.dtype.as_datatype_enum, dims)
    return info


def check_shape(shape, spec, alias):
    """Rank and fixed dimensions of ``spec`` (a tf.TensorSpec); unknown rank accepts any shape."""
    dims = _spec_info(spec)[2]
    if dims is None:
        return
    if len(shape) != len(dims) or any(w is not None and w != g for w, g in zip(dims, shape)):
        raise invalid_argument(f"Input to reshape / signature for input '{alias}': expected shape "
                               f"{[-1 if d is None else d for d in dims]}, got {list(shape)}")


def from_proto(proto, alias, spec, index=0, max_rows=None, max_bytes=None):
    """TensorProto -> ndarray after every check above; nothing is allocated before they pass."""
    want = _spec_info(spec)[1]
    if proto.dtype not in _TYPES:
        known = proto.dtype in types_pb2.DataType.values() and proto.dtype != types_pb2.DT_INVALID
        if known and proto.dtype != want:     # e.g. DT_VARIANT, DT_RESOURCE
            raise _dtype_error(index, want, proto.dtype)
        raise _parse_error(alias)
    shape = tuple(d.size for d in proto.tensor_shape.dim)
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in shape):
        raise _parse_error(alias)
    if proto.dtype != want:
        raise _dtype_error(index, want, proto.dtype)
    check_rows(shape[0] if shape else 1, max_rows)
    check_shape(shape, spec, alias)
    np_type, field, _ = _TYPES[proto.dtype]
    n = math.prod(shape)
    if np_type is object:
        values = list(proto.string_val)
        if max_bytes is not None and sum(map(len, values)) + 8 * n > max_bytes:
            raise too_large_error(sum(map(len, values)) + 8 * n, max_bytes)
        return _broadcast(np.array(values, dtype=object), n, np.dtype(object)).reshape(shape)
    item = np.dtype(np_type).itemsize
    if max_bytes is not None and n * item > max_bytes:
        raise too_large_error(n * item, max_bytes)
    if proto.tensor_content:
        if len(proto.tensor_content) != n * item:
            raise _parse_error(alias)
        return np.frombuffer(proto.tensor_content, dtype=np_type).reshape(shape).copy()
    raw = getattr(proto, field)
    if proto.dtype == types_pb2.DT_HALF:
        values = np.asarray(raw, dtype=np.uint16).view(np.float16)
    elif proto.dtype in (types_pb2.DT_COMPLEX64, types_pb2.DT_COMPLEX128):
        flat = np.asarray(raw, dtype=np.float32 if proto.dtype == types_pb2.DT_COMPLEX64 else np.float64)
        values = flat[: len(flat) // 2 * 2].view(np_type)
    else:
        values = np.asarray(raw, dtype=np_type)
    return _broadcast(values, n, np.dtype(np_type)).reshape(shape)


def _broadcast(values, n, dtype):
    """``Tensor::FromProto`` for typed fields: none -> zeros, fewer -> repeat the last, more -> cut."""
    if len(values) >= n:
        return values[:n]
    if len(values) == 0:
        return np.zeros(n, dtype) if dtype != object else np.full(n, b"", dtype=object)
    return np.concatenate([values, np.full(n - len(values), values[-1], dtype=dtype)])


def to_proto(arr, proto=None):
    """ndarray -> TensorProto with typed value fields, like TF Serving's default ``AsProtoField``;
    fills ``proto`` (e.g. ``response.outputs[alias]``) when given."""
    arr = np.asarray(arr)
    proto = tensor_pb2.TensorProto() if proto is None else proto
    for d in arr.shape:
        proto.tensor_shape.dim.add().size = d
    if arr.dtype == object or arr.dtype.kind in "SU":
        proto.dtype = types_pb2.DT_STRING
        proto.string_val.extend(v if isinstance(v, bytes) else str(v).encode() for v in arr.ravel())
        return proto
    enum = _BY_NUMPY.get(arr.dtype)
    if enum is None:
        raise ServingError(StatusCode.INTERNAL, f"cannot encode an output of dtype {arr.dtype}")
    proto.dtype = enum
    field = _TYPES[enum][1]
    flat = arr.ravel()
    if enum == types_pb2.DT_HALF:
        flat = flat.view(np.uint16).astype(np.int32)
    elif arr.dtype.kind == "c":
        flat = flat.view(np.float32 if enum == types_pb2.DT_COMPLEX64 else np.float64)
    getattr(proto, field).extend(flat.tolist())
    return proto


def decode_inputs(proto_inputs, specs, max_rows, max_bytes):
    """PredictRequest.inputs -> {alias: ndarray}, checked as TF Serving's ``PreProcessPrediction``: the
    aliases sent are exactly the signature's, each tensor as ``from_proto`` checks it (gRPC requests
    and warm-up records)."""
    sent, want = set(proto_inputs), set(specs)
    if len(sent) != len(want):
        raise invalid_argument((
            f"input size does not match signature: {len(sent)}!={len(want)} len({{{','.join(sorted(sent))}}}) "
            f"!= len({{{','.join(sorted(want))}}}). Sent extra: {{{','.join(sorted(sent - want))}}}. "
            f"Missing but required: {{{','.join(sorted(want - sent))}}}."))
    extra = sorted(sent - want)
    if extra:
        raise unknown_alias_error(extra[0], want)
    return {k: from_proto(proto_inputs[k], k, specs[k], i, max_rows, max_bytes)
            for i, k in enumerate(sorted(specs))}

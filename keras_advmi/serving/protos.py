"""TF Serving's protos as the server and the client hold and print them.

A version's state is one ``tensorflow.serving.ModelVersionStatus`` from the registry to the wire: the
gRPC ``GetModelStatus`` answers it as it is, and the REST API prints it with ``to_json``, which is
``json_format.MessageToDict`` with the options TF Serving's REST API prints its protos with
(primitive fields printed even when they hold their default, proto field names kept; checked against
TF Serving's documents in ``tests/test_serving_parity.py``). So an available version prints as TF Serving prints it::

    {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}

(int64 versions as strings, enums by name). Metadata (``SignatureDefMap``, ``ModelSpec``) is printed
the same way.
"""

from __future__ import annotations

from collections.abc import Mapping

from google.protobuf import json_format
from google.protobuf.message import Message
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import get_model_metadata_pb2, get_model_status_pb2, model_pb2, status_pb2

ModelVersionStatus = get_model_status_pb2.ModelVersionStatus
GetModelStatusResponse = get_model_status_pb2.GetModelStatusResponse


def version_status(version: int, state: str, error_code: str = "OK", error_message: str = "") -> ModelVersionStatus:
    """A ``ModelVersionStatus``: ``state`` a ``ModelVersionStatus.State`` name ("AVAILABLE", "END", ...),
    ``error_code`` a ``tensorflow.error.Code`` name ("OK", "UNKNOWN", ...). The ``status`` field is
    always set, as TF Serving's ``GetModelStatusImpl`` sets it, so that it is printed."""
    return ModelVersionStatus(version=int(version), state=state,
                              status=status_pb2.StatusProto(error_code=error_code, error_message=error_message))


def to_json(message: Message) -> dict:
    """``message`` as TF Serving's REST API prints it (defaults included, proto field names)."""
    return json_format.MessageToDict(message, always_print_fields_with_no_presence=True,
                                     preserving_proto_field_name=True)


def status_from_json(doc: dict) -> GetModelStatusResponse:
    """A REST status document (``{"model_version_status": [...]}``) read back into its proto."""
    return json_format.ParseDict(doc, GetModelStatusResponse(), ignore_unknown_fields=True)


def signature_def_map(signature_defs: Mapping[str, meta_graph_pb2.SignatureDef]) -> get_model_metadata_pb2.SignatureDefMap:
    """The ``SignatureDefMap`` that ``GetModelMetadata`` packs under ``"signature_def"``."""
    sdm = get_model_metadata_pb2.SignatureDefMap()
    for name, sdef in signature_defs.items():
        sdm.signature_def[name].CopyFrom(sdef)
    return sdm


def metadata_json(model_spec: model_pb2.ModelSpec, sdm: get_model_metadata_pb2.SignatureDefMap) -> dict:
    """The REST metadata document: ``{"model_spec": ..., "metadata": {"signature_def": ...}}``, each
    proto printed with ``to_json`` (as ``http_rest_api_util.cc`` prints them)."""
    return {"model_spec": to_json(model_spec), "metadata": {"signature_def": to_json(sdm)}}

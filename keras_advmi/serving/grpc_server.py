"""gRPC front end on ``grpc.aio``: PredictionService.Predict / GetModelMetadata and
ModelService.GetModelStatus, on tensorflow-serving-api's generated servicers, so the official
``prediction_service_pb2_grpc.PredictionServiceStub`` works unchanged."""

from __future__ import annotations

import asyncio

import grpc
import tensorflow as tf
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from .errors import ServingError

_STATES = get_model_status_pb2.ModelVersionStatus.State


def _spec_args(spec):
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label or None
    return spec.name, version, label


class _Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server):
        self.server = server

    async def _fail(self, context, exc):
        await context.abort(exc.grpc_code, exc.message)

    async def Predict(self, request, context):
        try:
            servable = self.server.registry.resolve(*_spec_args(request.model_spec))
            sig, specs = servable.input_specs_for(request.model_spec.signature_name)
            loop = asyncio.get_running_loop()

            def decode():
                out = {}
                for k in specs:
                    if k not in request.inputs:
                        raise ServingError("INVALID_ARGUMENT", f"input tensor alias not found in signature: "
                                                               f"{k}")
                    out[k] = tf.make_ndarray(request.inputs[k])
                extra = set(request.inputs) - set(specs)
                if extra:
                    raise ServingError("INVALID_ARGUMENT", f"input tensor alias not found in signature: "
                                                           f"{sorted(extra)[0]}")
                return out
            inputs = await loop.run_in_executor(self.server.io_pool, decode)
            outputs = await asyncio.wrap_future(self.server.executor.submit(servable, sig, inputs))
        except ServingError as exc:
            await self._fail(context, exc)
        resp = predict_pb2.PredictResponse()
        resp.model_spec.name = servable.name
        resp.model_spec.version.value = servable.version
        resp.model_spec.signature_name = sig
        wanted = set(request.output_filter) or set(outputs)
        for k in wanted & set(outputs):
            resp.outputs[k].CopyFrom(tf.make_tensor_proto(outputs[k]))
        return resp

    async def GetModelMetadata(self, request, context):
        try:
            if list(request.metadata_field) != ["signature_def"]:
                raise ServingError("INVALID_ARGUMENT", "Metadata field signature_def must be requested")
            servable = self.server.registry.resolve(*_spec_args(request.model_spec))
        except ServingError as exc:
            await self._fail(context, exc)
        resp = get_model_metadata_pb2.GetModelMetadataResponse()
        resp.model_spec.name = servable.name
        resp.model_spec.version.value = servable.version
        sdm = get_model_metadata_pb2.SignatureDefMap()
        for k, v in servable.signature_defs.items():
            sdm.signature_def[k].CopyFrom(v)
        resp.metadata["signature_def"].Pack(sdm)
        return resp


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server):
        self.server = server

    async def GetModelStatus(self, request, context):
        name, version, _ = _spec_args(request.model_spec)
        try:
            rows = self.server.registry.status(name, version)
        except ServingError as exc:
            await context.abort(exc.grpc_code, exc.message)
        resp = get_model_status_pb2.GetModelStatusResponse()
        for r in rows:
            s = resp.model_version_status.add(version=int(r["version"]), state=_STATES.Value(r["state"]))
            s.status.error_code = getattr(grpc.StatusCode, r["status"]["error_code"]).value[0]
            s.status.error_message = r["status"]["error_message"]
        return resp


def make_server(server, host, port):
    """A started-later grpc.aio server; returns (aio_server, bound_port)."""
    aio = grpc.aio.server(options=[("grpc.max_receive_message_length", server.max_body_bytes)])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(_Prediction(server), aio)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(_ModelService(server), aio)
    bound = aio.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    return aio, bound

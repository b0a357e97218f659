"""gRPC front end on ``grpc.aio``: PredictionService.Predict / Classify / Regress / MultiInference /
GetModelMetadata and ModelService.GetModelStatus, on tensorflow-serving-api's generated servicers,
so the official ``prediction_service_pb2_grpc.PredictionServiceStub`` works unchanged.

Each request is decoded and checked alone (``tensors.from_proto``: dtype, shape, rows, decoded
bytes) before it is queued, on the event loop (on the I/O pool above ``admission.INLINE_BODY_BYTES``),
and joins the batcher so a batch wakes the loop once (the same path as REST, through the server's
public methods). Client mistakes answer INVALID_ARGUMENT / NOT_FOUND / RESOURCE_EXHAUSTED with TF
Serving's messages; anything unexpected is logged and answers INTERNAL with no exception text. Every
RPC is counted in the metrics with ``entrypoint="GRPC"``. A message that does not parse as the method's request answers INVALID_ARGUMENT ("Failed to parse
the request as tensorflow.serving.PredictRequest"), not grpc.aio's UNKNOWN. ``output_filter`` is
checked in one pass before the model runs (TF Serving's order: unknown alias, then duplicate).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time

import grpc
import tensorflow as tf
from google.protobuf import message, message_factory
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2, inference_pb2, model_service_pb2,
                                     model_service_pb2_grpc, predict_pb2, prediction_service_pb2,
                                     prediction_service_pb2_grpc, regression_pb2)

from . import admission, examples, protos, tensors
from .errors import INTERNAL_MESSAGE, ServingError, invalid_argument

logger = logging.getLogger(__name__)


def _spec_args(spec):
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label or None
    return spec.name, version, label


def _set_spec(spec, servable, signature=None):
    spec.name = servable.name
    spec.version.value = servable.version
    if signature is not None:
        spec.signature_name = signature


def check_output_filter(names, signature_outputs):
    """``PredictRequest.output_filter`` checked as TF Serving's ``PreProcessPrediction`` checks it,
    before the model runs and in one pass (linear in its length): every alias is an output of the
    signature (``signature_outputs``, a mapping), none is named twice. Returns the aliases."""
    seen = set()
    for alias in names:
        if alias not in signature_outputs:
            raise invalid_argument(f"output tensor alias not found in signature: {alias} Outputs "
                                   f"expected to be in the set {{{','.join(sorted(signature_outputs))}}}.")
        if alias in seen:
            raise invalid_argument(f"duplicate output tensor alias: {alias}")
        seen.add(alias)
    return list(names)


class _Undecodable:
    """Stands for a request message that did not parse: a deserializer that raises makes grpc.aio
    answer UNKNOWN with the exception's class in the text; the handler answers INVALID_ARGUMENT."""

    def __init__(self, type_name):
        self.type_name = type_name


def _lenient(message_class):
    def parse(data):
        try:
            return message_class.FromString(data)
        except (message.DecodeError, RecursionError, ValueError):   # bad bytes, or nested too deep
            return _Undecodable(message_class.DESCRIPTOR.full_name)
    return parse


_API_NAMES = {"Predict": "predict", "Classify": "classify", "Regress": "regress",
              "MultiInference": "multi_inference", "GetModelMetadata": "metadata", "GetModelStatus": "status"}


def _add_service(aio, servicer, service, call):
    """Register ``servicer``'s methods for ``service`` (a ServiceDescriptor) as the generated
    ``add_*Servicer_to_server`` does, with request deserializers that never raise."""
    handlers = {}
    for m in service.methods:
        method = getattr(servicer, m.name)
        if not inspect.iscoroutinefunction(method):     # the generated base's stub, e.g. HandleReloadConfigRequest
            method = _unimplemented(f"{service.full_name}/{m.name}")
        method = _guarded(method, _API_NAMES.get(m.name, m.name), call)
        handlers[m.name] = grpc.unary_unary_rpc_method_handler(
            method, request_deserializer=_lenient(message_factory.GetMessageClass(m.input_type)),
            response_serializer=message_factory.GetMessageClass(m.output_type).SerializeToString)
    aio.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))


def _unimplemented(name):
    async def handler(request, context):
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, f"Method not implemented: {name}")
    return handler


def _guarded(method, api, call):
    async def handler(request, context):
        if isinstance(request, _Undecodable):
            async def refuse():
                raise invalid_argument(f"Failed to parse the request as {request.type_name}")
            return await call(api, "", context, refuse)
        return await method(request, context)
    return handler


class _Prediction(prediction_service_pb2_grpc.PredictionServiceServicer):
    def __init__(self, server):
        self.server = server

    async def _call(self, api, name, context, work):
        """Run ``work()``; map ServingError to its gRPC code, anything else to INTERNAL; count it."""
        t0, status = time.perf_counter(), grpc.StatusCode.INTERNAL
        self.server.rpcs_in_flight += 1         # on the event loop: no lock (read by ModelServer.drain)
        try:
            resp = await work()
            status = grpc.StatusCode.OK
            return resp
        except ServingError as exc:
            status = exc.code
            await context.abort(exc.code, exc.message)
        except asyncio.CancelledError:  # a BaseException: the client cancelled or its deadline passed
            remaining = context.time_remaining()
            expired = remaining is not None and remaining <= 0.01
            status = grpc.StatusCode.DEADLINE_EXCEEDED if expired else grpc.StatusCode.CANCELLED
            raise
        except Exception:  # never exception text to the client
            logger.exception("gRPC %s failed", api)
            await context.abort(grpc.StatusCode.INTERNAL, INTERNAL_MESSAGE)
        finally:
            self.server.rpcs_in_flight -= 1
            self.server.metrics.observe(name, api, status, (time.perf_counter() - t0) * 1e6, "GRPC")

    def _resolve(self, spec):
        return self.server.resolve(*_spec_args(spec))

    async def Predict(self, request, context):
        async def work():
            servable = self._resolve(request.model_spec)
            sig, specs = servable.input_specs_for(request.model_spec.signature_name)
            args = (request.inputs, specs, self.server.max_rows, self.server.max_body_bytes)
            if sum(t.ByteSize() for t in request.inputs.values()) <= admission.INLINE_BODY_BYTES:
                inputs = tensors.decode_inputs(*args)
            else:       # a big tensor is decoded off the loop, so it does not stall the others
                inputs = await self.server.off_loop(tensors.decode_inputs, *args)
            wanted = check_output_filter(request.output_filter, servable.signature_defs[sig].outputs)
            outputs = await self.server.run(servable, sig, inputs)
            wanted = wanted or sorted(outputs)
            resp = predict_pb2.PredictResponse()
            _set_spec(resp.model_spec, servable, sig)
            for alias in wanted:
                tensors.to_proto(outputs[alias], resp.outputs[alias])
            return resp
        return await self._call("predict", request.model_spec.name, context, work)

    async def _serialized(self, inp):
        """``examples.serialized`` of ``inp`` (one serialization per Example: off the loop for a big input)."""
        args = (inp, self.server.max_rows, self.server.max_body_bytes)
        if inp.ByteSize() <= admission.INLINE_BODY_BYTES:
            return examples.serialized(*args)
        return await self.server.off_loop(examples.serialized, *args)

    async def _infer(self, servable, signature_name, method, inp, batch=None):
        """One classify/regress evaluation -> (signature, ClassificationResult | RegressionResult, batch):
        the signature is checked before ``inp`` is serialized, unless ``batch`` (its serialized Examples,
        from an earlier evaluation of the same input) is given."""
        sig = examples.signature_for(servable, signature_name, method)
        if batch is None:
            batch = await self._serialized(inp)
        outputs = await self.server.run(servable, sig, {"inputs": batch})
        if method == examples.CLASSIFY:
            return sig, examples.classification_result(outputs, len(batch)), batch
        return sig, examples.regression_result(outputs, len(batch)), batch

    async def _example_rpc(self, request, context, method, response_type, entrypoint):
        """Classify or Regress: one signature of the model on ``request.input`` (tf.Examples)."""
        async def work():
            servable = self._resolve(request.model_spec)
            sig, result, _ = await self._infer(servable, request.model_spec.signature_name, method, request.input)
            resp = response_type()
            _set_spec(resp.model_spec, servable, sig)
            resp.result.CopyFrom(result)
            return resp
        return await self._call(entrypoint, request.model_spec.name, context, work)

    async def Classify(self, request, context):
        return await self._example_rpc(request, context, examples.CLASSIFY, classification_pb2.ClassificationResponse,
                                       "classify")

    async def Regress(self, request, context):
        return await self._example_rpc(request, context, examples.REGRESS, regression_pb2.RegressionResponse,
                                       "regress")

    async def MultiInference(self, request, context):
        """Several classify/regress signatures of one model on one input (``multi_inference.cc``)."""
        name = request.tasks[0].model_spec.name if request.tasks else ""

        async def work():
            if not request.tasks:
                raise invalid_argument("Found MultiInferenceRequest with no tasks.")
            seen = set()
            for task in request.tasks:
                if not task.model_spec.name:
                    raise invalid_argument("Found ModelSpec with an empty model name.")
                if task.model_spec.name != name:
                    raise invalid_argument("All ModelSpecs in a MultiInferenceRequest must access the same model name.")
                sig = task.model_spec.signature_name or tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY
                if sig in seen:
                    raise invalid_argument(f"Duplicate evaluation of signature: {sig}")
                seen.add(sig)
                if task.method_name not in (examples.CLASSIFY, examples.REGRESS):
                    raise ServingError(grpc.StatusCode.UNIMPLEMENTED,
                                       f"Unsupported signature method_name: {task.method_name}")
            servable = self._resolve(request.tasks[0].model_spec)
            for sig in seen:
                if sig not in servable.signature_defs:
                    raise invalid_argument(f"Requested signature not found in model graph: {sig}")
            resp, batch = inference_pb2.MultiInferenceResponse(), None
            for task in request.tasks:      # the input serialized once, for the first task, as TF Serving does
                sig, result, batch = await self._infer(servable, task.model_spec.signature_name, task.method_name,
                                                       request.input, batch)
                out = resp.results.add()
                _set_spec(out.model_spec, servable, sig)
                if task.method_name == examples.CLASSIFY:
                    out.classification_result.CopyFrom(result)
                else:
                    out.regression_result.CopyFrom(result)
            return resp
        return await self._call("multi_inference", name, context, work)

    async def GetModelMetadata(self, request, context):
        async def work():
            if not request.metadata_field:
                raise invalid_argument("GetModelMetadataRequest must specify at least one metadata_field")
            for field in request.metadata_field:
                if field != "signature_def":
                    raise invalid_argument(f"Metadata field {field} is not supported")
            servable = self._resolve(request.model_spec)
            resp = get_model_metadata_pb2.GetModelMetadataResponse()
            _set_spec(resp.model_spec, servable)
            resp.metadata["signature_def"].Pack(protos.signature_def_map(servable.signature_defs))
            return resp
        return await self._call("metadata", request.model_spec.name, context, work)


class _ModelService(model_service_pb2_grpc.ModelServiceServicer):
    def __init__(self, server):
        self.server = server
        self._call = _Prediction(server)._call

    async def GetModelStatus(self, request, context):
        """As ``GetModelStatusImpl``: ``model_spec.version`` narrows the answer, a label does not."""
        async def work():
            if not request.HasField("model_spec"):
                raise invalid_argument("Missing ModelSpec")
            name, version, _ = _spec_args(request.model_spec)
            return self.server.model_status(name, version)
        return await self._call("status", request.model_spec.name, context, work)


def make_server(server, host, port):
    """A started-later grpc.aio server; returns (aio_server, bound_port)."""
    aio = grpc.aio.server(options=[("grpc.max_receive_message_length", server.max_body_bytes)])
    prediction = _Prediction(server)
    _add_service(aio, prediction, prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"],
                 prediction._call)
    _add_service(aio, _ModelService(server), model_service_pb2.DESCRIPTOR.services_by_name["ModelService"],
                 prediction._call)
    bound = aio.add_insecure_port(f"{host}:{port}")
    if not bound:
        raise OSError(f"cannot bind gRPC to {host}:{port}")
    return aio, bound

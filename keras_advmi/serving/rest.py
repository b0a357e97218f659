"""REST front end on aiohttp, speaking TF Serving's REST API.

Routes: ``POST /v1/models/NAME[/versions/N|/labels/L]:predict``, ``GET /v1/models/NAME[/versions/N]``
(model_version_status), ``GET .../metadata`` (signature_def), ``GET <monitoring path>`` (Prometheus).
Errors answer ``{"error": msg}`` with TF Serving's status for the canonical code (400, 404, 413,
503...). The model call runs off the event loop (batcher threads / Direct pool) and wakes the loop
once per batch. JSON decoding and encoding (orjson, tens of microseconds for an MNIST image) run
on the loop for bodies up to ``INLINE_BODY_BYTES``: a thread hop costs more than the work and buys
no parallelism under the GIL. Larger bodies are decoded and encoded on the ``io_pool`` so one huge
request does not stall the others. Measurements: docs/benchmarks.md, "REST throughput of the
embedded server".

Why aiohttp: already a dependency of the project (no new package), one process, and the batching
queue needs no ASGI layer; see docs/benchmarks.md ("Serving load") for the measured throughput.
"""

from __future__ import annotations

import asyncio
import gc
import json
import re
import time

from aiohttp import web
from google.protobuf import json_format

from . import codec
from .errors import ServingError

INLINE_BODY_BYTES = 256 * 1024
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>-?\d+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<rest>/metadata|:[A-Za-z]+)?$")


def _parse_without_gc(body, input_specs_for):
    """``codec.parse_predict`` with the cyclic GC paused: the JSON document's lists (one per pixel
    row for images) are all freed by refcount before it returns, so pausing keeps them from
    triggering collections that would promote live request data into the old generations."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return codec.parse_predict(body, input_specs_for)
    finally:
        if enabled:
            gc.enable()


def _error(exc):
    return web.Response(status=exc.http_status, text=json.dumps({"error": exc.message}),
                        content_type="application/json")


def make_app(server):
    """aiohttp Application bound to a ``ModelServer`` (registry, executor, metrics, limits)."""

    async def dispatch(request):
        t0 = time.perf_counter()
        m = _ROUTE.match(request.path)
        name, api, status = (m["name"] if m else "?"), "other", "INTERNAL"
        try:
            if not m:
                raise ServingError("INVALID_ARGUMENT", f"Malformed request: {request.method} {request.path}")
            version = int(m["version"]) if m["version"] is not None else None
            label, rest = m["label"], m["rest"]
            if request.method == "POST" and rest == ":predict":
                api = "predict"
                resp = await _predict(request, name, version, label)
            elif request.method == "GET" and rest == "/metadata":
                api = "metadata"
                resp = _metadata(name, version, label)
            elif request.method == "GET" and rest is None and label is None:
                api = "status"
                resp = {"model_version_status": server.registry.status(name, version)}
            else:
                raise ServingError("INVALID_ARGUMENT", f"Malformed request: {request.method} {request.path}")
            out = resp if isinstance(resp, web.Response) else web.json_response(resp)
            status = "OK"
            return out
        except ServingError as exc:
            status = exc.code
            return _error(exc)
        finally:
            server.metrics.observe(name, api, status,
                                   (time.perf_counter() - t0) * 1e6)

    async def _predict(request, name, version, label):
        if request.content_length is not None and request.content_length > server.max_body_bytes:
            raise ServingError("PAYLOAD_TOO_LARGE", f"Request body of {request.content_length} bytes "
                               f"exceeds the limit of {server.max_body_bytes} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise ServingError("PAYLOAD_TOO_LARGE", f"Request body exceeds the limit of "
                               f"{server.max_body_bytes} bytes") from None
        servable = server.registry.resolve(name, version, label)
        loop = asyncio.get_running_loop()
        inline = len(body) <= INLINE_BODY_BYTES
        if inline:
            sig, inputs, row = _parse_without_gc(body, servable.input_specs_for)
        else:
            sig, inputs, row = await loop.run_in_executor(server.io_pool, codec.parse_predict, body,
                                                          servable.input_specs_for)
        outputs = await server.executor.submit(servable, sig, inputs, loop=loop)
        if inline:
            data = codec.encode_predict(outputs, row)
        else:
            data = await loop.run_in_executor(server.io_pool, codec.encode_predict, outputs, row)
        return web.Response(body=data, content_type="application/json", charset="utf-8")

    def _metadata(name, version, label):
        s = server.registry.resolve(name, version, label)
        defs = {k: json_format.MessageToDict(v, preserving_proto_field_name=True)
                for k, v in s.signature_defs.items()}
        return {"model_spec": {"name": name, "signature_name": "", "version": str(s.version)},
                "metadata": {"signature_def": {"signature_def": defs}}}

    async def metrics(request):
        return web.Response(text=server.metrics.text(server.executor.batches),
                            content_type="text/plain", charset="utf-8")

    async def too_large(request, handler):
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(ServingError("PAYLOAD_TOO_LARGE", "Request body exceeds the limit of "
                                       f"{server.max_body_bytes} bytes"))

    app = web.Application(client_max_size=server.max_body_bytes, middlewares=[web.middleware(too_large)])
    if server.monitoring_path:
        app.router.add_get(server.monitoring_path, metrics)
    app.router.add_route("*", "/{tail:.*}", dispatch)
    return app

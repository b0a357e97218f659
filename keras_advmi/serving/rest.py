"""REST front end on aiohttp, speaking TF Serving's REST API.

Routes, as ``tensorflow_serving/model_servers/http_rest_api_util.cc`` matches them (ASCII digits for
versions, case-insensitive): ``POST /v1/models/NAME[/versions/N|/labels/L]:(predict|classify|regress)``,
``GET /v1/models/NAME[/versions/N|/labels/L]`` (model_version_status; like TF Serving's
``GetModelStatusImpl``, a label does not narrow it; the registry's ``GetModelStatusResponse`` printed
by ``protos.to_json``), ``GET .../metadata`` (signature_def, printed the same way),
``GET <monitoring path>`` (Prometheus), ``GET /ready`` (readiness: 200, or 503 while a model is
loading or the server drains). Errors answer ``{"error": msg}`` with TF Serving's status for
the canonical code (400, 404, 413, 503...); nothing unexpected reaches a client as a traceback
(it is logged; the client gets a JSON 500). The model call runs off the event loop (batcher
threads / Direct pool) and wakes the loop once per batch. JSON decoding and encoding (orjson) run
on the loop for bodies up to ``INLINE_BODY_BYTES``: for such bodies a thread hop costs more than the
work and buys no parallelism under the GIL. Larger bodies are
decoded and encoded on the ``io_pool`` so one huge request does not stall the others.
Measurements: docs/results.md, "Serving throughput and limits".

What a body may cost (``admission.py``): compressed bodies are inflated here under a ratio bound
(64x + 1 MiB), bodies over ``INLINE_BODY_BYTES`` reserve their worst-case size from a server-wide
budget (4x ``max_body_bytes``) before they are read on, and their parses (JSON, tf.Examples) run
off the loop one at a time. ``Expect: 100-continue`` with a Content-Length over the cap gets 413
without "100 Continue".

Why aiohttp: already a dependency of the project (no new package), one process, and the batching
queue needs no ASGI layer; see docs/results.md ("Serving throughput and limits") for the measured throughput.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import re
import time

from aiohttp import HttpVersion11, web
from tensorflow_serving.apis import model_pb2

from . import admission, codec, examples, protos
from .errors import ServingError
from .registry import parse_version

logger = logging.getLogger(__name__)
INLINE_BODY_BYTES = admission.INLINE_BODY_BYTES
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<rest>/metadata|:[A-Za-z]+)?$", re.IGNORECASE)
_API = {":predict": "predict", ":classify": "classify", ":regress": "regress"}


def _parse_without_gc(fn, *args):
    """``fn(*args)`` (a JSON parse) with the cyclic GC paused: the JSON document's lists (one per
    pixel row for images) are all freed by refcount before it returns, so pausing keeps them from
    triggering collections that would promote live request data into the old generations."""
    enabled = gc.isenabled()
    if enabled:
        gc.disable()
    try:
        return fn(*args)
    finally:
        if enabled:
            gc.enable()


def _error(exc):
    return web.Response(status=exc.http_status, text=json.dumps({"error": exc.message}),
                        content_type="application/json")


def make_app(server) -> web.Application:
    """aiohttp Application bound to a ``ModelServer`` (registry, executor, metrics, limits)."""

    async def dispatch(request):
        t0 = time.perf_counter()
        m = _ROUTE.match(request.path)
        name, api, status = (m["name"] if m else ""), "other", "INTERNAL"
        try:
            if not m:
                raise ServingError("INVALID_ARGUMENT", f"Malformed request: {request.method} {request.path}")
            version = None
            if m["version"] is not None:
                version = parse_version(m["version"])
                if version is None:
                    raise ServingError("INVALID_ARGUMENT",
                                       f"Failed to convert version: {m['version'][:32]} to numeric.")
            label, rest = m["label"], (m["rest"] or "").lower() or None
            if request.method == "POST" and rest in _API:
                api = _API[rest]
                resp = await (_predict(request, name, version, label) if api == "predict"
                              else _classify_regress(request, name, version, label, api))
            elif request.method == "GET" and rest == "/metadata":
                api = "metadata"
                resp = _metadata(name, version, label)
            elif request.method == "GET" and rest is None:
                api = "status"
                resp = protos.to_json(server.registry.status(name, version))
            else:
                raise ServingError("INVALID_ARGUMENT", f"Malformed request: {request.method} {request.path}")
            out = resp if isinstance(resp, web.Response) else web.json_response(resp)
            status = "OK"
            return out
        except ServingError as exc:
            status = exc.code
            return _error(exc)
        except asyncio.CancelledError:  # a BaseException: the handler was cancelled (shutdown)
            status = "CANCELLED"
            raise
        except Exception:  # never a traceback to the client
            logger.exception("REST %s %s failed", request.method, request.path[:200])
            return _error(ServingError("INTERNAL", "Internal error; see the server log"))
        finally:
            if status == "OK" and request.transport is None:
                status = "CANCELLED"        # the client disconnected before its answer
            server.metrics.observe(name, api, status, (time.perf_counter() - t0) * 1e6, "REST")

    async def _body(request, claim, bound=None):
        """The decoded request body. Over ``max_body_bytes`` (declared, received or inflated) it is
        413; compressed bodies are inflated under ``admission.Inflater``'s ratio bound; a body
        passing ``INLINE_BODY_BYTES`` first reserves its worst-case size on ``claim`` (503 when the
        server-wide budget stays full for ``read_timeout``). Receiving must take less than
        ``read_timeout`` (408; time spent waiting for the budget is not counted). Once ``bound`` (a
        ``codec.BodyBound``) says the body is too big its chunks are counted, not kept, so a 27 MB
        body of 100,000 rows never sits in memory."""
        declared, cap = request.content_length, server.max_body_bytes
        if declared is not None and declared > cap:
            raise admission.too_large(cap, declared)
        inflater = admission.Inflater.for_header(request.headers.get("Content-Encoding"), cap)
        worst = declared if inflater is None else inflater.worst_case(declared)
        if worst is None:
            worst = cap
        chunks, size = [], 0

        async def read(limit):
            """Read until the end (True) or until more than ``limit`` decoded bytes (False)."""
            nonlocal size
            while True:
                raw = await request.content.readany()
                if not raw:
                    if inflater is not None:
                        inflater.finish()
                    return True
                data = raw if inflater is None else inflater.feed(raw)
                size += len(data)
                if size > cap:
                    raise admission.too_large(cap)
                if bound is not None:
                    bound.feed(data)        # counted to the end: the refusal names the whole count
                    if bound.exceeded:
                        chunks.clear()
                        continue
                chunks.append(data)
                if limit is not None and size > limit:
                    return False

        loop = asyncio.get_running_loop()
        deadline = loop.time() + server.read_timeout
        try:
            if worst > INLINE_BODY_BYTES and declared is not None and inflater is None:
                t = loop.time()
                await claim.reserve(worst, server.read_timeout)
                deadline += loop.time() - t
            async with asyncio.timeout_at(deadline):
                done = await read(None if claim.held else INLINE_BODY_BYTES)
            if not done:
                t = loop.time()
                await claim.reserve(worst, server.read_timeout)
                deadline += loop.time() - t
                async with asyncio.timeout_at(deadline):
                    await read(None)
        except ServingError:
            raise
        except TimeoutError:
            raise ServingError("REQUEST_TIMEOUT", f"Request body not received within {server.read_timeout:g} s"
                               ) from None
        except Exception as exc:   # aiohttp's payload errors: broken chunking, a connection cut mid-body
            raise ServingError("INVALID_ARGUMENT", f"Failed to read the request body: {type(exc).__name__}"
                               ) from None
        if bound is not None and bound.exceeded:
            raise bound.error()
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    async def _predict(request, name, version, label):
        servable = server.registry.resolve(name, version, label)
        max_rows, max_bytes = server.executor.max_rows, server.max_body_bytes
        async with admission.Claim(budget) as claim:
            body = await _body(request, claim, codec.BodyBound(servable.specs.values(), max_rows, max_bytes))
            inline = len(body) <= INLINE_BODY_BYTES
            args = (body, servable.input_specs_for, max_rows, max_bytes)
            if inline:
                sig, inputs, row = _parse_without_gc(codec.parse_predict, *args)
            else:       # off the loop, one large parse at a time
                sig, inputs, row = await parse_gate.run(codec.parse_predict, *args)
            del body, args
        loop = asyncio.get_running_loop()
        outputs = await server.executor.submit(servable, sig, inputs, loop=loop)
        if inline:
            data = codec.encode_predict(outputs, row)
        else:
            data = await loop.run_in_executor(server.io_pool, codec.encode_predict, outputs, row)
        return web.Response(body=data, content_type="application/json", charset="utf-8")

    async def _classify_regress(request, name, version, label, api):
        """As TF Serving: parse the JSON, then its structure (``signature_name``, ``context``,
        ``examples``), then the signature, then the Examples. Here the signature is checked before
        the Examples are built (the costly part, Python protobuf calls per feature), so a body whose
        Examples are bad and whose signature is wrong gets the signature's error, where TF Serving
        gives the Examples'. Large bodies are parsed and converted off the loop, one at a time."""
        servable = server.registry.resolve(name, version, label)
        method = examples.CLASSIFY if api == "classify" else examples.REGRESS
        max_rows, max_bytes = server.executor.max_rows, server.max_body_bytes
        async with admission.Claim(budget) as claim:
            body = await _body(request, claim)
            inline = len(body) <= INLINE_BODY_BYTES
            doc = codec.parse_json(body) if inline else await parse_gate.run(codec.parse_json, body)
            del body
            sig = doc.get("signature_name", "")
            if not isinstance(sig, str):
                raise ServingError("INVALID_ARGUMENT", "'signature_name' key must be a string value.")
            examples.check_input_json(doc)
            sig = examples.signature_for(servable, sig, method)
            args = (doc, max_rows, max_bytes)
            batch = examples.serialized_from_json(*args) if inline else \
                await parse_gate.run(examples.serialized_from_json, *args)
            del doc, args
        loop = asyncio.get_running_loop()
        outputs = await server.executor.submit(servable, sig, {"inputs": batch}, loop=loop)
        if api == "classify":
            return examples.classification_json(examples.classification_result(outputs, len(batch)))
        return examples.regression_json(examples.regression_result(outputs, len(batch)))

    def _metadata(name, version, label):
        """GetModelMetadataResponse printed as ``http_rest_api_util.cc`` prints it: each proto with
        its default-valued fields (``"name": ""`` of a dim, ``"unknown_rank": false``...)."""
        s = server.registry.resolve(name, version, label)
        spec = model_pb2.ModelSpec(name=name)
        spec.version.value = s.version
        return protos.metadata_json(spec, protos.signature_def_map(s.signature_defs))

    async def ready(request):
        """Readiness (``GET /ready``): 200 while serving, 503 while loading or draining; ``in_flight``
        counts the REST requests being answered."""
        ok, reason = server.readiness()
        return web.json_response({"ready": ok, "reason": reason, "in_flight": server.in_flight},
                                 status=200 if ok else 503)

    async def metrics(request):
        return web.Response(body=server.metrics.text(), content_type="text/plain", charset="utf-8")

    async def json_errors(request, handler):
        """aiohttp's own answers as TF Serving JSON: a path its router cannot match (a name with a
        newline) goes to ``dispatch``; a body over the cap is 413."""
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return _error(admission.too_large(server.max_body_bytes))
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return await dispatch(request)

    async def expect_continue(request):
        """``Expect: 100-continue``: a body declared over the cap gets its 413 at once, without
        "100 Continue", and the connection is closed; otherwise "100 Continue" as aiohttp sends it."""
        if request.version != HttpVersion11:
            return None
        expect = request.headers.get("Expect", "")
        if expect.lower() != "100-continue":
            return web.Response(status=417, text=json.dumps({"error": f"Unknown Expect: {expect[:100]}"}),
                                content_type="application/json")
        declared = request.content_length
        if declared is not None and declared > server.max_body_bytes:
            resp = _error(admission.too_large(server.max_body_bytes, declared))
            resp.force_close()
            return resp
        request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

    budget = admission.ByteBudget(admission.BUDGET_BODIES * server.max_body_bytes)
    parse_gate = admission.ParseGate(server.io_pool)
    # bodies are inflated by admission.Inflater (bounded), not by aiohttp
    app = web.Application(client_max_size=server.max_body_bytes, middlewares=[web.middleware(json_errors)],
                          handler_args={"auto_decompress": False})
    if server.monitoring_path:
        app.router.add_get(server.monitoring_path, metrics)
    app.router.add_get("/ready", ready)
    app.router.add_route("*", "/{tail:.*}", dispatch, expect_handler=expect_continue)
    return app

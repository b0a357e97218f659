"""REST front end on aiohttp, speaking TF Serving's REST API: ``RestApi(server).app()``.

Routes, as ``tensorflow_serving/model_servers/http_rest_api_util.cc`` matches them (ASCII digits for
versions, case-insensitive), one handler each: ``POST /v1/models/NAME[/versions/N|/labels/L]:predict``,
``:classify`` and ``:regress``; ``GET /v1/models/NAME[/versions/N|/labels/L]`` (model_version_status; like
TF Serving's ``GetModelStatusImpl``, a label does not narrow it; the registry's ``GetModelStatusResponse``
printed by ``protos.to_json``); ``GET .../metadata`` (signature_def, printed the same way); ``GET
<monitoring path>`` (Prometheus); ``GET /ready`` (readiness: 200, or 503 while a model is loading or the
server drains). Errors answer ``{"error": msg}`` with the HTTP status ``errors.HTTP_STATUS`` gives the
canonical code (400, 404, 503...; 413 and 408 from the body reader); nothing unexpected reaches a client
as a traceback (it is logged; the client gets a JSON 500). The model call runs off the event loop
(batcher threads / Direct pool) and wakes the loop once per batch. JSON decoding and encoding (orjson) run
on the loop for bodies up to ``admission.INLINE_BODY_BYTES``: for such bodies a thread hop costs more than
the work and buys no parallelism under the GIL. Larger bodies are decoded and encoded on the server's I/O
pool so one huge request does not stall the others. Measurements: docs/results.md, "Serving throughput
and limits".

What a body may cost (``admission.py``, read by ``body.read_body``): compressed bodies are inflated here
under a ratio bound (64x + 1 MiB), bodies over ``admission.INLINE_BODY_BYTES`` reserve their worst-case
size from a server-wide budget (4x ``max_body_bytes``) before they are read on, and their parses (JSON,
tf.Examples) run off the loop one at a time. ``Expect: 100-continue`` with a Content-Length over the cap
gets 413 without "100 Continue".

Draining (``ModelServer.drain``): every new request but readiness and the Prometheus page is answered 503
with ``Connection: close``; ``in_flight`` counts the requests inside a handler, which the drain waits for.

Why aiohttp: already a dependency of the project (no new package), one process, and the batching
queue needs no ASGI layer; see docs/results.md ("Serving throughput and limits") for the measured throughput.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import json
import logging
import re
import time
from http import HTTPStatus

from aiohttp import HttpVersion11, web
from grpc import StatusCode
from tensorflow_serving.apis import model_pb2

from . import admission, codec, examples, protos
from .body import Limits, read_body
from .errors import INTERNAL_MESSAGE, ServingError, invalid_argument
from .registry import parse_version

logger = logging.getLogger(__name__)
READY_PATH = "/ready"
SHUTTING_DOWN = "The server is shutting down"
_JSON = "application/json"
_ROUTE = re.compile(r"^/v1/models/(?P<name>[^/:]+)(?:/versions/(?P<version>[0-9]+)|/labels/(?P<label>[^/:]+))?"
                    r"(?P<rest>/metadata|:[A-Za-z]+)?$", re.IGNORECASE)
#: (HTTP method, what follows NAME[/versions/N|/labels/L], lower case) -> the API (and handler) it names
_APIS = {("POST", ":predict"): "predict", ("POST", ":classify"): "classify", ("POST", ":regress"): "regress",
         ("GET", "/metadata"): "metadata", ("GET", None): "status"}


@dataclasses.dataclass(frozen=True)
class ModelPath:
    """The servable a TF Serving URL names: the model, and at most one of a version and a label."""

    name: str
    version: int | None = None
    label: str | None = None


def model_path(match: re.Match) -> ModelPath:
    """The ModelPath of a URL ``_ROUTE`` matched; INVALID_ARGUMENT for a version that is no int64."""
    version = None
    if match["version"] is not None:
        version = parse_version(match["version"])
        if version is None:
            raise invalid_argument(f"Failed to convert version: {match['version'][:32]} to numeric.")
    return ModelPath(match["name"], version, match["label"])


def _malformed(request):
    return invalid_argument(f"Malformed request: {request.method} {request.path}")


def _json_error(status: int, message: str) -> web.Response:
    return web.Response(status=status, text=json.dumps({"error": message}), content_type=_JSON)


def error_response(exc: ServingError) -> web.Response:
    """TF Serving's error answer: ``{"error": message}`` with the error's HTTP status."""
    return _json_error(exc.http_status, exc.message)


def _middleware(method):
    """An aiohttp middleware calling ``method`` (aiohttp marks middlewares with an attribute, which a bound
    method cannot carry)."""
    return web.middleware(functools.partial(method))


class RestApi:
    """TF Serving's REST API for one ``ModelServer``, which it reaches through public methods only."""

    def __init__(self, server):
        self.server = server
        self.in_flight = 0          # requests inside a handler (readiness and the Prometheus page not counted)
        self._limits = Limits(server.max_body_bytes, server.read_timeout)
        self._budget = admission.ByteBudget(admission.BUDGET_BODIES * server.max_body_bytes)
        self._parse_gate = admission.ParseGate(server.io_pool)

    def app(self) -> web.Application:
        """The aiohttp Application: readiness, the Prometheus page, and every other path to ``dispatch``."""
        # bodies are inflated by admission.Inflater (bounded), not by aiohttp
        app = web.Application(client_max_size=self._limits.max_body_bytes,
                              middlewares=[_middleware(self._drain_gate), _middleware(self._aiohttp_errors)],
                              handler_args={"auto_decompress": False})
        if self.server.monitoring_path:
            app.router.add_get(self.server.monitoring_path, self.metrics)
        app.router.add_get(READY_PATH, self.ready)
        app.router.add_route("*", "/{tail:.*}", self.dispatch, expect_handler=self._expect_continue)
        return app

    # -- the TF Serving routes ------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        """Route a TF Serving URL to its handler; answer errors as TF Serving does; count the request."""
        t0, api, status = time.perf_counter(), "other", StatusCode.INTERNAL
        m = _ROUTE.match(request.path)
        name = m["name"] if m else ""
        try:
            if m is None:
                raise _malformed(request)
            path = model_path(m)
            api = _APIS.get((request.method, (m["rest"] or "").lower() or None), "other")
            if api == "other":
                raise _malformed(request)
            resp = await getattr(self, api)(request, path)
            status = StatusCode.OK
            return resp if isinstance(resp, web.Response) else web.json_response(resp)
        except ServingError as exc:
            status = exc.code
            return error_response(exc)
        except asyncio.CancelledError:  # a BaseException: the handler was cancelled (shutdown)
            status = StatusCode.CANCELLED
            raise
        except Exception:  # never a traceback to the client
            logger.exception("REST %s %s failed", request.method, request.path[:200])
            return error_response(ServingError(StatusCode.INTERNAL, INTERNAL_MESSAGE))
        finally:
            if status == StatusCode.OK and request.transport is None:
                status = StatusCode.CANCELLED        # the client disconnected before its answer
            self.server.metrics.observe(name, api, status, (time.perf_counter() - t0) * 1e6, "REST")

    async def status(self, request, path: ModelPath) -> dict:
        """``GET /v1/models/NAME``: GetModelStatusResponse as JSON."""
        return protos.to_json(self.server.model_status(path.name, path.version))

    async def metadata(self, request, path: ModelPath) -> dict:
        """GetModelMetadataResponse printed as ``http_rest_api_util.cc`` prints it: each proto with
        its default-valued fields (``"name": ""`` of a dim, ``"unknown_rank": false``...)."""
        s = self.server.resolve(path.name, path.version, path.label)
        spec = model_pb2.ModelSpec(name=path.name)
        spec.version.value = s.version
        return protos.metadata_json(spec, protos.signature_def_map(s.signature_defs))

    async def predict(self, request, path: ModelPath) -> web.Response:
        """``:predict``: ``instances`` (row) or ``inputs`` (columnar) in, ``predictions`` / ``outputs`` out."""
        servable = self.server.resolve(path.name, path.version, path.label)
        max_rows, max_bytes = self.server.max_rows, self._limits.max_body_bytes
        async with admission.Claim(self._budget) as claim:
            bound = codec.BodyBound(servable.specs.values(), max_rows, max_bytes)
            body = await read_body(request, claim, self._limits, bound)
            inline = len(body) <= admission.INLINE_BODY_BYTES
            sig, inputs, row = await self._parse(inline, codec.parse_predict, body, servable.input_specs_for,
                                                 max_rows, max_bytes)
            del body
        outputs = await self.server.run(servable, sig, inputs)
        data = codec.encode_predict(outputs, row) if inline else \
            await self.server.off_loop(codec.encode_predict, outputs, row)
        return web.Response(body=data, content_type=_JSON, charset="utf-8")

    async def classify(self, request, path: ModelPath) -> dict:
        """``:classify``: ``examples`` (+ ``context``) in, ``results`` of [label, score] pairs out."""
        return await self._examples(request, path, examples.CLASSIFY)

    async def regress(self, request, path: ModelPath) -> dict:
        """``:regress``: ``examples`` (+ ``context``) in, ``results`` of values out."""
        return await self._examples(request, path, examples.REGRESS)

    async def _examples(self, request, path, method):
        """As TF Serving: parse the JSON, then its structure (``signature_name``, ``context``,
        ``examples``), then the signature, then the Examples. Here the signature is checked before
        the Examples are built (the costly part, Python protobuf calls per feature), so a body whose
        Examples are bad and whose signature is wrong gets the signature's error, where TF Serving
        gives the Examples'. Large bodies are parsed and converted off the loop, one at a time."""
        servable = self.server.resolve(path.name, path.version, path.label)
        max_rows, max_bytes = self.server.max_rows, self._limits.max_body_bytes
        async with admission.Claim(self._budget) as claim:
            body = await read_body(request, claim, self._limits)
            inline = len(body) <= admission.INLINE_BODY_BYTES
            doc = await self._parse(inline, codec.parse_json, body)
            del body
            sig = codec.signature_name(doc)
            examples.check_input_json(doc)
            sig = examples.signature_for(servable, sig, method)
            batch = await self._parse(inline, examples.serialized_from_json, doc, max_rows, max_bytes)
            del doc
        outputs = await self.server.run(servable, sig, {"inputs": batch})
        if method == examples.CLASSIFY:
            return examples.classification_json(examples.classification_result(outputs, len(batch)))
        return examples.regression_json(examples.regression_result(outputs, len(batch)))

    async def _parse(self, inline, fn, *args):
        """``fn(*args)`` on the loop for an inline body, else on the I/O pool one large parse at a time."""
        return fn(*args) if inline else await self._parse_gate.run(fn, *args)

    # -- the server's own routes ----------------------------------------------------------------
    async def ready(self, request) -> web.Response:
        """Readiness (``GET /ready``): 200 while serving, 503 while loading or draining; ``in_flight``
        counts the REST requests being answered."""
        ok, reason = self.server.readiness()
        return web.json_response({"ready": ok, "reason": reason, "in_flight": self.in_flight},
                                 status=200 if ok else 503)

    async def metrics(self, request) -> web.Response:
        """The Prometheus page (``--monitoring_config_file``'s path)."""
        return web.Response(body=self.server.metrics.text(), content_type="text/plain", charset="utf-8")

    # -- middlewares and the Expect handler -----------------------------------------------------
    async def _drain_gate(self, request, handler):
        """Counts requests in flight; while the server drains, answers new ones 503 (readiness and the
        Prometheus page still answer, uncounted) and closes connections after each answer."""
        if request.path in (READY_PATH, self.server.monitoring_path):
            return await handler(request)
        if self.server.draining:
            resp = error_response(ServingError(StatusCode.UNAVAILABLE, SHUTTING_DOWN))
            resp.force_close()
            return resp
        self.in_flight += 1
        try:
            resp = await handler(request)
            if self.server.draining and isinstance(resp, web.Response):
                resp.force_close()          # no keep-alive: the next request goes to another replica
            return resp
        finally:
            self.in_flight -= 1

    async def _aiohttp_errors(self, request, handler):
        """aiohttp's own answers as TF Serving JSON: a path its router cannot match (a name with a
        newline) goes to ``dispatch``; a body over the cap is 413."""
        try:
            return await handler(request)
        except web.HTTPRequestEntityTooLarge:
            return error_response(admission.too_large(self._limits.max_body_bytes))
        except (web.HTTPNotFound, web.HTTPMethodNotAllowed):
            return await self.dispatch(request)

    async def _expect_continue(self, request):
        """``Expect: 100-continue``: a body declared over the cap gets its 413 at once, without
        "100 Continue", and the connection is closed; otherwise "100 Continue" as aiohttp sends it."""
        if request.version != HttpVersion11:
            return None
        expect = request.headers.get("Expect", "")
        if expect.lower() != "100-continue":
            return _json_error(HTTPStatus.EXPECTATION_FAILED, f"Unknown Expect: {expect[:100]}")
        declared = request.content_length
        if declared is not None and declared > self._limits.max_body_bytes:
            resp = error_response(admission.too_large(self._limits.max_body_bytes, declared))
            resp.force_close()
            return resp
        request.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        return None

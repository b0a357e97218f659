"""ModelServer: registry + poller + batcher + REST (aiohttp) + gRPC (grpc.aio) on one event loop.

    server = ModelServer.from_flags(model_name="robust", model_base_path="models/robust")
    server.start()          # background thread; server.rest_port / server.grpc_port are bound
    ...
    server.stop()

Binds 127.0.0.1 unless ``host`` says otherwise; port 0 picks a free port. Models load only from
the configured base paths (names in URLs are looked up, never joined into paths).

Slow clients: a REST connection must deliver a complete request head within ``read_timeout``
seconds of opening (or of its previous answer, on keep-alive), else it is closed; a body must arrive
within ``read_timeout`` (408). TF Serving's ``--rest_api_timeout_in_ms`` (default 30,000) sets it.
The head deadline is aiohttp's keep-alive timer, which runs from the moment a connection opens and
closes it while no complete request has arrived (``aiohttp/web_protocol.py``, ``_process_keepalive``).

Graceful shutdown (``drain``; ``keras-advmi serve`` calls it on SIGTERM and SIGINT): ``GET /ready``
turns 503 and every new REST request is answered 503 (``{"error": ...}``, ``Connection: close``);
gRPC stops taking RPCs (new ones get UNAVAILABLE); requests already in flight, including bodies still
arriving, run to their answer for up to ``drain_timeout`` seconds; then both front ends close. TF
Serving itself does not drain (tensorflow/serving#1853); Kubernetes sends SIGTERM on every rollout.

Garbage collection: ``start()`` collects once and freezes (``gc.freeze``) the objects alive before any
model loads (TensorFlow's, Keras', the server's own: hundreds of thousands, none of them ever freed), so
the full collections that parsing a large JSON body triggers no longer walk them. The models' objects
stay with the collector: an unloaded version's cycles are freed, and a version change costs no
collection. ``stop()`` unfreezes. ``benchmarks/serving_gc.py`` measures the parse with and without
(the figures are on the results page).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import logging
import threading
from collections.abc import Iterable

from aiohttp import web

from .._checks import check_nonnegative, check_positive, check_positive_int
from . import batching, config, registry
from .errors import ServingError
from .grpc_server import make_server
from .metrics import Metrics
from .rest import RestApi

logger = logging.getLogger(__name__)
DEFAULT_MAX_BODY = 64 * 1024 * 1024
DEFAULT_READ_TIMEOUT = 30.0       # TF Serving's --rest_api_timeout_in_ms default, in seconds
DEFAULT_MAX_ROWS = 10_000
DEFAULT_DRAIN_TIMEOUT = 30.0      # seconds; Kubernetes' default terminationGracePeriodSeconds
STOP_GRACE = 1.0                  # seconds a plain stop() gives requests still running


class ModelServer:
    """Embedded TF-Serving-compatible server.

    Args:
      entries: list of ``registry.ModelEntry``.
      batching_settings: ``config.Batching`` or None (no batching: one model call per request).
      host: bind address (default 127.0.0.1).
      rest_port / grpc_port: ports (0 = free port; None = do not start that front end).
      poll_seconds: seconds between base-path polls (0 = load once, never poll).
      monitoring_path: Prometheus path or None.
      max_body_bytes: request size cap (REST 413, gRPC RESOURCE_EXHAUSTED), applied to the wire size
        and to the decoded tensors.
      read_timeout: seconds a REST client has for its request head and for its body.
      max_request_rows: without batching, the most rows one request may carry (with batching,
        ``max_batch_size`` is the limit, as in TF Serving).
      drain_timeout: seconds ``drain()`` waits for in-flight requests (>= 0).
    """

    def __init__(self, entries: Iterable[registry.ModelEntry], batching_settings: config.Batching | None = None,
                 host: str = "127.0.0.1", rest_port: int | None = 8501, grpc_port: int | None = 8500,
                 poll_seconds: float = 1.0, monitoring_path: str | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 max_request_rows: int = DEFAULT_MAX_ROWS, drain_timeout: float = DEFAULT_DRAIN_TIMEOUT):
        self.poll_seconds = check_nonnegative("poll_seconds", poll_seconds)
        self.max_body_bytes = check_positive_int("max_body_bytes", max_body_bytes)
        self.read_timeout = check_positive("read_timeout", read_timeout)
        self.max_request_rows = check_positive_int("max_request_rows", max_request_rows)
        self.drain_timeout = check_nonnegative("drain_timeout", drain_timeout)
        self.registry = registry.Registry(entries)
        self.batching = batching_settings
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self.monitoring_path = monitoring_path
        self.metrics = Metrics(self.registry.names)
        self.io_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="json")
        self.executor = None
        self._loop = None
        self._thread = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._finished = threading.Event()     # the loop thread has ended
        self._abort_drain = threading.Event()
        self._error = None
        self._draining = False                 # read and written on the event loop only
        self._rest = None                      # the RestApi, once started
        self.rpcs_in_flight = 0                # gRPC calls inside a servicer (grpc_server counts them)
        self._drain_task = None

    @classmethod
    def from_flags(cls, model_name: str | None = None, model_base_path: str | None = None,
                   model_config_file: str | None = None, enable_batching: bool = False,
                   batching_parameters_file: str | None = None, monitoring_config_file: str | None = None,
                   **kwargs) -> ModelServer:
        """Build from tensorflow_model_server's flags (same names and meaning)."""
        if model_config_file:
            entries = registry.entries_from_config(config.parse_model_config(model_config_file))
        elif model_name and model_base_path:
            entries = [registry.ModelEntry(model_name, model_base_path)]
        else:
            raise ValueError("expected --model_config_file, or both --model_name and --model_base_path")
        path = config.parse_monitoring(monitoring_config_file) if monitoring_config_file else None
        return cls(entries, config.batching_from_flags(enable_batching, batching_parameters_file),
                   monitoring_path=path, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> ModelServer:
        """Load models, start polling and both front ends in a background thread."""
        _freeze_long_lived()
        self.registry.poll()
        self.executor = (batching.Batcher(self.batching) if self.batching
                         else batching.Direct(threads=4, max_pending=1024, max_rows=self.max_request_rows))
        self.metrics.batch_count(lambda: self.executor.batches)
        self._thread = threading.Thread(target=self._run, daemon=True, name="model-server")
        self._thread.start()
        if not self._ready.wait(timeout) or self._error:
            raise RuntimeError(f"server failed to start: {self._error}")
        if self.poll_seconds:
            threading.Thread(target=self._poll_loop, daemon=True, name="version-poll").start()
        return self

    def _poll_loop(self):
        while not self._stopping.wait(self.poll_seconds):
            try:
                self.registry.poll()
            except Exception:  # pragma: no cover - keep serving what is loaded
                logger.exception("version poll failed")

    def _run(self):
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        try:
            try:
                self._loop.run_until_complete(self._start_async())
            except Exception as exc:  # surfaced by start()
                self._error = exc
                self._ready.set()
                return
            self._ready.set()
            self._loop.run_until_complete(self._stopped.wait())
            self._loop.run_until_complete(self._stop_async())
            self._loop.close()
        finally:
            # an Event, not Thread.is_alive(): on CPython 3.11 a KeyboardInterrupt inside
            # Thread.join() can leave is_alive() False while the thread still runs
            self._finished.set()

    async def _start_async(self):
        self._stopped = asyncio.Event()
        self._runner = None
        self._grpc = None
        if self.rest_port is not None:
            self._rest = RestApi(self)
            self._runner = web.AppRunner(self._rest.app(), access_log=None, keepalive_timeout=self.read_timeout,
                                         shutdown_timeout=STOP_GRACE)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.rest_port, backlog=1024).start()
            self.rest_port = self._runner.addresses[0][1]      # the bound port (port 0: a free one)
        if self.grpc_port is not None:
            self._grpc, self.grpc_port = make_server(self, self.host, self.grpc_port)
            await self._grpc.start()

    async def _stop_async(self):
        if self._drain_task is not None and not self._drain_task.done():
            self._drain_task.cancel()
        if self._grpc is not None:
            await self._grpc.stop(grace=STOP_GRACE)
        if self._runner is not None:
            await self._runner.cleanup()

    # -- what the front ends use ---------------------------------------------------------------
    def resolve(self, name: str, version: int | None = None, label: str | None = None) -> registry.Servable:
        """The loaded version a request names (``Registry.resolve``); NOT_FOUND / INVALID_ARGUMENT."""
        return self.registry.resolve(name, version, label)

    def model_status(self, name: str, version: int | None = None):
        """TF Serving's ``GetModelStatusResponse`` for ``name`` (``Registry.status``)."""
        return self.registry.status(name, version)

    @property
    def max_rows(self) -> int:
        """The most rows one request may carry (``max_batch_size`` with batching, else ``max_request_rows``)."""
        return self.executor.max_rows

    async def run(self, servable: registry.Servable, signature: str, inputs: dict):
        """The outputs of ``signature`` on ``inputs``, computed by the batcher (or the Direct pool) off the loop."""
        return await self.executor.submit(servable, signature, inputs, loop=asyncio.get_running_loop())

    async def off_loop(self, fn, *args):
        """``fn(*args)`` on the I/O pool (large decodes and encodes), awaited on the loop."""
        return await asyncio.get_running_loop().run_in_executor(self.io_pool, fn, *args)

    # -- graceful shutdown -------------------------------------------------------------------
    @property
    def draining(self) -> bool:
        """True once ``drain()`` started: new requests are refused (REST 503, gRPC UNAVAILABLE)."""
        return self._draining

    @property
    def in_flight(self) -> int:
        """REST requests inside a handler now (readiness probes and the Prometheus page not counted)."""
        return self._rest.in_flight if self._rest is not None else 0

    def readiness(self) -> tuple[bool, str]:
        """``(ready, reason)``: ready while serving with every configured model available; not ready
        before ``start()``, while draining, after ``stop()``, or while a model has no loaded version.
        ``GET /ready`` answers it (200 / 503), for load balancers and Kubernetes' readinessProbe."""
        if not self._ready.is_set() or self._error is not None or self._finished.is_set():
            return False, "not serving"
        if self._draining:
            return False, "draining: the server is shutting down"
        for name in self.registry.names:
            try:
                self.registry.resolve(name)
            except ServingError:
                return False, f"model {name} has no available version"
        return True, "ready"

    async def _drain_async(self, timeout):
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        self._draining = True
        # gRPC: no new RPCs from here on (UNAVAILABLE); those in flight get until the deadline
        grpc_stop = asyncio.ensure_future(self._grpc.stop(grace=timeout)) if self._grpc is not None else None
        while (self.in_flight or self.rpcs_in_flight) and loop.time() < deadline:
            await asyncio.sleep(0.02)
        drained = not (self.in_flight or self.rpcs_in_flight)
        if grpc_stop is not None:
            await grpc_stop
        return drained

    def drain(self, timeout: float | None = None) -> bool:
        """Stop taking new requests and wait up to ``timeout`` seconds (default ``drain_timeout``)
        for those in flight; returns True when all of them answered. Call ``stop()`` afterwards.
        ``cancel_drain()`` (safe from a signal handler) ends the wait early and returns False."""
        timeout = self.drain_timeout if timeout is None else check_nonnegative("timeout", timeout)
        if self._loop is None or self._finished.is_set():
            return True

        async def run():
            self._drain_task = asyncio.current_task()
            return await self._drain_async(timeout)
        fut = asyncio.run_coroutine_threadsafe(run(), self._loop)
        while not self._abort_drain.is_set():
            try:
                return fut.result(0.1)
            except concurrent.futures.TimeoutError:
                continue
            except concurrent.futures.CancelledError:
                return False
        return False

    def cancel_drain(self) -> None:
        """Make a running ``drain()`` return False now (a second SIGTERM/SIGINT)."""
        self._abort_drain.set()

    def stop(self) -> None:
        """Stop both front ends (requests still running get ``STOP_GRACE`` seconds), the version
        poller and the executor. Safe to call more than once."""
        self._stopping.set()
        if self._loop is not None and not self._finished.is_set():
            try:
                self._loop.call_soon_threadsafe(self._stopped.set)
            except RuntimeError:  # pragma: no cover - the loop closed in between
                pass
            self._finished.wait(timeout=15)
        if self.executor is not None:
            self.executor.close()
        self.io_pool.shutdown(wait=False)
        gc.unfreeze()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server has stopped, or ``timeout`` seconds; True once stopped."""
        return self._finished.wait(timeout)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT`` of the REST front end (its bound port once started)."""
        return f"http://{self.host}:{self.rest_port}"


def _freeze_long_lived():
    """Collect once, then move every object alive (the process's imports: they live as long as it does)
    to the collector's permanent generation; objects created later, the models' included, stay collectable."""
    gc.collect()
    gc.freeze()

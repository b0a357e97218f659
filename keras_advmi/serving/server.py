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
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Iterable

from aiohttp import web

from . import batching, config, registry
from .grpc_server import make_server
from .metrics import Metrics
from .rest import make_app

logger = logging.getLogger(__name__)
DEFAULT_MAX_BODY = 64 * 1024 * 1024
DEFAULT_READ_TIMEOUT = 30.0       # TF Serving's --rest_api_timeout_in_ms default, in seconds
DEFAULT_MAX_ROWS = 10_000


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
    """

    def __init__(self, entries: Iterable[registry.ModelEntry], batching_settings: config.Batching | None = None,
                 host: str = "127.0.0.1", rest_port: int | None = 8501, grpc_port: int | None = 8500,
                 poll_seconds: float = 1.0, monitoring_path: str | None = None,
                 max_body_bytes: int = DEFAULT_MAX_BODY, read_timeout: float = DEFAULT_READ_TIMEOUT,
                 max_request_rows: int = DEFAULT_MAX_ROWS):
        if poll_seconds < 0:
            raise ValueError(f"Received an invalid value for `poll_seconds`, expected >= 0. "
                             f"Received: poll_seconds={poll_seconds}")
        if int(max_body_bytes) < 1:
            raise ValueError(f"Received an invalid value for `max_body_bytes`, expected a positive integer. "
                             f"Received: max_body_bytes={max_body_bytes}")
        if not read_timeout > 0:
            raise ValueError(f"Received an invalid value for `read_timeout`, expected seconds > 0. "
                             f"Received: read_timeout={read_timeout}")
        if int(max_request_rows) < 1:
            raise ValueError(f"Received an invalid value for `max_request_rows`, expected a positive integer. "
                             f"Received: max_request_rows={max_request_rows}")
        self.registry = registry.Registry(entries)
        self.batching = batching_settings
        self.host, self.rest_port, self.grpc_port = host, rest_port, grpc_port
        self.poll_seconds, self.monitoring_path = poll_seconds, monitoring_path
        self.max_body_bytes = int(max_body_bytes)
        self.read_timeout = float(read_timeout)
        self.max_request_rows = int(max_request_rows)
        self.metrics = Metrics(self.registry.names)
        self.io_pool = concurrent.futures.ThreadPoolExecutor(2, thread_name_prefix="json")
        self.executor = None
        self._loop = None
        self._thread = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error = None

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
        settings = None
        if enable_batching or batching_parameters_file:
            settings = (config.parse_batching(batching_parameters_file) if batching_parameters_file
                        else config.Batching())
        path = config.parse_monitoring(monitoring_config_file) if monitoring_config_file else None
        return cls(entries, settings, monitoring_path=path, **kwargs)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self, timeout: float = 60) -> ModelServer:
        """Load models, start polling and both front ends in a background thread."""
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
            self._loop.run_until_complete(self._start_async())
        except Exception as exc:  # surfaced by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_until_complete(self._stopped.wait())
        self._loop.run_until_complete(self._stop_async())
        self._loop.close()

    async def _start_async(self):
        self._stopped = asyncio.Event()
        self._runner = None
        self._grpc = None
        if self.rest_port is not None:
            self._runner = web.AppRunner(make_app(self), access_log=None, keepalive_timeout=self.read_timeout)
            await self._runner.setup()
            await web.TCPSite(self._runner, self.host, self.rest_port, backlog=1024).start()
            self.rest_port = self._runner.addresses[0][1]      # the bound port (port 0: a free one)
        if self.grpc_port is not None:
            self._grpc, self.grpc_port = make_server(self, self.host, self.grpc_port)
            await self._grpc.start()

    async def _stop_async(self):
        if self._grpc is not None:
            await self._grpc.stop(grace=1)
        if self._runner is not None:
            await self._runner.cleanup()

    def stop(self) -> None:
        """Stop both front ends, the version poller and the executor."""
        self._stopping.set()
        if self._loop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stopped.set)
            self._thread.join(timeout=10)
        if self.executor is not None:
            self.executor.close()
        self.io_pool.shutdown(wait=False)

    def wait(self) -> None:
        """Block until stopped (CLI)."""
        while self._thread.is_alive():
            self._thread.join(0.5)

    def __enter__(self) -> ModelServer:
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    @property
    def rest_url(self) -> str:
        """``http://HOST:PORT`` of the REST front end (its bound port once started)."""
        return f"http://{self.host}:{self.rest_port}"

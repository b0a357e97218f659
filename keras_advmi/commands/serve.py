"""``keras-advmi serve``: the embedded TF-Serving-compatible server, with tensorflow_model_server's flags.

SIGTERM (what Kubernetes sends on every rollout) and SIGINT (Ctrl-C) drain the server: readiness
(``GET /ready``) turns 503, new requests are refused (REST 503, gRPC UNAVAILABLE), requests in flight
get up to ``--drain_timeout_seconds`` to answer, then the process exits 0 (1 when the drain timed out,
or a second signal cut it short).
"""

from __future__ import annotations

import logging
import math
import os
import signal
import sys
import threading

from . import UsageError

logger = logging.getLogger(__name__)


def add_parser(subparsers):
    p = subparsers.add_parser(
        "serve", help="serve SavedModels over TF Serving's REST and gRPC APIs",
        description="Serve BASE/NAME/VERSION SavedModels like tensorflow_model_server (same flag names). "
                    "Binds 127.0.0.1 unless --host says otherwise.")
    p.add_argument("base", nargs="?", help="shortcut: a directory of models (BASE/NAME/VERSION) served by name")
    p.add_argument("--model_name", help="model name (with --model_base_path)")
    p.add_argument("--model_base_path", help="directory holding VERSION subdirectories")
    p.add_argument("--model_config_file", help="ModelServerConfig text proto (several models, version policies)")
    p.add_argument("--rest_api_port", type=int, default=8501, help="REST port (0 = free port; default 8501)")
    p.add_argument("--port", type=int, default=8500, help="gRPC port (0 = free port; default 8500)")
    p.add_argument("--enable_batching", action="store_true", help="batch concurrent requests dynamically")
    p.add_argument("--batching_parameters_file", help="BatchingParameters text proto")
    p.add_argument("--file_system_poll_wait_seconds", type=float, default=1.0,
                   help="seconds between polls for new versions (0 = never poll; default 1)")
    p.add_argument("--monitoring_config_file", help="MonitoringConfig text proto (Prometheus path)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--max_body_bytes", type=int, default=64 * 1024 * 1024,
                   help="request size cap in bytes, on the wire and decoded (default 64 MiB)")
    p.add_argument("--rest_api_timeout_in_ms", type=int, default=30000,
                   help="REST read timeout for a request's head and body, as TF Serving's flag (default 30000)")
    p.add_argument("--drain_timeout_seconds", type=float, default=30.0,
                   help="on SIGTERM/SIGINT, seconds requests in flight get to finish while new ones are "
                        "refused and GET /ready answers 503 (0 = stop at once; default 30, Kubernetes' "
                        "default terminationGracePeriodSeconds)")
    p.add_argument("--tensorflow_intra_op_parallelism", type=int, default=0,
                   help="threads one TensorFlow op may use (0 = TensorFlow's choice, all cores), as TF "
                        "Serving's flag; 1 with several batch threads costs less CPU per model call on "
                        "few cores")
    p.add_argument("--tensorflow_inter_op_parallelism", type=int, default=0,
                   help="ops of one model call run at once (0 = TensorFlow's choice), as TF Serving's flag")
    p.add_argument("--max_request_rows", type=int, default=10000,
                   help="without batching, the most rows one request may carry (default 10000; with "
                        "batching the limit is max_batch_size)")
    p.set_defaults(run=run)
    return p


def _entries_from_base(base):
    from ..serving.registry import ModelEntry, valid_model_name   # here, not at the top: --help without TensorFlow

    if not os.path.isdir(base):
        raise UsageError(f"model directory {base!r} does not exist")
    names = sorted(n for n in os.listdir(base) if valid_model_name(n) and os.path.isdir(os.path.join(base, n)))
    if not names:
        raise UsageError(f"no model directories (BASE/NAME/VERSION) under {base!r}")
    return [ModelEntry(n, os.path.join(base, n)) for n in names]


def run(args):
    from ..serving import config
    from ..serving.server import ModelServer   # here, not at the top: --help without TensorFlow

    for flag in ("rest_api_port", "port"):
        if not 0 <= getattr(args, flag) < 65536:
            raise UsageError(f"--{flag} must be in [0, 65535], got {getattr(args, flag)}")
    for flag in ("max_body_bytes", "rest_api_timeout_in_ms", "max_request_rows"):
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag} must be a positive integer, got {getattr(args, flag)}")
    for flag in ("model_config_file", "batching_parameters_file", "monitoring_config_file"):
        path = getattr(args, flag)
        if path and not os.path.isfile(path):
            raise UsageError(f"--{flag} {path!r} does not exist")
    for flag in ("tensorflow_intra_op_parallelism", "tensorflow_inter_op_parallelism"):
        if getattr(args, flag) < 0:
            raise UsageError(f"--{flag} must be an integer >= 0 (0 = TensorFlow's choice), got {getattr(args, flag)}")
    if not (math.isfinite(args.drain_timeout_seconds) and args.drain_timeout_seconds >= 0):
        raise UsageError(f"--drain_timeout_seconds must be seconds >= 0, got {args.drain_timeout_seconds}")
    if args.model_base_path and not os.path.isdir(args.model_base_path):
        raise UsageError(f"--model_base_path {args.model_base_path!r} does not exist")
    _set_tf_threads(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism)
    kwargs = dict(host=args.host, rest_port=args.rest_api_port, grpc_port=args.port,
                  poll_seconds=args.file_system_poll_wait_seconds, max_body_bytes=args.max_body_bytes,
                  read_timeout=args.rest_api_timeout_in_ms / 1000, max_request_rows=args.max_request_rows,
                  drain_timeout=args.drain_timeout_seconds)
    if args.base and not (args.model_config_file or args.model_name):
        settings = config.batching_from_flags(args.enable_batching, args.batching_parameters_file)
        mon = config.parse_monitoring(args.monitoring_config_file) if args.monitoring_config_file else None
        server = ModelServer(_entries_from_base(args.base), settings, monitoring_path=mon, **kwargs)
    else:
        server = ModelServer.from_flags(
            model_name=args.model_name, model_base_path=args.model_base_path,
            model_config_file=args.model_config_file, enable_batching=args.enable_batching,
            batching_parameters_file=args.batching_parameters_file,
            monitoring_config_file=args.monitoring_config_file, **kwargs)
    return _serve_until_signal(server)


def _set_tf_threads(intra, inter):
    """TensorFlow's thread pools for this process (before any model loads); 0 leaves TF's default."""
    if not (intra or inter):
        return
    import tensorflow as tf

    try:
        if intra:
            tf.config.threading.set_intra_op_parallelism_threads(intra)
        if inter:
            tf.config.threading.set_inter_op_parallelism_threads(inter)
    except RuntimeError as exc:    # TensorFlow already initialized (serve called in-process twice)
        logger.warning("TensorFlow thread pools not changed: %s", exc)


def _serve_until_signal(server):
    """Start ``server``, serve until SIGTERM/SIGINT, then drain for up to ``server.drain_timeout`` seconds
    and stop; a second signal stops at once. Returns the exit code: 0 when every request in flight
    was answered. The handlers are installed before the models load, so no signal kills the process."""
    signals = []
    stop = threading.Event()

    def on_signal(signum, frame):       # only sets flags: the main thread does the work
        signals.append(signum)
        if len(signals) > 1:
            server.cancel_drain()
        stop.set()

    main = threading.current_thread() is threading.main_thread()
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)} if main else {}
    drained = True
    try:
        server.start()
        print(f"REST on http://{server.host}:{server.rest_port}  gRPC on {server.host}:{server.grpc_port}  "
              f"models: {', '.join(server.registry.names)}", flush=True)
        while not stop.wait(0.5):
            if server.wait(0):          # the server ended by itself
                break
        if signals:
            print(f"{signal.Signals(signals[0]).name}: draining (up to {server.drain_timeout:g} s); "
                  "GET /ready answers 503", file=sys.stderr, flush=True)
            drained = server.drain()
            if not drained:
                print("drain cut short: requests still running were cancelled", file=sys.stderr, flush=True)
    finally:
        server.stop()
        for s, handler in previous.items():
            signal.signal(s, handler)
    return 0 if drained else 1

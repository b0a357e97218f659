"""What the embedded server's limits cost: time and server RSS to refuse an expanding gRPC
request and a 100,000-row REST request, metrics page growth after 300 unknown model names, and how
fast slow clients are cut off.

    nice -n 10 python benchmarks/serving_limits.py

The server runs in its own process (``keras-advmi serve``, 127.0.0.1, free ports, default limits
except ``--rest_api_timeout_in_ms 1000``); RSS is read from ``/proc/PID/status`` (VmRSS) before and
after each request.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time

import grpc
import numpy as np
import requests
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from serving_load import free_port  # noqa: E402  (benchmarks/ and ROOT are on sys.path from here on)
from tests import serving_fixtures as sf  # noqa: E402


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as fh:
        return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmRSS")) / 1024


def main():
    base = tempfile.mkdtemp(prefix="serving-limits-")
    sf.export_version(sf.small_model(0), os.path.join(base, "m", "1"))
    port, gport = free_port(), free_port()
    proc = subprocess.Popen([sys.executable, "-m", "keras_advmi.cli", "serve", "--model_name", "m", "--model_base_path",
                             os.path.join(base, "m"), "--rest_api_port", str(port), "--port", str(gport),
                             "--file_system_poll_wait_seconds", "0", "--rest_api_timeout_in_ms", "1000",
                             "--monitoring_config_file", os.path.join(ROOT, "serving", "monitoring.config")],
                            env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="3"), cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        proc.stdout.readline()
        url = f"http://127.0.0.1:{port}"
        session = requests.Session()
        row = json.dumps(np.full((8, 8, 1), 0.5).tolist()).encode()
        assert session.post(url + "/v1/models/m:predict", data=b'{"instances": [' + row + b"]}").status_code == 200

        req = predict_pb2.PredictRequest()
        req.model_spec.name = "m"
        req.inputs["inputs"].CopyFrom(tensor_pb2.TensorProto(
            dtype=types_pb2.DT_FLOAT, float_val=[0.5], tensor_shape=tensor_shape_pb2.TensorShapeProto(
                dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=s) for s in (2_000_000, 8, 8, 1)])))
        with grpc.insecure_channel(f"127.0.0.1:{gport}") as ch:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
            r0, t0 = rss_mb(proc.pid), time.perf_counter()
            try:
                stub.Predict(req, timeout=60)
                code = "OK"
            except grpc.RpcError as exc:
                code = exc.code().name
            print(f"gRPC {req.ByteSize()}-byte request claiming 2,000,000 x 8 x 8 x 1 floats: {code} in "
                  f"{(time.perf_counter() - t0) * 1e3:.1f} ms, server RSS +{rss_mb(proc.pid) - r0:.1f} MB")

        body = b'{"instances": [' + b",".join([row] * 100_000) + b"]}"
        r0, t0 = rss_mb(proc.pid), time.perf_counter()
        r = session.post(url + "/v1/models/m:predict", data=body, timeout=60)
        print(f"REST 100,000 rows ({len(body) / 1e6:.1f} MB): {r.status_code} in "
              f"{(time.perf_counter() - t0) * 1e3:.1f} ms, server RSS +{rss_mb(proc.pid) - r0:.1f} MB")

        page0 = len(session.get(url + "/monitoring/prometheus/metrics").content)
        t0 = time.perf_counter()
        for i in range(300):
            session.post(url + f"/v1/models/{'u%d' % i * 700}:predict", data=b"{}")
        page1 = len(session.get(url + "/monitoring/prometheus/metrics").content)
        print(f"300 predicts to 2,100+-character unknown names: {time.perf_counter() - t0:.2f} s, metrics page "
              f"{page0} -> {page1} bytes")

        socks = [socket.create_connection(("127.0.0.1", port)) for _ in range(150)]
        for s in socks:
            s.sendall(b"POST /v1/models/m:predict HTTP/1.1\r\n")
            s.settimeout(5)
        t0 = time.perf_counter()
        closed = sum(s.recv(1) == b"" for s in socks)
        print(f"150 connections sending a partial request head: {closed} closed by the server after "
              f"{time.perf_counter() - t0:.2f} s (--rest_api_timeout_in_ms 1000)")
        for s in socks:
            s.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    main()

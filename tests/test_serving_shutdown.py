"""Graceful shutdown and honest metrics of the embedded server: SIGTERM / SIGINT drain the requests in
flight (all answered 200, exit code 0), readiness answers 503 while draining, new requests are refused;
cancelled gRPC calls, expired deadlines and REST clients that hang up are counted as CANCELLED /
DEADLINE_EXCEEDED, never as INTERNAL."""

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from keras_advmi import cli
from keras_advmi.serving import Batching, ModelEntry, ModelServer
from tests import serving_fixtures as sf

ROOT = Path(__file__).resolve().parents[1]
METRICS = "/monitoring/prometheus/metrics"
ROWS = 5000


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("shutdown")
    model = sf.small_model(0)
    sf.export_version(model, base / "digits" / "1")
    return base, model


def _wait_for(fn, timeout=30.0, every=0.05):
    """Poll ``fn()`` until it returns a truthy value (returned) or ``timeout`` seconds pass (None)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got:
            return got
        time.sleep(every)
    return None


def _ready(url):
    r = requests.get(url + "/ready", timeout=10)
    return r.status_code, r.json()


def _partial_post(host, port, path, body, keep=4096):
    """A socket that has sent the request head and all but the last ``keep`` bytes of ``body``:
    a request in flight whose handler is running (aiohttp calls it once the head is in)."""
    s = socket.create_connection((host, port), timeout=60)
    s.sendall(f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
              f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:-keep])
    return s, body[-keep:]


def _read_response(s):
    """(status, body bytes) of one HTTP/1.1 answer with Content-Length."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before an answer: {buf[:200]!r}")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    status = int(head.split(b" ", 2)[1])
    length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])
    while len(rest) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed mid-body")
        rest += chunk
    return status, rest[:length]


# -- graceful shutdown of `keras-advmi serve` --------------------------------------------------------
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_drains_four_in_flight_5000_row_predicts_and_exits_0(base, tmp_path, signum):
    path, model = base
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "keras_advmi.cli", "serve", "--model_name", "digits", "--model_base_path",
           str(path / "digits"), "--rest_api_port", "0", "--port", "0", "--file_system_poll_wait_seconds", "0",
           "--drain_timeout_seconds", "30"]
    with open(tmp_path / "stderr.txt", "w") as err:
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    socks = []
    try:
        line = proc.stdout.readline()
        m = re.search(r"REST on (http://(127\.0\.0\.1):(\d+))\s+gRPC on (127\.0\.0\.1:\d+)", line)
        assert m, line
        url, host, port, gtarget = m[1], m[2], int(m[3]), m[4]
        assert _ready(url) == (200, {"ready": True, "reason": "ready", "in_flight": 0})

        xs = [sf.images(ROWS, seed=i) for i in range(4)]
        bodies = [json.dumps({"instances": x.tolist()}).encode() for x in xs]
        for body in bodies:
            socks.append(_partial_post(host, port, "/v1/models/digits:predict", body))
        assert _wait_for(lambda: _ready(url)[1]["in_flight"] == 4), _ready(url)

        t_signal = time.monotonic()
        proc.send_signal(signum)
        code, doc = _wait_for(lambda: (lambda r: r if r[0] == 503 else None)(_ready(url)), timeout=10)
        assert code == 503 and doc["ready"] is False and doc["reason"].startswith("draining")
        assert doc["in_flight"] == 4
        r = requests.post(url + "/v1/models/digits:predict", json={"instances": xs[0][:1].tolist()}, timeout=10)
        assert r.status_code == 503 and r.json() == {"error": "The server is shutting down"}
        with grpc.insecure_channel(gtarget) as channel:
            req = predict_pb2.PredictRequest()
            req.model_spec.name = "digits"
            req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(xs[0][:1]))
            with pytest.raises(grpc.RpcError) as info:
                prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(req, timeout=10)
            assert info.value.code() == grpc.StatusCode.UNAVAILABLE

        for (s, tail), x in zip(socks, xs):
            s.sendall(tail)
            status, payload = _read_response(s)
            assert status == 200, payload[:300]
            preds = json.loads(payload)["predictions"]
            assert len(preds) == ROWS
            want = sf.reference(model, x)[0]
            np.testing.assert_array_equal([p["class_ids"] for p in preds], want["class_ids"])
            np.testing.assert_allclose([p["probabilities"] for p in preds], want["probabilities"],
                                       rtol=1e-5, atol=1e-6)
        assert proc.wait(timeout=15) == 0
        assert time.monotonic() - t_signal < 15
        assert f"{signal.Signals(signum).name}: draining" in (tmp_path / "stderr.txt").read_text()
    finally:
        for s, _ in socks:
            s.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=20)


def test_drain_timeout_cuts_a_stalled_request_and_flag_is_checked(base):
    path, _ = base
    server = ModelServer([ModelEntry("digits", path / "digits")], rest_port=0, grpc_port=0, poll_seconds=0,
                         drain_timeout=0.5).start()
    try:
        assert server.drain(0) is True              # nothing in flight: returns at once
    finally:
        server.stop()
    server = ModelServer([ModelEntry("digits", path / "digits")], rest_port=0, grpc_port=0, poll_seconds=0,
                         drain_timeout=0.5).start()
    s, _ = _partial_post("127.0.0.1", server.rest_port, "/v1/models/digits:predict", b"x" * 10000, keep=10)
    try:
        assert _wait_for(lambda: server.in_flight == 1)
        t0 = time.monotonic()
        assert server.drain() is False                  # the body never completes
        assert 0.4 < time.monotonic() - t0 < 5
        assert server.readiness() == (False, "draining: the server is shutting down")
    finally:
        server.stop()
        s.close()
    assert server.wait(0) and server.readiness()[0] is False
    with pytest.raises(ValueError, match="drain_timeout"):
        ModelServer([ModelEntry("digits", path / "digits")], drain_timeout=-1)
    assert cli.main(["serve", "--model_name", "digits", "--model_base_path", str(path / "digits"),
                     "--drain_timeout_seconds", "-1"]) == 2
    assert cli.main(["serve", "--model_name", "digits", "--model_base_path", str(path / "digits"),
                     "--tensorflow_intra_op_parallelism", "-1"]) == 2


# -- metrics: cancelled and expired calls ------------------------------------------------------------
def _counts(server):
    page = requests.get(server.rest_url + METRICS, timeout=10).text
    fams = {f.name: f for f in text_string_to_metric_families(page)}
    return {(s.labels["entrypoint"], s.labels["status"]): s.value
            for s in fams[":tensorflow:serving:request_count"].samples
            if s.labels["model_name"] == "digits" and s.labels["API"] == "predict"}


def test_cancelled_and_expired_calls_are_counted_as_such(base):
    path, _ = base
    # one request waits 1.5 s for batch-mates: long enough to cancel it, or let its deadline pass
    server = ModelServer([ModelEntry("digits", path / "digits")], Batching(64, 1_500_000, 4, 1), rest_port=0,
                         grpc_port=0, poll_seconds=0, monitoring_path=METRICS).start()
    try:
        x = sf.images(1, seed=3)
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "digits"
        req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
        with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(req, timeout=0.3)
            assert info.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            call = stub.Predict.future(req, timeout=30)
            time.sleep(0.3)
            assert call.cancel()
            stub.Predict(req, timeout=30)                                   # one that succeeds
        s = socket.create_connection(("127.0.0.1", server.rest_port))
        body = json.dumps({"instances": x.tolist()}).encode()
        s.sendall(f"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n"
                  .encode() + body)
        time.sleep(0.3)
        s.close()                                                           # hangs up before its answer
        want = {("GRPC", "DEADLINE_EXCEEDED"): 1, ("GRPC", "CANCELLED"): 1, ("GRPC", "OK"): 1,
                ("REST", "CANCELLED"): 1}
        got = _wait_for(lambda: (lambda c: c if c == want else None)(_counts(server)), timeout=15)
        assert got == want, _counts(server)
    finally:
        server.stop()

"""The embedded server tried as an attacker would, on 127.0.0.1 with bounded counts and time:
a bad request never fails its batch-mates, expanding and huge requests are refused before they
allocate, metrics cannot be flooded, odd version directories do not stop polling, malformed bodies and
TensorProtos get TF Serving's 4xx / INVALID_ARGUMENT (never a 500, UNKNOWN or exception text), slow
clients are cut off, and the rest of TF Serving's API (classify, regress, MultiInference, labels)
answers as TF Serving does."""

import concurrent.futures
import gzip
import json
import logging
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time
import zlib

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tensorflow.core.framework import tensor_pb2, tensor_shape_pb2, types_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_status_pb2, inference_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from keras_advmi import cli
from keras_advmi.serving import Batching, ModelEntry, ModelServer
from keras_advmi.serving import client as client_mod
from tests import serving_fixtures as sf

METRICS = "/monitoring/prometheus/metrics"
MAX_BODY = 4 * 1024 * 1024


def _rss_mb():
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * 4096 / 2 ** 20


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    base = tmp_path_factory.mktemp("redteam")
    model = sf.small_model(0)
    sf.export_version(model, base / "digits" / "1")
    sf.half_plus_two(base / "hpt" / "00000123")
    return base, model


@pytest.fixture(scope="module")
def batched(base):
    """Batching on (16 rows, 5 ms window), labels, a 4 MiB request cap."""
    path, model = base
    entries = [ModelEntry("digits", path / "digits", labels={"stable": 1}), ModelEntry("hpt", path / "hpt")]
    server = ModelServer(entries, Batching(16, 5000, 64, 2), rest_port=0, grpc_port=0, poll_seconds=0,
                         monitoring_path=METRICS, max_body_bytes=MAX_BODY).start()
    channel = grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}")
    yield server, model, prediction_service_pb2_grpc.PredictionServiceStub(channel), channel
    channel.close()
    server.stop()


def _predict_request(x, name="digits", alias="inputs"):
    req = predict_pb2.PredictRequest()
    req.model_spec.name = name
    req.inputs[alias].CopyFrom(tf.make_tensor_proto(x))
    return req


def _grpc_code(fn, req):
    try:
        return fn(req, timeout=30), grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return None, exc.code(), exc.details()


# -- 1. a bad request never fails its batch-mates ------------------------------------------------
def test_mixed_good_and_bad_requests_20_clients_rest_and_grpc(batched):
    server, model, stub, _ = batched
    x = sf.images(1, seed=3)
    want = sf.reference(model, x)[0]["class_ids"].tolist()
    good_body = json.dumps({"instances": x.tolist()})
    bad_bodies = [json.dumps({"instances": x[:, :, :, 0].tolist()}),              # rank 3
                  json.dumps({"instances": [[[["a"]] * 8] * 8]})]                   # wrong dtype
    bad_protos = [_predict_request(x[:, :, :, 0]),                                 # rank 3 (1, 8, 8)
                  _predict_request(x.astype(np.int32)),                            # int32
                  _predict_request(x.astype(np.float64))]                          # double
    good_proto = _predict_request(x)
    url = server.rest_url + "/v1/models/digits:predict"

    def client(i):
        out = []
        session = requests.Session()
        for j in range(12):
            kind = (i + j) % 4
            if kind == 0:
                r = session.post(url, data=good_body, timeout=30)
                out.append(("good", r.status_code == 200 and [p["class_ids"] for p in r.json()["predictions"]] == want))
            elif kind == 1:
                r = session.post(url, data=bad_bodies[j % 2], timeout=30)
                out.append(("bad", r.status_code == 400 and set(r.json()) == {"error"}))
            elif kind == 2:
                resp, code, _ = _grpc_code(stub.Predict, good_proto)
                out.append(("good", code == grpc.StatusCode.OK and
                            tf.make_ndarray(resp.outputs["class_ids"]).tolist() == want))
            else:
                _, code, details = _grpc_code(stub.Predict, bad_protos[j % 3])
                out.append(("bad", code == grpc.StatusCode.INVALID_ARGUMENT and "Traceback" not in details))
        return out

    with concurrent.futures.ThreadPoolExecutor(20) as pool:
        results = [r for rs in pool.map(client, range(20)) for r in rs]
    assert len(results) == 240
    assert all(ok for kind, ok in results if kind == "good"), sum(not ok for k, ok in results if k == "good")
    assert all(ok for kind, ok in results if kind == "bad"), sum(not ok for k, ok in results if k == "bad")
    assert server.executor.batches < 240       # requests were batched together


def test_wrong_rank_grpc_requests_in_one_batch_do_not_fail_good_ones(batched):
    """Item 1 exactly: rank-3 gRPC Predicts merged with good ones (the 5 ms window gathers them)."""
    server, model, stub, _ = batched
    x = sf.images(1, seed=4)
    want = sf.reference(model, x)[0]["class_ids"].tolist()
    reqs = [_predict_request(x[:, :, :, 0]) if i % 4 == 0 else _predict_request(x) for i in range(64)]
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda r: _grpc_code(stub.Predict, r), reqs))
    for i, (resp, code, details) in enumerate(answers):
        if i % 4 == 0:
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "expected shape [-1, 8, 8, 1]" in details, details
        else:
            assert code == grpc.StatusCode.OK, details
            assert tf.make_ndarray(resp.outputs["class_ids"]).tolist() == want


# -- 2, 3. expanding and huge requests are refused before they allocate -----------------------------
def test_58_byte_grpc_request_claiming_512_mb_is_refused_fast(base, batched):
    _, _, stub, _ = batched
    proto = _tensor(types_pb2.DT_FLOAT, (2_000_000, 8, 8, 1), float_val=[0.5])
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.inputs["inputs"].CopyFrom(proto)
    assert req.ByteSize() < 64
    rss0, t0 = _rss_mb(), time.perf_counter()
    _, code, details = _grpc_code(stub.Predict, req)
    assert time.perf_counter() - t0 < 1.0
    assert _rss_mb() - rss0 < 50
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "Task size 2000000 is larger than maximum input batch size 16"
    # within the row limit but over the byte cap once broadcast: refused before allocating
    proto.tensor_shape.dim[0].size = 16
    proto.tensor_shape.dim[1].size = 8
    req.inputs["inputs"].CopyFrom(proto)
    small = ModelServer([ModelEntry("digits", base[0] / "digits")], rest_port=None, grpc_port=0, poll_seconds=0,
                        max_body_bytes=1000).start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{small.grpc_port}") as ch:
            _, code, details = _grpc_code(prediction_service_pb2_grpc.PredictionServiceStub(ch).Predict, req)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert details == "Decoded request tensors of 4096 bytes exceed the limit of 1000 bytes"
    finally:
        small.stop()


def _rows_body(n):
    row = json.dumps(np.full((8, 8, 1), 0.5).tolist()).encode()
    return b'{"instances": [' + b",".join([row] * n) + b"]}"


def test_100000_row_rest_request_refused_fast_without_batching(base):
    path, _ = base
    body = _rows_body(100_000)
    assert 20e6 < len(body) < 64 * 2 ** 20          # under the default 64 MiB body cap
    with ModelServer([ModelEntry("digits", path / "digits")], rest_port=0, grpc_port=None, poll_seconds=0) as server:
        session = requests.Session()
        assert session.post(server.rest_url + "/v1/models/digits:predict", data=_rows_body(2)).status_code == 200
        rss0, t0 = _rss_mb(), time.perf_counter()
        r = session.post(server.rest_url + "/v1/models/digits:predict", data=body, timeout=30)
        elapsed = time.perf_counter() - t0
        assert r.status_code == 400
        assert r.json() == {"error": "Task size 100000 is larger than maximum input batch size 10000"}
        assert elapsed < 1.0, elapsed
        assert _rss_mb() - rss0 < 50
        # at the row cap's edge the exact count decides (no false refusal from the comma bound)
        r = session.post(server.rest_url + "/v1/models/digits:predict", data=_rows_body(10_001), timeout=60)
        assert r.status_code == 400 and "Task size 10001" in r.json()["error"]


def test_task_larger_than_max_batch_size_refused_or_split(base, batched):
    server, model, stub, _ = batched
    r = requests.post(server.rest_url + "/v1/models/digits:predict", data=_rows_body(5_000), timeout=30)
    assert r.status_code == 400
    assert r.json() == {"error": "Task size 5000 is larger than maximum input batch size 16"}
    x = sf.images(17, seed=5)
    _, code, details = _grpc_code(stub.Predict, _predict_request(x))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "Task size 17" in details
    # large-batch splitting: up to max_batch_size rows, run in batches of max_execution_batch_size
    path, _ = base
    split = Batching(64, 1000, 8, 2, enable_large_batch_splitting=True, max_execution_batch_size=8)
    with ModelServer([ModelEntry("digits", path / "digits")], split, rest_port=0, grpc_port=None,
                     poll_seconds=0) as s2:
        x = sf.images(50, seed=6)
        r = requests.post(s2.rest_url + "/v1/models/digits:predict", json={"inputs": x.tolist()}, timeout=30)
        assert r.status_code == 200
        np.testing.assert_allclose(r.json()["outputs"]["probabilities"], sf.reference(model, x)[0]["probabilities"],
                                   rtol=1e-5, atol=1e-6)
        assert s2.executor.batches >= 7                          # 50 rows in batches of <= 8
        r = requests.post(s2.rest_url + "/v1/models/digits:predict", json={"inputs": sf.images(65).tolist()})
        assert r.status_code == 400 and "Task size 65 is larger than maximum input batch size 64" in r.text


# -- 4. metrics cannot be flooded, gRPC is counted ---------------------------------------------------
def test_unknown_model_names_do_not_grow_metrics_and_grpc_is_counted(batched):
    server, _, stub, _ = batched
    page = lambda: requests.get(server.rest_url + METRICS, timeout=30).text  # noqa: E731
    x = sf.images(1, seed=7)
    for _ in range(3):
        _grpc_code(stub.Predict, _predict_request(x))
    before = page()
    session = requests.Session()
    body = json.dumps({"instances": x.tolist()})
    for i in range(300):
        name = ("n%d" % i) * 700 if i % 3 else 'a"b}c\\d%0A' + "x" * 7000
        r = session.post(server.rest_url + f"/v1/models/{name}:predict", data=body, timeout=30)
        assert r.status_code == 404 and r.json()["error"].startswith("Servable not found for request: Latest(")
    for i in range(20):
        _, code, _ = _grpc_code(stub.Predict, _predict_request(x, name="z" * 7000 + str(i)))
        assert code == grpc.StatusCode.NOT_FOUND
    after = page()
    assert len(after) - len(before) < 20_000, len(after) - len(before)
    fams = {f.name: f for f in text_string_to_metric_families(after)}
    counts = fams[":tensorflow:serving:request_count"].samples
    assert {s.labels["model_name"] for s in counts} <= {"digits", "hpt", "_unknown_"}
    grpc_ok = [s for s in counts if s.labels == {"model_name": "digits", "API": "predict", "entrypoint": "GRPC",
                                                 "status": "OK"}]
    assert grpc_ok and grpc_ok[0].value >= 3
    unknown = [s for s in counts if s.labels["model_name"] == "_unknown_" and s.labels["status"] == "NOT_FOUND"]
    assert sum(s.value for s in unknown) >= 320


# -- 5. odd version directories are skipped, polling goes on ----------------------------------------
def test_odd_version_directories_skipped_polling_continues(tmp_path, caplog):
    model = sf.small_model(0)
    sf.export_version(model, tmp_path / "m" / "1")
    for odd in ("²", "١٢", "-1", "+2", "1e3", "abc", "9" * 30):
        sf.export_version(model, tmp_path / "m" / odd)
    sf.export_version(model, tmp_path / "other" / "0007")
    entries = [ModelEntry("m", tmp_path / "m"), ModelEntry("other", tmp_path / "other")]
    with caplog.at_level(logging.WARNING, logger="keras_advmi.serving.registry"):
        server = ModelServer(entries, rest_port=0, grpc_port=None, poll_seconds=0.2).start()
    try:
        status = lambda n: requests.get(server.rest_url + f"/v1/models/{n}", timeout=10).json()  # noqa: E731
        assert [s["version"] for s in status("m")["model_version_status"]] == ["1"]
        assert [s["version"] for s in status("other")["model_version_status"]] == ["7"]
        sf.export_version(model, tmp_path / "m" / "5")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and [(s["version"], s["state"]) for s in status(
                "m")["model_version_status"][:1]] != [("5", "AVAILABLE")]:     # LOADING while it loads
            time.sleep(0.1)
        assert [(s["version"], s["state"]) for s in status("m")["model_version_status"]] == [("5", "AVAILABLE"),
                                                                                           ("1", "END")]
        time.sleep(0.5)                                    # more polls: each odd name logged once
        skipped = [r.getMessage() for r in caplog.records if "skipping" in r.getMessage()]
        assert len(skipped) == 7, skipped
    finally:
        server.stop()


# -- 6. malformed bodies and URLs answer JSON 4xx ------------------------------------------------------
@pytest.mark.parametrize("path,headers,body,status,message", [
    (":predict", {"Content-Encoding": "deflate"}, b"\x00garbage not deflate", 400, "Failed to read the request body"),
    (":predict", {"Content-Encoding": "gzip"}, b"\x1f\x8bnot gzip", 400, "Failed to read the request body"),
    (":predict", {"Content-Encoding": "gzip"}, gzip.compress(b" " * (MAX_BODY + 10), mtime=0), 413, "exceeds the limit"),
    ("/versions/" + "7" * 5000 + ":predict", {}, b"{}", 400, "Failed to convert version: 7777"),
    ("/versions/99999999999999999999:predict", {}, b"{}", 400, "Failed to convert version"),
    ("/versions/²:predict", {}, b"{}", 400, "Malformed request"),
    ("/versions/١:predict", {}, b"{}", 400, "Malformed request"),
], ids=["deflate-garbage", "gzip-garbage", "gzip-bomb", "version-5000-digits", "version-overflow", "version-superscript",
        "version-arabic-digit"])   # ids, not the bodies: gzip's header holds a time, and xdist workers must agree
def test_malformed_bodies_and_versions_get_json_4xx(batched, path, headers, body, status, message):
    server = batched[0]
    r = requests.post(server.rest_url + "/v1/models/digits" + path, data=body, headers=headers, timeout=30)
    assert r.status_code == status, r.text
    assert r.headers["Content-Type"].startswith("application/json")
    assert set(r.json()) == {"error"} and message in r.json()["error"]


def test_deflate_encoded_valid_body_still_works(batched):
    server, model, _, _ = batched
    x = sf.images(2, seed=8)
    body = zlib.compress(json.dumps({"inputs": x.tolist()}).encode())
    r = requests.post(server.rest_url + "/v1/models/digits:predict", data=body,
                      headers={"Content-Encoding": "deflate"}, timeout=30)
    assert r.status_code == 200
    assert r.json()["outputs"]["class_ids"] == sf.reference(model, x)[0]["class_ids"].tolist()


# -- 7. malformed TensorProtos: INVALID_ARGUMENT in TF Serving's words, no exception text -------------
def _tensor(dtype, dims, **fields):
    return tensor_pb2.TensorProto(dtype=dtype, tensor_shape=tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims]), **fields)


BAD_PROTOS = [
    (_tensor(types_pb2.DT_FLOAT, (1, 8, 8, 1), tensor_content=b"\0" * 255), "tensor parsing error: inputs"),
    (_tensor(types_pb2.DT_FLOAT, (-1, 8, 8, 1), float_val=[0.5]), "tensor parsing error: inputs"),
    (_tensor(999, (1, 8, 8, 1), float_val=[0.5]), "tensor parsing error: inputs"),
    (tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT,
                            tensor_shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=True)),
     "tensor parsing error: inputs"),
    (_tensor(types_pb2.DT_VARIANT, (1, 8, 8, 1)), "Expects arg[0] to be float but variant is provided"),
    (_tensor(types_pb2.DT_RESOURCE, (1,)), "Expects arg[0] to be float but resource is provided"),
    (_tensor(types_pb2.DT_INT32, (1, 8, 8, 1), int_val=[0]), "Expects arg[0] to be float but int32 is provided"),
    (_tensor(types_pb2.DT_BOOL, (1, 8, 8, 1), bool_val=[True]), "Expects arg[0] to be float but bool is provided"),
    (_tensor(types_pb2.DT_HALF, (1, 8, 8, 1), half_val=[0]), "Expects arg[0] to be float but half is provided"),
    (_tensor(types_pb2.DT_COMPLEX64, (1, 8, 8, 1), scomplex_val=[0.5, 9.0]),
     "Expects arg[0] to be float but complex64 is provided"),
    (_tensor(types_pb2.DT_STRING, (1, 8, 8, 1), string_val=[b"x"]),
     "Expects arg[0] to be float but string is provided"),
]


@pytest.mark.parametrize("proto,message", BAD_PROTOS, ids=[f"proto{i}" for i in range(len(BAD_PROTOS))])
def test_malformed_tensor_protos_invalid_argument(batched, proto, message):
    stub = batched[2]
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.inputs["inputs"].CopyFrom(proto)
    _, code, details = _grpc_code(stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == message


def test_typed_values_broadcast_as_tensorflow_does(batched):
    """Fewer float_val than elements repeat the last one (``Tensor::FromProto``); the answer equals
    the model's on the broadcast array."""
    server, model, stub, _ = batched
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.inputs["inputs"].CopyFrom(_tensor(types_pb2.DT_FLOAT, (2, 8, 8, 1), float_val=[0.1, 0.7]))
    resp, code, details = _grpc_code(stub.Predict, req)
    assert code == grpc.StatusCode.OK, details
    x = np.full((2, 8, 8, 1), 0.7, np.float32)
    x.reshape(-1)[0] = 0.1
    np.testing.assert_allclose(tf.make_ndarray(resp.outputs["probabilities"]),
                               sf.reference(model, x)[0]["probabilities"], rtol=1e-5, atol=1e-6)


_dims = st.lists(st.integers(-3, 20), min_size=0, max_size=5)
_proto = st.builds(
    lambda dtype, dims, content, floats, ints, unknown: tensor_pb2.TensorProto(
        dtype=dtype, tensor_content=content, float_val=floats, int_val=ints,
        tensor_shape=tensor_shape_pb2.TensorShapeProto(unknown_rank=unknown, dim=[
            tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])),
    st.sampled_from([0, 1, 2, 3, 7, 8, 10, 19, 20, 21, 23, 999]), _dims, st.binary(max_size=600),
    st.lists(st.floats(width=32), max_size=70), st.lists(st.integers(-5, 5), max_size=5), st.booleans())


@settings(max_examples=500, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(proto=_proto, alias=st.sampled_from(["inputs", "inputs", "x"]), sig=st.sampled_from(["", "detect", "nope"]))
def test_grpc_fuzz_never_unknown_or_internal(batched, proto, alias, sig):
    stub = batched[2]
    req = predict_pb2.PredictRequest()
    req.model_spec.name = "digits"
    req.model_spec.signature_name = sig
    req.inputs[alias].CopyFrom(proto)
    _, code, details = _grpc_code(stub.Predict, req)
    assert code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), \
        (code, details)
    assert "Traceback" not in details and "File \"" not in details


# -- 8. slow clients are cut off and do not starve others -------------------------------------------
@pytest.fixture
def one_second(base):
    """A server whose clients have 1 s for a request head and for a body (--rest_api_timeout_in_ms 1000)."""
    with ModelServer([ModelEntry("digits", base[0] / "digits")], rest_port=0, grpc_port=None, poll_seconds=0,
                     read_timeout=1.0) as server:
        yield server


def test_slow_header_and_body_clients_are_cut_off(one_second):
    server = one_second
    port = server.rest_port
    slow = []
    for _ in range(60):
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    body_slow = socket.create_connection(("127.0.0.1", port), timeout=5)
    body_slow.sendall(b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{")
    x = sf.images(1, seed=9)
    t0 = time.perf_counter()
    r = requests.post(server.rest_url + "/v1/models/digits:predict", json={"instances": x.tolist()}, timeout=10)
    assert r.status_code == 200 and time.perf_counter() - t0 < 1.0      # a normal client is not starved
    closed = 0
    deadline = time.monotonic() + 4.0
    for s in slow:
        while time.monotonic() < deadline:
            try:
                s.sendall(b"X")                     # one byte at a time, as a slowloris does
                s.settimeout(0.2)
                if s.recv(1) == b"":
                    closed += 1
                    break
            except socket.timeout:
                continue
            except OSError:
                closed += 1
                break
        s.close()
    assert closed == len(slow)
    assert time.monotonic() < deadline + 0.5
    body_slow.settimeout(4)
    head = body_slow.recv(4096)
    body_slow.close()
    assert head.startswith(b"HTTP/1.1 408") and b"Request body not received within 1 s" in head


# -- 9. the rest of TF Serving's API --------------------------------------------------------------------
def test_classify_regress_rest_on_a_tf1_model_in_a_zero_padded_version_dir(batched):
    server = batched[0]
    url = server.rest_url + "/v1/models/hpt"
    r = requests.post(url + ":classify", json={"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]})
    assert r.status_code == 200 and r.json() == {"results": [[["", 3.0]]]}
    r = requests.post(url + ":regress", json={"signature_name": "regress_x_to_y",
                                              "examples": [{"x": 2.0}, {"x": 4.0}]})
    assert r.status_code == 200 and r.json() == {"results": [3.0, 4.0]}
    r = requests.post(url + "/versions/123:regress", json={"signature_name": "regress_x_to_y", "context": {"x": 1.0},
                                                           "examples": [{}, {"x": 6.0}]})
    assert r.status_code == 200 and r.json() == {"results": [2.5, 5.0]}    # context merged, example wins
    for body, message in [
            ({"signature_name": "regress_x_to_y"}, "key 'examples' is expected and was not found"),
            ({"signature_name": "regress_x_to_y", "examples": []}, "'examples' value is an empty array"),
            ({"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, 2]}]},
             "Unexpected element type in feature: x expecting type: float"),
            ({"signature_name": "regress_x_to_y", "examples": [{"x": None}]},
             "Feature: x has element with unexpected JSON type: Null"),
            ({"signature_name": "nope", "examples": [{"x": 1.0}]}, "No signature was found with the name: nope"),
            ({"signature_name": "classify_x_to_y", "examples": [{"x": 1.0}]},
             "Expected regression signature method_name to be tensorflow/serving/regress. "
             "Was: tensorflow/serving/classify")]:
        r = requests.post(url + ":regress", json=body)
        assert r.status_code == 400 and message in r.json()["error"], (body, r.text)


def _examples(*xs):
    inp = classification_pb2.ClassificationRequest().input
    for x in xs:
        e = inp.example_list.examples.add()
        e.features.feature["x"].float_list.value.append(x)
    return inp


def test_classify_regress_multiinference_grpc(batched):
    _, _, stub, _ = batched
    req = classification_pb2.ClassificationRequest()
    req.model_spec.name = "hpt"
    req.model_spec.signature_name = "classify_x_to_y"
    req.input.CopyFrom(_examples(2.0, 4.0))
    resp = stub.Classify(req, timeout=30)
    assert (resp.model_spec.name, resp.model_spec.version.value, resp.model_spec.signature_name) == \
        ("hpt", 123, "classify_x_to_y")
    assert [[(c.label, c.score) for c in cl.classes] for cl in resp.result.classifications] == \
        [[("", 3.0)], [("", 4.0)]]
    rreq = regression_pb2.RegressionRequest()
    rreq.model_spec.name = "hpt"
    rreq.model_spec.signature_name = "regress_x_to_y"
    rreq.input.CopyFrom(_examples(6.0))
    assert [r.value for r in stub.Regress(rreq, timeout=30).result.regressions] == [5.0]
    mreq = inference_pb2.MultiInferenceRequest()
    for sig, method in (("classify_x_to_y", "tensorflow/serving/classify"),
                        ("regress_x_to_y", "tensorflow/serving/regress")):
        t = mreq.tasks.add(method_name=method)
        t.model_spec.name = "hpt"
        t.model_spec.signature_name = sig
    mreq.input.CopyFrom(_examples(0.0))
    mresp = stub.MultiInference(mreq, timeout=30)
    assert [r.model_spec.signature_name for r in mresp.results] == ["classify_x_to_y", "regress_x_to_y"]
    assert mresp.results[0].classification_result.classifications[0].classes[0].score == 2.0
    assert mresp.results[1].regression_result.regressions[0].value == 2.0
    rreq.model_spec.name = "digits"                       # a model without such signatures
    rreq.model_spec.signature_name = ""
    _, code, details = _grpc_code(stub.Regress, rreq)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == ("Expected regression signature method_name to be tensorflow/serving/regress. "
                       "Was: tensorflow/serving/predict")
    mreq.tasks[1].method_name = "tensorflow/serving/predict"
    _, code, details = _grpc_code(stub.MultiInference, mreq)
    assert code == grpc.StatusCode.UNIMPLEMENTED and details == "Unsupported signature method_name: " \
                                                                 "tensorflow/serving/predict"


def test_labels_status_route_unknown_alias_and_not_found_wording(batched):
    server, _, stub, channel = batched
    r = requests.get(server.rest_url + "/v1/models/digits/labels/stable", timeout=10)
    # TF Serving's GetModelStatusImpl looks only at model_spec.version: a label route lists all versions
    assert r.status_code == 200 and [s["version"] for s in r.json()["model_version_status"]] == ["1"]
    sreq = get_model_status_pb2.GetModelStatusRequest()
    sreq.model_spec.name = "digits"
    sreq.model_spec.version_label = "stable"
    status = model_service_pb2_grpc.ModelServiceStub(channel).GetModelStatus(sreq, timeout=30)
    assert [s.version for s in status.model_version_status] == [1]
    r = requests.get(server.rest_url + "/v1/models/nosuch", timeout=10)
    assert r.status_code == 404 and r.json() == {"error": "Could not find any versions of model nosuch"}
    _, code, details = _grpc_code(stub.Predict, _predict_request(sf.images(1), alias="x"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details == "input tensor alias not found in signature: x. Inputs expected to be in the set {inputs}."
    req = _predict_request(sf.images(1))
    req.inputs["extra"].CopyFrom(tf.make_tensor_proto(np.zeros(1, np.float32)))
    _, code, details = _grpc_code(stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("input size does not match signature: 2!=1")
    req = _predict_request(sf.images(1))
    req.output_filter.append("nope")
    _, code, details = _grpc_code(stub.Predict, req)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "output tensor alias not found in signature: nope" in details


# -- 10. query --protocol grpc uses TF Serving's gRPC port by default ---------------------------------
def test_query_grpc_default_url_is_the_grpc_port(monkeypatch, tmp_path):
    seen = {}

    class FakeClient:
        def __init__(self, url, model, protocol="rest", version=None, **kw):
            seen[protocol] = url

        def status(self):
            return []

        def close(self):
            pass
    monkeypatch.setattr(client_mod, "Client", FakeClient)
    for protocol in ("grpc", "rest"):
        assert cli.main(["query", "digits", "--protocol", protocol, "--action", "status"]) == 0
    assert seen == {"grpc": "127.0.0.1:8500", "rest": "http://127.0.0.1:8501"}


# -- 11. no cheap request may stall every client or cost gigabytes ----------------------------------
# The attacks run against a server in its own process (default limits: 64 MiB bodies, 10,000 rows),
# so its peak RSS (VmHWM, reset through /proc/PID/clear_refs before each attack) and the latency a
# second client sees are the server's alone.
_SERVE = """
import sys
from keras_advmi.serving import ModelEntry, ModelServer
base = sys.argv[1]
server = ModelServer([ModelEntry("digits", base + "/digits"), ModelEntry("hpt", base + "/hpt")],
                     rest_port=0, grpc_port=0, poll_seconds=0).start()
print(server.rest_port, server.grpc_port, flush=True)
sys.stdin.read()        # serve until the test closes stdin
server.stop()
"""


@pytest.fixture(scope="module")
def own_process(base):
    root = pathlib.Path(__file__).resolve().parents[1]      # the tree these tests belong to
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(base[0])], cwd=root, env=env, text=True,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        line = proc.stdout.readline()
        assert line, "the server process did not start"
        rest, grpc_port = map(int, line.split())
        channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        yield proc.pid, f"http://127.0.0.1:{rest}", channel
        channel.close()
    finally:
        proc.stdin.close()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _peak_mb(pid):
    with open(f"/proc/{pid}/status") as fh:
        return next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:")) / 1024


def _reset_peak(pid):
    with open(f"/proc/{pid}/clear_refs", "w") as fh:     # "5": reset VmHWM to the current RSS
        fh.write("5")
    return _peak_mb(pid)


class _Probe:
    """A second client sending small predicts back to back while an attack runs; ``worst`` is its
    slowest answer in seconds, ``answers`` how many it got (all must be 200 with 1 row)."""

    def __init__(self, url):
        self.url, self.worst, self.answers, self.bad = url + "/v1/models/digits:predict", 0.0, 0, []
        self._body = json.dumps({"instances": sf.images(1, seed=11).tolist()})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        session = requests.Session()
        while not self._stop.is_set():
            t0 = time.perf_counter()
            r = session.post(self.url, data=self._body, timeout=60)
            self.worst = max(self.worst, time.perf_counter() - t0)
            self.answers += 1
            if r.status_code != 200 or len(r.json()["predictions"]) != 1:
                self.bad.append(r.text[:200])
            time.sleep(0.02)

    def __enter__(self):
        self._thread.start()
        time.sleep(0.3)
        return self

    def __exit__(self, *exc):
        time.sleep(0.3)
        self._stop.set()
        self._thread.join(90)


def test_grpc_output_filter_of_20000_names_is_refused_in_linear_time(own_process):
    """``output_filter``: 20,000 distinct names and a duplicate (165 KB) took a quadratic
    ``wanted.count`` scan on the event loop (~4 s here, every client stalled); now each alias is
    checked once, before the model runs, in TF Serving's order."""
    _, url, channel = own_process
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    names = [f"n{i:05d}" for i in range(20_000)]
    req = _predict_request(sf.images(1, seed=12))
    req.output_filter.extend(names + names[-1:])
    assert 150_000 < req.ByteSize() < 250_000
    with _Probe(url) as probe:
        for _ in range(2):
            t0 = time.perf_counter()
            _, code, details = _grpc_code(stub.Predict, req)
            assert time.perf_counter() - t0 < 1.0
            assert code == grpc.StatusCode.INVALID_ARGUMENT
            assert details == ("output tensor alias not found in signature: n00000 Outputs expected to be in "
                               "the set {class_ids,probabilities}.")
    assert probe.answers >= 3 and not probe.bad
    assert probe.worst < 1.0, probe.worst
    for wanted, message in [(["probabilities", "class_ids", "probabilities"],
                             "duplicate output tensor alias: probabilities"),
                            (["class_ids", "nope", "nope"], "output tensor alias not found in signature: nope")]:
        req = _predict_request(sf.images(1, seed=12))
        req.output_filter.extend(wanted)
        _, code, details = _grpc_code(stub.Predict, req)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(message), details
    req = _predict_request(sf.images(1, seed=12))
    req.output_filter.append("class_ids")
    resp, code, _ = _grpc_code(stub.Predict, req)
    assert code == grpc.StatusCode.OK and list(resp.outputs) == ["class_ids"]


def test_string_among_float_pixels_refused_before_numpy_sees_it(own_process):
    """One 100,000-character string and 2,000 empty ones (106 KB) for a float input: NumPy built a
    ``<U100000`` array of 2,001 elements (800 MB) before the dtype check refused it; now every
    value's JSON type is checked first."""
    pid, url, _ = own_process
    body = json.dumps({"instances": ["x" * 100_000] + [""] * 2_000}).encode()
    assert 100_000 < len(body) < 110_000
    session = requests.Session()
    peak0 = _reset_peak(pid)
    with _Probe(url) as probe:
        for _ in range(3):
            r = session.post(url + "/v1/models/digits:predict", data=body, timeout=60)
            assert r.status_code == 400
            error = r.json()["error"]
            assert error.startswith('JSON Value: "xxxx') and error.endswith(
                'xxxx... Type: String is not of expected type: float'), error
            assert len(error) < 400
    grown = _peak_mb(pid) - peak0
    assert grown < 150, grown
    assert probe.answers >= 3 and not probe.bad
    assert probe.worst < 1.0, probe.worst


def test_classify_on_a_model_without_classify_signature_is_refused_before_building_examples(own_process):
    """A 10 MB ``examples`` body to a model with no classify signature: its 830,000 Examples were
    built in Python on the event loop before the signature was looked at (seconds of stall); now the
    JSON is parsed off the loop and the signature checked before any Example is built."""
    _, url, _ = own_process
    body = b'{"examples": [' + b",".join([b'{"x": 1.5}'] * 830_000) + b"]}"
    assert 8e6 < len(body) < 12e6
    session = requests.Session()
    with _Probe(url) as probe:
        for api, what in (("classify", "classification"), ("regress", "regression")):
            t0 = time.perf_counter()
            r = session.post(url + f"/v1/models/digits:{api}", data=body, timeout=60)
            elapsed = time.perf_counter() - t0
            assert r.status_code == 400
            assert r.json() == {"error": f"Expected {what} signature method_name to be tensorflow/serving/{api}. "
                                         "Was: tensorflow/serving/predict"}
            assert elapsed < 2.0, elapsed
    assert probe.answers >= 3 and not probe.bad
    assert probe.worst < 1.0, probe.worst
    # a body over the inline size on a model that has the signature is still answered in full
    xs = [round(0.001 * i, 3) for i in range(9_000)]
    big = {"signature_name": "regress_x_to_y", "examples": [{"x": x, "note": "n" * 40} for x in xs]}
    data = json.dumps(big).encode()
    assert len(data) > 256 * 1024
    r = session.post(url + "/v1/models/hpt:regress", data=data, timeout=60)
    assert r.status_code == 200
    np.testing.assert_allclose(r.json()["results"], 0.5 * np.asarray(xs) + 2, rtol=1e-6)
    rreq = regression_pb2.RegressionRequest()                 # and over gRPC (serialized off the loop)
    rreq.model_spec.name, rreq.model_spec.signature_name = "hpt", "regress_x_to_y"
    for x in xs:
        e = rreq.input.example_list.examples.add()
        e.features.feature["x"].float_list.value.append(x)
        e.features.feature["note"].bytes_list.value.append(b"n" * 40)
    assert rreq.input.ByteSize() > 256 * 1024
    resp = prediction_service_pb2_grpc.PredictionServiceStub(own_process[2]).Regress(rreq, timeout=60)
    np.testing.assert_allclose([v.value for v in resp.result.regressions], 0.5 * np.asarray(xs) + 2, rtol=1e-6)
    r = session.post(url + "/v1/models/hpt:regress", timeout=60, data=json.dumps(
        {"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}] * 10_001}))
    assert r.status_code == 400
    assert r.json() == {"error": "Task size 10001 is larger than maximum input batch size 10000"}


def _gzip_bomb(inflated):
    """A valid predict body (one 8x8 image) padded with whitespace to ``inflated`` bytes, gzipped."""
    head = json.dumps({"instances": sf.images(1, seed=13).tolist()}).encode()[:-1]
    comp = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [comp.compress(head)]
    pad = b" " * (1 << 20)
    for _ in range((inflated - len(head)) >> 20):
        parts.append(comp.compress(pad))
    parts.append(comp.compress(b"}") + comp.flush())
    return b"".join(parts)


def test_24_concurrent_gzip_bombs_cost_what_they_cost_the_client(own_process):
    """24 bodies of ~40 KB, each inflating to 40 MB of valid JSON, sent at once: each was inflated in
    full on the event loop and buffered (about 1 GB of RSS, seconds of stall); now a body may
    inflate to 1 MiB plus 64 times its compressed size (413 past it)."""
    pid, url, _ = own_process
    bomb = _gzip_bomb(40 << 20)
    assert len(bomb) < 60_000
    assert len(gzip.decompress(bomb)) > 40e6
    peak0 = _reset_peak(pid)
    headers = {"Content-Encoding": "gzip", "Content-Type": "application/json"}

    def send(_):
        r = requests.post(url + "/v1/models/digits:predict", data=bomb, headers=headers, timeout=60)
        return r.status_code, r.json()
    with _Probe(url) as probe, concurrent.futures.ThreadPoolExecutor(24) as pool:
        answers = list(pool.map(send, range(24)))
    limit = 2 ** 20 + 64 * len(bomb)
    assert answers == [(413, {"error": f"Request body inflates past {limit} bytes: exceeds the limit of "
                                       f"1048576 bytes plus 64 times its {len(bomb)} compressed bytes"})] * 24
    grown = _peak_mb(pid) - peak0
    assert grown < 400, grown
    assert probe.answers >= 3 and not probe.bad
    assert probe.worst < 2.0, probe.worst
    # ordinary compressed requests, small and over the inline size, are answered
    for n in (2, 700):
        x = sf.images(n, seed=14)
        data = gzip.compress(json.dumps({"instances": x.tolist()}).encode())
        r = requests.post(url + "/v1/models/digits:predict", data=data, headers=headers, timeout=60)
        assert r.status_code == 200 and len(r.json()["predictions"]) == n


def test_bool_among_floats_and_extra_columnar_key_are_refused(batched):
    """Every value must have the signature's dtype (``AddValueToTensor``: a JSON true/false is
    not a number), and the columnar form refuses an extra key as the row form and gRPC do."""
    server, model, _, _ = batched
    url = server.rest_url + "/v1/models/digits:predict"
    x = sf.images(2, seed=15)
    rows = x.tolist()
    rows[1][3][4][0] = True
    for doc in ({"instances": rows}, {"inputs": rows}, {"inputs": {"inputs": rows}}):
        r = requests.post(url, json=doc, timeout=30)
        assert r.status_code == 400
        assert r.json() == {"error": "JSON Value: true Type: True is not of expected type: float"}
    r = requests.post(url, json={"instances": np.ones((1, 8, 8, 1), bool).tolist()}, timeout=30)
    assert r.status_code == 400 and r.json()["error"].endswith("Type: True is not of expected type: float")
    rows = x.tolist()
    rows[0][0][0][0] = 0                                     # an integer is a number: accepted as 0.0
    r = requests.post(url, json={"instances": rows}, timeout=30)
    want = x.copy()
    want[0, 0, 0, 0] = 0.0
    assert r.status_code == 200
    assert [p["class_ids"] for p in r.json()["predictions"]] == sf.reference(model, want)[0]["class_ids"].tolist()
    r = requests.post(url, json={"inputs": {"inputs": x.tolist(), "extra": [1.0]}}, timeout=30)
    assert r.status_code == 400
    assert r.json() == {"error": "input tensor alias not found in signature: extra. Inputs expected to be in the "
                                 "set {inputs}."}
    r = requests.post(url, json={"instances": [{"inputs": x[0].tolist(), "extra": 1.0}]}, timeout=30)
    assert r.status_code == 400
    r = requests.post(url, json={"inputs": {"inputs": x.tolist()}}, timeout=30)
    assert r.status_code == 200 and len(r.json()["outputs"]["class_ids"]) == 2


def _raw_exchange(port, head, body=None, wait=2.0):
    """Send ``head`` on a fresh connection, then ``body`` once "100 Continue" arrives; everything
    the server wrote within ``wait`` seconds of its last byte."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(head)
        got = b""
        while True:
            try:
                chunk = s.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            got += chunk
            if body is not None and got.endswith(b"100 Continue\r\n\r\n"):
                s.sendall(body)
                body = None
            elif b"\r\n\r\n" in got.split(b"100 Continue\r\n\r\n")[-1]:
                head_end = got.rindex(b"\r\n\r\n")
                length = [int(v) for k, v in (line.split(b":", 1) for line in got[:head_end].split(b"\r\n")[1:]
                                              if b":" in line) if k.strip().lower() == b"content-length"]
                if length and len(got) - head_end - 4 >= length[-1]:
                    break
        return got


def test_expect_100_continue_over_the_cap_gets_413_without_continue(batched):
    server = batched[0]
    port = server.rest_port
    head = (b"POST /v1/models/digits:predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n")
    got = _raw_exchange(port, head.replace(b"100-continue", b"something") % 5)
    assert got.startswith(b"HTTP/1.1 417 ") and got.endswith(b'{"error": "Unknown Expect: something"}'), got
    got = _raw_exchange(port, head % (MAX_BODY + 1))
    assert got.startswith(b"HTTP/1.1 413 "), got[:200]
    assert b"100 Continue" not in got
    assert json.loads(got.split(b"\r\n\r\n", 1)[1]) == {
        "error": f"Request body of {MAX_BODY + 1} bytes exceeds the limit of {MAX_BODY} bytes"}
    body = json.dumps({"instances": sf.images(1, seed=16).tolist()}).encode()
    got = _raw_exchange(port, head % len(body), body)
    assert got.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 "), got[:200]
    assert len(json.loads(got.split(b"\r\n\r\n", 2)[2])["predictions"]) == 1


def test_undecodable_grpc_messages_are_invalid_argument(batched):
    channel = batched[3]
    for method, type_name in (("/tensorflow.serving.PredictionService/Predict", "tensorflow.serving.PredictRequest"),
                              ("/tensorflow.serving.PredictionService/Classify",
                               "tensorflow.serving.ClassificationRequest"),
                              ("/tensorflow.serving.ModelService/GetModelStatus",
                               "tensorflow.serving.GetModelStatusRequest")):
        call = channel.unary_unary(method)              # raw bytes in and out
        for junk in (b"\xff\xff\xff\xff", b"\x0a\xff\xff\xff\xff\x0f"):
            try:
                call(junk, timeout=30)
                raise AssertionError(f"{method} accepted {junk!r}")
            except grpc.RpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT, (method, exc.code(), exc.details())
                assert exc.details() == f"Failed to parse the request as {type_name}"
    try:                                                # not implemented: said so, with no Python class name
        channel.unary_unary("/tensorflow.serving.ModelService/HandleReloadConfigRequest")(b"", timeout=30)
        raise AssertionError("HandleReloadConfigRequest answered")
    except grpc.RpcError as exc:
        assert exc.code() == grpc.StatusCode.UNIMPLEMENTED
        assert exc.details() == "Method not implemented: tensorflow.serving.ModelService/HandleReloadConfigRequest"

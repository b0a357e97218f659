"""Embedded server speaks TF Serving's REST and gRPC APIs; answers equal the in-process model's;
bad input gets the right status and an {"error": ...} body; fuzzed bodies never cause a 5xx."""

import json

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from hypothesis import HealthCheck, given, settings, strategies as st
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import (get_model_metadata_pb2, get_model_status_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

import keras_advmi as kam
from keras_advmi.serving import Batching, Client, ModelEntry, ModelServer, Registry, protos
from tests import serving_fixtures as sf

MAX_BODY = 200_000


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("models")
    m1, m2 = sf.small_model(0), sf.small_model(1)
    sf.export_version(m1, base / "digits" / "1")
    sf.export_version(m2, base / "digits" / "2")
    entries = [ModelEntry("digits", base / "digits", policy="all", labels={"stable": 1, "canary": 2})]
    server = ModelServer(entries, Batching(32, 1000, 8, 2), rest_port=0, grpc_port=0, poll_seconds=0,
                         monitoring_path="/monitoring/prometheus/metrics", max_body_bytes=MAX_BODY).start()
    yield server, {1: m1, 2: m2}
    server.stop()


def _post(server, path, body):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(server.rest_url + path, data=data, timeout=30)


def _close(got, want):
    for k, v in want.items():
        g = np.asarray(got[k])
        if v.dtype.kind == "f":
            np.testing.assert_allclose(g, v, rtol=1e-5, atol=1e-6, err_msg=k)
        else:
            np.testing.assert_array_equal(g, v, err_msg=k)


def test_rest_row_and_columnar_equal_in_process(served):
    server, models = served
    x = sf.images(5, seed=3)
    ref, ref_det = sf.reference(models[2], x)
    r = _post(server, "/v1/models/digits:predict", {"instances": x.tolist()})
    assert r.status_code == 200
    rows = r.json()["predictions"]
    assert len(rows) == 5 and set(rows[0]) == {"probabilities", "class_ids"}
    _close({k: [row[k] for row in rows] for k in rows[0]}, ref)
    r = _post(server, "/v1/models/digits:predict", {"signature_name": "detect", "inputs": x.tolist()})
    assert r.status_code == 200
    _close(r.json()["outputs"], ref_det)


def test_version_and_label_routes(served):
    server, models = served
    x = sf.images(3, seed=4)
    for route, v in [("/versions/1", 1), ("/versions/2", 2), ("/labels/stable", 1), ("/labels/canary", 2)]:
        r = _post(server, f"/v1/models/digits{route}:predict", {"inputs": x.tolist()})
        assert r.status_code == 200, r.text
        _close(r.json()["outputs"], sf.reference(models[v], x)[0])


def test_status_metadata_and_metrics(served):
    server, _ = served
    r = requests.get(server.rest_url + "/v1/models/digits")
    assert r.status_code == 200
    assert r.json() == {"model_version_status": [
        {"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}} for v in ("2", "1")]}
    r = requests.get(server.rest_url + "/v1/models/digits/versions/1")
    assert [s["version"] for s in r.json()["model_version_status"]] == ["1"]
    meta = requests.get(server.rest_url + "/v1/models/digits/metadata").json()
    assert meta["model_spec"] == {"name": "digits", "signature_name": "", "version": "2"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "detect"}
    assert set(sigs["detect"]["outputs"]) == {"adversarial_score", "is_adversarial", "threshold", "probabilities",
                                              "class_ids"}
    assert sigs["serving_default"]["inputs"]["inputs"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sigs["serving_default"]["inputs"]["inputs"]["tensor_shape"]["dim"]] == ["-1", "8", "8", "1"]
    # this test's own request, so that the count does not depend on which tests ran before it
    assert _post(server, "/v1/models/digits:predict", {"instances": sf.images(1, seed=0).tolist()}).status_code == 200
    text = requests.get(server.rest_url + "/monitoring/prometheus/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    counts = [s for s in families[":tensorflow:serving:request_count"].samples if s.value > 0]
    assert any(s.labels["model_name"] == "digits" and s.labels["API"] == "predict" and
               s.labels["entrypoint"] == "REST" for s in counts), counts


def test_grpc_official_stub_equals_in_process(served):
    server, models = served
    x = sf.images(4, seed=5)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "digits"
        req.model_spec.signature_name = "detect"
        req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(x))
        resp = stub.Predict(req, timeout=30)
        assert resp.model_spec.version.value == 2
        _close({k: tf.make_ndarray(v) for k, v in resp.outputs.items()}, sf.reference(models[2], x)[1])
        req.model_spec.version.value = 1
        resp = stub.Predict(req, timeout=30)
        _close({k: tf.make_ndarray(v) for k, v in resp.outputs.items()}, sf.reference(models[1], x)[1])
        mreq = get_model_metadata_pb2.GetModelMetadataRequest()
        mreq.model_spec.name = "digits"
        mreq.metadata_field.append("signature_def")
        sdm = get_model_metadata_pb2.SignatureDefMap()
        stub.GetModelMetadata(mreq, timeout=30).metadata["signature_def"].Unpack(sdm)
        assert set(sdm.signature_def) == {"serving_default", "detect"}
        sreq = get_model_status_pb2.GetModelStatusRequest()
        sreq.model_spec.name = "digits"
        status = model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(sreq, timeout=30)
        assert sorted(s.version for s in status.model_version_status) == [1, 2]
        assert all(s.state == get_model_status_pb2.ModelVersionStatus.AVAILABLE for s in status.model_version_status)
        req.model_spec.name = "nope"
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
        req.model_spec.name = "digits"
        req.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.zeros((2, 5, 5, 1), np.float32)))
        with pytest.raises(grpc.RpcError) as err:
            stub.Predict(req, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_client_both_protocols(served, protocol):
    server, models = served
    url = server.rest_url if protocol == "rest" else f"127.0.0.1:{server.grpc_port}"
    x = sf.images(3, seed=6)
    c = Client(url, "digits", protocol=protocol)
    ref, ref_det = sf.reference(models[2], x)
    _close(c.predict(x), ref)
    _close(c.detect(x), ref_det)
    assert c.status() == [{"version": v, "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
                          for v in ("2", "1")]
    assert set(c.metadata()["metadata"]["signature_def"]["signature_def"]) == {"serving_default", "detect"}
    c.close()
    assert Client(url, "digits", protocol=protocol, version=1).predict(x)["class_ids"].tolist() == \
        sf.reference(models[1], x)[0]["class_ids"].tolist()


def test_status_is_one_proto_printed_alike_everywhere(served, tmp_path):
    """The registry's GetModelStatusResponse is what gRPC answers and what REST prints; both client
    protocols read back the same proto and the same metadata document."""
    server, _ = served
    resp = server.registry.status("digits")
    assert isinstance(resp, get_model_status_pb2.GetModelStatusResponse)
    assert requests.get(server.rest_url + "/v1/models/digits", timeout=10).json() == protos.to_json(resp)
    with grpc.insecure_channel(f"127.0.0.1:{server.grpc_port}") as ch:
        sreq = get_model_status_pb2.GetModelStatusRequest()
        sreq.model_spec.name = "digits"
        assert model_service_pb2_grpc.ModelServiceStub(ch).GetModelStatus(sreq, timeout=30) == resp
    rest, rpc = Client(server.rest_url, "digits"), Client(f"127.0.0.1:{server.grpc_port}", "digits", protocol="grpc")
    assert rest.status_response() == rpc.status_response() == resp
    assert rest.metadata() == rpc.metadata()
    rest.close()
    rpc.close()
    # a version that fails to load prints as TF Serving prints it: END with the load error
    (tmp_path / "m" / "3").mkdir(parents=True)
    (tmp_path / "m" / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
    registry = Registry([ModelEntry("m", tmp_path / "m")])
    registry.poll()
    [row] = protos.to_json(registry.status("m"))["model_version_status"]
    assert (row["version"], row["state"], row["status"]["error_code"]) == ("3", "END", "UNKNOWN")
    assert row["status"]["error_message"]


GOOD = sf.images(1, seed=9).tolist()
BAD = [
    ("/v1/models/digits:predict", b"{", 400, "JSON Parse error"),
    ("/v1/models/digits:predict", b"", 400, "JSON Parse error: The document is empty"),
    ("/v1/models/digits:predict", b"[1, 2]", 400, "Is not object"),
    ("/v1/models/digits:predict", {"instances": []}, 400, "No values in 'instances' array"),
    ("/v1/models/digits:predict", {"foo": 1}, 400, "Missing 'inputs' or 'instances' key"),
    ("/v1/models/digits:predict", {"instances": GOOD, "inputs": GOOD}, 400, "only one of 'inputs' or 'instances'"),
    ("/v1/models/digits:predict", {"instances": [[1.0, 2.0]]}, 400, "expected shape"),
    ("/v1/models/digits:predict", {"inputs": np.zeros((1, 8, 8)).tolist()}, 400, "expected shape"),
    ("/v1/models/digits:predict", {"instances": [[[["a"]] * 8] * 8]}, 400, "not of expected type"),
    ("/v1/models/digits:predict", {"instances": [[[[True]] * 8] * 8]}, 400, "not of expected type"),
    ("/v1/models/digits:predict", {"instances": [[[[0.5]] * 8] * 7 + [[[0.5]] * 3]]}, 400, "unexpected size"),
    ("/v1/models/digits:predict", '{"instances": [' + json.dumps(np.full((8, 8, 1), 0.5).tolist()).replace(
        "0.5", "NaN", 1) + "]}", 400, "inputs must be finite"),
    ("/v1/models/digits:predict", '{"instances": [' + json.dumps(np.full((8, 8, 1), 0.5).tolist()).replace(
        "0.5", "Infinity", 1) + "]}", 400, "inputs must be finite"),
    ("/v1/models/digits:predict", {"instances": np.full((1, 8, 8, 1), 1.5).tolist()}, 400, "inputs must be in [0, 1]"),
    ("/v1/models/digits:predict", {"instances": [{"inputs": GOOD[0]}, GOOD[0]]}, 400, "Expecting object"),
    ("/v1/models/digits:predict", {"signature_name": "nope", "instances": GOOD}, 400,
     'Serving signature name: "nope" not found in signature def'),
    ("/v1/models/digits:predict", {"signature_name": 3, "instances": GOOD}, 400, "signature_name"),
    ("/v1/models/unknown:predict", {"instances": GOOD}, 404, "Servable not found for request: Latest(unknown)"),
    ("/v1/models/digits/versions/7:predict", {"instances": GOOD}, 404,
     "Servable not found for request: Specific(digits, 7)"),
    ("/v1/models/digits/labels/nope:predict", {"instances": GOOD}, 400, "Unrecognized servable version label"),
    ("/v1/models/..:predict", {"instances": GOOD}, 404, "Servable not found"),
    ("/v1/models/%2e%2e%2fetc:predict", {"instances": GOOD}, 400, "Malformed request"),
    ("/v1/models/digits:classify", {"instances": GOOD}, 400,
     "When method is classify, key 'examples' is expected and was not found"),
    ("/v1/models/digits:classify", {"examples": [{"x": 1.0}]}, 400,
     "Expected classification signature method_name to be tensorflow/serving/classify. "
     "Was: tensorflow/serving/predict"),
    ("/v1/models/digits:regress", {"signature_name": "detect", "examples": [{"x": 1}]}, 400,
     "Expected regression signature method_name to be tensorflow/serving/regress. "
     "Was: tensorflow/serving/predict"),
    ("/v1/models/digits:explain", {"instances": GOOD}, 400, "Malformed request"),
    ("/v1/models/digits:predict", b"x" * (MAX_BODY + 1), 413, "exceeds the limit"),
    ("/v1/models/digits:predict", "[" * 100000 + "]" * 100000, 400, "JSON Parse error"),
]


@pytest.mark.parametrize("path,body,status,message", BAD, ids=[f"bad{i}" for i in range(len(BAD))])
def test_bad_input_gets_tf_serving_status_and_error_body(served, path, body, status, message):
    server, models = served
    r = _post(server, path, body)
    assert r.status_code == status, r.text
    err = r.json()
    assert set(err) == {"error"} and message in err["error"]
    x = sf.images(2, seed=1)   # still healthy and correct afterwards
    ok = _post(server, "/v1/models/digits/versions/1:predict", {"inputs": x.tolist()})
    assert ok.status_code == 200
    _close(ok.json()["outputs"], sf.reference(models[1], x)[0])


def test_traversal_names_never_touch_the_filesystem(served):
    server, _ = served
    for name in ("..", "...", "a..b", "%2e%2e", "..%2f..%2fetc"):
        r = requests.get(server.rest_url + f"/v1/models/{name}", timeout=10)
        assert r.status_code in (400, 404) and "error" in r.json()


_json = st.recursive(st.none() | st.booleans() | st.floats(allow_nan=True) | st.integers() | st.text(max_size=5),
                     lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=3),
                     max_leaves=20)
_body = st.one_of(
    st.binary(max_size=64),
    _json.map(lambda v: json.dumps(v).encode()),
    st.fixed_dictionaries({}, optional={"instances": _json, "inputs": _json,
                                        "signature_name": st.sampled_from(["detect", "serving_default", "x", 1])}
                          ).map(lambda v: json.dumps(v).encode()),
    st.lists(st.floats(0, 1, width=32), min_size=64, max_size=64).map(
        lambda v: json.dumps({"instances": [np.reshape(v, (8, 8, 1)).tolist()] * 2}).encode()))


@settings(max_examples=520, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
@given(body=_body)
def test_fuzz_no_5xx(served, body):
    server, _ = served
    r = requests.post(server.rest_url + "/v1/models/digits:predict", data=body, timeout=30)
    assert r.status_code in (200, 400, 413), (r.status_code, r.text, body[:200])
    assert r.status_code == 200 or "error" in r.json()


def test_serves_kam_export_output(tmp_path):
    """A SavedModel written by kam.export (the project's exporter) serves unchanged."""
    model = sf.small_model(3)
    kam.export(model, tmp_path / "exp" / "1")
    x = sf.images(4, seed=8)
    with ModelServer([ModelEntry("exp", tmp_path / "exp")], rest_port=0, grpc_port=0, poll_seconds=0) as server:
        for protocol, url in (("rest", server.rest_url), ("grpc", f"127.0.0.1:{server.grpc_port}")):
            _close(Client(url, "exp", protocol=protocol).predict(x), sf.reference(model, x)[0])
        r = _post(server, "/v1/models/exp:predict", {"signature_name": "detect", "instances": x.tolist()})
        assert r.status_code == 400 and 'Serving signature name: "detect" not found' in r.json()["error"]

"""One error map: every refusal carries a canonical gRPC status code, REST answers the HTTP status TF
Serving's ``ToHTTPStatusCode`` gives it, and no invented code can reach a response or the metrics."""

import ast
import gc
import json
import pathlib

import grpc
import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

import keras_advmi.serving as serving
from keras_advmi.serving import ModelEntry, ModelServer
from keras_advmi.serving import errors
from keras_advmi.serving.errors import ServingError
from tests import serving_fixtures as sf

METRICS = "/monitoring/prometheus/metrics"
MAX_BODY = 20_000

# tensorflow_serving/model_servers/http_server.cc, ToHTTPStatusCode (CLIENT_CLOSED_REQUEST is 499)
TF_SERVING = {"CANCELLED": 499, "UNKNOWN": 500, "INVALID_ARGUMENT": 400, "DEADLINE_EXCEEDED": 504, "NOT_FOUND": 404,
              "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429, "FAILED_PRECONDITION": 400,
              "ABORTED": 409, "OUT_OF_RANGE": 400, "UNIMPLEMENTED": 501, "INTERNAL": 500, "UNAVAILABLE": 503,
              "DATA_LOSS": 500, "UNAUTHENTICATED": 401}


def test_the_map_is_tf_servings_for_every_canonical_error_code():
    assert {code.name: int(status) for code, status in errors.HTTP_STATUS.items()} == TF_SERVING
    assert set(errors.HTTP_STATUS) == set(grpc.StatusCode) - {grpc.StatusCode.OK}
    for code in errors.HTTP_STATUS:
        err = ServingError(code, "m")
        assert (err.code, err.http_status, err.message) == (code, TF_SERVING[code.name], "m")


def test_invented_or_unknown_codes_cannot_be_built():
    for code in ("PAYLOAD_TOO_LARGE", "REQUEST_TIMEOUT", "INVALID_ARGUMENT", grpc.StatusCode.OK, None, 3):
        with pytest.raises(TypeError, match="canonical error code"):
            ServingError(code, "m")
    # the HTTP layer's own answers keep the gRPC code of the same refusal
    big, slow = errors.body_too_large("big"), errors.body_timeout("slow")
    assert (big.code, big.http_status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 413)
    assert (slow.code, slow.http_status) == (grpc.StatusCode.DEADLINE_EXCEEDED, 408)
    for code, status in ((grpc.StatusCode.INVALID_ARGUMENT, 413), (grpc.StatusCode.RESOURCE_EXHAUSTED, 408),
                         (grpc.StatusCode.INTERNAL, 418)):
        with pytest.raises(TypeError, match="not the transport's answer"):
            ServingError(code, "m", http_status=status)


def test_the_serving_package_raises_only_canonical_codes():
    """Every ``ServingError(...)`` in the package names ``StatusCode.X`` (X a key of the map) and sets no
    HTTP status of its own outside errors.py."""
    names = {code.name for code in errors.HTTP_STATUS}
    hits, calls = [], 0
    for path in sorted(pathlib.Path(serving.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "ServingError"):
                continue
            calls += 1
            code = node.args[0] if node.args else None
            ok = (isinstance(code, ast.Attribute) and code.attr in names and ast.unparse(code.value)
                  in ("StatusCode", "grpc.StatusCode"))
            if not ok or (path.name != "errors.py" and any(k.arg == "http_status" for k in node.keywords)):
                hits.append(f"{path.name}:{node.lineno}: {ast.unparse(node)[:80]}")
    assert calls > 10 and not hits, hits


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = tmp_path_factory.mktemp("errors")
    sf.export_version(sf.small_model(0), base / "digits" / "1")
    sf.half_plus_two(base / "hpt" / "1")
    server = ModelServer([ModelEntry("digits", base / "digits"), ModelEntry("hpt", base / "hpt")], rest_port=0,
                         grpc_port=None, poll_seconds=0, monitoring_path=METRICS, max_body_bytes=MAX_BODY).start()
    yield server
    server.stop()


def _counts(server):
    page = requests.get(server.rest_url + METRICS, timeout=10).text
    return {(s.labels["model_name"], s.labels["API"], s.labels["status"]): s.value
            for f in text_string_to_metric_families(page) if f.name == ":tensorflow:serving:request_count"
            for s in f.samples}


def test_a_body_over_the_cap_is_413_and_counted_under_its_canonical_code(server):
    r = requests.post(server.rest_url + "/v1/models/digits:predict", data=b" " * (MAX_BODY + 1), timeout=10)
    assert (r.status_code, r.text) == (413, json.dumps(
        {"error": f"Request body of {MAX_BODY + 1} bytes exceeds the limit of {MAX_BODY} bytes"}))
    counts = _counts(server)
    assert counts.get(("digits", "predict", "RESOURCE_EXHAUSTED")) == 1
    assert not any(status in ("PAYLOAD_TOO_LARGE", "REQUEST_TIMEOUT") for _, _, status in counts)


def test_examples_decoding_past_the_cap_over_rest_are_413_like_predict_tensors(server):
    """A small body whose context, repeated in each serialized Example, decodes past the cap: 413 as for a
    predict body's tensors (it was 429, RESOURCE_EXHAUSTED's status, on this one path)."""
    body = {"signature_name": "regress_x_to_y", "context": {"x": 1.0, "pad": "a" * 500}, "examples": [{}] * 100}
    r = requests.post(server.rest_url + "/v1/models/hpt:regress", json=body, timeout=10)
    assert r.status_code == 413 and r.json()["error"].startswith("Decoded request tensors of ")
    assert r.json()["error"].endswith(f"bytes exceed the limit of {MAX_BODY} bytes")


def test_long_lived_objects_are_frozen_while_serving_and_released_by_stop(server, tmp_path):
    """Parsing a request triggers cyclic collections; the objects alive before the models load are frozen
    so those collections skip them (benchmarks/serving_gc.py), and never the collector is off. A loaded
    version stays collectable (frozen objects are invisible to gc.get_objects), so an unloaded version's
    cycles are freed."""
    assert gc.get_freeze_count() > 0 and gc.isenabled()
    sf.export_version(sf.small_model(0), tmp_path / "m" / "1")
    other = ModelServer([ModelEntry("m", tmp_path / "m")], rest_port=0, grpc_port=None, poll_seconds=0).start()
    loaded = other.resolve("m")
    assert any(o is loaded for o in gc.get_objects())
    other.stop()
    assert gc.get_freeze_count() == 0 and gc.isenabled()

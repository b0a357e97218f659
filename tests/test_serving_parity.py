"""A SavedModel that is not a keras-advmi export, served as TF Serving serves it: TF
Serving's own example ``half_plus_two`` (y = 0.5 x + 2), TF1-style, in the zero-padded version
directory ``00000123``. Every answer is the document TF Serving gives for that model (its REST API
guide and ``http_rest_api_handler_test.cc``), defaults printed."""

import grpc
import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

from keras_advmi.serving import ModelEntry, ModelServer
from tests import serving_fixtures as sf


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    base = tmp_path_factory.mktemp("parity")
    sf.half_plus_two(base / "half_plus_two" / "00000123")
    server = ModelServer([ModelEntry("half_plus_two", base / "half_plus_two")], rest_port=0, grpc_port=0,
                         poll_seconds=0).start()
    yield server
    server.stop()


def _dim(*sizes):
    return {"dim": [{"size": str(s), "name": ""} for s in sizes], "unknown_rank": False}


def test_status_and_metadata_documents(served):
    url = served.rest_url + "/v1/models/half_plus_two"
    assert requests.get(url, timeout=10).json() == {"model_version_status": [
        {"version": "123", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert requests.get(url + "/versions/123", timeout=10).status_code == 200
    meta = requests.get(url + "/metadata", timeout=10).json()
    assert meta["model_spec"] == {"name": "half_plus_two", "signature_name": "", "version": "123"}
    sigs = meta["metadata"]["signature_def"]["signature_def"]
    assert sigs["serving_default"] == {
        "inputs": {"x": {"dtype": "DT_FLOAT", "tensor_shape": _dim(-1, 1), "name": "x_direct:0"}},
        "outputs": {"y": {"dtype": "DT_FLOAT", "tensor_shape": _dim(-1, 1), "name": "y:0"}},
        "method_name": "tensorflow/serving/predict", "defaults": {}}
    assert sigs["regress_x_to_y"] == {
        "inputs": {"inputs": {"dtype": "DT_STRING", "tensor_shape": _dim(-1), "name": "tf_example:0"}},
        "outputs": {"outputs": {"dtype": "DT_FLOAT", "tensor_shape": _dim(-1, 1), "name": "y_ex:0"}},
        "method_name": "tensorflow/serving/regress", "defaults": {}}
    assert sigs["classify_x_to_y"]["method_name"] == "tensorflow/serving/classify"


@pytest.mark.parametrize("body,answer", [
    ({"instances": [2.0, 3.0, 4.0]}, {"predictions": [3.0, 3.5, 4.0]}),     # the graph decides the shape
    ({"instances": [[2.0], [3.0]]}, {"predictions": [[3.0], [3.5]]}),
    ({"inputs": [2.0, 3.0]}, {"outputs": [3.0, 3.5]}),
    ({"inputs": {"x": [[1.0]]}}, {"outputs": [[2.5]]}),
    ({"signature_name": "serving_default", "instances": [{"x": 6.0}]}, {"predictions": [5.0]}),
])
def test_rest_predict_row_and_columnar(served, body, answer):
    r = requests.post(served.rest_url + "/v1/models/half_plus_two:predict", json=body, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json() == answer


def test_rest_predict_wrong_dtype_still_refused(served):
    r = requests.post(served.rest_url + "/v1/models/half_plus_two:predict", json={"instances": ["a"]}, timeout=30)
    assert r.status_code == 400 and "not of expected type: float" in r.json()["error"]


def test_grpc_predict_and_metadata(served):
    with grpc.insecure_channel(f"127.0.0.1:{served.grpc_port}") as ch:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(ch)
        req = predict_pb2.PredictRequest()
        req.model_spec.name = "half_plus_two"
        req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[2.0], [3.0]], np.float32)))
        resp = stub.Predict(req, timeout=30)
        assert (resp.model_spec.name, resp.model_spec.version.value, resp.model_spec.signature_name) == \
            ("half_plus_two", 123, "serving_default")
        y = resp.outputs["y"]
        assert (y.dtype, [d.size for d in y.tensor_shape.dim], list(y.float_val)) == (1, [2, 1], [3.0, 3.5])
        req.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([2.0, 4.0], np.float32)))
        assert tf.make_ndarray(stub.Predict(req, timeout=30).outputs["y"]).tolist() == [3.0, 4.0]
        mreq = get_model_metadata_pb2.GetModelMetadataRequest()
        mreq.model_spec.name = "half_plus_two"
        mreq.metadata_field.append("signature_def")
        mresp = stub.GetModelMetadata(mreq, timeout=30)
        assert mresp.model_spec.version.value == 123
        sdm = get_model_metadata_pb2.SignatureDefMap()
        mresp.metadata["signature_def"].Unpack(sdm)
        assert set(sdm.signature_def) == {"serving_default", "classify_x_to_y", "regress_x_to_y"}
        del mreq.metadata_field[:]
        with pytest.raises(grpc.RpcError) as err:
            stub.GetModelMetadata(mreq, timeout=30)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details() == "GetModelMetadataRequest must specify at least one metadata_field"

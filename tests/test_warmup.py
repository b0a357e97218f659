"""The embedded server replays assets.extra/tf_serving_warmup_requests before a version is AVAILABLE, and
retries a version that fails to load with exponential backoff (not at every poll)."""

import logging
import os
import time

import numpy as np
import pytest
import requests
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2, predict_pb2, prediction_log_pb2, regression_pb2

import serving_fixtures as sf
from keras_advmi.export import export
from keras_advmi.serving import ModelEntry, ModelServer, protos, registry
from keras_advmi.serving.registry import Registry


@pytest.fixture(scope="module")
def model():
    return sf.small_model(0)


def _states(reg, name):
    return [(r["version"], r["state"]) for r in protos.to_json(reg.status(name))["model_version_status"]]


def _write_records(path, logs):
    path.parent.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for log in logs:
            writer.write(log if isinstance(log, bytes) else log.SerializeToString())


def _predict_log(signature, x):
    request = predict_pb2.PredictRequest()
    request.model_spec.signature_name = signature
    request.inputs["inputs"].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
    return prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))


def test_warmup_replayed_through_each_signature_before_available(tmp_path, model, monkeypatch):
    """Both signatures of the export's warm-up file run while the version is LOADING; AVAILABLE comes after."""
    export(model, tmp_path / "m" / "1")
    reg = Registry([ModelEntry("m", tmp_path / "m")])
    calls = []
    run = registry.Servable.run

    def spy(self, signature, inputs):       # the version's status as a client would see it during the call
        calls.append((signature, inputs["inputs"].shape, _states(reg, self.name)))
        return run(self, signature, inputs)

    monkeypatch.setattr(registry.Servable, "run", spy)
    assert reg.poll() == 1
    assert calls == [("serving_default", (1, 8, 8, 1), [("1", "LOADING")])]
    assert _states(reg, "m") == [("1", "AVAILABLE")]
    # with a detector's signature: one record per signature, in the file's order
    calls.clear()
    sf.export_version(model, tmp_path / "d" / "1")          # serving_default + detect, no warm-up file
    _write_records(tmp_path / "d" / "1" / "assets.extra" / "tf_serving_warmup_requests",
                   [_predict_log("detect", np.zeros((2, 8, 8, 1))), _predict_log("", np.ones((1, 8, 8, 1)))])
    reg = Registry([ModelEntry("d", tmp_path / "d")])
    reg.poll()
    assert [(sig, shape, states) for sig, shape, states in calls] == [
        ("detect", (2, 8, 8, 1), [("1", "LOADING")]), ("serving_default", (1, 8, 8, 1), [("1", "LOADING")])]
    assert _states(reg, "d") == [("1", "AVAILABLE")]


def test_version_without_warmup_file_loads(tmp_path, model, monkeypatch, caplog):
    sf.export_version(model, tmp_path / "m" / "1")
    calls = []
    monkeypatch.setattr(registry.Servable, "run", lambda self, sig, inputs: calls.append(sig))
    reg = Registry([ModelEntry("m", tmp_path / "m")])
    with caplog.at_level(logging.INFO, logger="keras_advmi.serving.registry"):
        assert reg.poll() == 1
    assert calls == [] and _states(reg, "m") == [("1", "AVAILABLE")]
    assert "loaded m version 1 (0 warm-up records replayed)" in caplog.text


def test_classify_and_regress_records_replay_on_a_tf1_model(tmp_path):
    """TF Serving's half_plus_two: predict, classify and regress warm-up records all run; a record with no
    log type is skipped as TF Serving skips it."""
    path = sf.half_plus_two(tmp_path / "hpt" / "00000123")
    example = tf.train.Example(features=tf.train.Features(feature={
        "x": tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.signature_name = "classify_x_to_y"
    classify.input.example_list.examples.add().CopyFrom(example)
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.signature_name = "regress_x_to_y"
    regress.input.example_list.examples.add().CopyFrom(example)
    predict = predict_pb2.PredictRequest()
    predict.inputs["x"].CopyFrom(tf.make_tensor_proto(np.array([[1.0], [3.0]], np.float32)))
    _write_records(path / "assets.extra" / "tf_serving_warmup_requests", [
        prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=predict)),
        prediction_log_pb2.PredictionLog(classify_log=prediction_log_pb2.ClassifyLog(request=classify)),
        prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress)),
        prediction_log_pb2.PredictionLog()])
    servable = registry.Servable("hpt", 123, str(path))
    from keras_advmi.serving.warmup import replay_warmup

    assert replay_warmup(servable) == 3
    # a regress record aimed at the classify signature fails as the request would
    regress.model_spec.signature_name = "classify_x_to_y"
    _write_records(path / "assets.extra" / "tf_serving_warmup_requests", [
        prediction_log_pb2.PredictionLog(regress_log=prediction_log_pb2.RegressLog(request=regress))])
    with pytest.raises(RuntimeError, match="warmup record 1 .* INVALID_ARGUMENT: Expected regression signature"):
        replay_warmup(servable)


@pytest.mark.parametrize("bad, message", [
    (b"these bytes are not a TFRecord file", "TFRecord format"),
    ([b"not a PredictionLog \xff\xff"], "Failed to parse warmup record 1"),
    ([_predict_log("serving_default", np.zeros((1, 8, 8, 1))),
      _predict_log("serving_default", np.full((1, 8, 8, 1), 2.0))], r"warmup record 2 .*INVALID_ARGUMENT"),
    ([_predict_log("nope", np.zeros((1, 8, 8, 1)))], r'"nope" not found'),
    ([prediction_log_pb2.PredictionLog(session_run_log=prediction_log_pb2.SessionRunLog())],
     "Unsupported log_type for warmup: session_run_log"),
    ([_predict_log("serving_default", np.zeros((1, 8, 8, 1)))] * 1001, r"exceeds the maximum \(1000\)"),
])
def test_bad_warmup_file_keeps_the_version_unavailable_while_the_server_serves(tmp_path, model, bad, message):
    """Version 2's warm-up file is broken: v2 is END with the warm-up error (over REST), v1 keeps serving."""
    sf.export_version(model, tmp_path / "m" / "1")
    export(model, tmp_path / "m" / "2")
    warm = tmp_path / "m" / "2" / "assets.extra" / "tf_serving_warmup_requests"
    if isinstance(bad, bytes):
        warm.write_bytes(bad)
    else:
        _write_records(warm, bad)
    server = ModelServer([ModelEntry("m", tmp_path / "m", policy="all")], rest_port=0, grpc_port=0,
                         poll_seconds=0).start()
    try:
        status = requests.get(server.rest_url + "/v1/models/m", timeout=30).json()["model_version_status"]
        assert [(r["version"], r["state"], r["status"]["error_code"]) for r in status] == [
            ("2", "END", "UNKNOWN"), ("1", "AVAILABLE", "OK")]
        assert "tf_serving_warmup_requests" in status[0]["status"]["error_message"]
        assert __import__("re").search(message, status[0]["status"]["error_message"])
        x = sf.images(3, seed=1)
        r = requests.post(server.rest_url + "/v1/models/m:predict", json={"instances": x.tolist()}, timeout=30)
        assert r.status_code == 200
        probs = np.array([row["probabilities"] for row in r.json()["predictions"]])
        np.testing.assert_allclose(probs, sf.reference(model, x)[0]["probabilities"], atol=1e-5)
        assert requests.post(server.rest_url + "/v1/models/m/versions/2:predict", json={"instances": x.tolist()},
                             timeout=30).status_code == 404
    finally:
        server.stop()


def test_failing_version_is_retried_with_backoff(tmp_path, model, monkeypatch, caplog):
    """Polled every 20 ms for 3.2 s, a broken version is tried at 0, ~1 and ~3 s (1 s doubling), not 160
    times; changing its files retries it at the next poll; once fixed it loads."""
    base = tmp_path / "m"
    (base / "1").mkdir(parents=True)
    (base / "1" / "saved_model.pb").write_bytes(b"not a SavedModel")
    attempts = []
    init = registry.Servable.__init__

    def counting(self, *args, **kwargs):
        attempts.append(time.monotonic())
        return init(self, *args, **kwargs)

    monkeypatch.setattr(registry.Servable, "__init__", counting)
    reg = Registry([ModelEntry("m", base)])
    start, polls = time.monotonic(), 0
    with caplog.at_level(logging.WARNING, logger="keras_advmi.serving.registry"):
        while time.monotonic() - start < 3.2:
            reg.poll()
            polls += 1
            time.sleep(0.02)
    assert polls >= 40
    assert 2 <= len(attempts) <= 4, (len(attempts), polls)
    gaps = np.diff(attempts)
    assert 0.95 <= gaps[0] < 1.6 and (len(gaps) < 2 or 1.95 <= gaps[1] < 2.6), gaps
    lines = [r.getMessage() for r in caplog.records if "failed to load" in r.getMessage()]
    assert len(lines) == len(attempts)                     # one warning per attempt, not per poll
    assert "attempt 1, next in 1 s" in lines[0] and "attempt 2, next in 2 s" in lines[1]
    assert _states(reg, "m") == [("1", "END")]
    # new contents: retried at once (and the backoff starts over)
    n = len(attempts)
    (base / "1" / "saved_model.pb").write_bytes(b"still not a SavedModel, but other bytes")
    reg.poll()
    assert len(attempts) == n + 1 and "attempt 1," in caplog.records[-1].getMessage()
    reg.poll()
    assert len(attempts) == n + 1
    # fixed: a complete SavedModel in place loads at the next poll
    os.rename(base / "1", tmp_path / "broken")
    export(model, base / "1")
    assert reg.poll() == 1 and len(attempts) == n + 2
    assert _states(reg, "m") == [("1", "AVAILABLE")] and not reg._entries["m"].retry


def test_retry_settings_are_checked():
    for kwargs, name in (({"retry_initial_s": 0}, "retry_initial_s"), ({"retry_max_s": -1}, "retry_max_s"),
                         ({"retry_initial_s": 5, "retry_max_s": 1}, "retry_max_s"),
                         ({"retry_initial_s": True}, "retry_initial_s")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            Registry([], **kwargs)


def test_flat_saved_model_base_path_is_reported_once(tmp_path, model, caplog):
    """Exported straight into the base path (no version directory): one clear warning, not one per file."""
    export(model, tmp_path / "flat")
    reg = Registry([ModelEntry("flat", tmp_path / "flat")])
    with caplog.at_level(logging.WARNING, logger="keras_advmi.serving.registry"):
        reg.poll()
        reg.poll()
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 1 and "is itself a SavedModel" in messages[0]
    assert os.path.join(str(tmp_path / "flat"), "1") in messages[0]

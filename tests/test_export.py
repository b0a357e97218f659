"""SavedModel export: fresh-process parity, signatures via saved_model_cli, atomic write under SIGKILL, errors, CLI,
keras.Model.export's signature, assets.extra (metadata, TF Serving warm-up requests)."""

import inspect
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
import keras

import keras_advmi
from keras_advmi import detection as kd
from keras_advmi.defenses import PGD
from keras_advmi.export import export, read_metadata
from keras_advmi.models import AdversarialModel
from tensorflow_serving.apis import prediction_log_pb2

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
       "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def detector(digits, trained_digits_model):
    (x, y), (xt, _) = digits
    return kd.MahalanobisDetector().fit(trained_digits_model, x, y).calibrate(xt[:225], fpr=0.05)


@pytest.fixture(scope="module")
def exported(tmp_path_factory, trained_digits_model, detector):
    base = tmp_path_factory.mktemp("models")
    path = export(trained_digits_model, base / "digits" / "1", detector=detector,
                  metadata={"dataset": "digits", "epsilon": 0.2, "robustness": {"rows": [{"attack": "clean"}]}})
    return Path(path)


LOAD_SCRIPT = textwrap.dedent("""
    import sys, numpy as np, tensorflow as tf
    model = tf.saved_model.load(sys.argv[1])
    x = tf.constant(np.load(sys.argv[2]))
    out = {"serve_" + k: v.numpy() for k, v in model.signatures["serving_default"](inputs=x).items()}
    out.update({"detect_" + k: v.numpy() for k, v in model.signatures["detect"](inputs=x).items()})
    np.savez(sys.argv[3], **out)
""")


def test_fresh_process_predictions_and_detections_match(exported, tmp_path, digits, trained_digits_model, detector):
    _, (xt, _) = digits
    x = np.concatenate([xt[225:289], kd.adaptive_attack(detector, xt[289:321], np.zeros(32, int), 0.2, steps=5)])
    np.save(tmp_path / "x.npy", x)
    subprocess.run([sys.executable, "-c", LOAD_SCRIPT, str(exported), str(tmp_path / "x.npy"),
                    str(tmp_path / "out.npz")], check=True, env=ENV, timeout=180)
    out = np.load(tmp_path / "out.npz")
    probs = keras.ops.softmax(trained_digits_model(x)).numpy()
    np.testing.assert_allclose(out["serve_probabilities"], probs, atol=1e-5)
    np.testing.assert_array_equal(out["serve_class_ids"], probs.argmax(1))
    np.testing.assert_allclose(out["detect_probabilities"], probs, atol=1e-5)
    np.testing.assert_array_equal(out["detect_class_ids"], probs.argmax(1))
    np.testing.assert_allclose(out["detect_adversarial_score"], detector.score(x), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["detect_is_adversarial"], detector.detect(x))
    np.testing.assert_allclose(out["detect_threshold"], np.full(len(x), detector.threshold.numpy()))
    assert 0 < out["detect_is_adversarial"].sum() < len(x)  # both answers occur, so equality means something


def test_saved_model_cli_lists_both_signatures(exported):
    text = subprocess.run(["saved_model_cli", "show", "--all", "--dir", str(exported)], capture_output=True,
                          text=True, check=True, env=ENV, timeout=120).stdout
    serve, detect = text.split("signature_def['serving_default']")[1], text.split("signature_def['detect']")[1]
    detect = detect.split("signature_def[")[0]
    detect_outputs = ["adversarial_score", "is_adversarial", "threshold", "probabilities", "class_ids"]
    for block, outputs in ((serve, ["probabilities", "class_ids"]), (detect, detect_outputs)):
        assert "inputs['inputs']" in block and "shape: (-1, 8, 8, 1)" in block and "DT_FLOAT" in block
        for name in outputs:
            assert f"outputs['{name}']" in block
        assert "shape: (-1, 10)" in block and "tensorflow/serving/predict" in block


def test_signature_validates_shape_and_range(exported):
    model = tf.saved_model.load(str(exported))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"shape \(N, 8, 8, 1\)"):
        model.signatures["serving_default"](inputs=tf.zeros((2, 28, 28, 1)))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"\[0, 1\]"):
        model.signatures["detect"](inputs=tf.fill((2, 8, 8, 1), 2.0))


def test_metadata_asset(exported, detector, trained_digits_model, tmp_path):
    assert not (exported / "assets" / "keras_advmi.json").exists()    # TF Serving's place: assets.extra/
    meta = read_metadata(exported)
    assert meta == json.loads((exported / "assets.extra" / "keras_advmi.json").read_text())
    assert meta["dataset"] == "digits" and meta["epsilon"] == 0.2 and meta["classes"] == 10
    assert meta["input"]["shape"] == [None, 8, 8, 1] and meta["input"]["dtype"] == "float32"
    assert meta["detector"]["class"] == "MahalanobisDetector"
    assert meta["detector"]["calibration"]["threshold"] == pytest.approx(float(detector.threshold.numpy()))
    assert meta["detector"]["calibration"]["fpr_target"] == 0.05
    assert meta["robustness"] == {"rows": [{"attack": "clean"}]}
    assert set(meta["signatures"]) == {"serving_default", "detect"}
    # an AdversarialModel: its logits model is exported, its defense and epsilon recorded
    robust = AdversarialModel(trained_digits_model, PGD(epsilon=0.15, steps=3))
    path = export(robust, tmp_path / "robust" / "3")
    meta = read_metadata(path)
    assert meta["defense"]["class"] == "PGD" and meta["epsilon"] == 0.15 and meta["detector"] is None
    assert list(tf.saved_model.load(path).signatures) == ["serving_default"]


def test_overwrite_and_version_errors(exported, trained_digits_model, tmp_path):
    # a copy of the shared export: overwriting it must not change what the other tests of this module read
    exported = Path(shutil.copytree(exported, tmp_path / "digits" / "1"))
    with pytest.raises(FileExistsError, match="already exists"):
        export(trained_digits_model, exported)
    before = exported.stat().st_mtime_ns
    time.sleep(0.01)
    export(trained_digits_model, exported, overwrite=True)
    assert exported.stat().st_mtime_ns != before
    assert sorted(p.name for p in exported.parent.iterdir()) == ["1"]  # no temp or old dirs left behind
    assert list(tf.saved_model.load(str(exported)).signatures) == ["serving_default"]
    (exported.parent / "a_file").write_text("x")
    for bad in (3, "", exported.parent / "a_file"):
        with pytest.raises(ValueError, match="`path`"):
            export(trained_digits_model, bad)
    assert (exported.parent / "a_file").read_text() == "x"
    with pytest.raises(ValueError, match="`overwrite`"):
        export(trained_digits_model, exported, overwrite="yes")


def test_rejects_non_logit_models_and_mismatched_detectors(tmp_path, cnn_factory, digits, detector):
    softmax_head = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                     keras.layers.Dense(10, activation="softmax")])
    with pytest.raises(ValueError, match="logits"):
        export(softmax_head, tmp_path / "m" / "1")
    hidden_softmax = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10),
                                       keras.layers.Lambda(lambda t: keras.ops.softmax(t))])
    with pytest.raises(ValueError, match="probabilities"):
        export(hidden_softmax, tmp_path / "m" / "1")
    other = cnn_factory(input_shape=(10, 10, 1))
    with pytest.raises(ValueError, match=r"input shape \(8, 8, 1\)"):
        export(other, tmp_path / "m" / "1", detector=detector)
    same_shape = cnn_factory()
    with pytest.raises(ValueError, match="fitted on this model"):
        export(same_shape, tmp_path / "m" / "1", detector=detector)
    uncalibrated = kd.FeatureSqueezingDetector().fit(same_shape, digits[1][0])
    with pytest.raises(ValueError, match="calibrate"):
        export(same_shape, tmp_path / "m" / "1", detector=uncalibrated)
    assert not (tmp_path / "m" / "1").exists()


KILL_SCRIPT = textwrap.dedent("""
    import sys, keras
    from keras_advmi.export import export
    keras.utils.set_random_seed(0)
    # ~100 MB of weights, so writing takes long enough to be interrupted
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5000),
                              keras.layers.Dense(5000), keras.layers.Dense(10)])
    print("ready", flush=True)
    export(model, sys.argv[1])
""")


def test_sigkill_mid_export_leaves_no_loadable_version(tmp_path, trained_digits_model):
    name_dir = tmp_path / "base" / "digits"
    export(trained_digits_model, name_dir / "1")
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, str(name_dir / "2")], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        assert proc.stdout.readline().strip() == b"ready"
        deadline, killed_mid_write = time.time() + 120, False
        while time.time() < deadline and proc.poll() is None:
            tmp = [p for p in name_dir.iterdir() if p.name.startswith(".2.tmp-")]
            if tmp and (tmp[0] / "variables").exists():  # files are being written
                os.kill(proc.pid, signal.SIGKILL)
                killed_mid_write = True
                break
            time.sleep(0.002)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert killed_mid_write, "the export finished before it could be interrupted"
    assert proc.returncode == -signal.SIGKILL
    numeric = sorted(p.name for p in name_dir.iterdir() if p.name.isdigit())
    assert numeric == ["1"]                      # a version watcher sees only the complete version
    assert any(p.name.startswith(".2.tmp-") for p in name_dir.iterdir())  # the half version is hidden
    export(trained_digits_model, name_dir / "2")  # the next export succeeds and removes the stale temp dir
    assert sorted(p.name for p in name_dir.iterdir()) == ["1", "2"]


def test_cli_export(tmp_path, trained_digits_model):
    from keras_advmi.cli import main

    model_path = tmp_path / "run" / "model.keras"
    model_path.parent.mkdir()
    trained_digits_model.save(model_path)
    (model_path.parent / "train_config.json").write_text(json.dumps({"dataset": "digits", "defense": "none",
                                                                     "epsilon": 0.2}))
    out = tmp_path / "models" / "digits" / "7"
    assert main(["export", str(model_path), str(out), "--detector", "feature_squeezing", "--fit-images", "300",
                 "--calibration-images", "200"]) == 0
    meta = read_metadata(out)
    assert meta["dataset"] == "digits" and meta["detector"]["class"] == "FeatureSqueezingDetector"
    assert meta["detector"]["calibration"]["n"] == 200
    assert set(tf.saved_model.load(str(out)).signatures) == {"serving_default", "detect"}
    assert main(["export", str(model_path), str(out)]) == 2                      # exists
    assert main(["export", str(model_path), str(out), "--fpr", "1.5", "--overwrite"]) == 2
    assert main(["export", str(model_path), str(tmp_path / "m" / "v1")]) == 2    # non-numeric version
    other = tmp_path / "other.npz"   # a dataset of another input shape
    np.savez(other, x_train=np.zeros((20, 28, 28), np.uint8), y_train=np.zeros(20, np.int64),
             x_test=np.zeros((20, 28, 28), np.uint8), y_test=np.zeros(20, np.int64))
    assert main(["export", str(model_path), str(tmp_path / "m" / "2"), "--detector", "mahalanobis",
                 "--dataset", str(other)]) == 2
    assert not (tmp_path / "m" / "2").exists()
    assert keras_advmi.__version__


@pytest.mark.parametrize("name", ["feature_squeezing", "mi"])
def test_other_detectors_export_with_equal_scores(name, tmp_path, digits, trained_digits_model):
    (x, y), (xt, _) = digits
    det = (kd.FeatureSqueezingDetector(bits=1, median=None) if name == "feature_squeezing"
           else kd.MIScoreDetector(epochs=2, noise=0.2)).fit(trained_digits_model, x, y).calibrate(xt[:225])
    loaded = tf.saved_model.load(export(trained_digits_model, tmp_path / name / "1", detector=det))
    out = loaded.signatures["detect"](inputs=tf.constant(xt[225:]))
    np.testing.assert_allclose(out["adversarial_score"].numpy(), det.score(xt[225:]), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(out["is_adversarial"].numpy(), det.detect(xt[225:]))


def _warmup_records(path):
    return [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(str(Path(path) / "assets.extra" / "tf_serving_warmup_requests"))]


def test_warmup_requests_one_per_signature(detector, trained_digits_model, tmp_path):
    """TF Serving's warm-up file: a TFRecord of PredictionLog records, a Predict request of one zero image
    per signature, which the SavedModel answers."""
    exported = export(trained_digits_model, tmp_path / "with_detector", detector=detector)
    logs = _warmup_records(exported)
    assert [log.WhichOneof("log_type") for log in logs] == ["predict_log", "predict_log"]
    requests = [log.predict_log.request for log in logs]
    assert [r.model_spec.signature_name for r in requests] == ["serving_default", "detect"]
    loaded = tf.saved_model.load(exported)
    for r in requests:
        assert list(r.inputs) == ["inputs"]
        x = tf.make_ndarray(r.inputs["inputs"])
        assert x.dtype == np.float32 and x.shape == (1, 8, 8, 1) and not x.any()
        out = loaded.signatures[r.model_spec.signature_name](inputs=tf.constant(x))
        np.testing.assert_allclose(out["probabilities"].numpy(),
                                   keras.ops.softmax(trained_digits_model(x)).numpy(), atol=1e-6)
    plain = export(trained_digits_model, tmp_path / "no_detector")
    assert [log.predict_log.request.model_spec.signature_name for log in _warmup_records(plain)] == [
        "serving_default"]


def test_robust_export_matches_keras_signature_and_takes_any_directory(trained_digits_model, digits, tmp_path):
    """``AdversarialModel.export`` has keras.Model.export's arguments in its order (ours keyword-only after
    them); a plain, non-numeric directory works and loads with tf.saved_model.load."""
    ours = list(inspect.signature(AdversarialModel.export).parameters.values())
    theirs = list(inspect.signature(keras.Model.export).parameters.values())
    positional = [p for p in ours if p.kind is p.POSITIONAL_OR_KEYWORD]
    assert [(p.name, p.default) for p in positional] == [(p.name, p.default) for p in theirs[:-1]]
    assert [(p.name, p.kind) for p in ours[len(positional):]] == [
        ("detector", inspect.Parameter.KEYWORD_ONLY), ("metadata", inspect.Parameter.KEYWORD_ONLY),
        ("overwrite", inspect.Parameter.KEYWORD_ONLY), ("kwargs", inspect.Parameter.VAR_KEYWORD)]
    robust = AdversarialModel(trained_digits_model, PGD(epsilon=0.15, steps=3))
    target = tmp_path / "robust_model"
    stale = tmp_path / ".robust_model.tmp-999999999-abcdefgh"    # a killed export's leftover (no such pid)
    stale.mkdir()
    assert robust.export(target, "tf_saved_model", False, None) == str(target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["robust_model"]
    _, (xt, _) = digits
    out = tf.saved_model.load(str(target)).signatures["serving_default"](inputs=tf.constant(xt[:16]))
    np.testing.assert_allclose(out["probabilities"].numpy(), keras.ops.softmax(trained_digits_model(xt[:16])),
                               atol=1e-5)
    assert read_metadata(target)["defense"]["class"] == "PGD"
    assert len(_warmup_records(target)) == 1
    with pytest.raises(FileExistsError, match="already exists"):
        robust.export(target)
    spec = tf.TensorSpec((None, 8, 8, 1), tf.float32)
    assert robust.export(target, input_signature=[spec], overwrite=True, metadata={"dataset": "digits"}) == str(target)
    assert read_metadata(target)["dataset"] == "digits"
    with pytest.raises(ValueError, match="`input_signature`"):
        robust.export(tmp_path / "x", input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)])
    with pytest.raises(ValueError, match="`format`.*'litert'"):
        robust.export(tmp_path / "x", format="savedmodel")
    with pytest.raises(ValueError, match="`detector`"):
        robust.export(tmp_path / "x.tflite", format="litert", detector=object())
    with pytest.raises(TypeError, match="is_static"):
        robust.export(tmp_path / "x", is_static=True)
    assert not (tmp_path / "x").exists()


@pytest.mark.filterwarnings("ignore:.*tf.lite.Interpreter is deprecated:UserWarning")
def test_robust_export_delegates_keras_formats(trained_digits_model, digits, tmp_path):
    """format='litert': Keras' own export of the logits network (same logits as the model)."""
    robust = AdversarialModel(trained_digits_model, PGD(epsilon=0.15, steps=3))
    robust.export(str(tmp_path / "m.tflite"), format="litert", verbose=False)
    interpreter = tf.lite.Interpreter(model_path=str(tmp_path / "m.tflite"))
    interpreter.allocate_tensors()
    _, (xt, _) = digits
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    interpreter.set_tensor(inp["index"], xt[:1])
    interpreter.invoke()
    np.testing.assert_allclose(interpreter.get_tensor(out["index"]), trained_digits_model(xt[:1]), atol=1e-4)

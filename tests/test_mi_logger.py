"""MutualInformationLogger: event files read back with TensorBoard's reader, a live TensorBoard over HTTP."""

import json
import math
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import requests
import tensorflow as tf
import keras
from tensorboard.backend.event_processing import event_accumulator

import keras_advmi as kam
from keras_advmi import mi


def _events(run_dir):
    acc = event_accumulator.EventAccumulator(run_dir, size_guidance={event_accumulator.TENSORS: 0,
                                                                     event_accumulator.IMAGES: 0})
    acc.Reload()
    return acc


@pytest.fixture(scope="module")
def logged_run(digits, cnn_factory, tmp_path_factory):
    (x, y), (xt, yt) = digits
    log_dir = str(tmp_path_factory.mktemp("tb") / "pgd_at")
    model = kam.AdversarialModel(cnn_factory(), defense=kam.defenses.PGD(epsilon=0.2, step_size=0.05, steps=5))
    model.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])
    logger = kam.callbacks.MutualInformationLogger(xt[:300], yt[:300], log_dir=log_dir,
                                                   estimators=("kde_upper", "binning"), steps=5)
    model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[logger])
    return model, logger, log_dir, (xt[:300], yt[:300])


def test_event_file_holds_every_tag_and_value(logged_run):
    model, logger, log_dir, _ = logged_run
    acc = _events(os.path.join(log_dir, "mi"))
    tags = set(acc.Tags()["tensors"])
    layers = ["conv1", "conv2", "dense1", "logits"]
    assert logger.layers == layers                     # default: every layer with weights
    for layer in layers:
        for q in ("I_XT", "I_TY", "I_XT_binning", "I_TY_binning"):
            for kind in ("clean", "adv"):
                tag = f"mi/{layer}/{q}/{kind}"
                assert tag in tags, tag
                events = acc.Tensors(tag)
                assert [e.step for e in events] == [0, 1]
                logged = [float(tf.make_ndarray(e.tensor_proto)) for e in events]
                np.testing.assert_allclose(logged, logger.history[tag], rtol=1e-6)
                assert all(0.0 <= v <= math.log(300) + 1e-6 for v in logged)
    assert float(tf.make_ndarray(acc.Tensors("mi/log_N")[0].tensor_proto)) == pytest.approx(math.log(300), rel=1e-6)
    assert acc.SummaryMetadata("mi/information_plane").plugin_data.plugin_name == "images"
    images = acc.Tensors("mi/information_plane")
    assert [e.step for e in images] == [0, 1]
    png = tf.make_ndarray(images[-1].tensor_proto)   # [width, height, encoded PNG]
    decoded = tf.image.decode_png(png[2]).numpy()
    assert decoded.shape[:2] == (int(png[1]), int(png[0])) and decoded.std() > 10   # a picture, not blank
    assert "custom_scalars__config__" in tags


def test_logged_values_are_the_estimators_on_the_final_model(logged_run):
    model, logger, _, (xp, yp) = logged_run
    features = keras.Model(model.model.inputs[0], model.model.get_layer("dense1").output)
    h = features(xp).numpy()
    assert logger.history["mi/dense1/I_XT/clean"][-1] == pytest.approx(mi.kde_upper(h), rel=1e-5)
    assert logger.history["mi/dense1/I_TY/clean"][-1] == pytest.approx(mi.kde_label_mi(h, yp), rel=1e-5)
    ixt, ity = mi.binning_mi(h, yp, 0.5)
    assert logger.history["mi/dense1/I_XT_binning/clean"][-1] == pytest.approx(ixt, rel=1e-9)
    # The adversarial probe really is adversarial: the logits carry less label information under PGD.
    assert logger.history["mi/logits/I_TY/adv"][-1] < logger.history["mi/logits/I_TY/clean"][-1]
    saved = json.load(open(os.path.join(logged_run[2], "mi", "mi_history.json")))
    assert saved["history"]["mi/dense1/I_XT/clean"] == logger.history["mi/dense1/I_XT/clean"]
    plane = logger.information_plane()
    assert set(plane) == {"clean", "adv"} and len(plane["clean"]["conv1"]) == 2


def test_layout_groups_clean_and_adv_per_layer(logged_run):
    _, logger, _, _ = logged_run
    from keras_advmi.callbacks.mutual_information import mi_layout
    import re

    layout = mi_layout(logger.layers, logger.estimators)
    chart = layout.category[0].chart[1]
    pattern = re.compile(chart.multiline.tag[0])
    assert pattern.match("mi/conv2/I_XT/clean") and pattern.match("mi/conv2/I_XT/adv")
    assert not pattern.match("mi/conv2/I_TY/clean") and not pattern.match("mi/conv1/I_XT/clean")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_live_tensorboard_serves_the_mi_tags(logged_run):
    log_dir = os.path.dirname(logged_run[2])
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", log_dir, "--host", "127.0.0.1",
                             "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline:
            try:
                r = requests.get(f"http://127.0.0.1:{port}/data/plugin/scalars/tags", timeout=5)
                if r.status_code == 200 and r.json().get("pgd_at/mi"):
                    tags = r.json()["pgd_at/mi"]
                    if "mi/conv2/I_XT/adv" in tags:
                        break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        assert "mi/conv2/I_XT/clean" in tags and "mi/logits/I_TY/adv" in tags, tags
        r = requests.get(f"http://127.0.0.1:{port}/data/plugin/scalars/scalars",
                         params={"run": "pgd_at/mi", "tag": "mi/conv2/I_XT/clean"}, timeout=10)
        assert r.status_code == 200
        steps = [row[1] for row in r.json()]
        assert steps == [0, 1]
        np.testing.assert_allclose([row[2] for row in r.json()], logged_run[1].history["mi/conv2/I_XT/clean"],
                                   rtol=1e-6)
        layout = requests.get(f"http://127.0.0.1:{port}/data/plugin/custom_scalars/layout", timeout=10).json()
        titles = [c["title"] for c in layout["category"]]
        assert "MI I(X;T) per layer" in titles, titles
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_nt_model_needs_epsilon_and_clean_only_works(digits, cnn_factory, tmp_path):
    (x, y), (xt, yt) = digits
    net = cnn_factory()
    net.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    with pytest.raises(ValueError, match="epsilon"):
        net.fit(x[:64], y[:64], epochs=1, verbose=0,
                callbacks=[kam.callbacks.MutualInformationLogger(xt[:50], yt[:50], str(tmp_path / "a"))])
    logger = kam.callbacks.MutualInformationLogger(xt[:50], yt[:50], str(tmp_path / "b"), layers=["dense1"],
                                                   attack=None, plane_image=False)
    net.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[logger])
    assert set(logger.history) == {"epoch", "mi/log_N", "mi/dense1/I_XT/clean", "mi/dense1/I_TY/clean"}


@pytest.mark.parametrize("kwargs, match", [
    (dict(x_probe=np.zeros((1, 8, 8, 1)), y_probe=[0]), "at least 2"),
    (dict(y_probe=np.zeros(3, int)), "y_probe"),
    (dict(estimators=("kde",)), "estimators"),
    (dict(noise_var=0), "noise_var"),
    (dict(bin_width=-0.5), "bin_width"),
    (dict(every_n_epochs=0), "every_n_epochs"),
    (dict(attack="fgsm"), "attack"),
    (dict(layers=[]), "layers"),
    (dict(unit="bytes"), "unit"),
])
def test_bad_arguments(kwargs, match, tmp_path):
    args = dict(x_probe=np.zeros((10, 8, 8, 1), np.float32), y_probe=np.zeros(10, int), log_dir=str(tmp_path))
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        kam.callbacks.MutualInformationLogger(**args)


def test_unknown_layer_is_named(digits, cnn_factory, tmp_path):
    (x, y), _ = digits
    net = cnn_factory()
    net.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logger = kam.callbacks.MutualInformationLogger(x[:20], y[:20], str(tmp_path), layers=["conv9"], attack=None)
    with pytest.raises(ValueError, match="conv9"):
        net.fit(x[:32], y[:32], epochs=1, verbose=0, callbacks=[logger])

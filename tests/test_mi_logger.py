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


def _values(acc, tag):
    return [float(tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]


def test_event_files_hold_clean_and_adv_as_two_runs_with_the_same_tags(logged_run):
    model, logger, log_dir, _ = logged_run
    # one TensorBoard run per probe kind, as Keras's train / validation: TensorBoard colours and names them
    assert sorted(os.listdir(os.path.join(log_dir, "mi"))) == ["adv", "clean", "mi_history.json"]
    runs = {kind: _events(os.path.join(log_dir, "mi", kind)) for kind in ("clean", "adv")}
    tags = {kind: set(acc.Tags()["tensors"]) for kind, acc in runs.items()}
    layers = ["conv1", "conv2", "dense1", "logits"]
    assert logger.layers == layers                     # default: every layer with weights
    quantities = ("I_XT", "I_TY", "I_XT_binning", "I_TY_binning", "I_TY_infonce")
    expected = {f"mi/{layer}/{q}" for layer in layers for q in quantities} | {"mi/saturated"}
    assert tags["adv"] == expected
    assert tags["clean"] == expected | {"mi/log_N", "mi/H_Y", "mi/information_plane", "custom_scalars__config__"}
    for kind, acc in runs.items():
        for tag in expected - {"mi/saturated"}:
            assert [e.step for e in acc.Tensors(tag)] == [0, 1]
            logged = _values(acc, tag)
            np.testing.assert_allclose(logged, logger.history[f"{tag}/{kind}"], rtol=1e-6)   # history keys unchanged
            assert all(-1.0 <= v <= math.log(300) + 1e-6 for v in logged)
    clean = runs["clean"]
    assert _values(clean, "mi/log_N")[0] == pytest.approx(math.log(300), rel=1e-6)
    assert _values(clean, "mi/H_Y")[0] == pytest.approx(mi.label_entropy(logged_run[3][1]), rel=1e-6)
    # each run counts its own saturated estimates; history / logs keep the total.
    # the 2022 MI paper's absolute bin width saturates some binning estimates, never the (scale-aware) KDE ones
    for epoch in range(2):
        values = {tag: v[epoch] for tag, v in logger.history.items() if tag != "epoch"}
        flagged = logger.saturated(values)
        per_run = {kind: _values(runs[kind], "mi/saturated")[epoch] for kind in runs}
        assert per_run == {kind: sum(t.endswith("/" + kind) for t in flagged) for kind in runs}
        assert sum(per_run.values()) == logger.history["mi/saturated"][epoch] == len(flagged)
        assert all("_binning" in tag for tag in flagged), flagged
    acc = clean
    assert acc.SummaryMetadata("mi/information_plane").plugin_data.plugin_name == "images"
    images = acc.Tensors("mi/information_plane")
    assert [e.step for e in images] == [0, 1]
    png = tf.make_ndarray(images[-1].tensor_proto)   # [width, height, encoded PNG]
    decoded = tf.image.decode_png(png[2]).numpy()
    assert decoded.shape[:2] == (int(png[1]), int(png[0])) and decoded.std() > 10   # a picture, not blank


def test_logged_values_are_the_estimators_on_the_final_model(logged_run):
    model, logger, _, (xp, yp) = logged_run
    features = keras.Model(model.model.inputs[0], model.model.get_layer("dense1").output)
    h = features(xp).numpy()
    s2 = mi.kde_noise_var(h)         # the default: scale-aware, from the clean probe's spread
    assert logger.history["mi/dense1/I_XT/clean"][-1] == pytest.approx(mi.kde_upper(h, "relative"), rel=1e-5)
    assert logger.history["mi/dense1/I_XT/clean"][-1] == pytest.approx(mi.kde_upper(h, s2), rel=1e-5)
    assert logger.history["mi/dense1/I_TY/clean"][-1] == pytest.approx(mi.kde_label_mi(h, yp, s2), rel=1e-5)
    # the adversarial probe is measured with the clean probe's s2 (one yardstick for both)
    x_adv = logger.adversarial_probe()
    assert logger.history["mi/dense1/I_XT/adv"][-1] == pytest.approx(mi.kde_upper(features(x_adv).numpy(), s2), rel=1e-5)
    ixt, ity = mi.binning_mi(h, yp, 0.5)
    assert logger.history["mi/dense1/I_XT_binning/clean"][-1] == pytest.approx(ixt, rel=1e-9)
    # The adversarial probe really is adversarial: the logits carry less label information under PGD.
    assert logger.history["mi/logits/I_TY/adv"][-1] < logger.history["mi/logits/I_TY/clean"][-1]
    saved = json.load(open(os.path.join(logged_run[2], "mi", "mi_history.json")))
    assert saved["history"]["mi/dense1/I_XT/clean"] == logger.history["mi/dense1/I_XT/clean"]
    plane = logger.information_plane()
    assert set(plane) == {"clean", "adv"} and len(plane["clean"]["conv1"]) == 2


def test_layout_gives_each_layer_a_chart_per_quantity_and_estimator(logged_run):
    _, logger, _, _ = logged_run
    from keras_advmi.callbacks.mutual_information import mi_layout
    import re

    layout = mi_layout(logger.layers, ("kde_upper",), neural=True)   # the logger's defaults
    titles = [c.title for c in layout.category]
    assert titles == ["I(X;T) per layer, KDE upper bound [nats], clean vs adv (ceiling log N)",
                      "I(T;Y) per layer, KDE upper bound [nats], clean vs adv (ceiling H(Y))",
                      "I(T;Y) per layer, InfoNCE bound of a critic trained online [nats], clean vs adv (ceiling H(Y))",
                      "MI ceilings and saturated estimates"]
    charts = [chart for category in layout.category for chart in category.chart]
    assert [c.title for c in layout.category[0].chart] == ["conv1 I(X;T)", "conv2 I(X;T)", "dense1 I(X;T)",
                                                           "logits I(X;T)"]
    # a run's tags: each per-layer chart shows exactly one of them (one curve per run: clean, adv)
    run_tags = {f"mi/{layer}/{q}" for layer in logger.layers for q in ("I_XT", "I_TY", "I_TY_infonce")}
    for chart in charts[:12]:
        patterns = [re.compile(t) for t in chart.multiline.tag]
        assert len([t for t in run_tags if any(p.match(t) for p in patterns)]) == 1, chart.title
    assert re.match(charts[1].multiline.tag[0], "mi/conv2/I_XT") and "mi/H_Y" not in str(charts[1])
    assert [list(c.multiline.tag) for c in charts[12:]] == [[r"^mi/log_N$", r"^mi/H_Y$"], [r"^mi/saturated$"]]
    # more estimators: more charts, not more curves per chart
    wide = mi_layout(logger.layers, ("kde_upper", "kde_lower", "binning"), scores=("mi_natural", "mi_adversarial"),
                     neural=True, unit="bits")
    assert len(wide.category) == 2 * 3 + 1 + 1 + 1 and "[bits]" in wide.category[0].title
    assert all(len(chart.multiline.tag) == 1 for category in wide.category[:-1] for chart in category.chart)
    assert list(wide.category[-2].chart[0].multiline.tag) == [r"^mi/output/mi_natural$"]


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# TensorBoard's default run palette ("tensorboardColorBlindAssist" in its frontend): the i-th run of
# /data/runs gets colour i modulo 7, in the Custom Scalars tab as in the run list beside it.
TB_PALETTE = ["#ff7043", "#0077bb", "#cc3311", "#33bbee", "#ee3377", "#009988", "#bbbbbb"]


@pytest.fixture(scope="module")
def nt_run(logged_run, digits, cnn_factory):
    """A normally trained model logged beside ``logged_run`` (as examples/tensorboard_mi.py does), with the
    logger before Keras's own TensorBoard callback."""
    (x, y), (xt, yt) = digits
    log_dir = os.path.join(os.path.dirname(logged_run[2]), "nt")
    net = cnn_factory()
    net.compile(optimizer=keras.optimizers.Adam(2e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logger = kam.callbacks.MutualInformationLogger(xt[:300], yt[:300], log_dir=log_dir, epsilon=0.2, steps=3,
                                                   plane_image=False, neural_steps=10)
    net.fit(x, y, epochs=1, batch_size=64, verbose=0, callbacks=[logger, keras.callbacks.TensorBoard(log_dir)])
    return logger


def test_live_tensorboard_draws_two_models_clean_and_adv_in_four_colours(logged_run, nt_run):
    import re

    log_dir = os.path.dirname(logged_run[2])
    mi_runs = ["nt/mi/adv", "nt/mi/clean", "pgd_at/mi/adv", "pgd_at/mi/clean"]
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tensorboard.main", "--logdir", log_dir, "--host", "127.0.0.1",
                             "--port", str(port), "--load_fast", "false", "--reload_interval", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}/data"
    try:
        deadline, tags = time.time() + 90, {}
        while time.time() < deadline:
            try:
                r = requests.get(f"{url}/plugin/scalars/tags", timeout=5)
                if r.status_code == 200 and all("mi/conv2/I_XT" in r.json().get(run, {}) for run in mi_runs):
                    tags = r.json()
                    break
            except requests.ConnectionError:
                pass
            time.sleep(1)
        assert set(mi_runs) <= set(tags), sorted(tags)
        assert "mi/logits/I_TY" in tags["pgd_at/mi/adv"] and "mi/log_N" in tags["pgd_at/mi/clean"]
        r = requests.get(f"{url}/plugin/scalars/scalars", params={"run": "pgd_at/mi/adv", "tag": "mi/conv2/I_XT"},
                         timeout=10)
        assert r.status_code == 200
        assert [row[1] for row in r.json()] == [0, 1]
        np.testing.assert_allclose([row[2] for row in r.json()], logged_run[1].history["mi/conv2/I_XT/adv"],
                                   rtol=1e-6)
        # colours: each model's clean and adv runs are neighbours in TensorBoard's run order, and the four
        # MI runs get four different palette colours
        order = requests.get(f"{url}/runs", timeout=10).json()
        for model in ("nt", "pgd_at"):
            assert order.index(f"{model}/mi/clean") == order.index(f"{model}/mi/adv") + 1, order
        colours = {run: TB_PALETTE[order.index(run) % len(TB_PALETTE)] for run in mi_runs}
        assert len(set(colours.values())) == 4, (order, colours)
        # the Custom Scalars layout: per layer a chart with one curve per run (2 models x clean/adv), never
        # more than 5 curves in a chart
        layout = requests.get(f"{url}/plugin/custom_scalars/layout", timeout=10).json()
        titles = [c["title"] for c in layout["category"]]
        assert titles[:2] == ["I(X;T) per layer, KDE upper bound [nats], clean vs adv (ceiling log N)",
                              "I(T;Y) per layer, KDE upper bound [nats], clean vs adv (ceiling H(Y))"], titles
        curves = {}
        for category in layout["category"]:
            for chart in category["chart"]:
                patterns = [re.compile(p) for p in chart["multiline"]["tag"]]
                curves[chart["title"]] = sorted((run, tag) for run, run_tags in tags.items() for tag in run_tags
                                                if any(p.search(tag) for p in patterns))
        assert max(len(c) for c in curves.values()) <= 5, curves
        assert curves["conv2 I(X;T)"] == [(run, "mi/conv2/I_XT") for run in mi_runs]
        assert curves["logits I(T;Y) (infonce)"] == [(run, "mi/logits/I_TY_infonce") for run in mi_runs]
        assert curves["dense1 I(T;Y) (binning)"] == [(run, "mi/dense1/I_TY_binning") for run in mi_runs[2:]]
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
    assert set(logger.history) == {"epoch", "mi/log_N", "mi/H_Y", "mi/saturated", "mi/dense1/I_XT/clean",
                                   "mi/dense1/I_TY/clean", "mi/dense1/I_TY_infonce/clean"}
    assert sorted(os.listdir(tmp_path / "b" / "mi")) == ["clean", "mi_history.json"]   # no adv run without attack


@pytest.mark.parametrize("kwargs, match", [
    (dict(x_probe=np.zeros((1, 8, 8, 1)), y_probe=[0]), "at least 2"),
    (dict(y_probe=np.zeros(3, int)), "y_probe"),
    (dict(estimators=("kde",)), "estimators"),
    (dict(noise_var=0), "noise_var"),
    (dict(noise_var="median"), "noise_var"),
    (dict(relative_noise=0.0), "relative_noise"),
    (dict(neural="yes"), "neural"),
    (dict(neural_steps=0), "neural_steps"),
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


def _nt_net(cnn_factory):
    net = cnn_factory()
    net.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return net


@pytest.mark.parametrize("n_probe, layers, match", [
    (20, ["conv9"], "conv9"),
    (6, None, r"`x_probe`.*as many probe images as the model has classes \(10\)"),
])
def test_unknown_layer_or_too_small_probe_is_named(digits, cnn_factory, tmp_path, n_probe, layers, match):
    (x, y), _ = digits
    net = _nt_net(cnn_factory)
    logger = kam.callbacks.MutualInformationLogger(x[:n_probe], y[:n_probe], str(tmp_path), layers=layers,
                                                   attack=None)
    with pytest.raises(ValueError, match=match):
        net.fit(x[:32], y[:32], epochs=1, verbose=0, callbacks=[logger])


def test_non_finite_activations_name_the_layer(digits, cnn_factory, tmp_path):
    (x, y), _ = digits
    net = _nt_net(cnn_factory)
    logger = kam.callbacks.MutualInformationLogger(x[:40], y[:40], str(tmp_path), attack=None)
    logger.set_model(net)
    logger.on_train_begin()
    kernel, bias = net.get_layer("dense1").get_weights()
    net.get_layer("dense1").set_weights([kernel, np.full_like(bias, np.nan)])   # a diverged model
    with pytest.raises(ValueError, match=r"'dense1'.*non-finite.*`x_probe`"):
        logger.measure()


def test_saturated_estimates_are_flagged_in_the_logs(digits, cnn_factory, tmp_path, caplog):
    (x, y), (xt, yt) = digits
    net = _nt_net(cnn_factory)
    # an absolute noise (as the 2022 MI paper's) at a tiny variance: every I(X;T) sits at log N
    logger = kam.callbacks.MutualInformationLogger(xt[:100], yt[:100], str(tmp_path), attack=None,
                                                   noise_var=1e-6, neural=False, plane_image=False)
    with caplog.at_level("WARNING", logger="keras_advmi.callbacks.mutual_information"):
        history = net.fit(x[:64], y[:64], epochs=1, verbose=0, callbacks=[logger])
    assert history.history["mi_saturated"] == [logger.history["mi/saturated"][0]]
    assert logger.history["mi/saturated"][0] >= 4           # the four layers' I(X;T) at least
    assert "within 5% of their ceiling" in caplog.text and "mi/conv1/I_XT/clean" in caplog.text


def test_information_plane_layer_names_do_not_overlap(monkeypatch):
    """The picture the logger writes names each layer at its last clean point; layers that end close
    together (as on digits after a few epochs) get names that overlap neither each other nor another
    layer's end marker, inside the axes."""
    from matplotlib.text import Text
    from keras_advmi.analysis import plots

    figures = []
    real_to_png = plots.to_png
    monkeypatch.setattr(plots, "to_png", lambda fig, path=None, dpi=90: figures.append(fig) or real_to_png(fig, path, dpi))
    layers = ["conv1", "conv2", "dense1", "logits"]
    clean = {name: np.array([[3.0 + 0.3 * e + 0.005 * i, 1.5 + 0.1 * e + 0.005 * i] for e in range(4)])
             for i, name in enumerate(layers)}   # last points within 0.015 nats of each other
    adv = {name: pts - [0.5, 0.4] for name, pts in clean.items()}
    png = plots.plot_information_plane({"m": dict(clean=clean, adv=adv, layers=layers, unit="nats",
                                                  log_n=math.log(300), h_y=math.log(10))})
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    fig = figures[0]
    fig.draw_without_rendering()
    renderer, ax = fig.canvas.get_renderer(), fig.axes[0]
    names = {t.get_text(): t for t in ax.texts if t.get_text() in layers}
    assert sorted(names) == sorted(layers)
    boxes = {}
    for name, text in names.items():
        text.update_positions(renderer)
        boxes[name] = Text.get_window_extent(text, renderer)
    frame = ax.get_window_extent(renderer)
    for name, box in boxes.items():
        assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1, name
        for other in layers:
            if other != name:
                assert not box.overlaps(boxes[other]), (name, other, box, boxes[other])
                for pts in (clean[other], adv[other]):
                    assert not box.contains(*ax.transData.transform(pts[-1])), (name, other)


# -- the defaults on real training: MI curves a person can read --------------------------------------

@pytest.fixture(scope="module")
def default_runs(digits, cnn_factory, tmp_path_factory):
    """NT and PGD-AT small CNNs trained 5 epochs from scratch with a default logger on all 449 test images."""
    (x, y), (xt, yt) = digits
    runs = {}
    for kind in ("nt", "at"):
        net = cnn_factory()
        if kind == "nt":
            model = net
            model.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"],
                          loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        else:
            model = kam.AdversarialModel(net, defense=kam.defenses.PGD(epsilon=0.2, step_size=0.05, steps=5))
            model.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])
        logger = kam.callbacks.MutualInformationLogger(xt, yt, str(tmp_path_factory.mktemp(kind)), epsilon=0.2,
                                                       steps=5, plane_image=False)
        history = model.fit(x, y, epochs=5, batch_size=64, verbose=0, callbacks=[logger])
        runs[kind] = (net, logger, history.history)
    return runs


def test_default_estimates_stay_clear_of_ceiling_and_floor(default_runs):
    for kind, (_, logger, fit_history) in default_runs.items():
        ceiling = logger.history["mi/log_N"][0]
        assert ceiling == pytest.approx(math.log(449))
        tags = [t for t in logger.history if "/I_XT" in t]
        assert len(tags) == 8                                   # 4 layers x clean/adv
        for tag in tags:
            values = np.array(logger.history[tag])
            assert len(values) == 5
            assert np.all(values > 0.05 * ceiling) and np.all(values < 0.95 * ceiling), (kind, tag, values)
        assert fit_history["mi_saturated"] == [0.0] * 5
        if kind == "at":
            # A model that learned, not a collapsed one (chance is 0.10). Above 0.5 in CI, 0.496 on loaded
            # cores (oneDNN's threaded sums vary with the load), so the floor keeps a margin below 0.5.
            assert fit_history["adv_accuracy"][-1] > 0.35


def test_default_estimates_move_with_training(default_runs):
    net, logger, _ = default_runs["nt"]
    ceiling = logger.history["mi/log_N"][0]
    moves = {t: max(v) - min(v) for t, v in logger.history.items() if "/I_XT/" in t}
    assert max(moves.values()) > 0.02 * ceiling, moves


def test_neural_estimate_is_logged_beside_the_kde_one(default_runs):
    for kind, (_, logger, _) in default_runs.items():
        h_y = logger.history["mi/H_Y"][0]
        for layer in ("conv1", "logits"):
            for probe in ("clean", "adv"):
                values = logger.history[f"mi/{layer}/I_TY_infonce/{probe}"]
                assert len(values) == 5 and all(np.isfinite(values))
        # a trained critic finds most of the label information in the clean logits, and less under attack
        clean = logger.history["mi/logits/I_TY_infonce/clean"][-1]
        assert 0.5 * h_y < clean <= h_y + 0.1, clean
        assert logger.history["mi/logits/I_TY_infonce/adv"][-1] < clean


def test_a_function_preserving_rescale_leaves_the_default_estimate(default_runs, digits, tmp_path):
    (_, _), (xt, yt) = digits
    net, _, _ = default_runs["nt"]
    rescaled = keras.models.clone_model(net)
    rescaled.set_weights(net.get_weights())
    kernel, bias = rescaled.get_layer("dense1").get_weights()
    rescaled.get_layer("dense1").set_weights([10 * kernel, 10 * bias])     # ReLU(10 z) = 10 ReLU(z)
    k2, b2 = rescaled.get_layer("logits").get_weights()
    rescaled.get_layer("logits").set_weights([0.1 * k2, b2])
    np.testing.assert_allclose(rescaled.predict(xt, verbose=0), net.predict(xt, verbose=0), rtol=1e-4, atol=1e-4)
    values = {}
    for name, model in (("original", net), ("rescaled", rescaled)):
        logger = kam.callbacks.MutualInformationLogger(xt, yt, str(tmp_path / name), epsilon=0.2, steps=5,
                                                       plane_image=False)
        logger.set_model(model)
        values[name] = logger.measure()
    for tag in ("mi/dense1/I_XT/clean", "mi/dense1/I_XT/adv", "mi/dense1/I_TY/clean", "mi/dense1/I_TY_infonce/clean"):
        assert values["rescaled"][tag] == pytest.approx(values["original"][tag], rel=0.02), tag
    ceiling = values["original"]["mi/log_N"]      # equal because informative, not because both saturate
    assert 0.05 * ceiling < values["original"]["mi/dense1/I_XT/clean"] < 0.95 * ceiling
    # the 2022 MI paper's absolute noise is not scale-aware: the same rescale moves its estimate far more than 2%
    h = keras.Model(net.inputs[0], net.get_layer("dense1").output).predict(xt, verbose=0)
    s2 = mi.kde_noise_var(h)     # as an absolute variance, fixed while the layer is rescaled
    assert abs(mi.kde_upper(10 * h, s2) - mi.kde_upper(h, s2)) > 0.02 * mi.kde_upper(h, s2)


class _ScoredPGD(kam.defenses.PGD):
    """A defense that is not MIAT but declares one MI score (and returns one more it does not declare)."""

    mi_score_names = ("mi_toy",)

    def mi_scores(self, model, x, x_adv, batch_size=256):
        return {"mi_toy/clean": np.full(len(x), 1.5), "mi_toy/adv": np.full(len(x), 0.5),
                "undeclared/clean": np.zeros(len(x))}


def _layout_of(run_dir):
    from tensorboard.plugins.custom_scalar import layout_pb2

    acc = _events(run_dir)
    return layout_pb2.Layout.FromString(tf.make_ndarray(acc.Tensors("custom_scalars__config__")[0].tensor_proto).item())


@pytest.mark.parametrize("defense", [_ScoredPGD, kam.defenses.PGD])
def test_the_defense_hook_decides_which_mi_scores_are_logged(defense, digits, cnn_factory, tmp_path):
    """The logger logs and lays out the scores a defense declares in ``mi_score_names`` (any defense, not only
    MIAT), only those, and no score chart for a defense that declares none."""
    (x, y), (xt, yt) = digits
    model = kam.AdversarialModel(cnn_factory(), defense(epsilon=0.2, steps=1, attack_chains=1))
    model.compile(optimizer="adam")
    logger = kam.callbacks.MutualInformationLogger(xt[:30], yt[:30], str(tmp_path), layers=["dense1"], steps=1,
                                                   neural=False, plane_image=False)
    model.fit(x[:64], y[:64], epochs=1, batch_size=64, verbose=0, callbacks=[logger])
    scores = {tag: v for tag, v in logger.history.items() if tag.startswith("mi/output/")}
    patterns = [t for c in _layout_of(str(tmp_path / "mi" / "clean")).category for chart in c.chart
                for t in chart.multiline.tag if "output" in t]
    if defense is _ScoredPGD:
        assert scores == {"mi/output/mi_toy/clean": [1.5], "mi/output/mi_toy/adv": [0.5]}
        assert patterns == [r"^mi/output/mi_toy$"]
        adv = _events(str(tmp_path / "mi" / "adv"))
        assert _values(adv, "mi/output/mi_toy") == [0.5]
    else:
        assert scores == {} and patterns == []

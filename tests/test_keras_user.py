"""What a Keras user expects: collapse warnings, ``robust.export``, the ignored-loss warning,
per-batch progress in evaluate_robustness, readable PSE ticks at any scale."""

import io
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras

import keras_advmi as kam
from keras_advmi.callbacks import CollapseMonitor, CollapseWarning
from keras_advmi.callbacks.collapse import collapse_evidence


def constant_model(cls=3, classes=10, shape=(8, 8, 1)):
    """Logits that ignore the input: class ``cls`` for every image."""
    bias = np.zeros(classes, np.float32)
    bias[cls] = 5.0
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(),
                             keras.layers.Dense(classes, kernel_initializer="zeros",
                                                bias_initializer=keras.initializers.Constant(bias))])


# -- 1. collapse ------------------------------------------------------------------------------------
def test_collapse_evidence_names_accuracy_and_class_share():
    y = np.arange(100) % 10
    msg = collapse_evidence(np.full(100, 3), y, 10)
    assert "clean accuracy 10.0% is near chance (1/10 = 10.0%)" in msg
    assert "class 3 is predicted for 100.0% of 100 inputs" in msg
    assert collapse_evidence(y, y, 10) is None                      # perfect, diverse
    share = np.where(np.arange(100) < 91, 0, y)                      # one class for 91% -> flagged by share
    assert "class 0 is predicted for 91.0%" in collapse_evidence(share, None, 10)
    assert collapse_evidence(np.where(np.arange(100) < 89, 0, y), None, 10) is None


def test_collapse_monitor_warns_on_a_constant_model(digits):
    _, (xt, yt) = digits
    monitor = CollapseMonitor(xt[:200], yt[:200])
    monitor.set_model(constant_model())
    logs = {}
    with pytest.warns(CollapseWarning, match=r"epoch 1: the model looks collapsed: clean accuracy .*class 3 is "
                                             r"predicted for 100\.0% of 200 inputs; try an epsilon warm-up"):
        monitor.on_epoch_end(0, logs)
    assert logs["collapsed"] == 1.0 and monitor.collapsed_epochs == [0]
    with pytest.raises(ValueError, match="y_check"):
        CollapseMonitor(xt[:10])
    for bad in (0.5, float("inf")):   # a finite factor >= 1 of chance accuracy
        with pytest.raises(ValueError, match=r"`chance_factor`, expected a number in \[1, inf\]"):
            CollapseMonitor(chance_factor=bad)


def test_evaluate_robustness_warns_on_a_constant_model_and_not_on_a_trained_one(digits, trained_digits_model):
    _, (xt, yt) = digits
    with pytest.warns(CollapseWarning, match="evaluate_robustness: the model looks collapsed"):
        report = kam.evaluate_robustness(constant_model(), xt[:200], yt[:200], attacks=["clean", "fgsm"],
                                         epsilons=[0.1], progress=False)
    assert "class 3 is predicted for 100.0% of 200 inputs" in report.collapse
    assert "WARNING: evaluate_robustness: the model looks collapsed" in str(report)
    assert report.to_dict()["collapse"] == report.collapse and not report.suspected_gradient_masking
    with warnings.catch_warnings():
        warnings.simplefilter("error", CollapseWarning)
        good = kam.evaluate_robustness(trained_digits_model, xt[:200], yt[:200], attacks=["clean"], progress=False)
    assert good.collapse is None and "collapsed" not in str(good)


def test_analyze_reports_a_collapsed_model(digits, tmp_path):
    from keras_advmi.analysis.report import analyze, write_report

    _, (xt, yt) = digits
    with pytest.warns(CollapseWarning, match="analyze: model 'const': the model looks collapsed"):
        results, figures = analyze({"const": constant_model()}, xt[:60], yt[:60], 0.1, analyses=["texture_shape"],
                                   pgd_steps=2)
    assert "class 3 is predicted for 100.0% of 60 inputs" in results["models"]["const"]["collapse"]
    page = write_report(tmp_path, results, figures).read_text()
    assert "<b>WARNING</b>: analyze: model &#x27;const&#x27;: the model looks collapsed" in page


def test_pgd_at_large_eps_without_warmup_collapses_on_digits_and_is_flagged(digits):
    """The 1-epoch MNIST PGD-AT situation (eps 0.3 from step 0: a constant classifier), reproduced on digits:
    at eps 0.5 without warm-up the CLI's small CNN ends predicting one class (measured: 100% of the test set
    after 3 epochs, clean accuracy 8.0%); the monitor says so during fit."""
    from keras_advmi.architectures import build

    (x, y), (xt, yt) = digits
    keras.utils.set_random_seed(0)
    net = build("small_cnn", x.shape[1:], 10)
    robust = kam.AdversarialModel(net, kam.defenses.PGD(epsilon=0.5, steps=10, seed=0))
    robust.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    monitor = CollapseMonitor(xt, yt)
    with pytest.warns(CollapseWarning, match=r"epoch 3: the model looks collapsed: clean accuracy \d+\.\d% is near "
                                             r"chance .* predicted for (9\d|100)\.\d% of 449 inputs"):
        history = robust.fit(x, y, epochs=3, batch_size=64, callbacks=[monitor], verbose=0)
    assert 2 in monitor.collapsed_epochs and history.history["collapsed"][-1] == 1.0


# -- 2. robust.export ----------------------------------------------------------------------------------
def test_adversarial_model_export_equals_kam_export(digits, tmp_path, cnn_factory):
    (x, _), (xt, _) = digits
    robust = kam.AdversarialModel(cnn_factory(), kam.defenses.PGD(epsilon=0.2, steps=2, seed=0))
    path = robust.export(str(tmp_path / "a" / "robust" / "1"))
    reference = kam.export(robust, str(tmp_path / "b" / "robust" / "1"))
    assert path == str(tmp_path / "a" / "robust" / "1")
    ours, theirs = tf.saved_model.load(path), tf.saved_model.load(reference)
    assert set(ours.signatures) == set(theirs.signatures) == {"serving_default"}
    a = ours.signatures["serving_default"](inputs=tf.constant(xt[:8]))
    b = theirs.signatures["serving_default"](inputs=tf.constant(xt[:8]))
    assert set(a) == {"probabilities", "class_ids"}
    np.testing.assert_array_equal(a["class_ids"].numpy(), b["class_ids"].numpy())
    np.testing.assert_allclose(a["probabilities"].numpy(), b["probabilities"].numpy(), rtol=1e-6)
    from keras_advmi.export import read_metadata

    meta = read_metadata(path)                                       # the metadata asset, defense recorded
    assert meta["defense"]["class"] == "PGD" and meta["epsilon"] == 0.2
    assert robust.export(str(tmp_path / "dir")) == str(tmp_path / "dir")   # any directory, as keras.Model.export
    with pytest.raises(ValueError, match="`format`"):
        robust.export(str(tmp_path / "c" / "1"), format="saved_model")


# -- 3. compile(loss=...) ---------------------------------------------------------------------------------
def test_compile_warns_that_a_loss_is_ignored(cnn_factory):
    robust = kam.AdversarialModel(cnn_factory(), kam.defenses.PGD(epsilon=0.2, steps=2, seed=0))
    with pytest.warns(UserWarning, match=r"loss='sparse_categorical_crossentropy' is ignored; the defense PGD "
                                         r"defines the training loss"):
        robust.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        robust.compile(optimizer="adam", metrics=["accuracy"])


class _StepAwarePGD(kam.defenses.PGD):
    """Records the ``step`` that ``AdversarialModel`` passes to ``loss``."""

    steps_seen = []

    def loss(self, model, x, y, x_adv, training, step=None):
        _StepAwarePGD.steps_seen.append(None if step is None else int(step))   # run eagerly: the value now
        return super().loss(model, x, y, x_adv, training, step=step)


class _StepLessPGD(kam.defenses.PGD):
    """A defense written without the ``step`` argument of the Defense protocol."""

    def loss(self, model, x, y, x_adv, training):
        return super().loss(model, x, y, x_adv, training)


def test_the_defense_loss_always_gets_step(digits, cnn_factory):
    """``loss`` is always called with ``step`` (the optimizer step in training, None in evaluation); a defense
    whose ``loss`` lacks it fails with Python's own TypeError (no compatibility path, no warning)."""
    (x, y), _ = digits
    robust = kam.AdversarialModel(cnn_factory(), _StepAwarePGD(epsilon=0.2, steps=1, seed=0, attack_chains=1))
    robust.compile(optimizer="adam", run_eagerly=True)
    robust.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)
    robust.evaluate(x[:32], y[:32], batch_size=32, verbose=0)
    assert _StepAwarePGD.steps_seen == [0, None]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        old = kam.AdversarialModel(cnn_factory(), _StepLessPGD(epsilon=0.2, steps=1, seed=0, attack_chains=1))
    old.compile(optimizer="adam")
    with pytest.raises(TypeError, match="step"):
        old.fit(x[:32], y[:32], batch_size=32, epochs=1, verbose=0)


# -- 4. progress per batch ---------------------------------------------------------------------------------
class _RecordingBar:
    bars = []

    def __init__(self, total=None, desc=None, **kwargs):
        self.total, self.desc, self.updates = total, desc, []
        _RecordingBar.bars.append(self)

    def update(self, n=1):
        self.updates.append(n)

    def set_postfix(self, **kwargs):
        self.postfix = kwargs

    def close(self):
        self.closed = True


def test_progress_bar_advances_per_batch(digits, trained_digits_model, monkeypatch):
    import tqdm.auto

    _, (xt, yt) = digits
    monkeypatch.setattr(tqdm.auto, "tqdm", _RecordingBar)
    _RecordingBar.bars = []
    report = kam.evaluate_robustness(trained_digits_model, xt[:100], yt[:100], attacks=["clean", "pgd-2"],
                                     epsilons=[0.1], batch_size=32, progress=True)
    assert [b.desc for b in _RecordingBar.bars] == ["clean", "pgd-2 eps=0.1"]
    assert all(b.updates == [32, 32, 32, 4] and b.total == 100 and b.closed for b in _RecordingBar.bars)
    # batching for the bar keeps the attack's noise: the same accuracy as attacks.pgd over the whole array
    x_adv = kam.attacks.pgd(trained_digits_model, xt[:100], yt[:100], epsilon=0.1, step_size=0.125, steps=2, seed=0,
                            batch_size=32)
    expected = float(np.mean(np.argmax(trained_digits_model.predict(x_adv, verbose=0), -1) == yt[:100]))
    assert report["pgd-2"][0.1] == expected

    _RecordingBar.bars = []
    monkeypatch.setattr("sys.stderr", io.StringIO())               # not a terminal: quiet by default
    kam.evaluate_robustness(trained_digits_model, xt[:40], yt[:40], attacks=["clean"])
    assert _RecordingBar.bars == []

    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stderr", Terminal())
    kam.evaluate_robustness(trained_digits_model, xt[:40], yt[:40], attacks=["clean"], batch_size=16)
    assert [b.updates for b in _RecordingBar.bars] == [[16, 16, 8]]
    with pytest.raises(ValueError, match="`progress`"):
        kam.evaluate_robustness(trained_digits_model, xt[:4], yt[:4], attacks=["clean"], progress="yes")


# -- 7. readable promotion/suppression ticks ------------------------------------------------------------
def _pse_result(scale, n=60, seed=0):
    rng = np.random.default_rng(seed)
    s, p = rng.uniform(0, 1, n) * scale, rng.uniform(0, 1, n) * scale
    r = p / (p + s)
    types = np.where(r < 1 / 3, "suppression", np.where(r > 2 / 3, "promotion", "balanced"))
    return {"success": [True] * n, "suppression": s, "promotion": p, "type": types, "n_success": n, "n": n,
            "fractions": {k: float(np.mean(types == k)) for k in ("suppression", "balanced", "promotion", "none")}}


@pytest.mark.parametrize("scale", [3e-7, 5e-4, 1.0, 3e4, 2e9])
def test_pse_ticks_are_apart_and_without_offset_at_any_scale(scale, monkeypatch):
    from keras_advmi.analysis import plots

    figures = []
    monkeypatch.setattr(plots, "to_png", lambda fig, path=None: figures.append(fig) or b"")
    plots.plot_pse_scatter({"NT": {"FGSM": _pse_result(scale), "PGD": _pse_result(scale, seed=1)}})
    fig = figures[0]
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    for ax in fig.axes:
        for axis, labels in ((ax.xaxis, ax.get_xticklabels()), (ax.yaxis, ax.get_yticklabels())):
            assert axis.get_offset_text().get_text() == "", (scale, axis.get_offset_text().get_text())
            shown = [t for t in labels if t.get_text() and t.get_visible()]
            assert len(shown) >= 2, scale
            boxes = sorted((t.get_window_extent(renderer) for t in shown),
                           key=lambda b: b.x0 if axis is ax.xaxis else b.y0)
            for a, b in zip(boxes, boxes[1:]):     # neighbouring labels do not touch (2 px of air)
                if axis is ax.xaxis:
                    assert b.x0 - a.x1 >= 2, (scale, [t.get_text() for t in shown])
                else:
                    assert b.y0 - a.y1 >= 2, (scale, [t.get_text() for t in shown])


def test_cli_shows_a_collapse_warning_as_one_line():
    from keras_advmi.cli import _cli_format_warning

    assert _cli_format_warning("epoch 1: the model looks collapsed: x", CollapseWarning, "/k/callback_list.py", 171) \
        == "keras-advmi: warning: epoch 1: the model looks collapsed: x\n"
    assert "/k/a.py:3: UserWarning: other" in _cli_format_warning("other", UserWarning, "/k/a.py", 3)

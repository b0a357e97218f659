"""Neuron sensitivity (Zhang et al., 2019): the known-answer fixture, averaging, helpers, errors, and the TensorBoard logger."""

import glob
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advmi.analysis.neuron_sensitivity import (channel_sensitivity, neuron_sensitivity, sensitivity_summary,
                                                      top_k_channels)
from keras_advmi.callbacks.neuron_sensitivity import NeuronSensitivityLogger


def identity_conv_model():
    """(2, 2, 1) input -> 1x1 conv with weight 1 (identity) named 'ident' -> flatten -> logits."""
    inputs = keras.Input((2, 2, 1))
    h = keras.layers.Conv2D(1, 1, use_bias=False, kernel_initializer="ones", name="ident")(inputs)
    h = keras.layers.Flatten(name="flatten")(h)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


def test_fixture_channel_values():
    # known answer: F(x) = [1, 2, 3, 4], F(x') = [2, 2, 3, 2] -> 0.75
    f_clean = tf.constant([1.0, 2.0, 3.0, 4.0])
    f_adv = tf.constant([2.0, 2.0, 3.0, 2.0])
    as_conv = channel_sensitivity(tf.reshape(f_clean, [1, 2, 2, 1]), tf.reshape(f_adv, [1, 2, 2, 1]))
    as_seq = channel_sensitivity(tf.reshape(f_clean, [1, 4, 1]), tf.reshape(f_adv, [1, 4, 1]))
    np.testing.assert_allclose(as_conv.numpy(), [[0.75]], atol=1e-6)
    np.testing.assert_allclose(as_seq.numpy(), [[0.75]], atol=1e-6)
    # dense units: dim = 1, sensitivity is |difference| per unit
    np.testing.assert_allclose(channel_sensitivity(tf.constant([[1.0, -2.0]]), tf.constant([[0.5, 1.0]])).numpy(),
                               [[0.5, 3.0]])


def test_fixture_through_a_model_and_sample_average():
    model = identity_conv_model()
    x = np.array([1, 2, 3, 4], np.float32).reshape(1, 2, 2, 1) / 4
    x_adv = np.array([2, 2, 3, 2], np.float32).reshape(1, 2, 2, 1) / 4
    sens = neuron_sensitivity(model, x, x_adv, ["ident"])
    assert set(sens) == {"ident"} and sens["ident"].shape == (1,)
    np.testing.assert_allclose(sens["ident"], [0.75 / 4], atol=1e-7)
    # second sample with sigma 0.25/4; the mean over samples is 0.5/4, also across batch boundaries
    x2 = np.concatenate([x, x])
    x2_adv = np.concatenate([x_adv, np.array([1, 2, 3, 3], np.float32).reshape(1, 2, 2, 1) / 4])
    np.testing.assert_allclose(neuron_sensitivity(model, x2, x2_adv, "ident", batch_size=1)["ident"], [0.5 / 4],
                               atol=1e-7)


def test_matches_numpy_on_digits_model(trained_digits_model, digits):
    _, (xt, _) = digits
    x = xt[:40]
    x_adv = np.clip(x + np.random.default_rng(0).uniform(-0.2, 0.2, x.shape), 0, 1).astype(np.float32)
    sens = neuron_sensitivity(trained_digits_model, x, x_adv, ["conv1", "dense1"], batch_size=16)
    conv1 = keras.Model(trained_digits_model.inputs, trained_digits_model.get_layer("conv1").output)
    expected = np.abs(conv1.predict(x, verbose=0) - conv1.predict(x_adv, verbose=0)).mean(axis=(0, 1, 2))
    np.testing.assert_allclose(sens["conv1"], expected, rtol=1e-5, atol=1e-7)
    assert sens["conv1"].shape == (32,) and sens["dense1"].shape == (64,)
    assert neuron_sensitivity(trained_digits_model, x, x, ["conv2"])["conv2"].max() == 0.0


def test_summary_and_top_k():
    sens = {"a": np.array([0.1, 0.5, 0.3, 0.5]), "b": np.array([2.0])}
    summary = sensitivity_summary(sens, k=2)
    assert summary["a"]["mean"] == pytest.approx(0.35) and summary["a"]["max"] == 0.5
    assert summary["a"]["top_k_mean"] == pytest.approx(0.5) and summary["a"]["channels"] == 4
    assert summary["b"]["top_k_mean"] == 2.0  # k clipped to the channel count
    top = top_k_channels(sens, 3)
    np.testing.assert_array_equal(top["a"], [1, 3, 2])  # ties keep the lower index first
    np.testing.assert_array_equal(top["b"], [0])


def test_errors(trained_digits_model, digits):
    _, (xt, _) = digits
    with pytest.raises(ValueError, match="layers.*nope"):
        neuron_sensitivity(trained_digits_model, xt[:4], xt[:4], ["conv1", "nope"])
    with pytest.raises(ValueError, match="layers"):
        neuron_sensitivity(trained_digits_model, xt[:4], xt[:4], [])
    with pytest.raises(ValueError, match="x_adv"):
        neuron_sensitivity(trained_digits_model, xt[:4], xt[:3], ["conv1"])
    with pytest.raises(ValueError, match="k"):
        top_k_channels({"a": np.ones(3)}, 0)
    with pytest.raises(ValueError, match="sensitivities"):
        sensitivity_summary({"a": np.ones((2, 2))})


def _read_events(log_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(log_dir, size_guidance={"scalars": 0, "histograms": 0, "tensors": 0})
    acc.Reload()
    return acc


def test_logger_writes_scalars_and_histograms(tmp_path, digits, cnn_factory):
    from keras_advmi.defenses.pgd_at import PGD
    from keras_advmi.models import AdversarialModel

    (x, y), (xt, yt) = digits
    robust = AdversarialModel(cnn_factory(), PGD(epsilon=0.2, steps=3, seed=0))
    robust.compile(optimizer="adam", metrics=["accuracy"])
    logger = NeuronSensitivityLogger(xt[:64], yt[:64], str(tmp_path), layers=["conv1", "dense1"], steps=5, seed=0)
    history = robust.fit(x[:256], y[:256], epochs=2, batch_size=64, verbose=0, callbacks=[logger])
    assert "sensitivity_conv1" in history.history and len(history.history["sensitivity_dense1"]) == 2
    assert history.history["sensitivity_conv1"][-1] == pytest.approx(float(logger.last["conv1"].mean()))
    assert glob.glob(os.path.join(str(tmp_path), "sensitivity", "events.out.tfevents.*"))
    acc = _read_events(os.path.join(str(tmp_path), "sensitivity"))
    tags = acc.Tags()["tensors"]
    for tag in ("sensitivity/conv1/mean", "sensitivity/conv1/top_k_mean", "sensitivity/conv1/channels",
                "sensitivity/dense1/mean"):
        assert tag in tags
    events = acc.Tensors("sensitivity/conv1/mean")
    assert [e.step for e in events] == [0, 1]
    assert float(tf.make_ndarray(events[-1].tensor_proto)) == pytest.approx(float(logger.last["conv1"].mean()),
                                                                            rel=1e-6)


def test_logger_errors(digits, cnn_factory, tmp_path):
    _, (xt, yt) = digits
    with pytest.raises(ValueError, match="layers"):
        NeuronSensitivityLogger(xt[:8], yt[:8], str(tmp_path), layers=[])
    with pytest.raises(ValueError, match="y_probe"):
        NeuronSensitivityLogger(xt[:8], yt[:7], str(tmp_path), layers=["conv1"])
    for bad_args, name in ((dict(seed="0"), "seed"), (dict(step_size=0.0), "step_size"),
                           (dict(epsilon=0.0), "epsilon"), (dict(epsilon=1.5), "epsilon")):
        with pytest.raises(ValueError, match=f"`{name}`"):
            NeuronSensitivityLogger(xt[:8], yt[:8], str(tmp_path), layers=["conv1"], **bad_args)
    model = cnn_factory()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    bad = NeuronSensitivityLogger(xt[:8], yt[:8], str(tmp_path), layers=["conv9"], epsilon=0.1)
    with pytest.raises(ValueError, match="conv9"):
        model.fit(xt[:8], yt[:8], epochs=1, verbose=0, callbacks=[bad])
    no_eps = NeuronSensitivityLogger(xt[:8], yt[:8], str(tmp_path), layers=["conv1"])
    with pytest.raises(ValueError, match="epsilon"):  # a plain model has no defense to read epsilon from
        model.fit(xt[:8], yt[:8], epochs=1, verbose=0, callbacks=[no_eps])


def test_channel_sensitivity_is_the_foundation_function_and_feature_model_is_gone():
    """The tensor function lives below the defenses (SNS uses it) and is re-exported by the analysis module."""
    from keras_advmi import _sensitivity
    from keras_advmi.analysis import neuron_sensitivity as module

    assert channel_sensitivity is _sensitivity.channel_sensitivity
    assert not hasattr(module, "feature_model")

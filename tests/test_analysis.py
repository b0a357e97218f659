"""Analysis suite: known-answer fixtures (saturation, PSE, KDE through the information plane),
patch shuffle as a block permutation, Grad-CAM with a known answer, and clear errors for bad input."""

import numpy as np
import pytest

import keras

from keras_advmi.analysis import (PatchShuffle, Saturation, grad_cam, information_plane, patch_shuffle,
                                  promotion_suppression, pse_ratio, pse_type, saturate, texture_shape_probe,
                                  universal_fragility)
from keras_advmi.attacks import pgd
from keras_advmi.attacks.universal import fooling_rates, universal_perturbations

# ---------------------------------------------------------------------------------------------- saturation

SATURATION_FIXTURE = [(0.75, 8, 0.920448), (0.75, 16, 0.958502), (0.75, 64, 0.989286), (0.75, 1024, 0.999324),
                      (0.10, 8, 0.027129), (0.10, 1024, 0.000218)]


@pytest.mark.parametrize("x,p,expected", SATURATION_FIXTURE)
def test_saturation_fixture(x, p, expected):
    assert saturate(np.array([x]), p)[0] == pytest.approx(expected, abs=1e-5)
    layer_out = np.asarray(Saturation(p)(np.full((1, 2, 2, 1), x, np.float32)))
    np.testing.assert_allclose(layer_out, expected, atol=1e-5)


def test_saturation_identity_symmetry_and_range():
    x = np.linspace(0, 1, 101, dtype=np.float32).reshape(1, 101, 1, 1)
    np.testing.assert_allclose(saturate(x, 2), x, atol=1e-6)            # p = 2 is the identity
    for p in (8, 1024):
        out = saturate(x, p)
        assert out.min() >= 0 and out.max() <= 1
        np.testing.assert_allclose(out + out[:, ::-1], 1.0, atol=1e-6)  # symmetric about 0.5
        assert np.all(np.diff(out.ravel()) >= 0)                         # monotone
    with pytest.raises(ValueError, match="`p`.*> 0"):
        saturate(x, 0)


# -------------------------------------------------------------------------------------------- patch shuffle

def _blocks(img, k, top=0, left=0):
    """Blocks of a (H, W, C) image's k x k grid (row-major), as bytes for set comparison."""
    ph, pw = (img.shape[0] - 2 * top) // k, (img.shape[1] - 2 * left) // k
    return [img[top + i * ph: top + (i + 1) * ph, left + j * pw: left + (j + 1) * pw].tobytes()
            for i in range(k) for j in range(k)]


@pytest.mark.parametrize("k", [2, 4, 8])
def test_patch_shuffle_is_a_permutation_of_blocks(k):
    x = np.arange(3 * 8 * 8 * 2, dtype=np.float32).reshape(3, 8, 8, 2)  # every pixel distinct
    out = patch_shuffle(x, k, seed=1)
    assert out.shape == x.shape and out.dtype == np.float32
    moved = 0
    for i in range(3):
        before, after = _blocks(x[i], k), _blocks(out[i], k)
        assert sorted(after) == sorted(before)          # each output block is exactly one input block
        assert len(set(after)) == k * k                 # ... and no block is used twice (bijection)
        moved += sum(a != b for a, b in zip(after, before))
    assert moved > 0
    np.testing.assert_array_equal(patch_shuffle(x, k, seed=1), out)      # same seed, same permutations
    assert not np.array_equal(patch_shuffle(x, k, seed=2), out)


@pytest.mark.parametrize("k", [0, 1])
def test_patch_shuffle_identity_for_k_0_and_1(k):
    x = np.arange(2 * 6 * 6, dtype=np.float32).reshape(2, 6, 6, 1)
    np.testing.assert_array_equal(patch_shuffle(x, k, seed=3), x)
    np.testing.assert_array_equal(np.asarray(PatchShuffle(k)(x)), x)


def test_patch_shuffle_permutations_differ_per_image_and_grid_is_centred():
    x = np.tile(np.arange(64, dtype=np.float32).reshape(1, 8, 8, 1), (50, 1, 1, 1))
    out = patch_shuffle(x, 2, seed=0)
    assert len({o.tobytes() for o in out}) > 10        # 24 possible permutations; images draw their own
    # 10 x 10 with k = 4: 2x2 patches over the centred 8x8 region, the 1-pixel border stays in place
    y = np.arange(10 * 10, dtype=np.float32).reshape(1, 10, 10, 1)
    out = patch_shuffle(y, 4, seed=5)[0]
    border = np.ones((10, 10), bool)
    border[1:9, 1:9] = False
    np.testing.assert_array_equal(out[..., 0][border], y[0, ..., 0][border])
    assert sorted(_blocks(out, 4, 1, 1)) == sorted(_blocks(y[0], 4, 1, 1))
    assert not np.array_equal(out, y[0])


def test_transform_layers_serialize(tmp_path):
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input((8, 8, 1)), Saturation(16, name="sat"), PatchShuffle(4, seed=7, name="ps")])
    model.save(tmp_path / "t.keras")
    loaded = keras.models.load_model(tmp_path / "t.keras")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), atol=1e-7)
    assert loaded.get_layer("sat").p == 16 and loaded.get_layer("ps").k == 4 and loaded.get_layer("ps").seed == 7
    unseeded = PatchShuffle(2)
    draws = {np.asarray(unseeded(x)).tobytes() for _ in range(6)}
    assert len(draws) > 1                                # seed=None: fresh permutations per call


def test_patch_shuffle_errors():
    x = np.zeros((2, 8, 8, 1), np.float32)
    with pytest.raises(ValueError, match="`k`.*at most min"):
        patch_shuffle(x, 9)
    with pytest.raises(ValueError, match="`k`.*integer >= 0"):
        patch_shuffle(x, 2.5)
    with pytest.raises(ValueError, match="`x`.*\\(N, H, W, C\\).*shape \\(8, 8\\)"):
        patch_shuffle(np.zeros((8, 8)), 2)


# ------------------------------------------------------------------------------------- promotion/suppression

def linear_logits_model(scale=10.0):
    """x (3,) -> hidden = x (identity dense, 'hidden') -> logits = scale * hidden: z = scale * x."""
    inputs = keras.Input((3,))
    h = keras.layers.Dense(3, use_bias=False, kernel_initializer="identity", name="hidden")(inputs)
    z = keras.layers.Dense(3, use_bias=False, kernel_initializer=keras.initializers.Identity(scale),
                           name="logits")(h)
    return keras.Model(inputs, z)


def test_pse_fixture_logit_and_neuron_level():
    # known answer: z(x) = [4, 1, 0], z(x') = [1, 3, 0], y = 0, t = 1 -> S = 3, P = 2, r = 0.4, balanced
    model = linear_logits_model()
    x = np.array([[0.4, 0.1, 0.0]], np.float32)
    x_adv = np.array([[0.1, 0.3, 0.0]], np.float32)
    res = promotion_suppression(model, x, x_adv, [0], target=1, layer="hidden")
    assert res["suppression"][0] == pytest.approx(3.0, abs=1e-5)
    assert res["promotion"][0] == pytest.approx(2.0, abs=1e-5)
    assert res["ratio"][0] == pytest.approx(0.4, abs=1e-5)
    assert res["type"][0] == "balanced" and res["success"][0] and res["fractions"]["balanced"] == 1.0
    neuron = res["neuron"]   # linear head: the neuron level reproduces the logit level exactly
    assert neuron["suppression"][0] == pytest.approx(3.0, abs=1e-5)
    assert neuron["promotion"][0] == pytest.approx(2.0, abs=1e-5)
    assert neuron["type"][0] == "balanced"
    np.testing.assert_array_equal(neuron["top_promoting"][:1], [1])    # unit 1 carries the promotion of t = 1
    np.testing.assert_array_equal(neuron["top_suppressing"][:1], [0])
    # target=None picks the adversarial class (argmax z(x') = 1) and gives the same numbers
    auto = promotion_suppression(model, x, x_adv, [0])
    assert auto["target"][0] == 1 and auto["ratio"][0] == pytest.approx(0.4, abs=1e-5)


def test_pse_ratio_and_types():
    s = np.array([3.0, 1.0, 0.0, 0.0, 2.0, -1.0])
    p = np.array([2.0, 0.0, 1.0, 0.0, 1.0, 1.0])
    r = pse_ratio(s, p)
    np.testing.assert_allclose(r[[0, 1, 2, 4, 5]], [0.4, 0.0, 1.0, 1 / 3, 1.0])
    assert np.isnan(r[3])
    assert list(pse_type(r)) == ["balanced", "suppression", "promotion", "none", "balanced", "promotion"]


def test_pse_on_digits_neuron_level_matches_logits(trained_digits_model, digits):
    _, (xt, yt) = digits
    x, y = xt[:64], yt[:64]
    x_adv = pgd(trained_digits_model, x, y, epsilon=0.2, step_size=0.02, steps=20, seed=0)
    res = promotion_suppression(trained_digits_model, x, x_adv, y, layer="dense1", batch_size=20)
    # dense1 feeds the logits linearly: sum of per-unit contributions = change of the logits
    np.testing.assert_allclose(res["neuron"]["suppression"], res["suppression"], rtol=1e-4, atol=1e-3)
    np.testing.assert_allclose(res["neuron"]["promotion"], res["promotion"], rtol=1e-4, atol=1e-3)
    assert res["n_success"] >= 48 and sum(res["fractions"].values()) == pytest.approx(1.0)
    z = trained_digits_model.predict(x, verbose=0)
    za = trained_digits_model.predict(x_adv, verbose=0)
    i = int(np.flatnonzero(res["success"])[0])
    t = res["target"][i]
    assert res["suppression"][i] == pytest.approx(z[i, y[i]] - za[i, y[i]], abs=1e-4)
    assert res["promotion"][i] == pytest.approx(za[i, t] - z[i, t], abs=1e-4)
    # a conv layer works too (first-order, not exact), with shares of units in [0, 1]
    conv = promotion_suppression(trained_digits_model, x[:8], x_adv[:8], y[:8], layer="conv2")["neuron"]
    assert conv["promoting_units"].shape == (8,) and 0 <= conv["promoting_units"].min() <= 1


# -------------------------------------------------------------------------------------------------- Grad-CAM

def quadrant_data(n, seed, quadrant=(1, 1)):
    """16x16 noisy images. ``quadrant`` holds a bar, horizontal (class 0) or vertical (class 1); each other
    quadrant holds three bright 2x2 squares (more bright pixels than the bar, no class information), so a
    map of raw activation strength would point at the distractors, a class-discriminative map at the bar."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.2, size=(n, 16, 16, 1)).astype(np.float32)
    y = rng.integers(0, 2, size=n).astype(np.int64)
    for i in range(n):
        for qi in range(2):
            for qj in range(2):
                r0, c0 = 8 * qi, 8 * qj
                if (qi, qj) == quadrant:
                    a = rng.integers(1, 7)
                    if y[i]:
                        x[i, r0 + 1:r0 + 7, c0 + a, 0] = 1.0
                    else:
                        x[i, r0 + a, c0 + 1:c0 + 7, 0] = 1.0
                else:
                    for _ in range(3):
                        a, b = rng.integers(0, 7, size=2)
                        x[i, r0 + a:r0 + a + 2, c0 + b:c0 + b + 2, 0] = 1.0
    return x, y


def test_grad_cam_finds_the_quadrant_that_decides_the_class():
    keras.utils.set_random_seed(0)
    quadrant = (1, 1)  # bottom-right: an all-zero map's argmax (0, 0) would land in the wrong quadrant
    x, y = quadrant_data(1500, 0, quadrant)
    xt, yt = quadrant_data(200, 1, quadrant)
    model = keras.Sequential([
        keras.Input((16, 16, 1)),
        keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(2, name="logits"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=10, batch_size=64, verbose=0)
    acc = float(np.mean(model.predict(xt, verbose=0).argmax(-1) == yt))
    assert acc > 0.95, acc
    cams = grad_cam(model, xt, yt, layer="conv2")
    assert cams.shape == (200, 16, 16) and cams.min() >= 0 and cams.max() <= 1 + 1e-6
    rows, cols = np.unravel_index(cams.reshape(200, -1).argmax(axis=1), (16, 16))
    in_quadrant = (rows // 8 == quadrant[0]) & (cols // 8 == quadrant[1])
    assert in_quadrant.mean() >= 0.9, in_quadrant.mean()
    mass = np.array([[cams[:, 8 * i:8 * i + 8, 8 * j:8 * j + 8].sum() for j in range(2)] for i in range(2)])
    mass /= mass.sum()
    others = np.delete(mass.ravel(), 2 * quadrant[0] + quadrant[1])
    assert mass[quadrant] > 1.5 * others.max(), mass
    # control: the peak of raw activation strength (no class gradients) finds the quadrant far less often
    # (measured 0.51), so the test needs Grad-CAM's gradient weighting to pass
    act = keras.Model(model.inputs, model.get_layer("conv2").output).predict(xt, verbose=0).sum(axis=-1)
    rows, cols = np.unravel_index(act.reshape(200, -1).argmax(axis=1), (16, 16))
    assert ((rows // 8 == quadrant[0]) & (cols // 8 == quadrant[1])).mean() < in_quadrant.mean() - 0.2
    # default layer = the last 4-D layer (conv2); no upsampling gives the layer's resolution
    np.testing.assert_allclose(grad_cam(model, xt[:5], yt[:5]), cams[:5], atol=1e-6)
    assert grad_cam(model, xt[:5], 1, layer="conv1", upsample=False).shape == (5, 16, 16)


# ----------------------------------------------------------------------------------------- information plane

def identity_feature_model(d=2, classes=2):
    inputs = keras.Input((d,))
    h = keras.layers.Dense(d, use_bias=False, kernel_initializer="identity", name="ident")(inputs)
    return keras.Model(inputs, keras.layers.Dense(classes, name="logits")(h))


def test_information_plane_kde_fixtures_through_a_model():
    model = identity_feature_model()
    # analytic: h = [[0,0],[1,0]], s2 = 0.1 (their 'relative' s2) -> I_upper = 0.686432; one sample per class:
    # I(T;Y) = I(X;T)
    two = information_plane(model, np.array([[0, 0], [1, 0]], np.float32), [0, 1], layers=["ident"])
    np.testing.assert_allclose(two["clean"]["ident"], [[0.686432, 0.686432]], atol=1e-5)
    # h = [[0,0],[0,1],[1,0],[1,1]], y = [0,0,1,1]: upper I(X;T) = 1.372864, I(T;Y) = 0.686432
    x4 = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    four = information_plane(model, x4, [0, 0, 1, 1], x_adv=x4[[0, 0, 3, 3]], layers="ident")
    np.testing.assert_allclose(four["clean"]["ident"], [[1.372864, 0.686432]], atol=1e-5)
    assert four["log_n"] == pytest.approx(np.log(4)) and four["unit"] == "nats" and four["n"] == 4
    # x_adv collapses to two points (squared distance 2), one per class: I(X;T) = log 2 - log(1 + e^-10);
    # the classes are pure, so I(T;Y) is the same
    expected = np.log(2) - np.log1p(np.exp(-10))
    np.testing.assert_allclose(four["adv"]["ident"], [[expected, expected]], atol=1e-6)
    # a list of models = checkpoints, one row each
    both = information_plane([model, model], x4, [0, 0, 1, 1], layers=["ident"])
    assert both["clean"]["ident"].shape == (2, 2)


def test_information_plane_matches_mi_on_digits(trained_digits_model, digits):
    from keras_advmi import mi

    _, (xt, yt) = digits
    x, y = xt[:100], yt[:100]
    plane = information_plane(trained_digits_model, x, y)
    assert plane["layers"] == ["conv1", "conv2", "dense1", "logits"]
    h = keras.Model(trained_digits_model.inputs, trained_digits_model.get_layer("dense1").output).predict(x, verbose=0)
    s2 = mi.kde_noise_var(h)          # the default: scale-aware noise (0.1 x median squared distance)
    np.testing.assert_allclose(plane["clean"]["dense1"][0], [mi.kde_upper(h, s2), mi.kde_label_mi(h, y, s2)],
                               rtol=1e-5)
    assert np.all(plane["clean"]["conv1"] <= plane["log_n"] + 1e-9) and plane["adv"] == {}
    assert plane["h_y"] == pytest.approx(mi.label_entropy(y))
    p1 = information_plane(trained_digits_model, x, y, noise_var=0.1, layers=["dense1"])   # the 2022 MI paper's s2
    np.testing.assert_allclose(p1["clean"]["dense1"][0], [mi.kde_upper(h, 0.1), mi.kde_label_mi(h, y, 0.1)],
                               rtol=1e-5)


def test_information_plane_from_history():
    history = {"clean": {"conv1": [(1.0, 0.5), (1.2, 0.7)], "dense1": [[2, 1], [2.5, 1.5]]},
               "adv": {"conv1": [(0.9, 0.2), (1.0, 0.3)]}, "n": 1000}
    plane = information_plane(history)
    np.testing.assert_array_equal(plane["clean"]["dense1"], [[2, 1], [2.5, 1.5]])
    assert plane["adv"]["conv1"].shape == (2, 2) and plane["layers"] == ["conv1", "dense1"]
    assert plane["log_n"] == pytest.approx(np.log(1000))
    flat = information_plane({"conv1": [(1.0, 0.5)]})                   # {layer: points} = clean only
    assert flat["adv"] == {} and flat["clean"]["conv1"].shape == (1, 2)
    with pytest.raises(ValueError, match="model_or_history.*conv1"):
        information_plane({"clean": {"conv1": [(1.0, 0.5, 3.0)]}})
    with pytest.raises(ValueError, match="model_or_history.*'clean' and 'adv'"):
        information_plane({"clean": {"a": [(1, 1)]}, "adversarial": {}})


# ------------------------------------------------------------------------------ texture/shape and fragility

def test_texture_shape_probe(trained_digits_model, digits):
    _, (xt, yt) = digits
    x, y = xt[:200], yt[:200]
    res = texture_shape_probe(trained_digits_model, x, y, batch_size=64)
    clean = float(np.mean(trained_digits_model.predict(x, verbose=0).argmax(-1) == y))
    assert res["clean"] == pytest.approx(clean) and res["n"] == 200
    assert res["saturation"][2.0] == pytest.approx(clean)                # identities
    assert res["patch_shuffle"][0] == pytest.approx(clean)
    sat64 = float(np.mean(trained_digits_model.predict(saturate(x, 64), verbose=0).argmax(-1) == y))
    assert res["saturation"][64.0] == pytest.approx(sat64)
    assert res["patch_shuffle"][8] < clean - 0.3                         # 8x8 grid on 8x8 digits = pixel shuffle
    assert texture_shape_probe(trained_digits_model, x, y, batch_size=64) == res   # seeded


def test_universal_fragility_matches_the_attack_module(trained_digits_model, digits):
    _, (xt, yt) = digits
    x, y = xt[:120], yt[:120]
    res = universal_fragility(trained_digits_model, x, y, 0.2, targets=[0, 3], steps=10, seed=4)
    deltas = universal_perturbations(trained_digits_model, x, y, epsilon=0.2, targets=[0, 3], steps=10, seed=4)
    expected = fooling_rates(trained_digits_model, x, y, deltas, targets=[0, 3])
    np.testing.assert_allclose(res["fooling_rate"], expected)
    assert res["targets"] == [0, 3] and res["mean"] == pytest.approx(expected.mean())
    assert res["most_fragile_target"] == [0, 3][int(np.argmax(expected))]


# --------------------------------------------------------------------------------------------- bad input

def test_errors_name_argument_expected_and_received(trained_digits_model, digits):
    _, (xt, yt) = digits
    x, y = xt[:4], yt[:4]
    m = trained_digits_model
    with pytest.raises(ValueError, match="`layer`.*available.*conv1.*Received: layer='nope'"):
        grad_cam(m, x, y, layer="nope")
    with pytest.raises(ValueError, match="`layer`.*4-D.*dense1"):
        grad_cam(m, x, y, layer="dense1")
    with pytest.raises(ValueError, match="`class_index`.*\\[0, 9\\].*Received: class_index=10"):
        grad_cam(m, x, 10)
    with pytest.raises(ValueError, match="`class_index`.*\\[0, 9\\].*-1"):
        grad_cam(m, x, np.array([0, 1, 2, -1]))
    with pytest.raises(ValueError, match="`x`.*\\(N, 8, 8, 1\\).*shape \\(4, 28, 28, 1\\)"):
        grad_cam(m, np.zeros((4, 28, 28, 1), np.float32), 0)
    with pytest.raises(ValueError, match="`x`.*\\(N, 8, 8, 1\\).*shape \\(4, 64\\)"):
        texture_shape_probe(m, x.reshape(4, 64), y)
    with pytest.raises(ValueError, match="`layer`.*Received: layer='nope'"):
        promotion_suppression(m, x, x, y, layer="nope")
    with pytest.raises(ValueError, match="`target`.*\\[0, 9\\].*12"):
        promotion_suppression(m, x, x, y, target=12)
    with pytest.raises(ValueError, match="`target`.*different from the true labels"):
        promotion_suppression(m, x, x, y, target=y)
    with pytest.raises(ValueError, match="`x_adv`.*\\(N, 8, 8, 1\\)"):
        promotion_suppression(m, x, np.zeros((4, 8, 8, 3), np.float32), y)
    with pytest.raises(ValueError, match="`y`.*labels in \\[0, 9\\]"):
        promotion_suppression(m, x, x, [0, 1, 2, 11])
    with pytest.raises(ValueError, match="`layers`.*Received: layers='nope'"):
        information_plane(m, x, y, layers=["nope"])
    with pytest.raises(ValueError, match="`targets`.*\\[0, 9\\]"):
        universal_fragility(m, x, y, 0.2, targets=[10], steps=1)
    with pytest.raises(ValueError, match="`x`.*\\[0, 1\\]"):
        texture_shape_probe(m, x * 5 + 1, y)


def test_saved_and_loaded_model_gives_the_same_maps(trained_digits_model, digits, tmp_path):
    # a loaded Sequential's layer.output can sit on another graph node than its outputs (gradients None)
    _, (xt, yt) = digits
    x, y = xt[:16], yt[:16]
    trained_digits_model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", compile=False)
    np.testing.assert_allclose(grad_cam(loaded, x, y), grad_cam(trained_digits_model, x, y), atol=1e-5)
    x_adv = np.clip(x + 0.2 * np.sign(np.random.default_rng(0).normal(size=x.shape)), 0, 1).astype(np.float32)
    a = promotion_suppression(loaded, x, x_adv, y, layer="conv2")["neuron"]["promotion"]
    b = promotion_suppression(trained_digits_model, x, x_adv, y, layer="conv2")["neuron"]["promotion"]
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_information_plane_from_a_mutual_information_logger(digits, tmp_path):
    import json

    from keras_advmi.callbacks import MutualInformationLogger
    from conftest import small_cnn

    (x, y), (xt, yt) = digits
    model = small_cnn()
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    logger = MutualInformationLogger(xt[:60], yt[:60], str(tmp_path), layers=["conv2", "dense1"], epsilon=0.2,
                                     steps=3, plane_image=False)
    model.fit(x[:300], y[:300], epochs=2, batch_size=100, verbose=0, callbacks=[logger])
    plane = information_plane(logger)
    assert plane["layers"] == ["conv2", "dense1"] and plane["n"] == 60
    assert plane["clean"]["dense1"].shape == (2, 2) and plane["adv"]["conv2"].shape == (2, 2)
    np.testing.assert_allclose(plane["clean"]["dense1"][:, 0], logger.history["mi/dense1/I_XT/clean"])
    np.testing.assert_allclose(plane["adv"]["conv2"][:, 1], logger.history["mi/conv2/I_TY/adv"])
    saved = json.loads((tmp_path / "mi" / "mi_history.json").read_text())   # the file the logger writes
    from_file = information_plane(saved)
    np.testing.assert_allclose(from_file["clean"]["dense1"], plane["clean"]["dense1"])
    assert from_file["log_n"] == pytest.approx(np.log(60))
    with pytest.raises(ValueError, match="kde_lower tags"):
        information_plane(saved, estimator="kde_lower")

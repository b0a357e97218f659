"""``keras-advmi analyze``: the report of an NT and a PGD-AT model (digits; MNIST under ``needs_mnist``),
opened in headless Chromium (every image decoded, screenshot not blank), and one-line errors with exit 2."""

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import keras

from conftest import needs_mnist, small_cnn

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium: apt-get install -y chromium (CI does)")
FIGURES = {"robustness", "texture_shape", "pse", "grad_cam", "universal", "information_plane"}

# Appended to a copy of the report: after load, writes how many images decoded into the DOM.
IMG_CHECK = ("<script>window.addEventListener('load', function () {var imgs = Array.from(document.images);"
             "var d = document.createElement('div'); d.id = 'img-check'; d.textContent = 'total=' + imgs.length + "
             "' broken=' + imgs.filter(function (i) {return !i.complete || i.naturalWidth === 0;}).length + "
             "' widths=' + imgs.map(function (i) {return i.naturalWidth;}).join(',');"
             "document.body.appendChild(d);});</script>")


def cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "keras_advmi.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


def chromium(*args, timeout=120):
    return subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                           "--hide-scrollbars", *args], capture_output=True, text=True, timeout=timeout)


def image_check(html_path, extra=""):
    """(total, broken, widths) of the page's images as Chromium decoded them."""
    check = html_path.with_name("_img_check.html")
    check.write_text(html_path.read_text().replace("</body>", extra + IMG_CHECK + "</body>"))
    proc = chromium("--virtual-time-budget=10000", "--dump-dom", check.as_uri())
    match = re.search(r"total=(\d+) broken=(\d+) widths=([\d,]*)", proc.stdout)
    assert match, (proc.returncode, proc.stdout[-500:], proc.stderr[-2000:])
    check.unlink()
    return int(match.group(1)), int(match.group(2)), [int(w) for w in match.group(3).split(",") if w]


def screenshot_stats(html_path, tmp_path):
    """Fraction of non-white pixels and pixel std of a 1400x5000 headless screenshot of the page."""
    from PIL import Image

    shot = tmp_path / "shot.png"
    proc = chromium(f"--screenshot={shot}", "--window-size=1400,5000", html_path.as_uri())
    assert shot.exists(), proc.stderr[-2000:]
    pixels = np.asarray(Image.open(shot).convert("L"), np.float64) / 255
    return float(np.mean(pixels < 0.9)), float(pixels.std())


def check_report(out, labels, tmp_path):
    index, results = out / "index.html", out / "results.json"
    assert index.exists() and results.exists()
    res = json.loads(results.read_text())
    assert list(res["models"]) == labels
    page = index.read_text()
    assert "src='http" not in page and 'src="http' not in page          # self-contained
    images = re.findall(r"alt='(\w+)' src='data:image/png;base64,([^']+)'", page)
    assert {name for name, _ in images} == FIGURES
    for _, data in images:
        assert base64.b64decode(data)[:8] == b"\x89PNG\r\n\x1a\n"
    # every number of the figures is in results.json
    for label in labels:
        r = res["models"][label]
        assert set(r) >= {"accuracy", "texture_shape", "pse", "grad_cam", "robustness", "universal",
                          "information_plane"}
        assert set(r["texture_shape"]["saturation"]) == {"2.0", "8.0", "16.0", "64.0", "1024.0"}
        assert set(r["texture_shape"]["patch_shuffle"]) == {"0", "2", "4", "8"}
        assert set(r["pse"]) == {"FGSM", "PGD", "targeted PGD"}
        for attack in r["pse"].values():
            assert len(attack["suppression"]) == res["config"]["n"] and "neuron" in attack
            assert sum(attack["fractions"].values()) == pytest.approx(1.0, abs=1e-5) or attack["n_success"] == 0
        assert len(r["grad_cam"]["cam_x_y"]) == 4
        assert len(r["universal"]["fooling_rate"]) == len(r["universal"]["targets"])
        assert set(r["information_plane"]["clean"]) == set(r["information_plane"]["adv"])
    if CHROMIUM is None:
        return res
    total, broken, widths = image_check(index)
    assert total == len(FIGURES) and broken == 0 and min(widths) > 100, (total, broken, widths)
    ink, std = screenshot_stats(index, tmp_path)
    assert ink > 0.05 and std > 0.1, (ink, std)
    return res


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory, digits):
    """An NT and a (short) PGD-AT small CNN on digits, saved as .keras."""
    from keras_advmi.defenses import PGD
    from keras_advmi.models import AdversarialModel

    (x, y), _ = digits
    folder = tmp_path_factory.mktemp("models")
    nt = small_cnn(seed=0)
    nt.compile(optimizer=keras.optimizers.Adam(2e-3),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    nt.fit(x, y, epochs=8, batch_size=64, verbose=0)
    nt.save(folder / "nt.keras")
    at = small_cnn(seed=1)
    robust = AdversarialModel(at, PGD(epsilon=0.2, steps=5, step_size=0.1, seed=0))
    robust.compile(optimizer=keras.optimizers.Adam(2e-3))
    robust.fit(x, y, epochs=8, batch_size=64, verbose=0)
    at.save(folder / "at.keras")
    return folder


def test_checker_detects_a_broken_image(tmp_path):
    if CHROMIUM is None:
        pytest.skip("needs Chromium")
    page = tmp_path / "index.html"
    ok = base64.b64encode(_tiny_png()).decode()
    page.write_text(f"<!DOCTYPE html><html><body><img src='data:image/png;base64,{ok}'></body></html>")
    assert image_check(page)[:2] == (1, 0)
    assert image_check(page, extra="<img src='data:image/png;base64,AAAA'>")[:2] == (2, 1)
    blank = tmp_path / "blank.html"
    blank.write_text("<!DOCTYPE html><html><body></body></html>")
    assert screenshot_stats(blank, tmp_path)[0] < 0.01


def _tiny_png():
    from keras_advmi.analysis.plots import _figure, to_png

    fig, axes = _figure(1, width=2, height=2)
    axes[0, 0].plot([0, 1], [0, 1])
    return to_png(fig)


@needs_chromium
def test_analyze_digits_nt_vs_at_renders_in_chromium(digits_models, tmp_path):
    out = tmp_path / "report"
    proc = cli("analyze", str(digits_models / "nt.keras"), "--compare", str(digits_models / "at.keras"),
               "--labels", "NT", "PGD-AT", "--dataset", "digits", "--n", "120", "--pgd-steps", "5",
               "--universal-steps", "5", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "analyze" in proc.stderr and "14/14" in proc.stderr          # the progress bar ran to the end
    res = check_report(out, ["NT", "PGD-AT"], tmp_path)
    nt, at = res["models"]["NT"]["accuracy"], res["models"]["PGD-AT"]["accuracy"]
    assert nt["clean"] > 0.9 and at["PGD"] > nt["PGD"] + 0.2, (nt, at)


@needs_mnist
@needs_chromium
def test_analyze_mnist_nt_vs_pgd_at(tmp_path):
    """An NT and a PGD-AT ``bench_cnn`` trained briefly on 3,000 MNIST images, report on 200 test images."""
    from keras_advmi import architectures, data
    from keras_advmi.defenses import PGD
    from keras_advmi.models import AdversarialModel

    (x, y), _ = data.load("mnist")
    x, y = x[:3000], y[:3000]
    keras.utils.set_random_seed(0)
    nt = architectures.bench_cnn()
    nt.compile(optimizer=keras.optimizers.Adam(2e-3),
               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    nt.fit(x, y, epochs=2, batch_size=64, verbose=0)
    nt.save(tmp_path / "nt.keras")
    keras.utils.set_random_seed(0)
    at = architectures.bench_cnn()
    robust = AdversarialModel(at, PGD(epsilon=0.3, steps=5, step_size=0.15, epsilon_warmup_steps=47, seed=0))
    robust.compile(optimizer=keras.optimizers.Adam(2e-3))
    robust.fit(x, y, epochs=3, batch_size=64, verbose=0)
    at.save(tmp_path / "at.keras")
    out = tmp_path / "report"
    proc = cli("analyze", str(tmp_path / "nt.keras"), "--compare", str(tmp_path / "at.keras"), "--labels", "NT",
               "PGD-AT", "--dataset", "mnist", "--n", "200", "--pgd-steps", "10", "--universal-steps", "10",
               "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = check_report(out, ["NT", "PGD-AT"], tmp_path)
    nt_acc, at_acc = res["models"]["NT"]["accuracy"], res["models"]["PGD-AT"]["accuracy"]
    assert nt_acc["clean"] > 0.9 and at_acc["PGD"] > nt_acc["PGD"], (nt_acc, at_acc)


@pytest.mark.parametrize("extra,needle", [
    (["--layer", "nope"], "--layer 'nope' is not a layer of nt (available: conv1, conv2"),
    (["--cam-layer", "nope"], "--cam-layer 'nope' is not a layer"),
    (["--labels", "A", "B"], "--labels needs 1 names"),
    (["--epsilon", "2"], "epsilon must be in [0, 1]"),
    (["--analyses", "magic"], "invalid choice: 'magic'"),
    (["--dataset", "svhn"], "argument --dataset: expected one of digits, mnist, fashion_mnist, cifar10"),
])
def test_bad_arguments_one_line_exit_2(digits_models, tmp_path, capsys, extra, needle):
    # in-process (the subprocess path, exit code included, is covered by the next test)
    from keras_advmi.cli import main

    try:
        code = main(["analyze", str(digits_models / "nt.keras"), "--out", str(tmp_path / "r"), *extra])
    except SystemExit as exc:  # argparse errors exit from the parser
        code = exc.code
    err = [l for l in capsys.readouterr().err.strip().splitlines() if l.strip()]
    assert code == 2 and len(err) == 1, (code, err)
    assert err[0].startswith("keras-advmi: error:") and needle in err[0], err
    assert not (tmp_path / "r").exists()


def test_wrong_image_shape_exit_2(digits_models, tmp_path):
    # a digits (8x8) model on MNIST-shaped images: the .npz dataset path gives 28x28 images offline
    npz = tmp_path / "big.npz"
    rng = np.random.default_rng(0)
    np.savez(npz, x_train=rng.uniform(size=(4, 28, 28, 1)).astype(np.float32), y_train=np.arange(4),
             x_test=rng.uniform(size=(4, 28, 28, 1)).astype(np.float32), y_test=np.arange(4))
    proc = cli("analyze", str(digits_models / "nt.keras"), "--dataset", str(npz), "--out", str(tmp_path / "r"))
    err = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert proc.returncode == 2 and len(err) == 1, proc.stderr[-2000:]
    assert "`x`" in err[0] and "(N, 8, 8, 1)" in err[0] and "(4, 28, 28, 1)" in err[0]


def test_missing_model_exit_2(tmp_path, capsys):
    from keras_advmi.cli import main

    assert main(["analyze", str(tmp_path / "missing.keras"), "--out", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]

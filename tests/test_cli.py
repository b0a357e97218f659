"""keras-advmi train/evaluate: a working run on digits without TensorFlow's log noise, one-line errors with exit
code 2 for usage errors and 1 for runtime failures."""

import json
import os
import socket
import subprocess
import sys

import pytest

#: A user's environment: the CLI quiets TensorFlow itself (no TF_CPP_MIN_LOG_LEVEL set for it).
ENV = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}


def cli(*args, timeout=300):
    return subprocess.run([sys.executable, "-m", "keras_advmi.cli", *args], capture_output=True, text=True,
                          env=ENV, timeout=timeout)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    proc = cli("train", "--dataset", "digits", "--defense", "pgd", "--epochs", "2", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def test_train_writes_model_and_table(trained_run):
    out, proc = trained_run
    assert (out / "model.keras").exists()
    table = json.loads((out / "robustness.json").read_text())
    attacks = {r["attack"]: r["accuracy"] for r in table["rows"]}
    assert set(attacks) == {"clean", "fgsm", "pgd-20"} and attacks["clean"] > 0.5
    assert "pgd-20" in proc.stdout and "clean" in proc.stdout


def test_train_stderr_has_no_tensorflow_noise_and_bars_no_constant_zero(trained_run):
    """On a machine without a GPU, TensorFlow logs a oneDNN notice, "Could not find cuda drivers" and a
    `failed call to cuInit` error; the CLI filters them (and tf.function retracing warnings) unless -v. A
    healthy run's progress bars carry no `collapsed: 0.0000e+00`."""
    _, proc = trained_run
    for noise in ("cuInit", "retracing", "oneDNN", "cuda drivers", "absl::InitializeLog"):
        assert noise not in proc.stderr, proc.stderr[-3000:]
    assert "collapsed" not in proc.stdout and "val_accuracy" in proc.stdout


def test_evaluate_saved_model(trained_run, tmp_path):
    out, _ = trained_run
    proc = cli("evaluate", str(out / "model.keras"), "--dataset", "digits", "--attacks", "clean", "fgsm",
               "--epsilons", "0.1", "0.2", "--n", "100", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert (tmp_path / "robustness.csv").read_text().startswith("attack,epsilon,accuracy,n")


@pytest.mark.parametrize("args,needle", [
    (["train", "--defense", "magic"], "invalid choice: 'magic'"),
    (["train", "--attack-dtype", "float16"], "invalid choice: 'float16'"),
    (["train", "--epsilon", "1.5"], "epsilon must be in [0, 1]"),
    (["train", "--epochs", "0"], "expected a positive integer"),
    (["train", "--dataset", "svhn"], "argument --dataset: expected one of digits, mnist, fashion_mnist, cifar10 "
                                     "or an .npz file; got 'svhn'"),
    (["train", "--dataset", "/nonexistent/data.npz"], "argument --dataset: no such .npz file"),
    (["query", "digits", "--images", "/nonexistent/x.npy"], "argument --images: no such file"),
    (["evaluate", "/nonexistent/model.keras"], "does not exist"),
    (["evaluate", __file__], "expected a .keras file"),
    (["nosuchcommand"], "invalid choice"),
    (["train", "--defense", "miat", "--pretrain-epochs", "-1"], "--pretrain-epochs must be >= 0"),
    (["train", "--defense", "miat", "--pretrain-epochs", "1", "--alpha", "-1"], "--alpha must be >= 0"),
    (["train", "--defense", "miat", "--pretrain-epochs", "1", "--alpha-warmup-epochs", "-1"],
     "--alpha-warmup-epochs must be >= 0"),
    (["train", "--ema", "1.5"], "--ema must be in (0, 1)"),
    (["train", "--lr", "nan"], "--lr must be a finite number > 0, got nan"),   # Adam would take it
    (["train", "--lr", "-1"], "--lr must be a finite number > 0"),
    (["train", "--defense", "miat", "--alpha", "nan"], "--alpha must be >= 0, got nan"),
    (["train", "--epsilon-warmup-epochs", "-1"], "--epsilon-warmup-epochs must be >= 0"),
    (["train", "--defense", "none", "--no-clean-train-metrics"], "need a defense"),
    (["train", "--defense", "region_at", "--step-size", "0.01"],
     "--step-size is the training attack's step: it needs a defense with one (fast_at, mart, miat, pgd, sns, "
     "trades), got --defense region_at"),
    (["train", "--defense", "none", "--step-size", "0.01"], "--step-size is the training attack's step"),
    (["train", "--defense", "fast_at", "--steps", "7"],
     "--steps counts the training attack's iterations: it needs an iterative defense (mart, miat, pgd, sns, "
     "trades), got --defense fast_at"),
    (["train", "--defense", "region_at", "--steps", "7"], "got --defense region_at"),
])
def test_bad_arguments_one_line_exit_2(args, needle, capsys):
    """In this process (a new one costs ~7 s of TensorFlow import per case); the process boundary is
    covered by test_bad_argument_in_a_fresh_process."""
    from keras_advmi.cli import main

    try:
        code = main(args)
    except SystemExit as exc:   # argparse's own errors exit from inside parse_args
        code = exc.code
    stderr = capsys.readouterr().err
    assert code == 2, (code, stderr[-2000:])
    err = [l for l in stderr.strip().splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("keras-advmi: error:") and needle in err[0], stderr


def test_runtime_failure_exit_1_usage_error_exit_2(capsys):
    """A server that cannot be reached is a runtime failure (1); a bad flag value is a usage error (2)."""
    from keras_advmi.cli import main

    with socket.socket() as s:   # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert main(["query", "digits", "--action", "status", "--url", f"http://127.0.0.1:{port}"]) == 1
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith(f"keras-advmi: error: cannot reach http://127.0.0.1:{port}"), err
    assert main(["-v", "query", "digits", "--action", "status", "--url", f"http://127.0.0.1:{port}"]) == 1
    err = capsys.readouterr().err   # --verbose: the traceback first, the same exit code
    assert "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith("keras-advmi: error: cannot")
    assert main(["query", "digits", "--action", "status", "-n", "0"]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert err == ["keras-advmi: error: argument -n: expected a positive integer, got 0 (see `keras-advmi query "
                   "--help`)"], err


RETRACE = """
import sys
if sys.argv[1] == "quiet":
    from keras_advmi._quiet import import_tensorflow_quietly
    import_tensorflow_quietly()
import tensorflow as tf
f = tf.function(lambda x: x + 1)
for i in range(8):   # a new Python value per call: a retrace per call, and TensorFlow's retracing warning
    f(i)
"""


def test_quiet_mode_drops_start_up_lines_and_retracing_warnings_and_keeps_other_output():
    """What the CLI does without -v, next to the same script without it (which shows the noise here)."""
    def stderr(mode):
        proc = subprocess.run([sys.executable, "-c", RETRACE + "print('kept', file=sys.stderr)", mode],
                              capture_output=True, text=True, env=ENV, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        return proc.stderr

    loud = stderr("loud")
    assert "retracing" in loud and "oneDNN" in loud, loud[-2000:]
    assert stderr("quiet") == "kept\n"


def test_module_entry_point_and_version():
    proc = subprocess.run([sys.executable, "-m", "keras_advmi", "--version"], capture_output=True, text=True,
                          env=ENV, timeout=60)
    from keras_advmi import __version__

    assert (proc.returncode, proc.stdout, proc.stderr) == (0, f"keras-advmi {__version__}\n", "")


def test_parser_name_lists_match_the_library():
    """The parsers spell out names that live in modules importing TensorFlow; they must not drift apart."""
    from keras_advmi import architectures, data
    from keras_advmi.analysis import report
    from keras_advmi.commands import _common, analyze, train

    assert _common.DATASET_NAMES == data.DATASETS
    assert train.ARCH_NAMES == tuple(sorted(architectures.PRESETS))
    assert analyze.ANALYSES == report.ANALYSES


def test_one_list_of_defense_names():
    """--defense offers recipes.DEFENSE_NAMES, which is "none" and the defenses' registry, sorted; the
    training policy builds each of them."""
    import keras_advmi as kam
    from keras_advmi import recipes, training
    from keras_advmi.cli import build_parser

    assert list(recipes.DEFENSE_NAMES) == ["none"] + sorted(kam.defenses.REGISTRY)
    assert set(training.BUILDERS) == set(kam.defenses.REGISTRY)
    train = build_parser()._subparsers._group_actions[0].choices["train"]
    defense = next(a for a in train._actions if a.dest == "defense")
    assert defense.choices is recipes.DEFENSE_NAMES


def test_collapse_monitor_logs_nothing_for_a_healthy_epoch(digits, trained_digits_model):
    from keras_advmi.callbacks import CollapseMonitor

    _, (xt, yt) = digits
    monitor = CollapseMonitor(xt[:200], yt[:200])
    monitor.set_model(trained_digits_model)
    logs = {"val_accuracy": 0.97}
    monitor.on_epoch_end(0, logs)
    assert logs == {"val_accuracy": 0.97} and monitor.collapsed_epochs == []


@pytest.mark.parametrize("args", [["train", "--defense", "magic"], ["evaluate", "/nonexistent/model.keras"]])
def test_bad_argument_in_a_fresh_process(args):
    proc = cli(*args)
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    err = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("keras-advmi: error:"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_train_miat_runs_p2_procedure(tmp_path):
    """One fit runs MIAT's phases (Zhou et al., 2022): --base-epochs (step 1), --pretrain-epochs (step 2),
    then MIAT (step 3), the phase and the MI logs in the progress bar; the training attack in bf16."""
    proc = cli("train", "--dataset", "digits", "--defense", "miat", "--base", "trades", "--steps", "2",
               "--base-epochs", "1", "--pretrain-epochs", "1", "--epochs", "3", "--eval-attacks", "clean",
               "--attack-dtype", "bfloat16", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "miat_phase: 0.0000e+00" in proc.stdout and "miat_phase: 1.0000" in proc.stdout
    assert "miat_phase: 2.0000" in proc.stdout and "estimator_natural_loss" in proc.stdout
    assert "mi_natural" in proc.stdout and "robust_kl" in proc.stdout
    assert (tmp_path / "model.keras").exists()


def test_train_fast_at_recipe_flags(tmp_path):
    """--no-clean-train-metrics drops the training accuracy (validation keeps it); FastAT runs Wong et al.'s
    overfitting check; --ema keeps the average: at momentum 0.9999 over 46 steps it stays next to the
    initial weights (without --ema the largest change is ~0.05), and that average is what is saved."""
    import keras
    import numpy as np

    from keras_advmi import AdversarialModel   # registers the classes of the saved model (an AdversarialModel)
    from keras_advmi.architectures import build

    proc = cli("train", "--dataset", "digits", "--defense", "fast_at", "--epochs", "2", "--epsilon-warmup-epochs", "1",
               "--no-clean-train-metrics", "--ema", "0.9999", "--eval-attacks", "clean", "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "co_pgd_accuracy" in proc.stdout and "val_accuracy" in proc.stdout
    assert " - accuracy:" not in proc.stdout and "adv_accuracy" in proc.stdout
    keras.utils.set_random_seed(0)   # the CLI's seed, then the same preset: the initial weights
    initial = build("small_cnn", (8, 8, 1), 10).get_weights()
    saved = keras.models.load_model(tmp_path / "model.keras", compile=False)
    assert isinstance(saved, AdversarialModel)
    saved = saved.model.get_weights()
    drift = max(float(np.max(np.abs(a - b))) for a, b in zip(saved, initial))
    assert drift < 5e-3, drift


def test_train_region_at_refreshes_its_deltas(tmp_path):
    """The CLI adds RegionAT's refresh callback: its targeted universal perturbations are computed on the
    training data, so the logged max |delta| is above 0 (without the callback it stays 0 and the loss is
    2 x clean cross-entropy)."""
    proc = cli("train", "--dataset", "digits", "--defense", "region_at", "--epochs", "1", "--eval-attacks", "clean",
               "--out", str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    values = [float(part.split(":")[1].split()[0]) for part in proc.stdout.split(" - ") if
              part.strip().startswith("delta_linf:")]
    assert values and max(values) > 0.01, proc.stdout[-2000:]

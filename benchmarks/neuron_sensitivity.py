"""The claim of Zhang et al. (2019) "adversarial training lowers neuron sensitivity", checked on MNIST.

Models (all ``bench_cnn``, the same ``--n-train`` MNIST images, epochs and seed): NT (trained here),
PGD-AT and SNS (the weights ``benchmarks/sns.py`` saved for seed 0; trained here with the same
settings when missing). On the first ``--n-test`` test images we compute per-channel sensitivity
sigma(F_l^m, x, x') (mean |F(x) - F(x')| over the channel's positions, averaged over samples) for
conv1, conv2, dense1 and logits with
  own:  x' = PGD-40 (eps 0.3) against the model itself (white-box, as the paper), and
  NT:   x' = the same PGD-40 examples computed against the NT model (one fixed perturbation set),
plus a scale-free variant: sigma divided by the layer's mean |F(x)| on clean inputs (AT can shrink
activations overall, which lowers raw sigma without any "stabilisation"). Plot to ``--plot``.

    KERAS_ADVMI_DATA=/work/shared/data nice -n 10 python benchmarks/neuron_sensitivity.py
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_advmi import architectures  # noqa: E402
from keras_advmi import data  # noqa: E402
from keras_advmi._model import tap_model  # noqa: E402
from keras_advmi.analysis.neuron_sensitivity import neuron_sensitivity, sensitivity_summary  # noqa: E402
from keras_advmi.attacks import pgd  # noqa: E402

EPSILON = 0.3
LAYERS = ["conv1", "conv2", "dense1", "logits"]


def bench_cnn(seed=0):
    """``keras_advmi.architectures.bench_cnn`` with the global seed set first."""
    keras.utils.set_random_seed(seed)
    return architectures.bench_cnn()


def load_or_train(kind, x, y, args):
    model = bench_cnn(0)
    path = Path(args.sns_out) / f"mnist_{kind}_seed0.weights.h5"
    if kind == "nt":
        path = Path(args.out) / "nt_seed0.weights.h5"
    if path.exists():
        model.load_weights(path)
        return model, str(path)
    if kind == "nt":
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=args.epochs, batch_size=128, verbose=0)
    else:
        import importlib.util

        spec = importlib.util.spec_from_file_location("bench_sns", Path(__file__).with_name("sns.py"))
        sns = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sns)
        from keras_advmi.models import AdversarialModel

        name = "PGD-AT" if kind == "pgd_at" else "SNS"
        defense = sns.make_defense(name, EPSILON, 10, len(x) // 128, 0, 1.0, None)
        robust = AdversarialModel(model, defense)
        robust.compile(optimizer=keras.optimizers.Adam(1e-3))
        robust.fit(x, y, epochs=args.epochs, batch_size=128, verbose=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save_weights(path)
    return model, str(path) + " (trained here)"


def mean_abs_activation(model, x, layers):
    outs = tap_model(model, layers, include_logits=False).predict(x, batch_size=256, verbose=0)
    outs = outs if isinstance(outs, list) else [outs]
    return {name: float(np.mean(np.abs(o))) for name, o in zip(layers, outs)}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out/neuron_sensitivity")
    parser.add_argument("--sns-out", default="benchmarks/out/sns", help="where benchmarks/sns.py saved weights")
    parser.add_argument("--n-train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--plot", default="docs/images/neuron_sensitivity_mnist.png")
    args = parser.parse_args(argv)
    Path(args.out).mkdir(parents=True, exist_ok=True)

    (x, y), (xt, yt) = data.load("mnist")
    x, y, xt, yt = x[:args.n_train], y[:args.n_train], xt[:args.n_test], yt[:args.n_test]
    models, sources = {}, {}
    for kind, label in (("nt", "NT"), ("pgd_at", "PGD-AT"), ("sns", "SNS")):
        models[label], sources[label] = load_or_train(kind, x, y, args)

    step = 2.5 * EPSILON / 40
    adv = {name: pgd(m, xt, yt, epsilon=EPSILON, step_size=step, steps=40, seed=0) for name, m in models.items()}
    results = {"args": vars(args), "sources": sources, "models": {}}
    for name, model in models.items():
        acc = lambda inputs: float(np.mean(model.predict(inputs, verbose=0).argmax(-1) == yt))  # noqa: E731
        own = neuron_sensitivity(model, xt, adv[name], LAYERS)
        common = neuron_sensitivity(model, xt, adv["NT"], LAYERS)
        scale = mean_abs_activation(model, xt, LAYERS)
        results["models"][name] = {
            "clean": acc(xt), "pgd40_own": acc(adv[name]),
            "own": sensitivity_summary(own, k=None), "nt_examples": sensitivity_summary(common),
            "mean_abs_activation": scale,
            "relative_own": {l: float(own[l].mean() / max(scale[l], 1e-12)) for l in LAYERS},
            "per_channel_own": {l: own[l].tolist() for l in LAYERS}}
        print(json.dumps({"model": name, "clean": results["models"][name]["clean"],
                          "pgd40_own": results["models"][name]["pgd40_own"],
                          "sigma_own": {l: round(float(own[l].mean()), 4) for l in LAYERS},
                          "sigma_nt_examples": {l: round(float(common[l].mean()), 4) for l in LAYERS},
                          "relative_own": {l: round(v, 4) for l, v in results["models"][name]["relative_own"].items()}}),
              flush=True)
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))

    print(f"\n{'layer':<8}" + "".join(f"{m + ' own':>14}" for m in models) + "   AT/NT own  AT/NT NT-ex  AT/NT rel")
    verdicts = {}
    for l in LAYERS:
        r = results["models"]
        own_ratio = r["PGD-AT"]["own"][l]["mean"] / r["NT"]["own"][l]["mean"]
        common_ratio = r["PGD-AT"]["nt_examples"][l]["mean"] / r["NT"]["nt_examples"][l]["mean"]
        rel_ratio = r["PGD-AT"]["relative_own"][l] / r["NT"]["relative_own"][l]
        verdicts[l] = {"own": own_ratio, "nt_examples": common_ratio, "relative": rel_ratio}
        print(f"{l:<8}" + "".join(f"{r[m]['own'][l]['mean']:>14.4f}" for m in models)
              + f"{own_ratio:>12.2f}{common_ratio:>13.2f}{rel_ratio:>11.2f}")
    results["at_over_nt"] = verdicts
    (Path(args.out) / "results.json").write_text(json.dumps(results, indent=2))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), dpi=90)
    width = 0.27
    for i, name in enumerate(models):
        axes[0].bar(np.arange(len(LAYERS)) + (i - 1) * width, [results["models"][name]["own"][l]["mean"] for l in LAYERS],
                    width, label=name)
    axes[0].set_xticks(range(len(LAYERS)), LAYERS)
    axes[0].set_yscale("log")
    axes[0].set_ylabel("mean sensitivity (own PGD-40, log)")
    axes[0].set_title("per-layer neuron sensitivity, MNIST eps 0.3")
    axes[0].legend()
    for name in models:
        vals = np.sort(np.asarray(results["models"][name]["per_channel_own"]["conv2"]))[::-1]
        axes[1].plot(vals, label=name)
    axes[1].set_xlabel("conv2 channel (sorted)")
    axes[1].set_ylabel("sensitivity")
    axes[1].set_title("conv2 per-channel sensitivity")
    axes[1].legend()
    fig.tight_layout()
    Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.plot)
    print(f"plot: {args.plot} ({os.path.getsize(args.plot) // 1024} KB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

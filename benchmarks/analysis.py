"""The analysis suite on MNIST and Fashion-MNIST, NT vs PGD-AT, with timings.

Per dataset: ``bench_cnn`` trained normally (NT) and with PGD-AT (PGD-10, step 2.5*eps/10, random
start, epsilon ramped over the first epoch) on the first ``--n-train`` training images (weights cached
in ``--out``), then ``kam.analysis.analyze`` on the first ``--n`` test images: texture/shape probe
(the information-plane paper), promotion/suppression types for FGSM / PGD-20 / targeted PGD-20 (the promotion/suppression paper), Grad-CAM, robust accuracy
vs epsilon, targeted universal perturbation fooling rates (RAT, 2020), information plane. Writes the
HTML report to ``OUT/<dataset>_report/`` and prints a summary; exits 1 if an analysis of one model
takes more than ``--time-limit`` seconds (the target: 2 minutes on 1,000 MNIST images, 2 CPU cores).

    KERAS_ADVMI_DATA=/work/shared/data nice -n 10 python benchmarks/analysis.py
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402

from keras_advmi import architectures, data  # noqa: E402
from keras_advmi.analysis import analyze, information_plane, texture_shape_probe, write_report  # noqa: E402
from keras_advmi.analysis.report import to_jsonable  # noqa: E402
from keras_advmi.attacks import pgd  # noqa: E402
from keras_advmi.defenses import PGD  # noqa: E402
from keras_advmi.models import AdversarialModel  # noqa: E402


def train(kind, dataset, x, y, args):
    path = Path(args.out) / f"{dataset}_{kind}.keras"
    if path.exists():
        return keras.models.load_model(path, compile=False), f"{path} (cached)", None
    keras.utils.set_random_seed(args.seed)
    model = architectures.bench_cnn(x.shape[1:])
    start = time.perf_counter()
    if kind == "nt":
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=args.nt_epochs, batch_size=128, verbose=0)
    else:
        eps = data.default_epsilon(dataset)
        steps_per_epoch = int(np.ceil(len(x) / 128))
        robust = AdversarialModel(model, PGD(epsilon=eps, steps=10, step_size=2.5 * eps / 10,
                                             epsilon_warmup_steps=steps_per_epoch, seed=args.seed))
        robust.compile(optimizer=keras.optimizers.Adam(1e-3))
        robust.fit(x, y, epochs=args.at_epochs, batch_size=128, verbose=0)
    wall = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    model.save(path)
    return model, f"{path} (trained here, {wall:.0f} s)", wall


def extras(models, x, y, eps, args):
    """Texture/shape over several shuffle seeds; information plane at larger noise variances."""
    out = {}
    for label, model in models.items():
        probes = [texture_shape_probe(model, x, y, seed=s) for s in args.shuffle_seeds]
        shuffle = {k: [p["patch_shuffle"][k] for p in probes] for k in probes[0]["patch_shuffle"]}
        x_adv = pgd(model, x, y, epsilon=eps, step_size=None, steps=20, seed=args.seed)
        planes = {}
        for s2 in args.noise_vars:
            start = time.perf_counter()
            plane = information_plane(model, x, y, x_adv=x_adv, noise_var=s2)
            planes[s2] = {"clean": plane["clean"], "adv": plane["adv"], "seconds": time.perf_counter() - start}
        out[label] = {"patch_shuffle_seeds": args.shuffle_seeds,
                      "patch_shuffle_mean": {k: float(np.mean(v)) for k, v in shuffle.items()},
                      "patch_shuffle_std": {k: float(np.std(v)) for k, v in shuffle.items()},
                      "information_plane_by_noise_var": planes}
    return to_jsonable(out)


def summarize(dataset, results):
    lines = [f"== {dataset}: n={results['config']['n']}, eps={results['config']['epsilon']}"]
    per = results["models"]
    for label, r in per.items():
        acc = r["accuracy"]
        lines.append(f"{label}: clean {acc['clean']:.3f} FGSM {acc['FGSM']:.3f} PGD {acc['PGD']:.3f} "
                     f"targeted-PGD success {acc['targeted PGD success']:.3f}")
        ts = r.get("texture_shape")
        if ts:
            lines.append(f"  saturation {json.dumps(ts['saturation'])}")
            lines.append(f"  patch shuffle {json.dumps(ts['patch_shuffle'])}")
        for attack, res in r.get("pse", {}).items():
            f = res["fractions"]
            fn = res.get("neuron", {}).get("fractions", {})
            lines.append(f"  PSE {attack:<13} n_success {res['n_success']:>4}: logit S {f['suppression']:.3f} "
                         f"B {f['balanced']:.3f} P {f['promotion']:.3f} | neuron S {fn.get('suppression', 0):.3f} "
                         f"B {fn.get('balanced', 0):.3f} P {fn.get('promotion', 0):.3f}")
        if "universal" in r:
            lines.append(f"  universal fooling rate mean {r['universal']['mean']:.3f} max {r['universal']['max']:.3f} "
                         f"(target {r['universal']['most_fragile_target']})")
        if "robustness" in r:
            lines.append(f"  robustness {json.dumps(r['robustness'])}")
        if "information_plane" in r:
            ip = r["information_plane"]
            lines.append("  info plane (clean | adv) " + ", ".join(
                f"{layer}: ({ip['clean'][layer][0][0]:.3f}, {ip['clean'][layer][0][1]:.3f}) | "
                f"({ip['adv'][layer][0][0]:.3f}, {ip['adv'][layer][0][1]:.3f})" for layer in ip["layers"])
                + f"; log N = {ip['log_n']:.3f}")
    for label, extra in results.get("extra", {}).items():
        lines.append(f"{label}: patch shuffle over seeds {extra['patch_shuffle_seeds']}: " + ", ".join(
            f"k={k} {extra['patch_shuffle_mean'][k]:.3f}+-{extra['patch_shuffle_std'][k]:.3f}"
            for k in extra["patch_shuffle_mean"]))
        for s2, plane in extra["information_plane_by_noise_var"].items():
            lines.append(f"  info plane s2={s2} (clean | adv): " + ", ".join(
                f"{layer}: ({plane['clean'][layer][0][0]:.3f}, {plane['clean'][layer][0][1]:.3f}) | "
                f"({plane['adv'][layer][0][0]:.3f}, {plane['adv'][layer][0][1]:.3f})" for layer in plane["clean"]))
    lines.append("timings (s): " + json.dumps(results["timings"]))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--out", default="benchmarks/out/analysis")
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--nt-epochs", type=int, default=5)
    parser.add_argument("--at-epochs", type=int, default=5)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--time-limit", type=float, default=120.0)
    parser.add_argument("--shuffle-seeds", type=int, nargs="+", default=[0, 1, 2],
                        help="texture/shape probe repeated over these patch-permutation seeds (mean, std)")
    parser.add_argument("--noise-vars", type=float, nargs="+", default=[1.0, 10.0, 100.0],
                        help="extra KDE noise variances for the information plane (0.1 saturates at log N)")
    args = parser.parse_args(argv)
    failures = []
    for dataset in args.datasets:
        (x, y), (xt, yt) = data.load(dataset)
        x, y = x[:args.n_train], y[:args.n_train]
        models, provenance = {}, {}
        for kind, label in (("nt", "NT"), ("at", "PGD-AT")):
            models[label], provenance[label], _ = train(kind, dataset, x, y, args)
            print(f"{dataset} {label}: {provenance[label]}", flush=True)
        eps = data.default_epsilon(dataset)
        start = time.perf_counter()
        results, figures = analyze(models, xt[:args.n], yt[:args.n], eps, seed=args.seed, progress=True)
        results["config"].update({"dataset": dataset, "models": provenance,
                                  "wall_total_s": round(time.perf_counter() - start, 1)})
        results["extra"] = extras(models, xt[:args.n], yt[:args.n], eps, args)
        report = write_report(Path(args.out) / f"{dataset}_report", results, figures,
                              title=f"{dataset}: NT vs PGD-AT")
        print(summarize(dataset, results), flush=True)
        print(f"report: {report}", flush=True)
        slow = {k: v for k, v in results["timings"].items() if v > args.time_limit}
        if slow:
            failures.append(f"{dataset}: over {args.time_limit:.0f} s: {slow}")
    if failures:
        print("FAIL " + "; ".join(failures))
        return 1
    print(f"OK: every analysis of every model under {args.time_limit:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

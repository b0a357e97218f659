"""RAT (2020) fine-tuning vs PGD-AT fine-tuning on the same MNIST subset and budget.

From one normally trained (NT) CNN, fine-tune copies with RegionAT and with PGD-AT on 1% and 10% of
the MNIST training set (same class-stratified subset, epochs, batch size and Adam learning rate), then
report on the first ``--n-test`` test images: clean, FGSM, PGD-40 (ours), AutoAttack (ART, on the first
``--n-aa``), the mean/max fooling rate of fresh targeted universal perturbations (computed against
each model on ``--n-universal`` training images outside the subsets, applied to the test images) and
the fine-tuning wall time.

    KERAS_ADVMI_DATA=/work/shared/data nice -n 10 python benchmarks/region_at.py --out benchmarks/out/rat
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from keras_advmi import architectures  # noqa: E402
from keras_advmi import data  # noqa: E402
from keras_advmi.attacks.universal import fooling_rates, universal_perturbations  # noqa: E402
from keras_advmi.defenses.pgd_at import PGD  # noqa: E402
from keras_advmi.defenses.region_at import RegionAT  # noqa: E402
from keras_advmi.evaluation import evaluate_robustness  # noqa: E402
from keras_advmi.models import AdversarialModel  # noqa: E402

EPSILON = 0.3


def bench_cnn(seed=0):
    """``keras_advmi.architectures.bench_cnn`` with the global seed set first."""
    keras.utils.set_random_seed(seed)
    return architectures.bench_cnn()


def train_nt(x, y, epochs, seed, path):
    model = bench_cnn(seed)
    if path.exists():
        model.load_weights(path)
        return model, 0.0
    model.compile(optimizer=keras.optimizers.Adam(1e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    start = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=128, verbose=2)
    seconds = time.perf_counter() - start
    model.save_weights(path)
    return model, seconds


def copy_of(model):
    clone = bench_cnn()
    clone.set_weights(model.get_weights())
    return clone


def evaluate(model, xt, yt, x_univ, y_univ, n_aa, seed):
    attacks = ["clean", "fgsm", "pgd-40"]
    report = evaluate_robustness(model, xt, yt, attacks=attacks, epsilons=(EPSILON,), seed=seed)
    row = {a: report[a][0.0 if a == "clean" else EPSILON] for a in attacks}
    if n_aa:
        start = time.perf_counter()
        aa = evaluate_robustness(model, xt[:n_aa], yt[:n_aa], attacks=["autoattack"], epsilons=(EPSILON,), seed=seed)
        row["autoattack"] = aa["autoattack"][EPSILON]
        row["autoattack_seconds"] = time.perf_counter() - start
    deltas = universal_perturbations(model, x_univ, y_univ, epsilon=EPSILON, steps=40, boundary_fraction=0.5, seed=seed + 7)
    rates = fooling_rates(model, xt, yt, deltas)
    row["fooling_rate_mean"], row["fooling_rate_max"] = float(rates.mean()), float(rates.max())
    return row


def plot(rows, path):
    """Bars of clean / FGSM / PGD-40 / AutoAttack accuracy and the universal fooling rate per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("clean", "clean"), ("fgsm", "FGSM"), ("pgd-40", "PGD-40"), ("autoattack", "AutoAttack"),
            ("fooling_rate_mean", "univ. fooling")]
    labels = [r["method"] if r["method"] == "NT" else f"{r['method']} {100 * r['fraction']:g}%" for r in rows]
    fig, ax = plt.subplots(figsize=(10, 3.6), dpi=90)
    width = 0.8 / len(keys)
    for i, (key, name) in enumerate(keys):
        ax.bar(np.arange(len(rows)) + (i - len(keys) / 2 + 0.5) * width, [r.get(key, np.nan) for r in rows], width,
               label=name)
    ax.set_xticks(range(len(rows)), labels, fontsize=8)
    ax.set_ylabel("accuracy / fooling rate")
    ax.set_title(f"MNIST eps {EPSILON}: RAT vs PGD-AT fine-tuning from an NT CNN")
    ax.legend(fontsize=8, ncol=5, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out/rat")
    parser.add_argument("--nt-epochs", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5, help="fine-tuning epochs (both methods)")
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    parser.add_argument("--pgd-train-steps", type=int, default=10)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-aa", type=int, default=1000)
    parser.add_argument("--n-universal", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--methods", nargs="+", default=["RAT", "PGD-AT"],
                        help="RAT, PGD-AT, PGD-AT-warmup (epsilon ramped linearly over the first half of the steps)")
    parser.add_argument("--skip-nt", action="store_true", help="do not evaluate the NT model (e.g. a second run)")
    parser.add_argument("--plot", default=None, help="write a PNG bar chart of the rows here")
    parser.add_argument("--plot-from", nargs="+", default=None,
                        help="only plot: read the rows of these results.json files (in order) and exit")
    args = parser.parse_args(argv)
    if args.plot_from:
        rows = [r for f in args.plot_from for r in json.loads(Path(f).read_text())["rows"]]
        rows.sort(key=lambda r: (r["fraction"], r["method"] != "RAT"))
        plot(rows, args.plot or "docs/images/region_at_mnist.png")
        return 0
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    (x, y), (xt, yt) = data.load("mnist")
    xt, yt = xt[:args.n_test], yt[:args.n_test]
    nt, nt_seconds = train_nt(x, y, args.nt_epochs, args.seed, out / "nt.weights.h5")
    results = {"args": vars(args), "nt_train_seconds": nt_seconds, "rows": []}

    subsets = {f: RegionAT(epsilon=EPSILON, data_fraction=f, seed=args.seed).select_subset(y) for f in args.fractions}
    used = np.unique(np.concatenate(list(subsets.values())))
    rest = np.setdiff1d(np.arange(len(x)), used)
    univ_idx = np.random.default_rng(args.seed + 1).choice(rest, size=args.n_universal, replace=False)
    x_univ, y_univ = x[univ_idx], y[univ_idx]

    def record(name, fraction, model, seconds, extra=None):
        row = {"method": name, "fraction": fraction, "wall_seconds": seconds, **(extra or {}),
               **evaluate(model, xt, yt, x_univ, y_univ, args.n_aa, args.seed)}
        results["rows"].append(row)
        print(json.dumps(row), flush=True)
        (out / "results.json").write_text(json.dumps(results, indent=2))

    if not args.skip_nt:
        record("NT", 0.0, nt, nt_seconds)
    for fraction, idx in subsets.items():
        xs, ys = x[idx], y[idx]
        for name in args.methods:
            model = copy_of(nt)
            if name == "RAT":
                defense = RegionAT(epsilon=EPSILON, data_fraction=fraction, refresh=1, universal_steps=40, seed=args.seed)
                callbacks = [defense.refresh_callback(xs, ys)]
            else:
                warmup = 0
                if name == "PGD-AT-warmup":
                    warmup = args.epochs * int(np.ceil(len(idx) / 64)) // 2
                defense = PGD(epsilon=EPSILON, steps=args.pgd_train_steps, step_size=None,
                              epsilon_warmup_steps=warmup, seed=args.seed)
                callbacks = []
            robust = AdversarialModel(model, defense)
            robust.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
            start = time.perf_counter()
            history = robust.fit(xs, ys, epochs=args.epochs, batch_size=64, verbose=0, callbacks=callbacks)
            seconds = time.perf_counter() - start
            extra = {"n_subset": int(len(idx)), "final_train_adv_accuracy": float(history.history["adv_accuracy"][-1])}
            if name == "RAT":
                extra["train_region_fooling_rate"] = [round(v, 4) for v in history.history["region_fooling_rate"]]
            record(name, fraction, model, seconds, extra)

    print("\nmethod        frac    n   clean   FGSM  PGD-40    AA  fool(mean)  wall s")
    for r in results["rows"]:
        print(f"{r['method']:<14}{r['fraction']:>6.2f}{r.get('n_subset', len(x)):>6}{100 * r['clean']:>8.2f}"
              f"{100 * r['fgsm']:>7.2f}{100 * r['pgd-40']:>8.2f}{100 * r.get('autoattack', float('nan')):>6.1f}"
              f"{r['fooling_rate_mean']:>12.3f}{r['wall_seconds']:>8.1f}")
    base = next((r for r in results["rows"] if r["method"] == "NT"), None)
    for fraction in args.fractions:
        rat = next((r for r in results["rows"] if r["method"] == "RAT" and r["fraction"] == fraction), None)
        pgd = next((r for r in results["rows"] if r["method"] == "PGD-AT" and r["fraction"] == fraction), None)
        if rat is None or pgd is None or base is None:
            continue
        print(f"fraction {fraction}: RAT/PGD-AT wall-time ratio {rat['wall_seconds'] / pgd['wall_seconds']:.2f}; "
              f"FGSM gain over NT RAT {100 * (rat['fgsm'] - base['fgsm']):+.1f} pts, PGD-AT {100 * (pgd['fgsm'] - base['fgsm']):+.1f} pts")
    if args.plot:
        plot(results["rows"], args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

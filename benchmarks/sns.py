"""SNS (Zhang et al., 2019) vs PGD-AT trained from scratch: same CNN, data, epochs, optimizer and PGD inner attack.

For each dataset and seed, train ``bench_cnn`` with PGD-AT and with SNS (PGD-AT + CE(f(x)) + gamma *
top-k neuron sensitivity of conv1, conv2, dense1), then report on the first ``--n-test`` test images:
clean, PGD-40 (ours, step 2.5*eps/40, random start), AutoAttack (ART, first ``--n-aa``), and the step
cost: seconds per ``train_on_batch`` of SNS over PGD-AT's, measured alternately (5 rounds of 10
steps each, after warm-up, median) so both see the same machine load.

    KERAS_ADVMI_DATA=/work/shared/data nice -n 10 python benchmarks/sns.py --out benchmarks/out/sns
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
from keras_advmi.defenses.pgd_at import PGD  # noqa: E402
from keras_advmi.defenses.sns import SNS  # noqa: E402
from keras_advmi.evaluation import evaluate_robustness  # noqa: E402
from keras_advmi.models import AdversarialModel  # noqa: E402

EPSILON = {"mnist": 0.3, "fashion_mnist": 0.1}
LAYERS = ["conv1", "conv2", "dense1"]


def bench_cnn(seed=0):
    """``keras_advmi.architectures.bench_cnn`` with the global seed set first."""
    keras.utils.set_random_seed(seed)
    return architectures.bench_cnn()


class EpochTimer(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.times = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.times.append(time.perf_counter() - self._start)


def make_defense(name, eps, steps, warmup, seed, gamma, top_k):
    common = dict(epsilon=eps, steps=steps, step_size=None, epsilon_warmup_steps=warmup, seed=seed)
    if name == "PGD-AT":
        return PGD(**common)
    return SNS(layers=LAYERS, top_k=top_k, gamma=gamma, refresh=1, **common)


def step_cost(x, y, eps, args, rounds=5, per_round=10):
    """Seconds per train step of PGD-AT and SNS, measured alternately (same load) after warm-up."""
    models = {}
    for name in ("PGD-AT", "SNS"):
        robust = AdversarialModel(bench_cnn(0), make_defense(name, eps, args.train_steps, 0, 0, args.gamma, args.top_k))
        robust.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        models[name] = robust
    xb, yb = x[:args.batch_size], y[:args.batch_size]
    for robust in models.values():
        for _ in range(3):
            robust.train_on_batch(xb, yb)
    times = {name: [] for name in models}
    for _ in range(rounds):
        for name, robust in models.items():
            start = time.perf_counter()
            for _ in range(per_round):
                robust.train_on_batch(xb, yb)
            times[name].append((time.perf_counter() - start) / per_round)
    return {name: float(np.median(t)) for name, t in times.items()}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/out/sns")
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--n-train", type=int, default=20000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--train-steps", type=int, default=10, help="PGD steps in training (both methods)")
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--n-test", type=int, default=1000)
    parser.add_argument("--n-aa", type=int, default=500)
    parser.add_argument("--methods", nargs="+", default=["PGD-AT", "SNS"])
    parser.add_argument("--skip-cost", action="store_true", help="skip the alternating step-cost measurement")
    parser.add_argument("--warmup-epochs", type=float, default=1.0, help="linear epsilon ramp length")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = {"args": vars(args), "rows": []}

    for dataset in args.datasets:
        eps = EPSILON[dataset]
        (x, y), (xt, yt) = data.load(dataset)
        x, y, xt, yt = x[:args.n_train], y[:args.n_train], xt[:args.n_test], yt[:args.n_test]
        # linear epsilon ramp (helps MNIST PGD-AT escape the initial plateau), same for both methods
        warmup = int(args.warmup_epochs * len(x) // args.batch_size)
        if not args.skip_cost:
            cost = step_cost(x, y, eps, args)
            results[f"{dataset}_step_seconds"] = cost
            print(json.dumps({"dataset": dataset, "step_seconds": cost, "ratio": cost["SNS"] / cost["PGD-AT"]}), flush=True)
        for seed in args.seeds:
            for name in args.methods:
                model = bench_cnn(seed)
                robust = AdversarialModel(model, make_defense(name, eps, args.train_steps, warmup, seed, args.gamma,
                                                              args.top_k))
                robust.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
                timer = EpochTimer()
                start = time.perf_counter()
                history = robust.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, verbose=0, callbacks=[timer])
                seconds = time.perf_counter() - start
                model.save_weights(out / f"{dataset}_{name.lower().replace('-', '_')}_seed{seed}.weights.h5")
                attacks = ["clean", "pgd-40"]
                report = evaluate_robustness(model, xt, yt, attacks=attacks, epsilons=(eps,), seed=seed)
                row = {"dataset": dataset, "method": name, "seed": seed, "epsilon": eps, "train_seconds": seconds,
                       "epoch_seconds": timer.times, "clean": report["clean"][0.0], "pgd-40": report["pgd-40"][eps],
                       "history": {k: [round(float(v), 4) for v in vals] for k, vals in history.history.items()}}
                if args.n_aa:
                    aa = evaluate_robustness(model, xt[:args.n_aa], yt[:args.n_aa], attacks=["autoattack"],
                                             epsilons=(eps,), seed=seed)
                    row["autoattack"] = aa["autoattack"][eps]
                results["rows"].append(row)
                print(json.dumps({k: v for k, v in row.items() if k != "history"}), flush=True)
                (out / "results.json").write_text(json.dumps(results, indent=2))

    print("\ndataset        method  seed   clean  PGD-40     AA  median epoch s")
    for r in results["rows"]:
        print(f"{r['dataset']:<15}{r['method']:<8}{r['seed']:>4}{100 * r['clean']:>8.2f}{100 * r['pgd-40']:>8.2f}"
              f"{100 * r.get('autoattack', float('nan')):>7.2f}{np.median(r['epoch_seconds'][1:] or r['epoch_seconds']):>10.1f}")
    for dataset in args.datasets:
        rows = [r for r in results["rows"] if r["dataset"] == dataset]

        def agg(method, key):
            vals = [r[key] for r in rows if r["method"] == method and key in r]
            return (float(np.mean(vals)), float(np.std(vals))) if vals else (float("nan"), float("nan"))

        if f"{dataset}_step_seconds" not in results or set(args.methods) != {"PGD-AT", "SNS"}:
            continue
        cost = results[f"{dataset}_step_seconds"]
        ratio = cost["SNS"] / cost["PGD-AT"]
        results[f"{dataset}_step_cost_ratio"] = float(ratio)
        summary = {m: {k: agg(m, k) for k in ("clean", "pgd-40", "autoattack")} for m in ("PGD-AT", "SNS")}
        results[f"{dataset}_summary"] = summary
        print(f"{dataset}: mean +- std over seeds {args.seeds}: " + "; ".join(
            f"{m} clean {100 * s['clean'][0]:.2f}+-{100 * s['clean'][1]:.2f} PGD-40 {100 * s['pgd-40'][0]:.2f}+-"
            f"{100 * s['pgd-40'][1]:.2f} AA {100 * s['autoattack'][0]:.2f}" for m, s in summary.items())
              + f"; SNS/PGD-AT step-time ratio {ratio:.2f} ({1000 * cost['SNS']:.1f} / {1000 * cost['PGD-AT']:.1f} ms)")
    (out / "results.json").write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

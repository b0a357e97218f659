"""The two MI claims of the 2022 MI paper (below) at the logger's defaults: NT vs PGD-AT, MNIST and
Fashion-MNIST, two seeds each.

    KERAS_ADVMI_DATA=../shared/data python benchmarks/mi_p1_claims.py [--epochs 4] [--out benchmarks/out/mi_p1]

Each (dataset, seed) run is ``examples/tensorboard_mi.py`` (bench_cnn, NT and PGD-AT with a one-epoch
epsilon ramp, probe = first 1,000 test images, PGD-10 probe attack, default ``MutualInformationLogger``);
a finished run (its ``mi_histories.json`` exists) is not repeated, so an interrupted benchmark resumes.
Then, per dataset and layer, it prints

* claim 2 ("AT-CNNs extract less information from the input"): final-epoch I(X;T), NT and AT, clean and
  adversarial, the mean of the seeds and their spread;
* claim 1 ("for original and adversarial examples the MI trends are almost similar throughout training"):
  the change of I(X;T) and I(T;Y) from the first to the last logged epoch, clean vs adversarial, and
  whether the two move the same way.

The paper: "Exploring adversarial examples and adversarial robustness of convolutional neural networks by
mutual information" (arXiv 2207.05756, 2022).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
LAYERS = ("conv1", "conv2", "dense1", "logits")


def run(dataset, seed, epochs, out):
    folder = os.path.join(out, f"{dataset}_s{seed}")
    path = os.path.join(folder, "mi_histories.json")
    if not os.path.exists(path):
        subprocess.run([sys.executable, os.path.join(HERE, "..", "examples", "tensorboard_mi.py"), "--dataset",
                        dataset, "--epochs", str(epochs), "--seed", str(seed), "--logdir", folder], check=True)
    with open(path) as f:
        return json.load(f)


def summarize(dataset, histories):
    print(f"\n## {dataset}: final-epoch I(X;T) in nats (mean of {len(histories)} seeds, +- half the spread); "
          f"log N = {histories[0]['nt']['mi/log_N'][-1]:.3f}")
    print(f"{'layer':8s} {'NT clean':>14s} {'AT clean':>14s} {'NT adv':>14s} {'AT adv':>14s}")
    for layer in LAYERS:
        cells = []
        for kind in ("clean", "adv"):
            for model in ("nt", "pgd_at"):
                v = np.array([h[model][f"mi/{layer}/I_XT/{kind}"][-1] for h in histories])
                cells.append(f"{v.mean():.2f} +- {np.ptp(v) / 2:.2f}")
        print(f"{layer:8s} {cells[0]:>14s} {cells[1]:>14s} {cells[2]:>14s} {cells[3]:>14s}")
    print(f"\n## {dataset}: change from the first to the last logged epoch, clean / adversarial "
          "(mean of seeds); 'same' when both move the same way (or both by < 0.05 nats)")
    print(f"{'model':7s} {'layer':8s} {'dI(X;T) clean/adv':>20s} {'':5s} {'dI(T;Y) clean/adv':>20s} {'':5s}")
    agree = total = 0
    for model in ("nt", "pgd_at"):
        for layer in LAYERS:
            row = []
            for q in ("I_XT", "I_TY"):
                d = {kind: np.mean([h[model][f"mi/{layer}/{q}/{kind}"][-1] - h[model][f"mi/{layer}/{q}/{kind}"][0]
                                    for h in histories]) for kind in ("clean", "adv")}
                same = (np.sign(d["clean"]) == np.sign(d["adv"])) or max(abs(d["clean"]), abs(d["adv"])) < 0.05
                agree, total = agree + same, total + 1
                row.append(f"{d['clean']:+.2f} / {d['adv']:+.2f}".rjust(20) + f" {'same' if same else 'DIFF':5s}")
            print(f"{model:7s} {layer:8s} {row[0]} {row[1]}")
    print(f"trends the same in {agree} of {total} (model, layer, quantity) cells")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--out", default=os.path.join(HERE, "out", "mi_p1"))
    args = parser.parse_args()
    for dataset in args.datasets:
        summarize(dataset, [run(dataset, seed, args.epochs, args.out) for seed in args.seeds])


if __name__ == "__main__":
    main()

"""A trained run evaluated the way the published MNIST anchors are, and the Fashion-MNIST table.

    # train with a recipe (resumable; wall time per epoch in OUT/train_log.json), then evaluate it
    KERAS_ADVMI_DATA=../shared/data keras-advmi train --dataset mnist --recipe robust --seed 0 --out runs/robust
    KERAS_ADVMI_DATA=../shared/data python benchmarks/robust_recipe.py evaluate runs/robust

    # Fashion-MNIST at eps 0.1: PGD-AT, TRADES and MART on the recipe's switches, 2 seeds, AutoAttack on 2,000
    KERAS_ADVMI_DATA=../shared/data python benchmarks/robust_recipe.py fashion --recipe fast --seeds 0 1

evaluate RUN: RUN/model.keras on the dataset of RUN/train_config.json at its epsilon: clean and PGD-100 with
  10 restarts on --pgd-images (all 10,000), ``autoattack-standard`` (APGD-CE and APGD-DLR untargeted and
  targeted at the 9 other classes, then Square with 5,000 queries: kam.evaluate_robustness' docstring) and the
  package's ``autoattack`` on --aa-images (2,000), and a PGD-20 epsilon sweep on 1,000 (monotone, or flagged).
  Every figure comes with its binomial standard error sqrt(p (1 - p) / n). Each part runs in chunks of
  --chunk images, each written to RUN/evaluation.json as it finishes; a rerun skips finished chunks and parts
  (evaluation takes hours on 2 cores).
fashion: trains each (defense, seed) with ``keras-advmi train --dataset fashion_mnist --recipe R --defense D``
  into --out/<defense>_<seed> (each resumable and skipped when finished), evaluates clean, PGD-40 x 3 and
  ``autoattack`` on the first --aa-images test images, and prints the table (mean +- half-range over seeds).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_advmi as kam  # noqa: E402
from keras_advmi import AdversarialModel  # noqa: E402,F401  (registers the classes a saved model.keras refers to)

SWEEP = (0.1, 0.2, 0.3, 0.4)


def standard_error(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` measured on ``n`` images."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n else float("nan")


def _row(attack, epsilon, accuracy, n, seconds):
    return {"attack": attack, "epsilon": epsilon, "accuracy": accuracy, "n": n,
            "se": standard_error(accuracy, n), "seconds": round(seconds, 1)}


def _parts(args, epsilon):
    """(key, attacks, epsilons, images, restarts) of each part of the evaluation."""
    return [("clean", ["clean"], [epsilon], args.pgd_images, 1),
            (f"pgd-{args.pgd_steps}x{args.pgd_restarts}", [f"pgd-{args.pgd_steps}"], [epsilon], args.pgd_images,
             args.pgd_restarts),
            ("autoattack-standard", ["autoattack-standard"], [epsilon], args.aa_images, 1),
            ("autoattack", ["autoattack"], [epsilon], args.aa_images, 1),
            ("sweep", ["pgd-20"], list(SWEEP), args.sweep_images, 1)]


def evaluate(args):
    run = Path(args.run)
    config = json.loads((run / "train_config.json").read_text())
    (_, _), (xt, yt) = kam.data.load(config["dataset"])
    epsilon = config["epsilon"]
    model = keras.models.load_model(run / "model.keras", compile=False)
    path = run / "evaluation.json"
    result = json.loads(path.read_text()) if path.exists() else {"parts": {}}
    result.update({"dataset": config["dataset"], "epsilon": epsilon, "train": config})
    pending = result.setdefault("pending", {})     # part -> {first image: {rows, warnings}} of its finished chunks
    if pending and result.get("chunk", args.chunk) != args.chunk:
        raise SystemExit(f"--chunk {args.chunk}: {path} holds unfinished parts in chunks of {result['chunk']} "
                         f"images; rerun with --chunk {result['chunk']}")
    result["chunk"] = args.chunk
    for key, attacks, epsilons, n, restarts in _parts(args, epsilon):
        if key in result["parts"] or key in args.skip:
            continue
        chunks = pending.setdefault(key, {})
        for start in range(0, n, args.chunk):
            if str(start) in chunks:
                continue
            stop = min(start + args.chunk, n)
            t0 = time.perf_counter()
            report = kam.evaluate_robustness(model, xt[start:stop], yt[start:stop], attacks=attacks,
                                             epsilons=epsilons, restarts=restarts, seed=args.seed, progress=True)
            seconds = time.perf_counter() - t0
            chunks[str(start)] = {"rows": [{"attack": r["attack"], "epsilon": r["epsilon"],
                                            "correct": round(r["accuracy"] * r["n"]), "n": r["n"],
                                            "seconds": seconds / len(report.rows)} for r in report.rows],
                                  "warnings": report.to_dict().get("warnings", [])}
            path.write_text(json.dumps(result, indent=2))
            print(f"{key}: images {start}-{stop} done [{seconds:.0f} s]", flush=True)
        result["parts"][key] = _merge(chunks.values())
        del pending[key]
        path.write_text(json.dumps(result, indent=2))
        print(f"{key}: " + ", ".join(f"{r['accuracy']:.2%} ± {r['se']:.2%} (eps {r['epsilon']:g}, n {r['n']})"
                                     for r in result["parts"][key]["rows"]), flush=True)
    print(table(result))


def _merge(chunks) -> dict:
    """One part's rows from its chunks: correct counts and seconds summed over the chunks, per (attack, epsilon)."""
    chunks = list(chunks)
    rows = []
    for i, first in enumerate(chunks[0]["rows"]):
        correct = sum(c["rows"][i]["correct"] for c in chunks)
        n = sum(c["rows"][i]["n"] for c in chunks)
        rows.append(_row(first["attack"], first["epsilon"], correct / n, n, sum(c["rows"][i]["seconds"] for c in chunks)))
    return {"rows": rows, "warnings": sorted({w for c in chunks for w in c["warnings"]})}


def table(result) -> str:
    """The evaluation as a markdown table (accuracy ± standard error, images, seconds)."""
    lines = ["| part | epsilon | accuracy ± SE | images | seconds |", "|---|---|---|---|---|"]
    for key, part in result["parts"].items():
        for r in part["rows"]:
            lines.append(f"| {key} | {r['epsilon']:g} | {100 * r['accuracy']:.2f} ± {100 * r['se']:.2f} | "
                         f"{r['n']:,} | {r['seconds']:.0f} |")
        for w in part["warnings"]:
            lines.append(f"| {key} | warning | {w} | | |")
    sweep = result["parts"].get("sweep")
    if sweep:
        accs = [r["accuracy"] for r in sweep["rows"]]
        lines.append(f"\nsweep monotone: {'yes' if all(a >= b for a, b in zip(accs, accs[1:])) else 'NO'}")
    return "\n".join(lines)


def fashion(args):
    out = Path(args.out)
    (_, _), (xt, yt) = kam.data.load("fashion_mnist")
    x, y = xt[:args.aa_images], yt[:args.aa_images]
    results = out / "results.jsonl"
    done = {(r["defense"], r["seed"]) for r in
            (json.loads(l) for l in (results.read_text().splitlines() if results.exists() else []))}
    for seed in args.seeds:
        for defense in args.defenses:
            if (defense, seed) in done:
                continue
            run = out / f"{defense}_{seed}"
            subprocess.run([sys.executable, "-m", "keras_advmi.cli", "train", "--dataset", "fashion_mnist",
                            "--recipe", args.recipe, "--defense", defense, "--seed", str(seed), "--out", str(run)],
                           check=True)
            model = keras.models.load_model(run / "model.keras", compile=False)
            t0 = time.perf_counter()
            report = kam.evaluate_robustness(model, x, y, attacks=["clean", "pgd-40", "autoattack"], epsilons=[0.1],
                                             restarts=3, seed=seed)
            row = {"defense": defense, "seed": seed, "recipe": args.recipe, "n": len(x),
                   "accuracy": {r["attack"]: r["accuracy"] for r in report.rows},
                   "warnings": report.to_dict().get("warnings", []), "eval_seconds": round(time.perf_counter() - t0),
                   "train_seconds": json.loads((run / "train_config.json").read_text())["train_seconds"]}
            with open(results, "a") as f:
                f.write(json.dumps(row) + "\n")
            print(json.dumps(row), flush=True)
    rows = [json.loads(l) for l in results.read_text().splitlines()]
    lines = ["| defense | seeds | clean | PGD-40 x3 | AutoAttack | train s (mean) |", "|---|---|---|---|---|---|"]
    for defense in args.defenses:
        sel = [r for r in rows if r["defense"] == defense]
        if not sel:
            continue

        def cell(attack):
            v = [100 * r["accuracy"][attack] for r in sel]
            return f"{np.mean(v):.1f} ± {(max(v) - min(v)) / 2:.1f}"

        lines.append(f"| {defense} | {len(sel)} | {cell('clean')} | {cell('pgd-40')} | {cell('autoattack')} | "
                     f"{np.mean([r['train_seconds'] for r in sel]):.0f} |")
    print("\n".join(lines))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("evaluate")
    e.add_argument("run", help="a `keras-advmi train` output directory (model.keras, train_config.json)")
    e.add_argument("--pgd-images", type=int, default=10000)
    e.add_argument("--pgd-steps", type=int, default=100)
    e.add_argument("--pgd-restarts", type=int, default=10)
    e.add_argument("--aa-images", type=int, default=2000)
    e.add_argument("--sweep-images", type=int, default=1000)
    e.add_argument("--skip", nargs="*", default=[], help="parts to leave out (clean, pgd-100x10, autoattack, ...)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--chunk", type=int, default=1000,
                   help="images per saved chunk: an interrupted part resumes at its first unfinished chunk")
    f = sub.add_parser("fashion")
    f.add_argument("--recipe", default="fast", choices=sorted(kam.recipes.RECIPES))
    f.add_argument("--defenses", nargs="+", default=["pgd", "trades", "mart"])
    f.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    f.add_argument("--aa-images", type=int, default=2000)
    f.add_argument("--out", default="benchmarks/results/fashion_recipe",
                   help="finished rows go to OUT/results.jsonl (tracked in git, so a run goes on in a new checkout)")
    args = p.parse_args()
    evaluate(args) if args.cmd == "evaluate" else fashion(args)


if __name__ == "__main__":
    main()

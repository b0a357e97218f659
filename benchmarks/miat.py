"""MIAT vs its base defense on MNIST (eps 0.3) and Fashion-MNIST (eps 0.1), several seeds; and step cost.

    KERAS_ADVMI_DATA=../shared/data python benchmarks/miat.py compare --datasets mnist fashion_mnist \
        --seeds 0 1 --train 20000 --warm-epochs 2 --epochs 2 --out benchmarks/out/miat
    KERAS_ADVMI_DATA=../shared/data python benchmarks/miat.py step-cost
    python benchmarks/miat.py digits-gap --seeds 0 1 2 3 --configs a0 a5_ramp

compare: per dataset, seed and base in {pgd, trades, mart}: the MIAT paper's procedure on bench_cnn —
  base for --warm-epochs (epsilon ramped over the first epoch), then from that same model either
  (a) the base for --epochs more (the same-budget baseline) or (b) estimator pretraining
  (--pretrain-epochs) and MIAT(base) for --epochs. Both evaluated on --test images (>= 1,000) with clean,
  PGD-40 x 3 restarts, AutoAttack (ART: APGD-CE, APGD-DLR, Square) and a PGD-20 epsilon sweep with the
  monotonicity check. Results append to OUT/results.jsonl (a rerun skips finished rows); a table with
  mean +- half-range over seeds is printed and written to OUT/table.md. --no-autoattack replaces
  AutoAttack by its APGD-CE and APGD-DLR parts (one start each, no Square). --alpha-warmup-epochs K
  ramps MIAT's alpha over K epochs (a separate table row); with --miat-only the baseline is not
  retrained (its rows come from an earlier run into the same OUT).
digits-gap: the MIAT vs PGD-AT gap over seeds, tests/test_miat.py's protocol on digits (the tests' small CNN,
  eps 0.2, PGD-5): PGD-AT 10 epochs from small_cnn(seed), then from those weights, with the same batch
  order, 10 epochs of PGD-AT or of each MIAT config (estimators pretrained first); PGD-20 and clean
  accuracy gaps in points. Config a0 (alpha 0) is the control: the PGD-AT loss through MIAT's graph,
  so its gap is run-to-run noise. --schedule cosine decays both arms' learning rate to 0.
fit-alone: PGD-AT vs MIAT(pgd) each trained by one ``fit`` of --epochs from the same untrained
  --arch (MIAT's phases inside: --base-epochs, --pretrain-epochs, --alpha-warmup-epochs, default MIAT's
  "auto" 25/10/10%), evaluated like compare. Resumable: each run backs up to OUT/backup/<row> with
  keras.callbacks.BackupAndRestore, so a killed job continues in its epoch and phase; finished rows in
  OUT/fit_alone.jsonl are skipped. Both defenses ramp epsilon as the CLI does by default (2 epochs at
  eps >= 0.2). One row takes ~1 h on 2 CPU cores:
      KERAS_ADVMI_DATA=../shared/data python benchmarks/miat.py fit-alone --datasets mnist fashion_mnist \
          --seeds 0 1 --arch madry_cnn --train 60000 --epochs 8
  Finished rows are committed (benchmarks/results/miat_fit/fit_alone.jsonl): a new checkout goes on with the rest.
digits-fit-alone: tests/test_miat.py's protocol over batch orders: the tests' small CNN
  from seed 0, PGD-AT or MIAT (defaults, eps 0.1, step 0.025, PGD-5) by one fit of 12 epochs, Adam 2e-3,
  batch 64, keras.utils.set_random_seed(ORDER) before each fit; validation clean and PGD-10 accuracy.
step-cost: median time of a compiled train step, MIAT(base) / base, for each base, measured
  interleaved in one process (the ratio is what counts on a noisy machine); --arch bench_cnn (tiny,
  the worst case for the ratio) or madry_cnn.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import keras

import keras_advmi as kam
from keras_advmi import architectures
from keras_advmi.architectures import bench_cnn
from keras_advmi.recipes import default_warmup_epochs

EPSILON = {"mnist": 0.3, "fashion_mnist": 0.1}
BASES = ("pgd", "trades", "mart")
BASE_CLASSES = {"pgd": kam.defenses.PGD, "trades": kam.defenses.TRADES, "mart": kam.defenses.MART}
BATCH = 128


def _compile(model, lr=1e-3):
    model.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"])
    return model


def _evaluate(net, xt, yt, eps, seed, autoattack=True):
    # --no-autoattack keeps AutoAttack's two gradient attacks (ART APGD-CE, APGD-DLR; 100 iterations, one
    # start each) and drops Square and the restarts, which cost too much on 2 CPU cores.
    attacks = ["clean", "pgd-40"] + (["autoattack"] if autoattack else ["apgd-ce", "apgd-dlr"])
    report = kam.evaluate_robustness(net, xt, yt, attacks=attacks, epsilons=[eps], restarts=3, seed=seed)
    row = {r["attack"]: r["accuracy"] for r in report.rows}
    sweep_eps = [eps * f for f in (0.25, 0.5, 0.75, 1.0, 1.25)]
    sweep = kam.evaluate_robustness(net, xt, yt, attacks=["pgd-20"], epsilons=sweep_eps, seed=seed)
    row["sweep"] = [r["accuracy"] for r in sweep.rows]
    row["monotone"] = bool(np.all(np.diff(row["sweep"]) <= 1e-9)) and not sweep.warnings and not report.warnings
    return row


def compare(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "results.jsonl"
    done = set()
    if results_path.exists():
        for line in results_path.read_text().splitlines():
            r = json.loads(line)
            done.add((r["dataset"], r["seed"], r["base"], r.get("alpha_warmup_epochs", 0)))
    for dataset in args.datasets:
        (x, y), (xt, yt) = kam.data.load(dataset)
        eps = EPSILON[dataset]
        rng = np.random.default_rng(1234)
        train_idx = rng.permutation(len(x))[:args.train]
        x, y = x[train_idx], y[train_idx]
        xt, yt = xt[:args.test], yt[:args.test]
        steps_per_epoch = -(-len(x) // BATCH)
        for seed in args.seeds:
            for base in args.bases:
                if (dataset, seed, base, args.alpha_warmup_epochs) in done:
                    continue
                t0 = time.time()
                keras.utils.set_random_seed(seed)
                net = bench_cnn(x.shape[1:])
                base_kwargs = dict(epsilon=eps, steps=10, seed=seed)
                warm = _compile(kam.AdversarialModel(net, BASE_CLASSES[base](epsilon_warmup_steps=steps_per_epoch,
                                                                            **base_kwargs)))
                warm.fit(x, y, epochs=args.warm_epochs, batch_size=BATCH, verbose=0)
                weights = net.get_weights()

                def copy():
                    clone = bench_cnn(x.shape[1:])
                    clone.set_weights(weights)
                    return clone

                if not args.miat_only:
                    baseline = _compile(kam.AdversarialModel(copy(), BASE_CLASSES[base](**base_kwargs)))
                    baseline.fit(x, y, epochs=args.epochs, batch_size=BATCH, verbose=0)
                t_base = time.time()
                phases = kam.defenses.MIATPhases(alpha_warmup_steps=args.alpha_warmup_epochs * steps_per_epoch)
                miat_def = kam.defenses.MIAT(base=base, phases=phases, **base_kwargs)
                miat = _compile(kam.AdversarialModel(copy(), miat_def))
                pre = miat_def.pretrain_estimators(miat, x, y, epochs=args.pretrain_epochs, batch_size=256, verbose=0)
                hist = miat.fit(x, y, epochs=args.epochs, batch_size=BATCH, verbose=0)
                t_miat = time.time()
                row = {"dataset": dataset, "seed": seed, "base": base, "epsilon": eps, "train": len(x),
                       "test": len(xt), "warm_epochs": args.warm_epochs, "epochs": args.epochs,
                       "pretrain_epochs": args.pretrain_epochs, "alpha_warmup_epochs": args.alpha_warmup_epochs,
                       "base_result": None if args.miat_only else _evaluate(baseline.model, xt, yt, eps, seed,
                                                                            args.autoattack),
                       "miat_result": _evaluate(miat.model, xt, yt, eps, seed, args.autoattack),
                       "pretrain_last": {k: v[-1] for k, v in pre.items()},
                       "miat_history_last": {k: float(v[-1]) for k, v in hist.history.items()},
                       "seconds": {"warm+baseline": t_base - t0, "pretrain+miat": t_miat - t_base,
                                   "total": time.time() - t0}}
                with open(results_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{dataset} seed {seed} {base} ramp {args.alpha_warmup_epochs}: base {row['base_result']} | "
                      f"MIAT {row['miat_result']} ({row['seconds']['total']:.0f} s)", flush=True)
    table(results_path, out / "table.md")


def table(results_path, table_path):
    rows = [json.loads(l) for l in Path(results_path).read_text().splitlines()]
    lines = ["| dataset | defense | seeds | clean | PGD-40x3 | APGD-CE | APGD-DLR | AutoAttack | sweep monotone |",
             "|---|---|---|---|---|---|---|---|---|"]
    for dataset in sorted({r["dataset"] for r in rows}):
        for base in BASES:
            base_rows = [r for r in rows if r["dataset"] == dataset and r["base"] == base and r["base_result"]]
            variants = [(base_rows, "base_result", BASE_CLASSES[base].__name__ if base != "pgd" else "PGD-AT")]
            for ramp in sorted({r.get("alpha_warmup_epochs", 0) for r in rows}):
                label = f"MIAT({base})" + (f", alpha ramp {ramp} ep" if ramp else "")
                variants.append(([r for r in rows if r["dataset"] == dataset and r["base"] == base and
                                  r.get("alpha_warmup_epochs", 0) == ramp], "miat_result", label))
            for sel, key, label in variants:
                if not sel:
                    continue
                def cell(metric):
                    vals = [100 * r[key][metric] for r in sel if metric in r[key]]
                    if not vals:
                        return "n/a"
                    return f"{np.mean(vals):.1f} ± {(max(vals) - min(vals)) / 2:.1f}"
                mono = all(r[key]["monotone"] for r in sel)
                lines.append(f"| {dataset} | {label} | {len(sel)} | {cell('clean')} | {cell('pgd-40')} | "
                             f"{cell('apgd-ce')} | {cell('apgd-dlr')} | {cell('autoattack')} | {'yes' if mono else 'NO'} |")
    text = "\n".join(lines)
    Path(table_path).write_text(text + "\n")
    print(text)


def step_cost(args):
    """Median step time of MIAT(base) vs base, interleaved, on MNIST batches of 128 (--arch model).

    Both start from one model adversarially trained for --warm-batches batches (PGD-10), so that MIAT
    selects (clean-correct, adversarially wrong) about as many samples as in real training: its MI term
    scores only those rows. The timed steps cycle through 10 batches; MIAT's mean selected fraction is
    printed beside the ratio.
    """
    import tensorflow as tf

    (x, y), _ = kam.data.load("mnist")
    batches = [(tf.constant(x[i * BATCH:(i + 1) * BATCH]), tf.constant(y[i * BATCH:(i + 1) * BATCH]))
               for i in range(10)]
    keras.utils.set_random_seed(0)
    warm = _compile(kam.AdversarialModel(architectures.build(args.arch, (28, 28, 1), 10),
                                         kam.defenses.PGD(epsilon=0.3, steps=10, seed=0, epsilon_warmup_steps=50)))
    n_warm = args.warm_batches * BATCH
    if n_warm:
        warm.fit(x[-n_warm:], y[-n_warm:], batch_size=BATCH, epochs=1, verbose=0)
    print(f"{'base':8s} {'base step ms':>13s} {'MIAT step ms':>13s} {'ratio':>6s} {'selected':>9s}")
    ratios = {}
    for base in args.bases:
        models = {}
        for kind in ("base", "miat"):
            net = architectures.build(args.arch, (28, 28, 1), 10)
            net.set_weights(warm.model.get_weights())
            defense = BASE_CLASSES[base](epsilon=0.3, steps=10, seed=0) if kind == "base" else \
                kam.defenses.MIAT(epsilon=0.3, steps=10, seed=0, base=base,
                                  pretraining=kam.defenses.MIATPretraining(required=False))
            model = _compile(kam.AdversarialModel(net, defense))
            model.make_train_function()
            models[kind] = model
        for m in models.values():            # warm up (trace + first run)
            for batch in batches[:3]:
                m.train_function(iter([batch]))
        times = {k: [] for k in models}
        selected = []
        for i in range(args.repeats):
            for kind, m in models.items():
                t = time.perf_counter()
                out = m.train_function(iter([batches[i % len(batches)]]))
                float(out["loss"])
                times[kind].append(time.perf_counter() - t)
                if kind == "miat":
                    selected.append(float(out["selected_fraction"]))
        med = {k: float(np.median(v)) for k, v in times.items()}
        ratios[base] = med["miat"] / med["base"]
        print(f"{base:8s} {1e3 * med['base']:13.1f} {1e3 * med['miat']:13.1f} {ratios[base]:6.2f} "
              f"{np.mean(selected):9.2f}", flush=True)
    return ratios


def _digits_cnn(seed):
    """tests/conftest.py's small_cnn: conv32-conv32 (3x3, same), dense 64, logits."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([keras.Input((8, 8, 1)),
                             keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                             keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
                             keras.layers.Flatten(), keras.layers.Dense(64, activation="relu"), keras.layers.Dense(10)])


def digits_gap(args):
    eps, epochs, batch = 0.2, 10, 64
    (x, y), (xt, yt) = kam.data.load("digits")
    steps_per_epoch = -(-len(x) // batch)

    def ramp(steps):
        return kam.defenses.MIATPhases(alpha_warmup_steps=steps)

    configs = {"a0": dict(alpha=0.0, phases=ramp(0)), "a5": dict(alpha=5.0, phases=ramp(0)),
               "a5_ramp": dict(alpha=5.0, phases=ramp(steps_per_epoch)),
               "a1_ramp": dict(alpha=1.0, phases=ramp(steps_per_epoch)),
               "a2_ramp": dict(alpha=2.0, phases=ramp(steps_per_epoch)), "natural": dict(variant="natural", phases=ramp(0))}
    unknown = set(args.configs) - set(configs)
    if unknown:
        raise SystemExit(f"unknown --configs {sorted(unknown)}; choose from {sorted(configs)}")

    def fit(model, decay):
        lr = keras.optimizers.schedules.CosineDecay(2e-3, epochs * steps_per_epoch) if decay else 2e-3
        model.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"])
        model.fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
        x_adv = kam.attacks.pgd(model.model, xt, yt, epsilon=eps, step_size=None, steps=20, seed=11)
        return [100 * float((model.model.predict(v, verbose=0).argmax(1) == yt).mean()) for v in (xt, x_adv)]

    gaps = {name: [] for name in args.configs}
    for seed in args.seeds:
        warm = kam.AdversarialModel(_digits_cnn(seed), kam.defenses.PGD(epsilon=eps, steps=5, seed=seed))
        _compile(warm, 2e-3).fit(x, y, epochs=epochs, batch_size=batch, verbose=0)
        weights = warm.model.get_weights()

        def net():
            n = _digits_cnn(seed)
            n.set_weights(weights)
            return n

        keras.utils.set_random_seed(1000 + seed)
        ref = fit(kam.AdversarialModel(net(), kam.defenses.PGD(epsilon=eps, steps=5, seed=seed)), args.schedule == "cosine")
        print(f"seed {seed} PGD-AT: clean {ref[0]:.1f} PGD-20 {ref[1]:.1f}", flush=True)
        for name in args.configs:
            defense = kam.defenses.MIAT(epsilon=eps, steps=5, seed=seed, estimators=kam.defenses.MIATEstimators(hsize=64),
                                        **configs[name])
            model = kam.AdversarialModel(net(), defense)
            defense.pretrain_estimators(model, x, y, batch_size=128, verbose=0, seed=seed)
            keras.utils.set_random_seed(1000 + seed)
            clean, robust = fit(model, args.schedule == "cosine")
            gaps[name].append((robust - ref[1], clean - ref[0]))
            print(f"seed {seed} {name:8s}: clean {clean:.1f} PGD-20 {robust:.1f} | gap PGD-20 {robust - ref[1]:+.1f} "
                  f"clean {clean - ref[0]:+.1f}", flush=True)
    for name, values in gaps.items():
        v = np.array(values)
        print(f"{name:8s} mean gap PGD-20 {v[:, 0].mean():+.1f} (worst {v[:, 0].min():+.1f}), "
              f"clean {v[:, 1].mean():+.1f} (worst {v[:, 1].min():+.1f}) over {len(v)} seeds")


def digits_fit_alone(args):
    (x, y), (xt, yt) = kam.data.load("digits")
    for order in args.order_seeds:
        result = {}
        for name in ("pgd", "miat"):
            cls = kam.defenses.PGD if name == "pgd" else kam.defenses.MIAT
            model = _compile(kam.AdversarialModel(_digits_cnn(0), cls(epsilon=0.1, step_size=0.025, steps=5, seed=0)),
                             2e-3)
            keras.utils.set_random_seed(order)
            t0 = time.time()
            h = model.fit(x, y, epochs=12, batch_size=64, verbose=0, validation_data=(xt, yt),
                          validation_freq=12).history
            result[name] = (100 * h["val_accuracy"][-1], 100 * h["val_adv_accuracy"][-1], time.time() - t0)
        (pc, pa, pt), (mc, ma, mt) = result["pgd"], result["miat"]
        print(f"order {order}: PGD-AT clean {pc:.1f} adv {pa:.1f} ({pt:.0f} s) | MIAT clean {mc:.1f} adv {ma:.1f} "
              f"({mt:.0f} s) | gap clean {mc - pc:+.1f} adv {ma - pa:+.1f}", flush=True)


def _phase_arg(value):
    return value if value == "auto" else float(value)


def fit_alone(args):
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / "fit_alone.jsonl"
    done = {(r["dataset"], r["seed"], r["defense"]) for r in
            (json.loads(l) for l in (results_path.read_text().splitlines() if results_path.exists() else []))}
    for dataset in args.datasets:
        (x, y), (xt, yt) = kam.data.load(dataset)
        eps = EPSILON[dataset]
        idx = np.random.default_rng(1234).permutation(len(x))[:args.train]
        x, y, xt, yt = x[idx], y[idx], xt[:args.test], yt[:args.test]
        for seed in args.seeds:
            for name in ("pgd", "miat"):
                if (dataset, seed, name) in done:
                    continue
                t0 = time.time()
                keras.utils.set_random_seed(seed)
                net = architectures.build(args.arch, x.shape[1:], 10)
                # The CLI's default epsilon warm-up (2 epochs at eps >= 0.2), for both defenses.
                warmup = default_warmup_epochs("pgd", eps, args.epochs)
                common = dict(epsilon=eps, steps=args.steps, seed=seed,
                              epsilon_warmup_steps=int(round(warmup * -(-len(x) // BATCH))))
                defense = kam.defenses.PGD(**common) if name == "pgd" else kam.defenses.MIAT(
                    phases=kam.defenses.MIATPhases(base_epochs=args.base_epochs, pretrain_epochs=args.pretrain_epochs,
                                                   alpha_warmup_epochs=args.alpha_warmup_epochs), **common)
                model = _compile(kam.AdversarialModel(net, defense))
                keras.utils.set_random_seed(1000 + seed)      # the same batch order for both defenses
                backup = keras.callbacks.BackupAndRestore(str(out / "backup" / f"{dataset}_{seed}_{name}"))
                hist = model.fit(x, y, epochs=args.epochs, batch_size=BATCH, verbose=0, callbacks=[backup]).history
                row = {"dataset": dataset, "seed": seed, "defense": name, "arch": args.arch, "epsilon": eps,
                       "train": len(x), "test": len(xt), "epochs": args.epochs,
                       "epsilon_warmup_steps": common["epsilon_warmup_steps"], "schedule": defense.schedule if name == "miat" else None,
                       "result": _evaluate(model.model, xt, yt, eps, seed, args.autoattack),
                       "history_last": {k: float(v[-1]) for k, v in hist.items()}, "seconds": time.time() - t0}
                with open(results_path, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{dataset} seed {seed} {name}: {row['result']} ({row['seconds']:.0f} s)", flush=True)
    rows = [json.loads(l) for l in results_path.read_text().splitlines()]
    lines = ["| dataset | defense | seeds | clean | PGD-40x3 | APGD-CE | APGD-DLR | AutoAttack | sweep monotone |",
             "|---|---|---|---|---|---|---|---|---|"]
    for dataset in sorted({r["dataset"] for r in rows}):
        for name, label in (("pgd", "PGD-AT"), ("miat", "MIAT(pgd), fit alone")):
            sel = [r for r in rows if r["dataset"] == dataset and r["defense"] == name]
            if not sel:
                continue

            def cell(metric):
                vals = [100 * r["result"][metric] for r in sel if metric in r["result"]]
                return f"{np.mean(vals):.1f} ± {(max(vals) - min(vals)) / 2:.1f}" if vals else "n/a"

            mono = "yes" if all(r["result"]["monotone"] for r in sel) else "NO"
            lines.append(f"| {dataset} | {label} | {len(sel)} | {cell('clean')} | {cell('pgd-40')} | "
                         f"{cell('apgd-ce')} | {cell('apgd-dlr')} | {cell('autoattack')} | {mono} |")
    text = "\n".join(lines)
    (out / "fit_alone.md").write_text(text + "\n")
    print(text)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare")
    c.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    c.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    c.add_argument("--bases", nargs="+", default=list(BASES))
    c.add_argument("--train", type=int, default=20000)
    c.add_argument("--test", type=int, default=1000)
    c.add_argument("--warm-epochs", type=int, default=2)
    c.add_argument("--epochs", type=int, default=2)
    c.add_argument("--pretrain-epochs", type=int, default=3)
    c.add_argument("--no-autoattack", dest="autoattack", action="store_false")
    c.add_argument("--alpha-warmup-epochs", type=int, default=0, help="MIAT's alpha ramp (0: the paper's procedure)")
    c.add_argument("--miat-only", action="store_true",
                   help="skip the baseline (its rows are in OUT/results.jsonl from a run without a ramp)")
    c.add_argument("--out", default="benchmarks/out/miat")
    d = sub.add_parser("digits-gap")
    d.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    d.add_argument("--configs", nargs="+", default=["a0", "a5_ramp"])
    d.add_argument("--schedule", choices=["constant", "cosine"], default="cosine")
    g = sub.add_parser("digits-fit-alone")
    g.add_argument("--order-seeds", nargs="+", type=int, default=[1000, 1001])
    f = sub.add_parser("fit-alone")
    f.add_argument("--datasets", nargs="+", default=["mnist", "fashion_mnist"])
    f.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    f.add_argument("--arch", default="madry_cnn", choices=sorted(architectures.PRESETS))
    f.add_argument("--train", type=int, default=60000)
    f.add_argument("--test", type=int, default=1000)
    f.add_argument("--epochs", type=int, default=8)
    f.add_argument("--steps", type=int, default=10, help="PGD steps of the training attack")
    for phase in ("base", "pretrain", "alpha-warmup"):
        f.add_argument(f"--{phase}-epochs", type=_phase_arg, default="auto", help="MIAT's phase, 'auto' or epochs")
    f.add_argument("--no-autoattack", dest="autoattack", action="store_false")
    f.add_argument("--out", default="benchmarks/results/miat_fit",
                   help="finished rows go to OUT/fit_alone.jsonl (tracked in git, so a run continues in a new checkout); "
                        "OUT/backup/ holds the running row's BackupAndRestore state (ignored)")
    s = sub.add_parser("step-cost")
    s.add_argument("--bases", nargs="+", default=list(BASES))
    s.add_argument("--repeats", type=int, default=30)
    s.add_argument("--arch", default="bench_cnn", choices=sorted(architectures.PRESETS))
    s.add_argument("--warm-batches", type=int, default=150,
                   help="PGD-AT batches before timing (0: an untrained model, which MIAT selects little of)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    {"compare": compare, "digits-gap": digits_gap, "step-cost": step_cost, "fit-alone": fit_alone,
     "digits-fit-alone": digits_fit_alone}[args.cmd](args)


if __name__ == "__main__":
    main()

"""``keras-advmi train``: robust training on a dataset, then a clean/FGSM/PGD table on the test set.

This module parses the switches, prints the run's messages and handles its files; the training policy (the
defense names, the default epsilon warm-up, each defense's arguments and callbacks) is ``keras_advmi.recipes``
and ``keras_advmi.training``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
from pathlib import Path

from ..recipes import (DEFENSE_NAMES, RECIPES, ROBUST_WEIGHT, STEP_SIZE_DEFENSES, STEPS_DEFENSES, WARMUP_DEFENSES,
                       WARMUP_EPOCHS, WARMUP_EPSILON, Recipe, default_warmup_epochs)
from . import UsageError
from ._common import dataset_arg, epsilon_arg, keras_file_arg, load_dataset, load_model, positive_int

logger = logging.getLogger(__name__)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Add the ``train`` subcommand to ``subparsers``."""
    p = subparsers.add_parser("train", help="adversarially train a model (resumable)",
                              description="Train with a defense through model.fit; resumes an interrupted run "
                                          "from OUT/backup (printing 'resuming from epoch N'); writes "
                                          "OUT/model.keras and OUT/robustness.json. A finished run in OUT is "
                                          "not retrained unless --force.")
    p.add_argument("--recipe", choices=sorted(RECIPES),
                   help="a named set of the switches below, documented in docs/results.md and printed at start "
                        "(switches given on the command line win): "
                        + "; ".join(f"{r.name}: {r.summary}" for r in RECIPES.values()).replace("%", "%%"))
    p.add_argument("--dataset", type=dataset_arg, default="digits",
                   help="digits (bundled), mnist, fashion_mnist, cifar10 or a .npz")
    p.add_argument("--arch", choices=ARCH_NAMES, help=_default("architecture preset", "arch"))
    p.add_argument("--model", type=keras_file_arg, help="start from this .keras model instead of a preset")
    _add_defense_arguments(p)
    _add_miat_arguments(p)
    _add_optimisation_arguments(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-attacks", nargs="+", default=["clean", "fgsm", "pgd-20"])
    p.add_argument("--tensorboard", action="store_true", help="also log to OUT/logs for TensorBoard")
    p.add_argument("--out", default="runs/train", help="output directory")
    p.add_argument("--force", action="store_true",
                   help="retrain from scratch even if OUT holds a finished run (model.keras) or a backup")
    p.set_defaults(run=run)
    return p


def _add_defense_arguments(p):
    """--defense and its training attack: --epsilon, --steps, --step-size, --attack-dtype, --beta."""
    p.add_argument("--defense", type=str.lower, choices=DEFENSE_NAMES,
                   help=_default("training defense (none = standard training)", "defense"))
    p.add_argument("--epsilon", type=epsilon_arg, help="L-inf budget in [0, 1] (default: the dataset's)")
    p.add_argument("--steps", type=positive_int,
                   help=_default(f"attack steps in training; for {', '.join(STEPS_DEFENSES)}", "steps"))
    p.add_argument("--step-size", type=float,
                   help=f"attack step (default 2.5 * epsilon / steps); for {', '.join(STEP_SIZE_DEFENSES)}")
    p.add_argument("--attack-dtype", choices=["float32", "bfloat16"],
                   help=_default("compute dtype of the training attack's passes (bfloat16: ~1.7x faster PGD-AT "
                                 "steps on CPUs/GPUs with bf16 units; weights, updates and evaluation stay float32)",
                                 "attack_dtype"))
    p.add_argument("--beta", type=float,
                   help="TRADES' beta / MART's lambda: weight of the robust term (default: the defense's, 6)")


def _add_miat_arguments(p):
    """MIAT's switches: its base defense, the MI term's weight and its phases' lengths."""
    p.add_argument("--pretrain-epochs", type=float, default=None,
                   help="MIAT: epochs of MI-estimator pretraining on the frozen model, inside the run (MIAT's "
                        "step 2; default: 10%% of --epochs)")
    p.add_argument("--base", default="pgd", choices=["pgd", "trades", "mart"], help="MIAT: base defense")
    p.add_argument("--alpha", type=float, default=5.0, help="MIAT: weight of the MI term")
    p.add_argument("--alpha-warmup-epochs", type=float, default=None,
                   help="MIAT: ramp alpha from 0 over this many epochs after pretraining (0 = none; default: 25%% "
                        "of --epochs)")
    p.add_argument("--base-epochs", type=float, default=None,
                   help="MIAT: epochs of the base defense before estimator pretraining, inside the run (MIAT's "
                        "step 1; default: 25%% of --epochs; 0 when --model is already adversarially trained)")


def _add_optimisation_arguments(p):
    """The run's length and optimiser: warm-up, epochs, batch, learning rate, validation, EMA, train metrics."""
    p.add_argument("--epsilon-warmup-epochs", type=float, default=None,
                   help="ramp the training epsilon linearly from 0 over this many epochs (0 = off). Default: "
                        f"for {'/'.join(WARMUP_DEFENSES)} at epsilon >= {WARMUP_EPSILON:g} (MNIST's 0.3), "
                        f"min({WARMUP_EPOCHS:g}, EPOCHS/2) epochs, since from step 0 at such a budget the model "
                        "can sit at chance (Madry et al.'s plateau); else 0")
    p.add_argument("--epochs", type=positive_int, help=_default("training epochs", "epochs"))
    p.add_argument("--batch-size", type=positive_int, help=_default("batch size", "batch_size"))
    p.add_argument("--lr", type=float, help=_default("Adam learning rate (the peak with --lr-schedule onecycle)", "lr"))
    p.add_argument("--lr-schedule", choices=["constant", "onecycle"],
                   help=_default("constant, or onecycle: linear up to --lr at 40%% of the run, then linear down "
                                 "to 0 (kam.schedules.OneCycle)", "lr_schedule"))
    p.add_argument("--val-images", type=positive_int,
                   help="validate each epoch on the last N test images (default: all of them)")
    p.add_argument("--ema", type=float, default=None, metavar="MOMENTUM",
                   help="keep an exponential moving average of the weights (e.g. 0.998): validation, the saved "
                        "model and the final table use the average")
    p.add_argument("--clean-train-metrics", action=argparse.BooleanOptionalAction, default=True,
                   help="training accuracy on clean inputs (one more forward pass per batch; "
                        "--no-clean-train-metrics skips it, validation keeps every metric)")


#: ``sorted(keras_advmi.architectures.PRESETS)``, spelled out so that the parser builds without TensorFlow;
#: a test keeps the two equal.
ARCH_NAMES = ("bench_cnn", "madry_cnn", "mlp", "small_cnn", "trades_cnn", "wong_cnn")

#: The defaults of the switches a recipe may set (their parser default is None, so that a recipe can tell
#: a switch left out from one given).
DEFAULTS = {"arch": "small_cnn", "defense": "pgd", "steps": 10, "attack_dtype": "float32", "epochs": 5,
            "batch_size": 64, "lr": 1e-3, "lr_schedule": "constant"}


def _default(text, dest):
    return f"{text} (default: {DEFAULTS[dest]})"


def apply_recipe(args: argparse.Namespace) -> Recipe | None:
    """Fill the switches left out (None) from ``args.recipe``, then from ``DEFAULTS``; the recipe or None."""
    recipe = RECIPES[args.recipe] if getattr(args, "recipe", None) else None
    for dest, value in (recipe.switches if recipe else {}).items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)
    for dest, value in DEFAULTS.items():
        if getattr(args, dest, None) is None:
            setattr(args, dest, value)
    return recipe


def run(args: argparse.Namespace) -> int:
    """Train (or resume, or skip a finished run), save OUT/model.keras and write the robustness table."""
    import keras

    from .. import data
    from ..callbacks import resumed_epochs
    from ..training import build_defense

    _settle_switches(args)
    out = Path(args.out)
    if args.force and (out / "backup").exists():
        shutil.rmtree(out / "backup")
    (x, y), (xt, yt) = load_dataset(args.dataset)
    epsilon = args.epsilon if args.epsilon is not None else data.default_epsilon(args.dataset)
    if _finished_run(out, args, epsilon, xt, yt):
        return 0
    warmup_epochs = _warmup_epochs(args, epsilon)
    keras.utils.set_random_seed(args.seed)
    model = _network(args, x.shape[1:], int(max(y.max(), yt.max()) + 1))
    steps_per_epoch = -(-len(x) // args.batch_size)
    defense = build_defense(args.defense, model,
                            _defense_options(args, epsilon, int(round(warmup_epochs * steps_per_epoch))))
    out.mkdir(parents=True, exist_ok=True)
    done = resumed_epochs(out / "backup")
    trainer = _compiled_trainer(model, defense, args, steps_per_epoch)
    xv, yv = (xt, yt) if args.val_images is None else (xt[-args.val_images:], yt[-args.val_images:])
    if done:
        print(f"resuming from epoch {done + 1} of {args.epochs}: {done} finished epoch(s) restored from "
              f"{out / 'backup'}")
    trainer.fit(x, y, epochs=args.epochs, batch_size=args.batch_size, validation_data=(xv, yv),
                callbacks=_callbacks(args, out, done, defense, (x, y), (xv, yv)), verbose=1)
    tmp = out / ".model.tmp.keras"   # then renamed: a run killed while saving leaves no half-written model.keras
    trainer.save(tmp)   # compiled, with the optimizer's state: load_model(...).fit continues, evaluate works
    os.replace(tmp, out / "model.keras")
    _final_table(model, args, epsilon, xt, yt, out)
    return 0


def _settle_switches(args):
    """Fill the switches left out (``apply_recipe``), print the recipe, refuse switches that do not fit."""
    beta_given, steps_given = args.beta is not None, args.steps is not None
    recipe = apply_recipe(args)
    if beta_given and args.defense not in ROBUST_WEIGHT:
        raise UsageError(f"--beta is TRADES' beta or MART's lambda: it needs --defense trades or mart, "
                         f"got --defense {args.defense}")
    if args.step_size is not None and args.defense not in STEP_SIZE_DEFENSES:
        raise UsageError(f"--step-size is the training attack's step: it needs a defense with one "
                         f"({', '.join(STEP_SIZE_DEFENSES)}), got --defense {args.defense}")
    if steps_given and args.defense not in STEPS_DEFENSES:
        raise UsageError(f"--steps counts the training attack's iterations: it needs an iterative defense "
                         f"({', '.join(STEPS_DEFENSES)}), got --defense {args.defense}")
    if recipe is not None:
        print(f"recipe {recipe.name} ({recipe.summary}): {recipe.command_line()} "
              "(switches given on the command line win)")
        if args.dataset != recipe.dataset:
            logger.warning("recipe %s was tuned on %s, not %s: its switches run unchanged", recipe.name,
                           recipe.dataset, args.dataset)
    _check_values(args)


def _check_values(args):
    """UsageErrors naming the flag for values out of their range."""
    if args.beta is not None and not args.beta >= 0:
        raise UsageError(f"--beta must be >= 0, got {args.beta}")
    if not 0 < args.lr < math.inf:   # NaN too: Adam takes a NaN rate and trains to NaN weights
        raise UsageError(f"--lr must be a finite number > 0, got {args.lr}")
    for flag in ("pretrain_epochs", "base_epochs", "alpha_warmup_epochs"):
        value = getattr(args, flag)
        if value is not None and not value >= 0:
            raise UsageError(f"--{flag.replace('_', '-')} must be >= 0, got {value:g}")
    if not args.alpha >= 0:
        raise UsageError(f"--alpha must be >= 0, got {args.alpha}")
    if args.epsilon_warmup_epochs is not None and not args.epsilon_warmup_epochs >= 0:
        raise UsageError(f"--epsilon-warmup-epochs must be >= 0, got {args.epsilon_warmup_epochs}")
    if args.ema is not None and not 0 < args.ema < 1:
        raise UsageError(f"--ema must be in (0, 1), e.g. 0.998, got {args.ema}")
    if args.defense == "none" and (args.epsilon_warmup_epochs or not args.clean_train_metrics):
        raise UsageError("--epsilon-warmup-epochs and --no-clean-train-metrics need a defense (not --defense none)")


def _finished_run(out, args, epsilon, xt, yt) -> bool:
    """True when OUT holds a finished run (unless --force): its table printed, or made when missing."""
    from ..evaluation import RobustnessReport

    if args.force or not (out / "model.keras").exists():
        return False
    if (out / "robustness.json").exists():
        print(f"{out} holds a finished run (model.keras, robustness.json): not retraining (--force retrains)")
        print(RobustnessReport.from_dict(json.loads((out / "robustness.json").read_text())))
        return True
    print(f"{out / 'model.keras'} exists (training finished, no robustness table yet): evaluating it, "
          "not retraining (--force retrains)")
    _final_table(load_model(str(out / "model.keras")), args, epsilon, xt, yt, out)
    return True


def _warmup_epochs(args, epsilon) -> float:
    """--epsilon-warmup-epochs, or the default warm-up (``recipes.default_warmup_epochs``), stated when on."""
    if args.epsilon_warmup_epochs is not None:
        return args.epsilon_warmup_epochs
    epochs = default_warmup_epochs(args.defense, epsilon, args.epochs)
    if epochs:
        print(f"epsilon warm-up: {args.defense} at eps={epsilon:g} ramps epsilon from 0 over the first "
              f"{epochs:g} epochs (the default at eps >= {WARMUP_EPSILON:g}; "
              "--epsilon-warmup-epochs 0 turns it off)")
    return epochs


def _network(args, input_shape, classes):
    """The network to train: --model's (unwrapped from an AdversarialModel), else the --arch preset."""
    from .._model import network_of
    from ..architectures import build

    if args.model:
        return network_of(load_model(args.model))
    return build(args.arch, input_shape, classes)


def _defense_options(args, epsilon, warmup_steps):
    """``training.DefenseOptions`` from the switches. MIAT runs its paper's phases inside fit (base, estimator
    pretraining, MI term ramped in; kam.defenses.MIAT): unset lengths are its "auto" fractions of --epochs."""
    from ..training import DefenseOptions

    def auto(value):
        return "auto" if value is None else value

    return DefenseOptions(epsilon=epsilon, steps=args.steps, step_size=args.step_size, seed=args.seed,
                          attack_dtype=args.attack_dtype, epsilon_warmup_steps=warmup_steps, beta=args.beta,
                          miat_base=args.base, miat_alpha=args.alpha, miat_base_epochs=auto(args.base_epochs),
                          miat_pretrain_epochs=auto(args.pretrain_epochs),
                          miat_alpha_warmup_epochs=auto(args.alpha_warmup_epochs))


def _compiled_trainer(model, defense, args, steps_per_epoch):
    """``model`` compiled for standard training (defense None), else its compiled AdversarialModel; Adam on
    --lr (or the one-cycle schedule), averaging the weights with --ema."""
    import keras

    from ..models import AdversarialModel
    from ..schedules import OneCycle

    lr = OneCycle(steps_per_epoch * args.epochs, args.lr) if args.lr_schedule == "onecycle" else args.lr
    optimizer = keras.optimizers.Adam(lr, use_ema=args.ema is not None, ema_momentum=args.ema or 0.99)
    if defense is None:
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"])
        return model
    trainer = AdversarialModel(model, defense, clean_train_metrics=args.clean_train_metrics)
    trainer.compile(optimizer=optimizer, metrics=["accuracy"])
    return trainer


def _callbacks(args, out, done, defense, train, validation):
    """The run's callbacks: the wall-time log, the backup, the collapse check, the defense's own
    (``training.defense_callbacks``), then the EMA swap and TensorBoard when asked for."""
    import keras

    from ..callbacks import CollapseMonitor, EpochTimeLog
    from ..training import defense_callbacks

    xv, yv = validation
    callbacks = [EpochTimeLog(out / "train_log.json", done),   # before the backup: a killed epoch is re-run
                 keras.callbacks.BackupAndRestore(str(out / "backup")),
                 CollapseMonitor(xv[:1000], yv[:1000])]   # warns when the model sits at chance / on one class
    callbacks += defense_callbacks(defense, *train)
    if args.ema is not None:   # after BackupAndRestore, which must back up the raw weights, not the averages
        callbacks.append(keras.callbacks.SwapEMAWeights())
    if args.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(out / "logs")))
    return callbacks


def _final_table(model, args, epsilon, xt, yt, out):
    """The clean/FGSM/PGD table of the trained model on up to 1,000 test images: printed and saved."""
    from ..callbacks import EpochTimeLog
    from ..evaluation import evaluate_robustness

    n = min(len(xt), 1000)
    report = evaluate_robustness(model, xt[:n], yt[:n], attacks=args.eval_attacks, epsilons=[epsilon],
                                 seed=args.seed, progress=None)
    report.to_json(out / "robustness.json")
    meta = {"dataset": args.dataset, "defense": args.defense, "epsilon": epsilon, "epochs": args.epochs,
            "arch": args.arch if not args.model else args.model, "test_images": n, "recipe": args.recipe,
            "seed": args.seed, "train_seconds": EpochTimeLog.total_seconds(out / "train_log.json")}
    (out / "train_config.json").write_text(json.dumps(meta, indent=2))
    print(f"\n{args.defense} on {args.dataset}, eps={epsilon:g}, {n} test images:")
    print(report)
    print(f"saved {out / 'model.keras'}")

"""Watch what a model learns: MI curves of a normally trained and a PGD-AT model side by side in TensorBoard.

    KERAS_ADVMI_DATA=../shared/data python examples/tensorboard_mi.py --logdir logs/mi_demo --epochs 4
    tensorboard --logdir logs/mi_demo        # "Custom Scalars" tab: one chart per layer and quantity

Both models use the same architecture, probe set (1,000 test images) and PGD probe attack (eps 0.3), so
their curves are comparable. Each chart holds four curves, one per TensorBoard run, in four colours named
in the run list: ``nt/mi/clean``, ``nt/mi/adv``, ``pgd_at/mi/clean``, ``pgd_at/mi/adv`` (the logger is
listed before ``keras.callbacks.TensorBoard`` so that its runs come first in TensorBoard's colour order).
Without KERAS_ADVMI_DATA, MNIST comes from ``keras.datasets`` (a download). ``--dataset digits`` runs
offline in about 2 minutes (15 epochs of 11 batches).
"""

import argparse
import json
import os

import keras

import keras_advmi as kam
from keras_advmi.architectures import bench_cnn


def train(kind, data, args):
    (x, y), (xt, yt) = data
    keras.utils.set_random_seed(args.seed)
    net = bench_cnn(x.shape[1:])
    eps = args.epsilon
    log_dir = os.path.join(args.logdir, kind)
    logger = kam.callbacks.MutualInformationLogger(
        xt[:args.probe], yt[:args.probe], log_dir=log_dir, epsilon=eps, steps=10, noise_var=args.noise_var,
        seed=args.seed)
    callbacks = [logger, keras.callbacks.TensorBoard(log_dir, update_freq="epoch")]   # logger first: colours
    if kind == "nt":
        net.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        net.fit(x, y, epochs=args.epochs, batch_size=128, callbacks=callbacks, verbose=2)
    else:
        # Ramp epsilon up over the first epoch: at the full MNIST budget from step 0, PGD-AT can sit at
        # chance accuracy for epochs (Madry et al.'s plateau).
        steps_per_epoch = -(-len(x) // 128)
        model = kam.AdversarialModel(net, defense=kam.defenses.PGD(epsilon=eps, step_size=2.5 * eps / 10, steps=10,
                                                                   epsilon_warmup_steps=steps_per_epoch,
                                                                   seed=args.seed))
        model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        model.fit(x, y, epochs=args.epochs, batch_size=128, callbacks=callbacks, verbose=2)
    return logger


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="mnist")
    parser.add_argument("--logdir", default="logs/mi_demo")
    parser.add_argument("--epochs", type=int, default=None,
                        help="default: 15 on digits (11 batches an epoch: the curves need that many to part), 4 otherwise")
    parser.add_argument("--epsilon", type=float, default=None, help="default: the dataset's (MNIST 0.3)")
    parser.add_argument("--probe", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--noise-var", type=lambda t: t if t == "relative" else float(t), default="relative",
                        help="KDE noise variance: 'relative' (default: 0.1 x each layer's median squared pairwise "
                             "distance, scale-aware) or an absolute number (0.1 reproduces the 2022 MI paper's information "
                             "planes; it saturates at log N on MNIST)")
    args = parser.parse_args()
    args.epsilon = args.epsilon or kam.data.default_epsilon(args.dataset)
    args.epochs = args.epochs or (15 if args.dataset == "digits" else 4)
    data = kam.data.load(args.dataset)
    summary, histories = {}, {}
    for kind in ("nt", "pgd_at"):
        logger = train(kind, data, args)
        histories[kind] = logger.history
        summary[kind] = {tag: values[-1] for tag, values in logger.history.items() if tag != "epoch"}
    with open(os.path.join(args.logdir, "final_mi.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(args.logdir, "mi_histories.json"), "w") as f:
        json.dump(histories, f)
    print(f"{'tag':34s} {'NT':>8s} {'PGD-AT':>8s}")
    for tag in sorted(summary["nt"]):
        print(f"{tag:34s} {summary['nt'][tag]:8.3f} {summary['pgd_at'].get(tag, float('nan')):8.3f}")
    print(f"\ntensorboard --logdir {args.logdir}")


if __name__ == "__main__":
    main()

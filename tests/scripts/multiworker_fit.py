"""AdversarialModel.fit under MultiWorkerMirroredStrategy: worker processes on localhost, and their reference.

Worker (one process per TF_CONFIG task; or ``--mirrored``: one process, MirroredStrategy over 2 logical CPUs,
the same global batch):

    python multiworker_fit.py worker OUT_DIR pgd trades [--plain] [--mirrored] [--backup DIR --die-at E:B]

Launcher (free ports, a TF_CONFIG per process, a hard timeout that kills the children):

    python multiworker_fit.py launch OUT_DIR pgd trades miat     # 2 workers + the MirroredStrategy reference
    python multiworker_fit.py resume OUT_DIR pgd --die-at 1:5      # kill worker 1 mid-epoch 1, restart both

Each run writes OUT_DIR/<run>.json (history, evaluate, ``weights`` file) and OUT_DIR/<run>-<defense>.npz
(the final weights). The data: the first 1024 digits, batches of 64 (16 steps; 32 samples per replica),
in a fixed order (no shuffle), so the two-worker and the one-process run see the same global batches.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time

EPOCHS, N_TRAIN, BATCH = 3, 1024, 64


def options(name):
    """Small, fast settings per defense (the attack chains, seeds and phases of each are kept)."""
    import keras_advmi as kam

    common = {"epsilon": 0.2, "steps": 3, "eval_steps": 3, "seed": 0}
    if name == "miat":   # its phases inside fit: base, estimator pretraining, MI term
        return {**common, "alpha": 1.0, "estimators": kam.defenses.MIATEstimators(hsize=16),
                "pretraining": kam.defenses.MIATPretraining(required=False, attack_steps=3)}
    if name == "fast_at":   # a single step: no steps of its own
        return {"epsilon": 0.2, "eval_steps": 3, "seed": 0}
    if name == "sns":
        return {**common, "layers": ["conv1"], "top_k": 3}
    if name == "region_at":
        return {"epsilon": 0.2, "seed": 0, "eval_steps": 3, "universal_steps": 3, "data_fraction": 0.25}
    return common


def worker(args):
    import numpy as np
    import tensorflow as tf

    if args.mirrored:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
        run_name, task = "mirrored", 0
    else:
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
        task = strategy.cluster_resolver.task_id
        run_name = f"worker{task}"
    import keras

    import keras_advmi as kam

    (x, y), (xt, yt) = kam.data.load("digits")
    train = tf.data.Dataset.from_tensor_slices((x[:N_TRAIN], y[:N_TRAIN])).batch(BATCH)
    test = tf.data.Dataset.from_tensor_slices((xt[:256], yt[:256])).batch(BATCH)
    result = {"replicas": strategy.num_replicas_in_sync, "task": task}
    die_epoch, die_batch = (int(v) for v in args.die_at.split(":")) if args.die_at else (None, None)

    class Report(keras.callbacks.Callback):
        """Record the epochs fit runs; die (``--die-at E:B``, worker 1) in the middle of epoch E."""

        def on_train_begin(self, logs=None):
            self.epochs = []

        def on_epoch_begin(self, epoch, logs=None):
            self.epochs.append(epoch)
            print(f"epoch_begin {epoch}", flush=True)

        def on_train_batch_end(self, batch, logs=None):
            if task == 1 and self.epochs[-1] == die_epoch and batch == die_batch:
                print(f"dying {die_epoch}:{die_batch}", flush=True)
                os._exit(3)

    for name in args.defenses:
        with strategy.scope():
            keras.utils.set_random_seed(0)
            net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
                                    keras.layers.Flatten(), keras.layers.Dense(10)])
            if args.plain:   # Keras' own Model.fit, to show the upstream failure
                model = net
                model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"],
                              loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            else:
                model = kam.AdversarialModel(net, kam.defenses.REGISTRY[name](**options(name)))
                model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
        report = Report()
        callbacks = [report]
        if name == "region_at":   # its universal deltas, computed on a subset at the start of training
            callbacks.append(model.defense.refresh_callback(x[:128], y[:128]))
        if args.backup:   # one backup directory per worker: Keras' BackupAndRestore writes without coordination
            callbacks.insert(0, keras.callbacks.BackupAndRestore(os.path.join(args.backup, f"{name}-task{task}")))
        t0 = time.perf_counter()
        hist = model.fit(train, epochs=EPOCHS, verbose=0, callbacks=callbacks).history
        seconds = time.perf_counter() - t0
        evaluation = model.evaluate(test, verbose=0, return_dict=True)
        # the classifier's weights, and the defense's trainable ones (MIAT's estimators). Left out: the
        # estimators' BatchNormalization moving statistics, which Keras 3 keeps per replica under tf.distribute
        # (aggregation "none"): each replica's copy is its own, on one machine (MirroredStrategy) as on several.
        path = os.path.join(args.out, f"{run_name}-{name}.npz")
        own = [] if args.plain else [w for layer in model.defense_layers for w in layer.trainable_weights]
        np.savez(path, **{f"net_{i}": np.asarray(w) for i, w in enumerate(net.get_weights())},
                 **{f"defense_{i}": np.asarray(w) for i, w in enumerate(own)})
        seeds = []
        if not args.plain:   # the attack seed of every replica of this worker (distinct across workers too)
            per_replica = strategy.run(tf.function(lambda: model._step_seed(0)))
            seeds = [np.asarray(v).tolist() for v in strategy.experimental_local_results(per_replica)]
        result[name] = {"seeds": seeds, "history": {k: [float(v) for v in vs] for k, vs in hist.items()},
                        "evaluate": {k: float(v) for k, v in evaluation.items()}, "epochs_run": report.epochs,
                        "iterations": int(model.optimizer.iterations.numpy()), "fit_seconds": seconds,
                        "weights": path}
    with open(os.path.join(args.out, f"{run_name}.json"), "w") as f:
        json.dump(result, f)
    print("RESULT " + json.dumps(result), flush=True)


def free_ports(n):
    """``n`` distinct free TCP ports on 127.0.0.1 (bound to port 0, read, closed)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def start_workers(worker_args, n=2, log_dir=None, env=None):
    """Start ``n`` worker processes of this script on localhost, each with its TF_CONFIG; returns the Popens."""
    ports = free_ports(n)
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for i in range(n):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        log = open(os.path.join(log_dir, f"worker{i}.log"), "a") if log_dir else subprocess.DEVNULL
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "worker", *worker_args], stdout=log, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {}), "TF_CONFIG": tf_config, "TF_CPP_MIN_LOG_LEVEL": "2"}))
    return procs


def wait_all(procs, timeout):
    """Wait for every process until ``timeout`` seconds have passed; kill the ones still running then.
    Returns their exit codes (None: killed on timeout)."""
    deadline = time.monotonic() + timeout
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=max(0.1, deadline - time.monotonic())))
        except subprocess.TimeoutExpired:
            codes.append(None)
    for p, code in zip(procs, codes):
        if code is None:
            p.kill()
            p.wait()
    return codes


def launch(args):
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    flags = ["--plain"] if args.plain else []
    procs = start_workers([args.out, *args.defenses, *flags], log_dir=args.out)
    if not args.no_reference:
        log = open(os.path.join(args.out, "mirrored.log"), "w")
        procs.append(subprocess.Popen([sys.executable, __file__, "worker", args.out, *args.defenses, "--mirrored",
                                       *flags], stdout=log, stderr=subprocess.STDOUT,
                                      env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}))
    codes = wait_all(procs, args.timeout)
    print("LAUNCH " + json.dumps({"codes": codes, "seconds": time.perf_counter() - t0}), flush=True)
    return 0 if all(c == 0 for c in codes) else 1


def resume(args):
    """Kill and resume: 2 workers with BackupAndRestore; worker 1 dies at ``--die-at`` (mid-epoch), worker 0 is
    killed then (it waits on its peer's collectives); both restart on the same backups and finish, beside the
    uninterrupted MirroredStrategy reference."""
    os.makedirs(args.out, exist_ok=True)
    t0 = time.perf_counter()
    backup = os.path.join(args.out, "backup")
    first = start_workers([args.out, *args.defenses, "--backup", backup, "--die-at", args.die_at], log_dir=args.out)
    died = wait_all(first[1:], args.timeout)[0]
    first[0].kill()
    killed = first[0].wait()
    log = open(os.path.join(args.out, "mirrored.log"), "w")
    reference = subprocess.Popen([sys.executable, __file__, "worker", args.out, *args.defenses, "--mirrored"],
                                 stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    second = start_workers([args.out, *args.defenses, "--backup", backup], log_dir=args.out)
    codes = wait_all(second + [reference], max(1.0, args.timeout - (time.perf_counter() - t0)))
    print("LAUNCH " + json.dumps({"first_run": [killed, died], "codes": codes, "seconds": time.perf_counter() - t0}),
          flush=True)
    return 0 if died == 3 and all(c == 0 for c in codes) else 1


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["worker", "launch", "resume"])
    p.add_argument("out")
    p.add_argument("defenses", nargs="+")
    p.add_argument("--plain", action="store_true", help="a plain keras.Model with Keras' own fit")
    p.add_argument("--mirrored", action="store_true", help="worker: one process, MirroredStrategy on 2 CPUs")
    p.add_argument("--backup", help="worker: BackupAndRestore under this directory (one subdirectory a worker)")
    p.add_argument("--die-at", help="worker: task 1 exits at EPOCH:BATCH (0-based)")
    p.add_argument("--no-reference", action="store_true", help="launch: no MirroredStrategy reference run")
    p.add_argument("--timeout", type=float, default=150.0, help="launch: kill every process after this long")
    args = p.parse_args()
    if args.mode == "worker":
        worker(args)
        return 0
    return launch(args) if args.mode == "launch" else resume(args)


if __name__ == "__main__":
    sys.exit(main())

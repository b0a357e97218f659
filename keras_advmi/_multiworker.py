"""``AdversarialModel.fit`` / ``evaluate`` under ``tf.distribute.MultiWorkerMirroredStrategy`` (several processes).

Keras 3's TensorFlow trainer fails there before the first step, for every model (keras-team/keras#20585,
tensorflow/tensorflow#72388, open as of Keras 3.15 / TF 2.21), at two places:

1. ``TensorFlowTrainer._maybe_symbolic_build`` takes the first batch of the distributed dataset and calls
   ``strategy.reduce("MEAN", (x, y), axis=None)`` on the whole structure. ``MultiWorkerMirroredStrategy``
   reduces one value at a time, so it raises ``ValueError: Attempt to convert a value (PerReplica:{...})
   with an unsupported type``. The batch only gives the symbolic build its shapes and dtypes, so
   :func:`symbolic_build_batch` hands it this worker's first replica's part instead (a batch of the
   per-replica size, what each replica's ``train_step`` sees). ``AdversarialModel._maybe_symbolic_build``
   is the one hook into Keras' private API (see :func:`check_keras_trainer`).
2. Keras' ``reduce_per_replica`` reduces each ``train_step`` / ``test_step`` output with
   ``strategy.reduce("MEAN", v, axis=0)`` in multi-worker mode: a mean over the first axis of every
   replica's value. Logs are scalars, which have no axis 0 (``Invalid reduction dimension 0``). Public
   route: :func:`logs_for_reduction` gives each log the shape (1,) there, so that the mean over axis 0 of
   all replicas is the mean of the replicas' values, a scalar, as with ``MirroredStrategy``.

Everything else goes through public TensorFlow: the dataset is sharded by ``experimental_distribute_dataset``
(auto-shard: by file when the pipeline reads files, else by data), variables are created on every worker and
initialised from worker 0, gradients are all-reduced across workers by the optimizer, and
``replica_id_in_sync_group`` is global (worker * local replicas + local replica), so the attack seeds of
``AdversarialModel._step_seed`` differ on every replica of every worker.
"""

from __future__ import annotations

import inspect

import tensorflow as tf
import keras

#: The upstream issue the work-around stands in for; drop the hook when it is fixed.
UPSTREAM_ISSUE = "https://github.com/keras-team/keras/issues/20585"


def is_multi_worker(strategy):
    """True when ``strategy`` is a ``MultiWorkerMirroredStrategy`` whose replicas span several processes."""
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.num_replicas_in_sync > len(strategy.extended.worker_devices))


def in_multi_worker_replica():
    """True inside ``strategy.run`` of a multi-worker strategy (where Keras reduces the step's outputs)."""
    return tf.distribute.in_cross_replica_context() is False and is_multi_worker(tf.distribute.get_strategy())


def symbolic_build_batch(strategy, iterator):
    """The batch Keras' symbolic build should see under multi-worker: this worker's first replica's part of
    the first batch of ``iterator`` (Keras' epoch iterator, yielding ``(begin, end, data_iterator)``).

    Returns None when ``strategy`` is not multi-worker or there is no iterator (Keras' own path then)."""
    if iterator is None or not is_multi_worker(strategy):
        return None
    for _, _, data_iterator in iterator:
        batch = next(data_iterator)
        return tf.nest.map_structure(
            lambda v: strategy.experimental_local_results(v)[0]
            if isinstance(v, tf.distribute.DistributedValues) else v, batch)
    return None


def logs_for_reduction(logs):
    """``logs`` as Keras' multi-worker output reduction needs them: scalars reshaped to (1,) inside a
    replica of a multi-worker strategy (Keras then takes their mean over all replicas: a scalar); unchanged
    anywhere else."""
    if not in_multi_worker_replica():
        return logs
    return {name: tf.reshape(value, [1]) if getattr(value, "shape", None) is not None and value.shape.rank == 0
            else value for name, value in logs.items()}


def check_keras_trainer():
    """Raise ``RuntimeError`` if Keras' trainer no longer has the private method the hook overrides, with
    the same arguments (then the hook silently stops being called: re-check keras-team/keras#20585)."""
    method = getattr(keras.Model, "_maybe_symbolic_build", None)   # Keras' TensorFlowTrainer's, through the MRO
    if method is None or list(inspect.signature(method).parameters) != ["self", "iterator", "data_batch"]:
        raise RuntimeError(f"keras {keras.__version__}: TensorFlowTrainer._maybe_symbolic_build "
                           f"changed; AdversarialModel's multi-worker hook ({UPSTREAM_ISSUE}) must be revisited")

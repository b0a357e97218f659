"""MI-score detector after MIAT / NAMID ("Improving Adversarial Robustness via Mutual Information Estimation",
ICML 2022, arXiv 2207.12203).

That paper's finding: an adversarial input carries less natural MI between the input and the model's
output than a clean one. The detector scores the per-sample natural-MI estimate of (x, h(x)):

    u[i, j, l] = < G(h(x_i)), L(x_j)_l >                          (DIM-style local critic)
    v(x_i)     = mean_l ( u[i, i, l] - log (1/M) sum_{j in R} exp u[i, j, l] )   (DV term, nats)
    score(x_i) = -v(x_i)                                          (higher = more adversarial)

L is a small conv encoder of the image into a feature map of ``hidden`` channels, G a two-layer
encoder of the model's logits (as in that paper's estimators). The critic is trained on clean data only
(model frozen) to maximise the batch DV bound with in-batch negatives j != i. At scoring time the
negatives are a fixed reference bank R of ``references`` clean training images (their L features
are stored as a weight), so a sample's score does not depend on the other samples in its request
(a served model must give the same answer for a batch of 1 and of 64).

An adversarial input h(x~) answers for the wrong class while L still sees the true digit, so the
joint pair looks like a negative pair and v drops. The paper's adversarial-MI estimator scores the
pattern n = x~ - x, which is unknown at test time, so it is not part of the score.

When the model was trained with ``kam.defenses.MIAT``, pass ``estimators=defense``: the score is
then -v_n(x -> h(x)) from MIAT's own (pretrained) natural estimator, i.e.
``-defense.mi_scores(model, x, x)["mi_natural/clean"]`` computed in the graph; its DV term takes
negatives from the batch, so scores then depend on batch composition and need batches of >= 2.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from .._batches import PermutedBatches
from .._checks import (check_choice, check_in_unit_interval, check_int_at_least, check_positive, check_positive_int,
                       check_seed, invalid)
from .._model import logits_of, predict_logits
from .base import Detector


def _image_encoder(input_shape, hidden, seed):
    """conv16 3x3 -> conv(hidden) 3x3 -> 1x1 conv(hidden); stride 2 in both convs for images >= 16 px
    (28x28 -> a 7x7 map), so the critic costs about as much as a small classifier."""
    init = lambda k: keras.initializers.GlorotUniform(seed=seed + k)  # noqa: E731
    stride = 2 if min(input_shape[0], input_shape[1]) >= 16 else 1
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(16, 3, strides=stride, padding="same", activation="relu", kernel_initializer=init(1)),
        keras.layers.Conv2D(hidden, 3, strides=stride, padding="same", activation="relu", kernel_initializer=init(2)),
        keras.layers.Conv2D(hidden, 1, kernel_initializer=init(3)),
    ], name="mi_local_encoder")


def _output_encoder(classes, hidden, seed):
    init = lambda k: keras.initializers.GlorotUniform(seed=seed + k)  # noqa: E731
    return keras.Sequential([
        keras.Input((classes,)),
        keras.layers.Dense(hidden, activation="relu", kernel_initializer=init(4)),
        keras.layers.Dense(hidden, kernel_initializer=init(5)),
    ], name="mi_global_encoder")


def _encode_output(logits, critic_input):
    """What the global encoder G sees: the logits, or their log-softmax."""
    return tf.nn.log_softmax(logits, axis=-1) if critic_input == "log_softmax" else logits


def _local_features(local_encoder, x, hidden):
    """L(x) as (N, P, hidden): the local encoder's feature map, its P positions flattened."""
    f = local_encoder(x)
    return tf.reshape(f, [tf.shape(f)[0], -1, hidden])


def dv_scores_batch(g: tf.Tensor, local: tf.Tensor) -> tf.Tensor:
    """Per-sample DV terms with in-batch negatives j != i: g (B, D), local (B, P, D) -> (B,)."""
    u = tf.einsum("id,jpd->ijp", g, local)                                  # (B, B, P)
    b = tf.shape(u)[0]
    joint = tf.linalg.diag_part(tf.transpose(u, [2, 0, 1]))                  # (P, B)
    mask = tf.eye(b, dtype=u.dtype)[:, :, None] * -1e9
    neg = tf.reduce_logsumexp(u + mask, axis=1) - tf.math.log(tf.cast(b - 1, u.dtype))  # (B, P)
    return tf.reduce_mean(tf.transpose(joint) - neg, axis=-1)


def dv_scores_reference(g: tf.Tensor, local: tf.Tensor, bank: tf.Tensor) -> tf.Tensor:
    """Per-sample DV terms against a fixed bank: g (N, D), local (N, P, D), bank (M, P, D) -> (N,)."""
    joint = tf.einsum("id,ipd->ip", g, local)                                # (N, P)
    u = tf.einsum("id,jpd->ijp", g, bank)                                    # (N, M, P)
    m = tf.cast(tf.shape(bank)[0], u.dtype)
    neg = tf.reduce_logsumexp(u, axis=1) - tf.math.log(m)
    return tf.reduce_mean(joint - neg, axis=-1)


class CriticTraining(keras.Model):
    """Trains ``detector``'s critic (its local and global encoders) on clean data with ``fit``.

    ``train_step``: uniform noise of amplitude ``detector.noise`` on the images (seed ``(detector.seed,
    epoch * 100003 + batch)``, clipped to [0, 1]), then Adam on ``-mean dv_scores_batch``, the batch DV bound
    with in-batch negatives. Logs ``mi``, the mean DV bound (nats) over the epoch's batches. The classifier is
    not part of it: its logits are computed once, before training.
    """

    def __init__(self, detector: MIScoreDetector, batches_per_epoch: int, **kwargs):
        super().__init__(**kwargs)
        self.local_encoder = detector.local_encoder       # the trained variables
        self.global_encoder = detector.global_encoder
        self.critic_input, self.hidden = detector.critic_input, detector.hidden
        self.noise, self.seed = detector.noise, detector.seed
        self.batches_per_epoch = int(batches_per_epoch)
        self.tracker = keras.metrics.Mean(name="mi")

    @property
    def metrics(self):
        return [self.tracker]

    def call(self, inputs, training=None):
        x, logits = inputs
        return dv_scores_batch(self.global_encoder(_encode_output(logits, self.critic_input)),
                               _local_features(self.local_encoder, x, self.hidden))

    def train_step(self, data):
        xb, zb = data
        if self.noise > 0:
            t = tf.cast(self.optimizer.iterations, tf.int64)
            n = tf.constant(self.batches_per_epoch, tf.int64)
            seed = tf.stack([tf.constant(self.seed, tf.int64), (t // n) * 100003 + t % n])
            xb = tf.clip_by_value(xb + tf.random.stateless_uniform(tf.shape(xb), seed, -self.noise, self.noise),
                                  0.0, 1.0)
        weights = self.local_encoder.trainable_weights + self.global_encoder.trainable_weights
        with tf.GradientTape() as tape:
            loss = -tf.reduce_mean(self((xb, zb), training=True))
        self.optimizer.apply(tape.gradient(loss, weights), weights)
        self.tracker.update_state(-loss)
        return {"mi": self.tracker.result()}


@keras.saving.register_keras_serializable(package="keras_advmi")
class MIScoreDetector(Detector):
    """Low natural MI between an input and the model's output flags it as adversarial ("Improving Adversarial
    Robustness via Mutual Information Estimation", 2022).

    Args:
      estimators: None (fit own critics, the default) or a ``kam.defenses.MIAT`` whose ``natural``
        estimator, v_n(pattern, logits) -> (N,), scores x against h(x).
      hidden: critic feature width (the paper uses 2048 on CIFAR; ~64-256 suits MNIST).
      references: size M of the clean reference bank of negatives used at scoring time.
      epochs, learning_rate, train_batch_size: critic training (Adam, model frozen).
      critic_input: what G encodes, ``"logits"`` (as the paper) or ``"log_softmax"`` (invariant to a logit shift).
      noise: amplitude of uniform noise added to the critic's image input while it trains (L-inf,
        clipped to [0, 1]; 0 = off). Noise, not adversarial examples: the critic still sees clean
        data only, but learns image features that small perturbations do not move. The paper trains its
        estimators on clean and adversarial pairs; the noise is our choice for a detector fitted on clean data
        only (the measured effect of its amplitude: docs/results.md, detection).
      seed: initialisation, noise and shuffling seed.

    After ``fit``: ``history``, the critic's mean DV bound (nats) per training epoch (``CriticTraining``'s
    ``mi``).
    """

    def __init__(self, estimators=None, hidden: int = 64, references: int = 64, epochs: int = 40,
                 learning_rate: float = 1e-3, train_batch_size: int = 128, critic_input: str = "logits",
                 noise: float = 0.5, seed: int = 0, batch_size: int = 256, **kwargs):
        super().__init__(batch_size=batch_size, **kwargs)
        if estimators is not None and not callable(getattr(estimators, "natural", None)):
            raise invalid("estimators", "None or a kam.defenses.MIAT (its pretrained natural estimator is used)",
                          type(estimators).__name__)
        self.estimators = estimators
        self.hidden = check_positive_int("hidden", hidden)
        self.references = check_int_at_least("references", references, 2)
        self.epochs = check_positive_int("epochs", epochs)
        self.learning_rate = check_positive("learning_rate", learning_rate)
        self.train_batch_size = check_int_at_least("train_batch_size", train_batch_size, 2)
        self.critic_input = check_choice("critic_input", critic_input, ("logits", "log_softmax"))
        self.noise = check_in_unit_interval("noise", noise)
        self.seed = check_seed("seed", seed, allow_none=False)
        self.history = []

    def get_config(self):
        return {**super().get_config(), "hidden": self.hidden, "references": self.references,
                "epochs": self.epochs, "learning_rate": self.learning_rate,
                "train_batch_size": self.train_batch_size, "critic_input": self.critic_input, "noise": self.noise,
                "seed": self.seed,
                "estimators": None if self.estimators is None else type(self.estimators).__name__}

    def fit_state(self, model, x, y):
        if self.estimators is not None:
            return
        if x.ndim != 4:
            raise invalid("x_clean", "NHWC images (rank 4)", f"array of shape {x.shape}")
        if len(x) < self.references:
            raise invalid("x_clean", f"at least references={self.references} images", f"{len(x)} images")
        logits = predict_logits(model, x, self.batch_size)
        self.local_encoder = _image_encoder(x.shape[1:], self.hidden, self.seed)
        self.global_encoder = _output_encoder(logits.shape[-1], self.hidden, self.seed)
        rng = np.random.default_rng(self.seed)
        batches = PermutedBatches((x, logits), min(self.train_batch_size, len(x)), self.epochs, rng)
        trainer = CriticTraining(self, batches.n_batches)
        trainer.compile(optimizer=keras.optimizers.Adam(self.learning_rate), jit_compile=False)
        history = trainer.fit(batches, epochs=self.epochs, steps_per_epoch=batches.n_batches, verbose=0,
                              shuffle=False).history
        self.history = [float(v) for v in history["mi"]]
        bank = x[rng.choice(len(x), self.references, replace=False)]
        self.add_fitted_constant("reference_bank", self._local(tf.constant(bank)).numpy())

    def _encode_output(self, logits):
        return _encode_output(logits, self.critic_input)

    def _local(self, x):
        return _local_features(self.local_encoder, x, self.hidden)

    def natural_mi(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Per-sample natural-MI estimate v(x) (nats) and logits, graph-safe."""
        logits = logits_of(self.model, x)
        if self.estimators is not None:   # MIAT's natural estimator v_n(x -> h(x)), graph-safe
            v = self.estimators.natural(tf.cast(x, tf.float32), tf.cast(logits, tf.float32), training=False)
            return tf.cast(v, tf.float32), logits
        g = self.global_encoder(self._encode_output(logits))
        return dv_scores_reference(g, self._local(x), self.reference_bank), logits

    def score_and_logits(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        v, logits = self.natural_mi(x)
        return -v, logits

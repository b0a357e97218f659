"""MIAT / NAMID: mutual-information adversarial training (P2: Zhou et al., "Improving Adversarial Robustness
via Mutual Information Estimation", ICML 2022; official code dwDavidxd/MIAT).

With h the model, x natural, x~ = x_adv and n = x~ - x the adversarial pattern, two estimators give
per-sample MI scores (``layers.MIEstimator``, DIM-style, DV bound by default):

    v_n(x -> h(.))   natural MI,      I(x ; h(.))         (estimator "natural")
    v_a(n -> h(.))   adversarial MI,  I(n ; h(.))         (estimator "adversarial")

Adversarial examples have lower natural and higher adversarial MI than natural ones. With S the
selected samples (default: clean-correct and adversarially wrong; cosines taken across the batch
over S), the target model minimises, estimators frozen,

    base_loss(x, x~, y) + alpha * ( |1 - cos(v_n(x -> h(x)), v_n(x -> h(x~)))|
                                  + |1 - cos(v_a(n -> h(x~)), v_a(n -> h(x)))| )        variant="both"
    base_loss(x, x~, y) + |1 - cos(v_n(x -> h(x)), v_n(x -> h(x~)))| - lam * mean_S v_n(x -> h(x~))
                                                                                         variant="natural"

(alpha = 5, lam = 0.1; the official code applies no alpha in the natural-only variant). The base is
PGD-AT (CE on x~), TRADES or MART, whose adversarial examples are used. Procedure (P2): adversarially
train with the base for a few epochs, ``pretrain_estimators`` on the frozen model, then ``fit`` with MIAT.
Deviations from the official code (METHODS.md): selection uses argmax of the logits (the official code
takes a softmax over the batch axis first), and DV excludes the positive pair from its negatives
(``diagonal="zero"`` restores the official behaviour).
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_fraction, check_images, check_labels, check_positive_int, invalid
from ..attacks._common import logits_model, logits_of
from .base import Defense, DefenseLoss, serializable
from .mart import MART
from .pgd_at import PGD
from .trades import TRADES

__all__ = ["MIAT"]

log = logging.getLogger(__name__)

BASES = {"pgd": PGD, "trades": TRADES, "mart": MART}
SELECTIONS = ("clean_correct_adv_wrong", "all")
VARIANTS = ("both", "natural")
ESTIMATORS = ("dv", "jsd", "infonce")
_EPS = 1e-8


def _masked_cos(a, b, mask=None):
    """cos(a * mask, b * mask) over the batch axis (as torch.cosine_similarity(dim=0) of masked vectors);
    no mask: cos(a, b).

    The norms are sqrt(sum + 1e-12): with nothing selected the value is 0 and the gradient stays finite
    (tf.norm's gradient at 0 is NaN, and tf.where would pass that NaN on).
    """
    if mask is not None:
        a, b = a * mask, b * mask
    norm_a = tf.sqrt(tf.reduce_sum(a * a) + 1e-12)
    norm_b = tf.sqrt(tf.reduce_sum(b * b) + 1e-12)
    return tf.reduce_sum(a * b) / (norm_a * norm_b + _EPS)


def _masked_mean(v, mask):
    return tf.reduce_sum(v * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


class MIATStepCounter(keras.layers.Layer):
    """Non-trainable MIAT state: training steps taken so far, for the ``alpha_warmup_steps`` ramp."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.counter = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64",
                                       name="counter", aggregation="only_first_replica")
        self.built = True


@serializable
class MIAT(Defense):
    """Mutual-information adversarial training on top of PGD-AT, TRADES or MART.

    Args:
      epsilon, step_size, steps: the base defense's attack (L-inf, training).
      base: 'pgd' | 'trades' | 'mart'. base_options: extra arguments of the base (e.g. {'beta': 6.0}).
      alpha: weight of the MI term (>= 0; P2: 5). lam: natural-MI weight of variant 'natural' (P2: 0.1).
      estimator: per-sample bound of the estimators, 'dv' (official), 'jsd' or 'infonce'.
      selection: 'clean_correct_adv_wrong' (P2) or 'all'.
      variant: 'both' (natural and adversarial estimators, P2's main loss) or 'natural'.
      hsize, filters: estimator encoder sizes (official CIFAR: 2048; ~128 suits MNIST).
      diagonal: DV negatives, 'exclude' (correct DV) or 'zero' (official code's parity).
      require_pretrained: refuse to ``fit`` before ``pretrain_estimators`` (the MI term of untrained
        estimators is noise).
      alpha_warmup_steps: ramp the MI term's weight linearly from 0 to its full value over this many
        training steps (0 = off, P2's procedure) [U]. Right after pretraining, the estimators score the
        selected samples' natural and adversarial outputs as uncorrelated (cos ~ 0, the term ~ 2 alpha),
        and at full weight the term's gradient collapsed bench_cnn on MNIST within 20 Adam steps (clean
        91% -> 22%; docs/benchmarks.md, MIAT). One epoch of ramp softened that (MIAT(trades) PGD-40 9% ->
        51% on one seed) without closing the gap to the base defense. The step count is saved.
      norm, random_start, eval_steps, epsilon_warmup_steps, seed: as for every Defense.
    Logs (per step): the base's logs, ``mi_natural`` (v_n(x -> h(x~))) and ``mi_adversarial`` (v_a(n -> h(x~))),
    means over the selected samples (the only rows the loss computes), ``mi_loss`` (the MI term before
    alpha) and ``selected_fraction``.
    """

    name = "miat"

    def __init__(self, epsilon=0.3, step_size=None, steps=10, base="pgd", alpha=5.0, lam=0.1, estimator="dv",
                 selection="clean_correct_adv_wrong", variant="both", hsize=128, filters=(32, 64),
                 diagonal="exclude", require_pretrained=True, base_options=None, alpha_warmup_steps=0, **kwargs):
        if base not in BASES:
            raise invalid("base", f"one of {sorted(BASES)}", base)
        if estimator not in ESTIMATORS:
            raise invalid("estimator", f"one of {ESTIMATORS} (official: 'dv')", estimator)
        if selection not in SELECTIONS:
            raise invalid("selection", f"one of {SELECTIONS}", selection)
        if variant not in VARIANTS:
            raise invalid("variant", f"one of {VARIANTS}", variant)
        if diagonal not in ("exclude", "zero"):
            raise invalid("diagonal", "'exclude' or 'zero'", diagonal)
        if base_options is not None and not isinstance(base_options, dict):
            raise invalid("base_options", "a dict of the base defense's arguments or None", base_options)
        super().__init__(epsilon, step_size, steps, **kwargs)
        self.alpha = check_fraction("alpha", alpha, 0.0, float("inf"))
        self.lam = check_fraction("lam", lam, 0.0, float("inf"))
        self.base_name, self.estimator, self.selection, self.variant = base, estimator, selection, variant
        self.hsize = check_positive_int("hsize", hsize)
        self.filters = tuple(check_positive_int("filters", f) for f in filters)
        self.diagonal = diagonal
        self.require_pretrained = bool(require_pretrained)
        self.alpha_warmup_steps = check_positive_int("alpha_warmup_steps", alpha_warmup_steps, minimum=0)
        self._steps = None
        self.base_options = dict(base_options or {})
        self.base = BASES[base](epsilon, self.step_size, steps, **self.base_options, **kwargs)
        self.log_names = tuple(self.base.log_names) + ("mi_natural", "mi_adversarial", "mi_loss", "selected_fraction")
        self.natural = self.adversarial = None

    # -- estimators -------------------------------------------------------------------------------
    def build(self, model):
        from ..layers.dim import MIEstimator

        if self.alpha_warmup_steps and self._steps is None:
            self._steps = MIATStepCounter(name="miat_steps")
        if self.natural is not None:
            return
        if not model.inputs or len(model.inputs[0].shape) != 4:
            raise invalid("model", "a functional/Sequential image model with inputs (N, H, W, C)", type(model).__name__)
        pattern_shape = (None,) + tuple(model.inputs[0].shape[1:])
        outputs_shape = (None, int(model.outputs[0].shape[-1]))
        self.natural = MIEstimator(self.hsize, self.filters, self.estimator, self.diagonal, name="mi_natural_estimator")
        self.adversarial = MIEstimator(self.hsize, self.filters, self.estimator, self.diagonal,
                                       name="mi_adversarial_estimator")
        for estimator in (self.natural, self.adversarial):
            estimator.build(pattern_shape, outputs_shape)
            # Frozen outside ``pretrain_estimators``: fit's optimizer never sees them, BatchNorm stays in
            # inference mode, and a saved optimizer state matches the model's variables on load.
            estimator.trainable = False

    def sublayers(self):
        layers = [self.natural, self.adversarial] if self.natural is not None else []
        return layers + ([self._steps] if self._steps is not None else [])

    @property
    def pretrained(self):
        return self.natural is not None and bool(self.natural.pretrained.numpy() > 0.5) and \
            bool(self.adversarial.pretrained.numpy() > 0.5)

    def check_ready(self, model):
        if self.require_pretrained and not self.pretrained:
            raise ValueError("MIAT's MI estimators are not pretrained: call "
                             "`model.defense.pretrain_estimators(model, x, y, epochs=...)` on an adversarially trained "
                             "model first (P2's procedure), or pass MIAT(require_pretrained=False).")

    # -- training loss ----------------------------------------------------------------------------
    def adversarial_examples(self, model, x, y, seed=None, step=None):
        return self.base.adversarial_examples(model, x, y, seed=seed, step=step)

    def evaluation_examples(self, model, x, y, seed=None):
        return self.base.evaluation_examples(model, x, y, seed=seed)

    def _select(self, y, logits_clean, logits_adv):
        if self.selection == "all":
            return tf.ones_like(logits_adv[:, 0])
        y = tf.cast(y, tf.int64)
        correct = tf.equal(tf.argmax(logits_clean, axis=-1), y)
        fooled = tf.not_equal(tf.argmax(logits_adv, axis=-1), y)
        return tf.cast(correct & fooled, logits_adv.dtype)

    def _scores(self, x, x_adv, logits_clean, logits_adv, training=False, rows=None):
        """v_n(x -> h(x)), v_n(x -> h(x~)), v_a(n -> h(x)), v_a(n -> h(x~)), each (N,), or (R,) for ``rows``."""
        x = tf.cast(x, tf.float32)
        pattern = tf.stop_gradient(tf.cast(x_adv, tf.float32) - x)
        logits_clean, logits_adv = tf.cast(logits_clean, tf.float32), tf.cast(logits_adv, tf.float32)
        local_n = self.natural.local_features(tf.stop_gradient(x), training=training)
        local_a = self.adversarial.local_features(pattern, training=training)
        return (self.natural.score_features(local_n, logits_clean, training, rows),
                self.natural.score_features(local_n, logits_adv, training, rows),
                self.adversarial.score_features(local_a, logits_clean, training, rows),
                self.adversarial.score_features(local_a, logits_adv, training, rows))

    def loss(self, model, x, y, x_adv, training):
        base = self.base.loss(model, x, y, x_adv, training)
        logits_clean = base.logits_clean if base.logits_clean is not None else logits_of(model, x, training=training)
        logits_adv = base.logits_adv
        mask = tf.cast(tf.stop_gradient(self._select(y, logits_clean, logits_adv)), tf.float32)
        batch = tf.shape(logits_adv)[0]
        # Only the selected samples enter the MI term, so only their rows of the (N, N, L) score tensors
        # are computed (all N samples still serve as negatives): the same loss at a fraction of the cost.
        rows = None if self.selection == "all" else tf.where(mask > 0)[:, 0]
        n_rows = batch if rows is None else tf.shape(rows)[0]
        # The DV scores need >= 2 samples (negatives); a per-replica batch can hold 0 or 1 at an epoch's end.
        v_nn, v_na, v_an, v_aa = tf.cond(
            batch >= 2, lambda: self._scores(x, x_adv, logits_clean, logits_adv, rows=rows),
            lambda: tuple(tf.zeros([n_rows], tf.float32) for _ in range(4)))
        natural_term = tf.abs(1.0 - _masked_cos(v_nn, v_na))        # every scored row is selected
        if self.variant == "both":
            mi_term = natural_term + tf.abs(1.0 - _masked_cos(v_aa, v_an))
            weight = self.alpha
        else:
            mi_term = natural_term - self.lam * tf.reduce_sum(v_na) / tf.maximum(tf.cast(n_rows, tf.float32), 1.0)
            weight = 1.0
        mi_term = tf.where(n_rows > 0, mi_term, 0.0)
        if training and self._steps is not None:
            counter = self._steps.counter
            weight = weight * tf.minimum(1.0, tf.cast(counter + 1, tf.float32) / float(self.alpha_warmup_steps))
            counter.assign_add(1)
        per_sample = tf.cast(base.per_sample, tf.float32) + weight * mi_term

        def per_sample_of(v):   # back to (N,), zeros outside the selection; logged as a mean over it
            return (v if rows is None else tf.scatter_nd(rows[:, None], v, [batch]), mask)

        logs = {**base.logs, "mi_natural": per_sample_of(v_na), "mi_adversarial": per_sample_of(v_aa),
                "mi_loss": tf.fill(tf.shape(per_sample), mi_term), "selected_fraction": mask}
        return DefenseLoss(per_sample, logs, logits_adv, logits_clean)

    # -- per-sample MI ------------------------------------------------------------------------------
    def mi_scores(self, model, x, x_adv, batch_size=256):
        """Per-sample natural and adversarial MI of (x, x_adv) under the current model.

        Returns {'mi_natural/clean': v_n(x -> h(x)), 'mi_natural/adv': v_n(x -> h(x~)),
        'mi_adversarial/clean': v_a(n -> h(x)), 'mi_adversarial/adv': v_a(n -> h(x~))}, each (N,) float32
        numpy. Negatives come from the same batch of ``batch_size`` (>= 2; the last batch is merged
        into the previous one when smaller than 2).
        """
        net = logits_model(model)
        self.build(net)
        check_images("x", x)
        check_images("x_adv", x_adv)
        x, x_adv = np.asarray(x, np.float32), np.asarray(x_adv, np.float32)
        if x.shape != x_adv.shape or len(x) < 2:
            raise invalid("x_adv", f"an array of the same shape as x {x.shape}, with N >= 2", x_adv.shape)
        batch_size = check_positive_int("batch_size", batch_size, minimum=2)
        keys = ("mi_natural/clean", "mi_natural/adv", "mi_adversarial/clean", "mi_adversarial/adv")
        out = {k: [] for k in keys}
        bounds = list(range(0, len(x), batch_size)) + [len(x)]
        if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
            bounds.pop(-2)
        for start, stop in zip(bounds[:-1], bounds[1:]):
            values = self._mi_batch(net, tf.constant(x[start:stop]), tf.constant(x_adv[start:stop]))
            for k, v in zip(keys, values):
                out[k].append(v.numpy())
        return {k: np.concatenate(v) for k, v in out.items()}

    @tf.function(reduce_retracing=True)
    def _mi_batch(self, net, x, x_adv):
        return self._scores(x, x_adv, net(x, training=False), net(x_adv, training=False))

    # -- estimator pretraining --------------------------------------------------------------------
    def _pretrain_losses(self, v_nn, v_na, v_an, v_aa, clean_ok, adv_ok):
        """The official estimator objectives (train_MI_estimator.py), written on scores (= -their loss)."""
        right = clean_ok * adv_ok                   # natural sample correct, adversarial still correct
        wrong = clean_ok * (1.0 - adv_ok)           # natural correct, adversarial fooled
        n_clean = tf.maximum(tf.reduce_sum(clean_ok), 1.0)
        has = lambda m: tf.reduce_sum(m) > 0       # noqa: E731
        # natural estimator: high v_n on natural samples; v_n(x->h(x~)) tracks v_n(x->h(x)) when the attack
        # failed and decorrelates from it when it succeeded.
        nat_r = 5.0 * tf.abs(1.0 - _masked_cos(v_nn, v_na, right)) - tf.reduce_sum(v_nn * right) / n_clean
        nat_w = 5.0 * tf.abs(_masked_cos(v_nn, v_na, wrong)) - tf.reduce_sum(v_nn * wrong) / n_clean
        natural = tf.where(has(wrong), nat_w, 0.0) + 0.5 * tf.where(has(right), nat_r, 0.0)
        natural = tf.where(has(clean_ok), natural, -tf.reduce_mean(v_nn))
        # adversarial estimator: high v_a(n->h(x~)) where the attack succeeded, decorrelated from v_a(n->h(x));
        # where it failed, v_a(n->h(x~)) tracks v_a(n->h(x)) and is pushed down.
        adv_w = 5.0 * tf.abs(_masked_cos(v_aa, v_an, wrong)) - _masked_mean(v_aa, wrong)
        adv_r = 8.0 * tf.abs(1.0 - _masked_cos(v_an, v_aa, right)) + 0.1 * _masked_mean(v_aa, right)
        adversarial = tf.where(has(wrong), adv_w, 0.0) + 0.5 * tf.where(has(right), adv_r, 0.0)
        adversarial = tf.where(has(clean_ok), adversarial, -tf.reduce_mean(v_aa))
        return natural, adversarial

    def pretrain_attack_epsilon(self, input_shape):
        """Default L2 budget of the pretraining attack: 0.3 * epsilon * sqrt(H * W * C).

        The official estimators are trained on L2 PGD examples (eps 0.5 on CIFAR-10, i.e. 0.29 of the L2
        norm of a full 8/255 sign perturbation); this keeps that ratio for other image sizes and budgets
        (MNIST eps 0.3: 2.5; digits eps 0.2: 0.48).
        """
        return 0.3 * self.epsilon * float(np.sqrt(np.prod([int(d) for d in input_shape])))

    def pretrain_estimators(self, model, x, y, epochs=20, batch_size=128, learning_rate=3e-3, seed=0, verbose=1,
                            attack_norm=2, attack_epsilon=None, attack_steps=20):
        """Train the natural and adversarial estimators on the frozen ``model`` (P2, step 2).

        Args:
          model: the AdversarialModel (or its logits model), ideally already adversarially trained.
          x, y: training images (N, H, W, C) in [0, 1] and integer labels.
          epochs, batch_size, learning_rate: Adam on both estimators (official: 25 epochs, batch 400, lr 1e-2;
            on digits lr 1e-2 or 10 epochs left the natural estimator untrained for one seed of two, lr 3e-3
            and 20 epochs gave P2's ordering for both).
          attack_norm, attack_epsilon, attack_steps: the PGD that makes the training pairs. Official: L2,
            20 steps (default epsilon: ``pretrain_attack_epsilon``); ``attack_norm=np.inf`` with
            ``attack_epsilon=None`` uses the defense's own epsilon. The adversarial-MI ordering of P2
            (higher I(n; h(x~)) than I(n; h(x))) appears with L2 patterns; with L-inf sign patterns
            h(x) can carry more information about n than h(x~) (docs/benchmarks.md, MIAT).
          verbose: 1 shows a progress bar.
        Returns:
          {'natural_loss', 'adversarial_loss', 'mi_natural_clean', 'mi_natural_adv', 'mi_adversarial_clean',
          'mi_adversarial_adv', 'selected_fraction'}: per-epoch means. Marks the estimators pretrained.
        """
        net = logits_model(model)
        if not isinstance(net, keras.Model):
            raise invalid("model", "a keras.Model or kam.AdversarialModel", type(model).__name__)
        check_images("x", x)
        x = np.asarray(x, np.float32)
        y = check_labels("y", y, n=len(x), num_classes=int(net.outputs[0].shape[-1]))
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size, minimum=2)
        lr = check_fraction("learning_rate", learning_rate, 0.0, float("inf"), low_open=True)
        from .._checks import check_norm
        from ..attacks.pgd import pgd_graph

        attack_norm = check_norm(attack_norm)
        if attack_epsilon is None:
            attack_epsilon = self.epsilon if attack_norm == np.inf else self.pretrain_attack_epsilon(x.shape[1:])
        attack_epsilon = check_fraction("attack_epsilon", attack_epsilon, 0.0, 1.0 if attack_norm == np.inf else
                                        float("inf"), low_open=True)
        attack_steps = check_positive_int("attack_steps", attack_steps)
        attack_step = 2.5 * attack_epsilon / attack_steps
        self.build(net)
        opt_n, opt_a = keras.optimizers.Adam(lr), keras.optimizers.Adam(lr)
        self.natural.trainable = self.adversarial.trainable = True
        vars_n, vars_a = self.natural.trainable_weights, self.adversarial.trainable_weights
        base_seed = int(seed)

        if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            raise ValueError("MIAT.pretrain_estimators runs on one device: pretrain outside the multi-replica "
                             "strategy (same model and defense built without it), save, then load inside "
                             "`strategy.scope()` for the distributed MIAT fit.")

        def replica_step(xb, yb, counter):
            x_adv = pgd_graph(net, xb, yb, attack_epsilon, attack_step, attack_steps, attack_norm, False, True, 1,
                              tf.stack([tf.constant(base_seed, tf.int64), counter]))
            logits_clean = net(xb, training=False)
            logits_adv = net(x_adv, training=False)
            yb64 = tf.cast(yb, tf.int64)
            clean_ok = tf.cast(tf.equal(tf.argmax(logits_clean, -1), yb64), tf.float32)
            adv_ok = tf.cast(tf.equal(tf.argmax(logits_adv, -1), yb64), tf.float32)
            with tf.GradientTape(persistent=True) as tape:
                v_nn, v_na, v_an, v_aa = self._scores(xb, x_adv, logits_clean, logits_adv, training=True)
                loss_n, loss_a = self._pretrain_losses(v_nn, v_na, v_an, v_aa, clean_ok, adv_ok)
            opt_n.apply(tape.gradient(loss_n, vars_n), vars_n)
            opt_a.apply(tape.gradient(loss_a, vars_a), vars_a)
            del tape
            return {"natural_loss": loss_n, "adversarial_loss": loss_a,
                    "mi_natural_clean": tf.reduce_mean(v_nn), "mi_natural_adv": tf.reduce_mean(v_na),
                    "mi_adversarial_clean": tf.reduce_mean(v_an), "mi_adversarial_adv": tf.reduce_mean(v_aa),
                    "selected_fraction": tf.reduce_mean(clean_ok * (1.0 - adv_ok))}

        step = tf.function(replica_step, reduce_retracing=True)

        rng = np.random.default_rng(seed)
        history = {}
        counter = 0
        n_batches = max(1, len(x) // batch_size)
        progress = keras.utils.Progbar(epochs * n_batches, verbose=1) if verbose else None
        for _ in range(epochs):
            order = rng.permutation(len(x))
            sums = {}
            for b in range(n_batches):
                idx = order[b * batch_size:(b + 1) * batch_size]
                logs = step(tf.constant(x[idx]), tf.constant(y[idx]), tf.constant(counter, tf.int64))
                counter += 1
                for k, v in logs.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if progress is not None:
                    progress.add(1, [(k, float(logs[k])) for k in ("natural_loss", "adversarial_loss")])
            for k, v in sums.items():
                history.setdefault(k, []).append(v / n_batches)
        self.natural.trainable = self.adversarial.trainable = False
        self.natural.pretrained.assign(1.0)
        self.adversarial.pretrained.assign(1.0)
        return history

    # -- serialization ----------------------------------------------------------------------------
    def get_config(self):
        return {**super().get_config(), "base": self.base_name, "alpha": self.alpha, "lam": self.lam,
                "estimator": self.estimator, "selection": self.selection, "variant": self.variant,
                "hsize": self.hsize, "filters": list(self.filters), "diagonal": self.diagonal,
                "require_pretrained": self.require_pretrained, "base_options": self.base_options,
                "alpha_warmup_steps": self.alpha_warmup_steps}

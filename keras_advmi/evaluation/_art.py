"""ART adapters: a ``TensorFlowV2Classifier`` over a ``tf.function`` of the model, the vectorised DLR loss
for Auto-PGD, and the ART attacks ``evaluate_robustness`` runs (``apgd-ce``, ``apgd-dlr``, ``autoattack``,
``autoattack-standard``).

ART is an optional dependency (the ``autoattack`` extra), so it is imported where it is used.
"""

from __future__ import annotations

import collections
import hashlib

import numpy as np
import tensorflow as tf
import keras

from ..attacks.losses import dlr_loss


class DifferenceOfLogitsRatio:
    """The Difference of Logits Ratio loss (Croce & Hein, "Reliable evaluation of adversarial robustness with
    an ensemble of diverse parameter-free attacks", 2020), vectorised, for ART's Auto-PGD.

    ``dlr(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` per sample, ``z_pi1 >= z_pi2 >= z_pi3`` the
    sorted logits; ``y_true`` one-hot ``(N, C)``, ``y_pred`` logits ``(N, C)``: ``kam.attacks.dlr_loss``
    with ART's reduction. The values and gradients are those of ART's ``DifferenceLogitsRatioTensorFlowV2``
    (tested), without its Python loop over the batch (docs/results.md). ``reduction`` is the attribute ART
    sets before each call (``"none"`` per sample, ``"sum"``, anything else the mean).
    """

    def __init__(self):
        self.reduction = "mean"

    def __call__(self, y_true, y_pred, *args, **kwargs) -> tf.Tensor:
        dlr = dlr_loss(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred))
        if self.reduction == "none":
            return dlr
        return tf.reduce_sum(dlr) if self.reduction == "sum" else tf.reduce_mean(dlr)


def art_classifier(model, x, loss_object=None):
    """ART's ``TensorFlowV2Classifier`` over a ``tf.function`` of the model.

    ART calls the model eagerly for every gradient; compiling it removes Keras' per-layer Python
    overhead, which dominated Auto-PGD on small models. ``model`` may already be such a function
    (``classifier.model``), so that classifiers with different losses share one trace.
    """
    from art.estimators.classification import TensorFlowV2Classifier  # optional extra: imported where used

    n_classes = int(np.asarray(model(x[:1])).shape[-1])
    if isinstance(model, tf.types.experimental.PolymorphicFunction):
        logits = model
    else:
        @tf.function(reduce_retracing=True)
        def logits(inputs, training=False):
            return model(inputs, training=False)

    return TensorFlowV2Classifier(model=logits, nb_classes=n_classes, input_shape=x.shape[1:],
                                  loss_object=loss_object or keras.losses.CategoricalCrossentropy(from_logits=True),
                                  clip_values=(0.0, 1.0))


class _MemoisedPredictions:
    """An ART classifier's ``predict``, memoised per input row: rows seen before are not forwarded again.

    ART's ``SquareAttack`` forwards, every iteration, all its inputs (to find the ones still classified
    correctly), those inputs again (their loss) and the candidates (their loss), where the original algorithm
    (Andriushchenko et al., "Square Attack: a query-efficient black-box adversarial attack via random search",
    2020) forwards only the candidates. Keyed by a 128-bit BLAKE2 digest of each row's bytes (and dtype), so a
    hit returns the logits of exactly that input; the memo keeps the ``4 x`` largest call's rows most recently
    used. ``forwarded`` counts the rows actually sent to the model.
    """

    def __init__(self, predict):
        self._predict, self._memo, self._capacity, self.forwarded = predict, collections.OrderedDict(), 0, 0

    def __call__(self, x, batch_size=128, **kwargs):
        x = np.ascontiguousarray(x)
        keys = [hashlib.blake2b(x.dtype.str.encode() + row.tobytes(), digest_size=16).digest() for row in x]
        misses = [i for i, key in enumerate(keys) if key not in self._memo]
        if misses:
            for i, logits in zip(misses, self._predict(x[misses], batch_size=batch_size, **kwargs)):
                self._memo[keys[i]] = logits
            self.forwarded += len(misses)
        for key in keys:
            self._memo.move_to_end(key)
        self._capacity = max(self._capacity, 4 * len(x))
        while len(self._memo) > self._capacity:
            self._memo.popitem(last=False)
        return np.stack([self._memo[key] for key in keys]) if keys else self._predict(x, batch_size=batch_size)


def _square_classifier(classifier, x):
    """A classifier over ``classifier``'s model whose ``predict`` is memoised (``_MemoisedPredictions``), for
    ART's ``SquareAttack``."""
    square = art_classifier(classifier.model, x)
    square.predict = _MemoisedPredictions(square.predict)
    return square


def art_attack(name, model, x, epsilon, batch_size):
    """ART's attack ``name`` at ``epsilon`` and its classifier's class count (``x`` gives the input shape)."""
    try:
        from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent  # optional extra
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError(f"attack {name!r} needs ART: pip install 'keras-advmi[autoattack]' ({exc})") from exc
    classifier = art_classifier(model, x)
    step = max(epsilon / 4, 1e-4)

    def apgd(loss, **kwargs):
        # DLR: ART's algorithm on a classifier whose loss is the vectorised DLR (loss_type=None = "use it").
        if loss == "dlr":
            return AutoProjectedGradientDescent(art_classifier(classifier.model, x, DifferenceOfLogitsRatio()),
                                                norm=np.inf, eps=epsilon, eps_step=step, max_iter=100,
                                                batch_size=batch_size, loss_type=None, verbose=False, **kwargs)
        return AutoProjectedGradientDescent(classifier, norm=np.inf, eps=epsilon, eps_step=step, max_iter=100,
                                            batch_size=batch_size, loss_type="cross_entropy", verbose=False,
                                            **kwargs)

    if name in ("apgd-ce", "apgd-dlr"):
        return apgd("ce" if name == "apgd-ce" else "dlr", nb_random_init=1), classifier.nb_classes
    from art.attacks.evasion import SquareAttack  # optional extra: imported where used

    if name == "autoattack-standard":
        # APGD-CE and APGD-DLR, untargeted and then targeted at each other class (ART's targeted=True pass),
        # one random start each as in the standard version (ART's default is 5), then Square with AutoAttack's
        # standard 5,000 queries on what is left.
        apgd_pass = AutoAttack(classifier, norm=np.inf, eps=epsilon, eps_step=step,
                               attacks=[apgd("ce", nb_random_init=1), apgd("dlr", nb_random_init=1)],
                               batch_size=batch_size, targeted=True)
        square = SquareAttack(_square_classifier(classifier, x), norm=np.inf, eps=epsilon, max_iter=5000, nb_restarts=1,
                              batch_size=batch_size, verbose=False)
        return _ThenSquare(apgd_pass, square, classifier), classifier.nb_classes
    attacks = [apgd("ce"), apgd("dlr"),
               SquareAttack(_square_classifier(classifier, x), norm=np.inf, eps=epsilon, max_iter=1000, nb_restarts=1,
                            batch_size=batch_size, verbose=False)]
    return (AutoAttack(classifier, norm=np.inf, eps=epsilon, eps_step=step, attacks=attacks, batch_size=batch_size),
            classifier.nb_classes)


class _ThenSquare:
    """``generate(x, y)``: a gradient pass (an ART attack), then Square on the inputs it left correctly
    classified; per input, the first adversarial example found (``y`` one-hot, as ART takes it)."""

    def __init__(self, gradient_pass, square, classifier):
        self.gradient_pass, self.square, self.classifier = gradient_pass, square, classifier

    def generate(self, x, y):
        x_adv = np.array(self.gradient_pass.generate(x=x, y=y), dtype=np.float32)
        labels = y.argmax(-1)
        robust = np.flatnonzero(self.classifier.predict(x_adv).argmax(-1) == labels)
        if len(robust):
            x_square = self.square.generate(x=x[robust], y=y[robust])
            fooled = self.classifier.predict(x_square).argmax(-1) != labels[robust]
            x_adv[robust[fooled]] = x_square[fooled]
        return x_adv


def run_art(name, model, x, y, epsilon, batch_size, seed):
    """x_adv (N, ...) float32 of ART's attack ``name`` at ``epsilon`` on (x, y) in one ``generate`` call, after
    ``np.random.seed(seed)`` (ART draws its random starts from NumPy's global generator)."""
    attack, classes = art_attack(name, model, x, epsilon, batch_size)
    np.random.seed(seed)
    return attack.generate(x=x, y=np.eye(classes, dtype=np.float32)[y]).astype(np.float32)

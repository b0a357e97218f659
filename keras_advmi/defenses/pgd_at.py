"""PGD adversarial training (Madry et al., "Towards Deep Learning Models Resistant to Adversarial
Attacks", ICLR 2018): minimise CE(f(x_adv), y), x_adv = PGD(x)."""

from ._pgd_family import PGDDefense
from .base import DefenseLoss, adversarial_cross_entropy, serializable


@serializable
class PGD(PGDDefense):
    """PGD-AT: loss = CE(f(x_adv), y). Defaults follow Madry's MNIST setup scaled to 10 steps.

    Args: ``PGDDefense``'s (epsilon, step_size, steps, norm, random_start and the ``Defense`` options)."""

    name = "pgd"

    def loss(self, model, x, y, x_adv, training, step=None):
        per_sample, logits_adv = adversarial_cross_entropy(model, y, x_adv, training)
        return DefenseLoss(per_sample, {}, logits_adv)

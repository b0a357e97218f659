"""The Defense protocol (``Defense``, ``DefenseLoss``, ``apply_if``, ...), re-exported from ``keras_advmi._defense``.

The protocol is defined outside this package so that ``keras_advmi.models`` can import it without loading
every defense; the defenses import it from here.
"""

from .._defense import Defense, DefenseLoss, adversarial_cross_entropy, apply_if, serializable

__all__ = ["Defense", "DefenseLoss", "adversarial_cross_entropy", "apply_if", "serializable"]

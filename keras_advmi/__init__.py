"""keras-advmi: adversarial robustness for Keras 3.

``kam.AdversarialModel(model, defense=kam.defenses.PGD(...))`` trains robustly through ``fit``;
``kam.evaluate_robustness`` measures it; ``kam.export`` writes a SavedModel for TF Serving. See the
README for the three moves (fit, TensorBoard, REST).
"""

import os as _os

_os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ._quiet import import_tensorflow_quietly as _import_tf  # noqa: E402

_import_tf()

from . import analysis, attacks, callbacks, data, defenses, detection, layers, mi, recipes, schedules  # noqa: E402
from .evaluation import evaluate_robustness  # noqa: E402
from .export import export  # noqa: E402
from .models import AdversarialModel  # noqa: E402

from ._version import __version__  # noqa: E402

__all__ = ["AdversarialModel", "analysis", "attacks", "callbacks", "data", "defenses", "detection", "evaluate_robustness",
           "export", "layers", "mi", "recipes", "schedules", "__version__"]

"""keras-advmi: adversarial robustness for Keras 3.

``kam.AdversarialModel(model, defense=kam.defenses.PGD(...))`` trains robustly through ``fit``;
``kam.evaluate_robustness`` measures it; ``kam.export`` writes a SavedModel for TF Serving. See the
README for the three moves (fit, TensorBoard, REST).

``import keras_advmi`` imports neither TensorFlow nor Keras, sets no environment variable and leaves
stderr alone: each public name (``kam.attacks``, ``kam.AdversarialModel``, ...) loads its module on first
use (PEP 562), and ``from keras_advmi import X`` works for every name in ``__all__``. Quieting
TensorFlow's start-up log lines is the ``keras-advmi`` command line's job, not the library's.

Loading saved models: Keras finds a custom class in a ``.keras`` file (or a pickled model) only once
the module that registers it (``keras.saving.register_keras_serializable``) has been imported, and
``import keras_advmi`` alone imports none. Use ``kam.AdversarialModel`` first (or ``from keras_advmi
import AdversarialModel``, or call ``kam.register_saveables()``): that registers every class a saved
AdversarialModel refers to (the model, the defenses, the MI layers, the ``OneCycle`` schedule)::

    import keras
    from keras_advmi import AdversarialModel

    robust = keras.models.load_model("robust.keras")   # an AdversarialModel again

``kam.detection`` registers the detector layers the same way.
"""

import importlib as _importlib
import sys as _sys
import types as _types

from ._version import __version__

__all__ = ["AdversarialModel", "analysis", "attacks", "callbacks", "data", "defenses", "detection",
           "evaluate_robustness", "export", "layers", "mi", "recipes", "register_saveables", "schedules", "__version__"]

_SUBPACKAGES = frozenset({"analysis", "attacks", "callbacks", "data", "defenses", "detection", "layers", "mi",
                          "recipes", "schedules",
                          "architectures", "evaluation", "models", "serving", "training"})   # reachable, not in __all__
#: Public functions and classes: name -> the module that defines it.
_OBJECTS = {"AdversarialModel": "models", "evaluate_robustness": "evaluation"}
#: The modules that register what a saved AdversarialModel refers to (``register_saveables``).
_SAVEABLE = ("models", "defenses", "layers", "schedules")


def _load(module):
    return _importlib.import_module(f"{__name__}.{module}")


def register_saveables():
    """Register with Keras every class a saved AdversarialModel refers to (the model, the defenses, the MI
    layers, the ``OneCycle`` schedule), so that ``keras.models.load_model`` finds them in a new process.
    Imports TensorFlow and Keras; using ``kam.AdversarialModel`` does the same."""
    for module in _SAVEABLE:
        _load(module)


def __getattr__(name):
    if name in _SUBPACKAGES:
        return _load(name)   # the import binds it in this namespace: __getattr__ runs once per name
    if name in _OBJECTS:
        if name == "AdversarialModel":
            register_saveables()
        value = getattr(_load(_OBJECTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))


class _Package(_types.ModuleType):
    """This package's module type: ``kam.export`` is the function, never the ``keras_advmi.export``
    subpackage that the import system binds under the same name whenever that subpackage is first
    imported (e.g. by ``keras_advmi.models``)."""

    @property
    def export(self):
        return self.__dict__.get("export") or _load("export").export

    @export.setter
    def export(self, value):
        if isinstance(value, _types.ModuleType):   # the import system binding the subpackage
            return
        self.__dict__["export"] = value   # e.g. a test's monkeypatch

    @export.deleter
    def export(self):
        self.__dict__.pop("export", None)


_sys.modules[__name__].__class__ = _Package

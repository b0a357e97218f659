"""Architecture rules of issue 25, checked on the source: no private Keras/aiohttp internals, imports at the
top of their module (optional dependencies excepted), and the attack API's public names."""

import ast
import pathlib

import keras_advmi as kam

#: Modules a function body may import: optional dependencies, imported where used (ART and cleverhans for
#: evaluation; requests, in the [dev] extra only, for the REST client).
ALLOWED_LOCAL_IMPORTS = ("art", "cleverhans", "requests")
#: (module, import) pairs that are local by design: _quiet imports TensorFlow with stderr redirected, which
#: is what the function is for.
LOCAL_BY_DESIGN = {("keras_advmi/_quiet.py", "tensorflow")}
#: The subcommand modules import what their work needs inside functions: `keras-advmi --help` builds every
#: parser without importing TensorFlow (tests/test_import.py checks it).
LOCAL_FOR_STARTUP = "keras_advmi/commands/"

PACKAGE = pathlib.Path(kam.__file__).parent
FORBIDDEN = ("keras.src", "_compile_metrics", "_flatten_layers", "_model_variables_moving_average", "._server")


def _sources():
    return sorted(PACKAGE.rglob("*.py"))


def test_no_private_internals():
    hits = [f"{path.relative_to(PACKAGE.parent)}:{number}: {word}"
            for path in _sources()
            for number, line in enumerate(path.read_text().splitlines(), 1)
            for word in FORBIDDEN if word in line]
    assert not hits, "private internals used:\n" + "\n".join(hits)


def test_function_local_imports_are_optional_dependencies_only():
    hits = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["." * node.level + (node.module or "")]
                else:
                    continue
                where = str(path.relative_to(PACKAGE.parent))
                if where.startswith(LOCAL_FOR_STARTUP):
                    continue
                bad = [n for n in names if n.split(".")[0] not in ALLOWED_LOCAL_IMPORTS and (where, n) not in LOCAL_BY_DESIGN]
                if bad:
                    hits.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: import {', '.join(bad)} "
                                f"in {func.name}()")
    assert not hits, "function-local imports:\n" + "\n".join(sorted(set(hits)))


def test_universal_perturbations_are_exported_by_attacks():
    assert callable(kam.attacks.targeted_universal_perturbation)
    assert callable(kam.attacks.universal_perturbations)
    assert callable(kam.attacks.dlr_loss) and callable(kam.attacks.madry_step_size)


#: docs/ARCHITECTURE.md's layers: a module may import from its own layer and the layers below.
LAYERS = {
    0: {"_checks", "_model", "_json", "_version", "_quiet", "_attack_names", "_batches", "_multiworker",
        "architectures", "data", "recipes", "schedules"},
    1: {"attacks"},
    2: {"mi", "layers"},
    3: {"_defense", "defenses"},
    4: {"models"},
    5: {"callbacks", "evaluation", "detection", "analysis"},
    6: {"export"},
    8: {"commands", "cli", "__init__", "__main__"},
}
#: serving stands apart: it loads SavedModels and imports the foundations only.
SERVING_MAY_IMPORT = LAYERS[0]
#: The upward imports ARCHITECTURE.md names, each for one reason: SNS's loss is the neuron-sensitivity
#: measure; RegionAT's fine-tuning recipe wraps an AdversarialModel; AdversarialModel.export is kam.export.
UPWARD = {("keras_advmi/defenses/sns.py", "analysis"), ("keras_advmi/defenses/region_finetune.py", "models"),
          ("keras_advmi/models.py", "export")}


def _imported_units(path):
    """(first-level unit of keras_advmi, line) for each relative import of ``path``."""
    package = list(path.relative_to(PACKAGE).parts[:-1])
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            base = package[:len(package) - (node.level - 1)]
            target = base + (node.module.split(".") if node.module else [])
            for unit in ([target[0]] if target else [alias.name for alias in node.names]):
                yield unit, node.lineno


def test_layers_import_only_downwards():
    layer_of = {unit: level for level, units in LAYERS.items() for unit in units}
    hits = []
    for path in _sources():
        where = str(path.relative_to(PACKAGE.parent))
        unit = path.relative_to(PACKAGE).with_suffix("").parts[0]
        for target, line in _imported_units(path):
            if target == unit:
                continue
            if unit == "serving":
                ok = target in SERVING_MAY_IMPORT
            else:
                ok = target != "serving" or unit in LAYERS[8]
                ok = ok and (target == "serving" or layer_of[target] <= layer_of[unit])
            if not ok and (where, target) not in UPWARD:
                hits.append(f"{where}:{line}: {unit} imports {target}")
    assert not hits, "imports against docs/ARCHITECTURE.md's layers:\n" + "\n".join(hits)

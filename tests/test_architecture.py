"""The architecture, checked on the source: layers over the transitive closure of imports (docs/ARCHITECTURE.md's
table), no private Keras/aiohttp internals, imports at the top of their module (optional dependencies excepted),
sizes of modules, classes and functions, no module reaching another's underscored names, and the attack API's
public names."""

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
        "_loss_reduction", "_savedmodel_files", "_sensitivity", "architectures", "data", "recipes", "schedules"},
    1: {"attacks"},
    2: {"mi", "layers"},
    3: {"_defense", "defenses"},
    4: {"models", "_recorded_metrics", "region_finetune"},
    5: {"callbacks", "evaluation", "detection", "analysis"},
    6: {"export"},
    7: {"training"},
    8: {"commands", "cli", "__init__", "__main__"},
}
#: serving stands apart: it loads SavedModels and imports the foundations only.
SERVING_MAY_IMPORT = LAYERS[0]
#: The one upward import ARCHITECTURE.md names: AdversarialModel.export is kam.export.
UPWARD = {("keras_advmi/models.py", "export")}


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


# -- the transitive closure of imports ----------------------------------------------------------------------


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node):
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _top_level_imports(tree):
    """The import statements a module runs when it is imported: at module level, in module-level ``if`` /
    ``try`` blocks (not under ``TYPE_CHECKING``), never inside a function or class body."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, (ast.If, ast.Try)) and not _is_type_checking(node):
            for field in ("body", "orelse", "finalbody"):
                pending.extend(getattr(node, field, []))
            for handler in getattr(node, "handlers", []):
                pending.extend(handler.body)


def _with_parents(module, modules):
    """``module`` and the packages whose ``__init__`` importing it runs (those that are in ``modules``)."""
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules]


def import_graph():
    """{module: set of modules and external top-level packages it imports when imported}, read from the
    source: relative imports resolved against the package, ``from pkg import sub`` counted as importing the
    submodule, and importing ``a.b.c`` counted as running ``a`` and ``a.b`` (their ``__init__``)."""
    paths = {_module_name(p): p for p in _sources()}
    graph = {}
    for module, path in paths.items():
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges = set()
        for node in _top_level_imports(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - (node.level - 1)])
                target = f"{base}.{node.module}" if node.module else base
                targets = [target] + [f"{target}.{alias.name}" for alias in node.names]
            else:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            for target in targets:
                if target.split(".")[0] == "keras_advmi":
                    edges.update(_with_parents(target, paths))
                else:
                    edges.add(target.split(".")[0])
        graph[module] = edges - {module}
    return graph


def reachable(graph, start):
    """Every module or external package an import of ``start`` runs, transitively."""
    seen, stack = set(), [start]
    while stack:
        for target in graph.get(stack.pop(), ()):
            if target not in seen:
                seen.add(target)
                stack.append(target)
    return seen


def _under(module, unit):
    return module == f"keras_advmi.{unit}" or module.startswith(f"keras_advmi.{unit}.")


def _paths_into(graph, sources, forbidden):
    """'source -> target' for each module under a unit of ``sources`` that transitively reaches a module
    under one of the units (or external packages) ``forbidden``."""
    hits = []
    for module in sorted(graph):
        if not any(_under(module, unit) for unit in sources):
            continue
        for target in sorted(reachable(graph, module)):
            if any(_under(target, unit) or target == unit for unit in forbidden):
                hits.append(f"{module} -> {target}")
    return hits


def test_defenses_reach_no_measuring_shipping_or_command_module_transitively():
    hits = _paths_into(import_graph(), ["defenses", "_defense"],
                       ["analysis", "models", "export", "serving", "callbacks", "commands", "matplotlib"])
    assert not hits, "imports from the defenses reach a higher layer:\n" + "\n".join(hits)


def test_attacks_and_mi_never_import_matplotlib():
    hits = _paths_into(import_graph(), ["attacks", "mi"], ["matplotlib"])
    assert not hits, "attacks/mi reach matplotlib:\n" + "\n".join(hits)


def test_mi_and_layers_do_not_import_each_other():
    graph = import_graph()
    mi_to_layers = _paths_into(graph, ["mi"], ["layers"])
    layers_to_mi = _paths_into(graph, ["layers"], ["mi"])
    assert not (mi_to_layers and layers_to_mi), (
        "mi and layers import each other:\n" + "\n".join(mi_to_layers[:5] + layers_to_mi[:5]))


def test_import_graph_sees_transitive_paths():
    """The closure is real: a package's __init__ and a chain of two imports are both followed."""
    graph = import_graph()
    assert "keras_advmi.attacks" in graph["keras_advmi.attacks.pgd"] or \
        "keras_advmi.attacks._common" in reachable(graph, "keras_advmi.attacks.pgd")
    assert "tensorflow" in reachable(graph, "keras_advmi.attacks.pgd")
    assert "keras_advmi.attacks.pgd" in reachable(graph, "keras_advmi.models")
    assert "matplotlib" in reachable(graph, "keras_advmi.analysis")


# -- sizes and private names ----------------------------------------------------------------------------------

MAX_MODULE_LINES, MAX_CLASS_LINES, MAX_FUNCTION_LINES = 400, 250, 60


def test_no_module_class_or_function_is_too_long():
    """Modules up to 400 lines, classes up to 250, functions up to 60 (docstrings included)."""
    hits = []
    for path in _sources():
        source = path.read_text()
        where = path.relative_to(PACKAGE.parent)
        if len(source.splitlines()) > MAX_MODULE_LINES:
            hits.append(f"{where}: module of {len(source.splitlines())} lines (> {MAX_MODULE_LINES})")
        for node in ast.walk(ast.parse(source)):
            size = getattr(node, "end_lineno", 0) - getattr(node, "lineno", 0) + 1
            if isinstance(node, ast.ClassDef) and size > MAX_CLASS_LINES:
                hits.append(f"{where}:{node.lineno}: class {node.name} of {size} lines (> {MAX_CLASS_LINES})")
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and size > MAX_FUNCTION_LINES:
                hits.append(f"{where}:{node.lineno}: {node.name}() of {size} lines (> {MAX_FUNCTION_LINES})")
    assert not hits, "too long:\n" + "\n".join(hits)


#: Keras' private hooks the package uses on purpose, each in one module with its reason in a docstring:
#: the monitor direction of a metric (MonitorCallback reads ``_direction``; Keras has no public setter) and
#: the multi-worker build work-around (keras-team/keras#20585).
KERAS_PRIVATE_HOOKS = {"_direction", "_maybe_symbolic_build"}


def _names_defined_in(tree):
    """Underscored names a module defines itself: functions, classes, and attributes it assigns."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
    return names


def test_no_module_reaches_another_modules_underscored_names():
    """``obj._name`` only where the module defines ``_name`` itself (on self, cls or its own objects), and
    ``from .mod import _name`` never: what another module needs has a public name (a private module may
    hold public names: that keeps them internal)."""
    hits = []
    for path in _sources():
        tree = ast.parse(path.read_text())
        own = _names_defined_in(tree)
        where = path.relative_to(PACKAGE.parent)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level:
                hits += [f"{where}:{node.lineno}: imports {alias.name}" for alias in node.names
                         if alias.name.startswith("_") and not alias.name.startswith("__")
                         and not (PACKAGE / (node.module or "").replace(".", "/") / f"{alias.name}.py").exists()
                         and not (PACKAGE / (node.module or "").replace(".", "/") / alias.name).is_dir()]
            if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
                base = node.value
                if isinstance(base, ast.Name) and base.id in ("self", "cls"):
                    continue
                if node.attr in own or node.attr in KERAS_PRIVATE_HOOKS:
                    continue
                hits.append(f"{where}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert not hits, "another module's underscored names:\n" + "\n".join(hits)

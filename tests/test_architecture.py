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
                bad = [n for n in names if n.split(".")[0] not in ALLOWED_LOCAL_IMPORTS and (where, n) not in LOCAL_BY_DESIGN]
                if bad:
                    hits.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno}: import {', '.join(bad)} "
                                f"in {func.name}()")
    assert not hits, "function-local imports:\n" + "\n".join(sorted(set(hits)))


def test_universal_perturbations_are_exported_by_attacks():
    assert callable(kam.attacks.targeted_universal_perturbation)
    assert callable(kam.attacks.universal_perturbations)
    assert callable(kam.attacks.dlr_loss) and callable(kam.attacks.madry_step_size)

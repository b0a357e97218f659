"""The distribution: one version source, a typed wheel, LICENSE and CHANGELOG in the sdist, declared imports."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _pyproject():
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _build(kind, out):
    """Build a wheel or sdist of the checkout with the installed setuptools (no download)."""
    code = ("import sys; from setuptools import build_meta as b; "
            f"print(b.build_{kind}(sys.argv[1]))")
    done = subprocess.run([sys.executable, "-c", code, str(out)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


def test_version_has_one_source():
    from keras_advmi._version import __version__

    meta = _pyproject()["project"]
    assert "version" not in meta and "version" in meta["dynamic"]
    assert _pyproject()["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "keras_advmi._version.__version__"}
    assert not (ROOT / "setup.cfg").exists() and not (ROOT / "setup.py").exists()
    literal = re.compile(r"__version__\s*=\s*['\"]")
    holders = [p for p in (ROOT / "keras_advmi").rglob("*.py") if literal.search(p.read_text())]
    assert holders == [ROOT / "keras_advmi" / "_version.py"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", __version__)


def test_wheel_is_typed_and_licensed(tmp_path):
    from keras_advmi._version import __version__

    wheel = _build("wheel", tmp_path)
    assert wheel.name == f"keras_advmi-{__version__}-py3-none-any.whl"
    names = zipfile.ZipFile(wheel).namelist()
    assert "keras_advmi/py.typed" in names
    assert f"keras_advmi-{__version__}.dist-info/licenses/LICENSE" in names
    metadata = zipfile.ZipFile(wheel).read(f"keras_advmi-{__version__}.dist-info/METADATA").decode()
    assert f"Version: {__version__}" in metadata and "License-Expression: Apache-2.0" in metadata


def test_sdist_ships_license_and_changelog(tmp_path):
    from keras_advmi._version import __version__

    sdist = _build("sdist", tmp_path)
    top = f"keras_advmi-{__version__}"
    names = tarfile.open(sdist).getnames()
    for name in ("LICENSE", "CHANGELOG.md", "README.md", "pyproject.toml", "keras_advmi/py.typed"):
        assert f"{top}/{name}" in names, name
    assert "Apache License" in (ROOT / "LICENSE").read_text()[:200]
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()


def _imported_top_level(path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


# import name -> distribution name, for the packages whose two names differ
_DISTRIBUTION = {"sklearn": "scikit-learn", "tensorflow_probability": "tensorflow-probability",
                 "tensorflow_serving": "tensorflow-serving-api", "google": "protobuf", "grpc": "grpcio",
                 "art": "adversarial-robustness-toolbox", "yaml": "pyyaml"}


def test_every_third_party_import_is_declared():
    meta = _pyproject()["project"]
    declared = {re.split(r"[\[<>=!~ ]", req)[0].lower().replace("_", "-") for req in meta["dependencies"]}
    optional = {re.split(r"[\[<>=!~ ]", req)[0].lower().replace("_", "-")
                for reqs in meta["optional-dependencies"].values() for req in reqs}
    stdlib = set(sys.stdlib_module_names)
    imported = {name for path in (ROOT / "keras_advmi").rglob("*.py") for name in _imported_top_level(path)}
    third_party = {name for name in imported if name not in stdlib and name != "keras_advmi"}
    # protobuf arrives with tensorflow (and tensorflow-serving-api); it is never pinned on its own
    undeclared = sorted(name for name in third_party
                        if _DISTRIBUTION.get(name, name).lower().replace("_", "-") not in declared | optional | {"protobuf"})
    assert undeclared == []
    # what the REST client imports must be a runtime dependency, not only a test one
    assert "requests" in declared

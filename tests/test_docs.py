"""The documentation site builds with `mkdocs build --strict` and its API reference covers every public name."""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUBPACKAGES = ("attacks", "defenses", "mi", "callbacks", "evaluation", "detection", "analysis", "layers", "export",
               "serving")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1")
    done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return out


def _anchors(page: Path) -> set[str]:
    return set(re.findall(r'id="(keras_advmi[^"]*)"', page.read_text()))


@pytest.mark.parametrize("package", SUBPACKAGES)
def test_api_page_documents_every_public_name(site, package):
    module = importlib.import_module(f"keras_advmi.{package}")
    anchors = _anchors(site / "api" / package / "index.html")
    missing = [name for name in module.__all__ if f"keras_advmi.{package}.{name}" not in anchors]
    assert missing == []


def test_top_level_names_are_documented(site):
    import keras_advmi

    anchors = _anchors(site / "api" / "index.html")
    pages = {p.name for p in (site / "api").iterdir() if p.is_dir()}
    missing = []
    for name in keras_advmi.__all__:
        if name in pages:                       # a subpackage: its own page (checked above)
            continue
        if not any(a == f"keras_advmi.{name}" or a.endswith(f".{name}") for a in anchors):
            missing.append(name)
    assert missing == []


def test_guide_pages_are_in_the_site(site):
    for page in ("getting-started", "guide/robust-training", "guide/mutual-information", "guide/analysis",
                 "guide/detection-export", "guide/serving", "multi_worker", "results"):
        assert (site / page / "index.html").is_file(), page


def test_code_points_only_at_what_a_reader_can_open():
    """Comments and docstrings cite papers and files of the repository, never project-internal notes or issues."""
    pattern = re.compile(r"issue [0-9]|DESIGN\.md|METHODS\.md|docs/benchmarks\.md|\bP[1-5]\b")
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}" for path in sorted((ROOT / "keras_advmi").rglob("*.py"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if pattern.search(line)]
    assert hits == []

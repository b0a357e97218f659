"""docs/results.md is generated from benchmarks/results/ by benchmarks/results_page.py, and kept in step with it."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
PAGE = ROOT / "docs" / "results.md"
#: what no page in docs/ may say: session narrative, issue numbers, run dates, machine load, paper shorthand
FORBIDDEN = re.compile(r"(?i)\bsession|issue #?[0-9]|\b20[0-9]{2}-[0-9]{2}-[0-9]{2}\b|busy|nice 5|\bP[1-5]\b")
PAPERS = {  # title -> year, as the claim table must name them
    "Exploring adversarial examples and adversarial robustness of CNNs by mutual information": 2022,
    "Improving Adversarial Robustness via Mutual Information Estimation": 2022,
    "Improving adversarial robustness of DNNs by using semantic information": 2020,
    "Interpreting Adversarial Examples by Activation Promotion and Suppression": 2019,
    "Interpreting and Improving Adversarial Robustness of DNNs with Neuron Sensitivity": 2019,
}


@pytest.fixture(scope="module")
def gen():
    spec = importlib.util.spec_from_file_location("results_page", ROOT / "benchmarks" / "results_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _section(page: str, heading: str) -> str:
    start = page.index(heading + "\n")
    end = page.find("\n### ", start + len(heading))
    end = page.find("\n## ", start + len(heading)) if end < 0 else end
    return page[start:end]


def _rows(section: str, *needles: str) -> list[str]:
    return [line for line in section.splitlines() if line.startswith("| ") and all(n in line for n in needles)]


def test_the_generator_writes_exactly_the_committed_page(gen, tmp_path):
    out = tmp_path / "results.md"
    assert gen.main(["--out", str(out)]) == 0
    assert out.read_text() == PAGE.read_text(), "docs/results.md is stale: run python benchmarks/results_page.py"
    assert gen.main(["--check"]) == 0


def test_per_dataset_tables_carry_the_robust_recipes_figures_from_their_result_files(gen):
    page = PAGE.read_text()
    headings = [line for line in page.splitlines() if line.startswith("### ")]
    assert headings[0].startswith("### Digits") and headings[1:3] == ["### MNIST", "### Fashion-MNIST"]
    mnist = _section(page, "### MNIST")
    assert mnist.splitlines()[2] == ("| study | defense | model, training | command | clean | PGD | AutoAttack "
                                     "| hardware | wall time |")
    # The robust recipe's seed 0, evaluated with the anchors' protocol: the figures come from evaluation.json.
    evaluation = json.loads((RESULTS / "robust_recipe/robust_seed0/evaluation.json").read_text())
    std = evaluation["parts"]["autoattack-standard"]["rows"][0]
    assert (std["accuracy"], std["n"]) == (0.917, 2000)
    [row] = _rows(mnist, "`robust` recipe |", "seed 0", "robust_recipe.py evaluate benchmarks/results/robust_recipe/robust_seed0`")
    assert "91.70% (standard, 2,000 images)" in row
    assert "95.62% (PGD-100 x 10, 10,000 images)" in row
    assert "99.49% (10,000 images)" in row
    assert "92.45% (package's, 2,000 images)" in row
    assert "train 7,800 s" in row and "AutoAttack (standard) 6,937 s" in row
    assert "keras-advmi train --dataset mnist --recipe robust --seed 0" in row
    # The reproduction's standard AutoAttack is the sum of its two slices: 459 + 458 of 1,000.
    [repro] = _rows(mnist, "reproduction")
    assert "91.70% (standard, 1,000 images)" in repro and "train 5,829 s" in repro
    # Fashion-MNIST rows come from the recipe's results.jsonl.
    fashion = _section(page, "### Fashion-MNIST")
    [pgd0] = _rows(fashion, "| PGD-AT |", "seed 0", "robust_recipe.py fashion")
    assert "84.95% (2,000 images)" in pgd0 and "76.40% (PGD-40 x 3, 2,000 images)" in pgd0
    assert "74.80% (package's, 2,000 images)" in pgd0 and "train 5,432 s" in pgd0
    assert "Studies:" in _section(page, headings[0])


def test_the_paper_claim_table_names_each_paper_and_a_verdict_with_its_figure():
    page = PAGE.read_text()
    claims = page[page.index("## Claims of the papers"):page.index("## Other measured figures")]
    rows = [line for line in claims.splitlines() if line.startswith('| "')]
    assert claims.count("| paper | claim | data | verdict | figure | command |") == 1
    for title, year in PAPERS.items():
        assert any(f'"{title}" (' in r and f"{year})" in r for r in rows), title
    verdicts = [re.search(r"\| \*\*(reproduced|not reproduced|not testable here)\*\* \|", r) for r in rows]
    assert all(verdicts) and {v.group(1) for v in verdicts} == {"reproduced", "not reproduced", "not testable here"}
    [miat] = [r for r in rows if "MIAT (natural-MI" in r]
    assert "**not reproduced**" in miat and "MNIST 89.70% against 89.80% (seed 0)" in miat
    [sns] = [r for r in rows if "(SNS) improves" in r]
    assert "PGD-40: MNIST 59.9 ± 0.7% against 63.1 ± 0.8%" in sns


def test_no_page_in_docs_mentions_sessions_issue_numbers_dates_or_machine_load():
    hits = [f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
            for path in sorted((ROOT / "docs").rglob("*.md"))
            for n, line in enumerate(path.read_text().splitlines(), 1) if FORBIDDEN.search(line)]
    assert not hits, "\n".join(hits)
    assert not (ROOT / "docs" / "benchmarks.md").exists()


def _copy_results(tmp_path) -> Path:
    dest = tmp_path / "results"
    shutil.copytree(RESULTS, dest, ignore=shutil.ignore_patterns("*.keras", "backup"))
    return dest


def test_a_changed_figure_makes_the_page_stale(gen, tmp_path):
    results = _copy_results(tmp_path)
    path = results / "robust_recipe/robust_seed0/evaluation.json"
    evaluation = json.loads(path.read_text())
    evaluation["parts"]["autoattack-standard"]["rows"][0]["accuracy"] = 0.9185
    path.write_text(json.dumps(evaluation))
    page = gen.render(results)
    assert "91.85% (standard, 2,000 images)" in page and "91.70% (standard, 2,000 images)" not in page
    assert gen.main(["--check", "--results", str(results)]) == 1
    assert gen.main(["--check", "--results", str(RESULTS)]) == 0


def test_result_files_of_other_tools_are_rendered_as_they_are_and_may_be_absent(gen, tmp_path):
    results = _copy_results(tmp_path)
    for path in list(results.glob("import_time*.json")) + list(results.glob("serving_load*.json")):
        path.unlink()
    without = gen.render(results)
    assert "### Import time" not in without
    (results / "import_time.json").write_text(json.dumps({
        "command": "python -X importtime -c 'import keras_advmi'", "hardware": "2 CPU cores",
        "rows": [{"module": "keras_advmi", "ms": 41.5}, {"module": "keras_advmi.cli", "ms": 12.25}]}))
    page = gen.render(results)
    section = _section(page, "### Import time")
    assert "    python -X importtime -c 'import keras_advmi'" in section
    assert "| module | ms |" in section and "| keras_advmi | 41.5 |" in section and "| keras_advmi.cli | 12.25 |" in section
    assert "| hardware | 2 CPU cores |" in section


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["rows"][0].update(verdict="confirmed"), "verdict 'confirmed'"),
    (lambda d: d["rows"][6].update(figure="{no_such_row.pgd}"), "no_such_row.pgd"),
])
def test_bad_claims_are_refused_naming_what_is_wrong(gen, tmp_path, mutate, message):
    results = _copy_results(tmp_path)
    path = results / "records/paper_claims.json"
    data = json.loads(path.read_text())
    mutate(data)
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=re.escape(message)):
        gen.render(results)


def test_a_figure_whose_source_is_missing_or_ambiguous_is_refused(gen, tmp_path):
    results = _copy_results(tmp_path)
    (results / "fashion_recipe/results.jsonl").unlink()
    with pytest.raises(ValueError, match="fashion_recipe/results.jsonl.*does not exist"):
        gen.render(results)
    results = _copy_results(tmp_path / "again")
    path = results / "fashion_recipe/results.jsonl"
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    with pytest.raises(ValueError, match=r"2 rows match .*'defense': 'pgd', 'seed': 0.*expected exactly 1"):
        gen.render(results)

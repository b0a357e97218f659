"""The benchmark scripts import cleanly and expose ``main`` (they run for minutes, so CI only loads them),
and the resumable evaluation of ``robust_recipe.py`` on a tiny model."""

import importlib.util
from pathlib import Path

import pytest

SCRIPTS = sorted((Path(__file__).resolve().parents[1] / "benchmarks").glob("*.py"))


def test_there_are_benchmark_scripts():
    assert len(SCRIPTS) >= 10


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_benchmark_script_imports(path):
    spec = importlib.util.spec_from_file_location(f"benchmark_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # module level only: argument parsing and runs sit under main()
    assert callable(getattr(module, "main", None)), f"{path.name} has no main()"


def _load(stem):
    path = next(p for p in SCRIPTS if p.stem == stem)
    spec = importlib.util.spec_from_file_location(f"benchmark_{stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_robust_recipe_evaluation_resumes_an_interrupted_part_at_its_next_chunk(tmp_path, monkeypatch):
    """``robust_recipe.py evaluate``: a part killed after a chunk resumes there, and the merged figure is the
    figure of the whole part run at once (PGD is deterministic for a seed)."""
    import argparse
    import json

    import keras

    import keras_advmi as kam

    bench = _load("robust_recipe")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    (x, y), _ = kam.data.load("digits")
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:500], y[:500], epochs=5, verbose=0)
    for run in ("whole", "chunked"):
        (tmp_path / run).mkdir()
        model.save(tmp_path / run / "model.keras")
        (tmp_path / run / "train_config.json").write_text(json.dumps({"dataset": "digits", "epsilon": 0.05}))

    def args(run, chunk):
        return argparse.Namespace(run=str(tmp_path / run), pgd_images=30, pgd_steps=5, pgd_restarts=2,
                                  aa_images=0, sweep_images=0, chunk=chunk, seed=0,
                                  skip=["clean", "autoattack-standard", "autoattack", "sweep"])

    bench.evaluate(args("whole", 30))
    whole = json.loads((tmp_path / "whole" / "evaluation.json").read_text())["parts"]["pgd-5x2"]["rows"][0]

    real, calls = kam.evaluate_robustness, []

    def killed_after_one_chunk(model, x, *a, **k):
        if calls:
            raise KeyboardInterrupt
        calls.append(len(x))
        return real(model, x, *a, **k)

    monkeypatch.setattr(bench.kam, "evaluate_robustness", killed_after_one_chunk)
    with pytest.raises(KeyboardInterrupt):
        bench.evaluate(args("chunked", 10))
    saved = json.loads((tmp_path / "chunked" / "evaluation.json").read_text())
    assert list(saved["pending"]["pgd-5x2"]) == ["0"] and saved["parts"] == {}

    def counted(model, x, *a, **k):
        calls.append(len(x))
        return real(model, x, *a, **k)

    monkeypatch.setattr(bench.kam, "evaluate_robustness", counted)
    bench.evaluate(args("chunked", 10))
    assert calls == [10, 10, 10]          # the first chunk once, before the kill; the other two after it
    done = json.loads((tmp_path / "chunked" / "evaluation.json").read_text())
    row = done["parts"]["pgd-5x2"]["rows"][0]
    assert done["pending"] == {} and row["n"] == whole["n"] == 30
    assert row["accuracy"] == pytest.approx(whole["accuracy"]) and 0 < whole["accuracy"] < 1
    assert row["se"] == pytest.approx((whole["accuracy"] * (1 - whole["accuracy"]) / 30) ** 0.5)

"""The README, the guides and the examples as a new user meets them: the files their commands write are
git-ignored, the models `keras-advmi analyze` takes in the analysis guide are made by commands beside it, the
MNIST example says how to run offline, and examples/serve_and_query.py leaves nothing behind."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()
ANALYSIS_GUIDE = (ROOT / "docs" / "guide" / "analysis.md").read_text()


@pytest.mark.skipif(shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout")
@pytest.mark.parametrize("path", ["runs/digits/model.keras", "runs/digits_nt/backup/latest.weights.h5",
                                  "models/robust/1/saved_model.pb", "detect.json", "report/index.html",
                                  "report/results.json", "logs/mi_demo/final_mi.json", "quickstart_robust.keras"])
def test_files_written_by_readme_commands_are_ignored(path):
    proc = subprocess.run(["git", "check-ignore", "-q", path], cwd=ROOT)
    assert proc.returncode == 0, f"{path} is not git-ignored"


def test_models_given_to_analyze_are_made_by_the_guides_commands():
    blocks = re.findall(r"```bash\n(.*?)```", README + ANALYSIS_GUIDE, flags=re.S)
    commands = [" ".join(c.split()) for b in blocks for c in b.replace("\\\n", " ").splitlines()]
    made = {m + "/model.keras" for c in commands if c.startswith(("keras-advmi train", "pip install -e . && keras"))
            for m in re.findall(r"--out (\S+)", c)}
    analyze = [c for c in commands if c.startswith("keras-advmi analyze")]
    assert analyze, "the analysis guide has no keras-advmi analyze command"
    for command in analyze:
        models = [w for w in command.split() if w.endswith(".keras")]
        assert models and set(models) <= made, (models, made)


def test_readme_says_how_to_run_the_mnist_example_offline():
    mentions = re.findall(r"`([^`]*python examples/tensorboard_mi\.py[^`]*)`", README)
    assert mentions and all("--dataset digits" in m or "KERAS_ADVMI_DATA=" in m for m in mentions), mentions
    for script in re.findall(r"python (examples/\S+\.py)", README):
        assert (ROOT / script).exists(), script


@pytest.mark.timeout(600)
def test_serve_and_query_queries_a_live_server_and_leaves_nothing(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TMPDIR": str(tmp_path)}
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "serve_and_query.py")], capture_output=True,
                          text=True, env=env, timeout=580, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert re.search(r"curl .*/v1/models/digits:predict +\(server up now; answered \[\d, \d\]\)", proc.stdout)
    assert "rest: class_ids" in proc.stdout and "grpc: class_ids" in proc.stdout
    assert sorted(os.listdir(tmp_path)) == [], os.listdir(tmp_path)   # its temporary models are gone

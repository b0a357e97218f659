"""Each defense trains under tf.distribute.MirroredStrategy over 2 logical CPU devices (subprocess: the
logical devices must be configured before TensorFlow initialises)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "distributed_fit.py"


@pytest.mark.timeout(600)
@pytest.mark.parametrize("names", [["pgd", "trades"], ["mart", "fast_at"], ["miat"], ["trades+bfloat16"]],
                         ids=lambda names: "+".join(names))   # groups, so that xdist spreads them over workers
def test_all_defenses_train_under_mirrored_strategy(names):
    proc = subprocess.run([sys.executable, str(SCRIPT), *names], capture_output=True, text=True, timeout=600,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(l for l in proc.stdout.splitlines() if l.startswith("RESULT "))
    results = json.loads(line[len("RESULT "):])
    assert results["replicas"] == 2
    for name in names:
        r = results[name]
        assert r["loss"][-1] < r["loss"][0], (name, r)
        assert r["val_accuracy"] > 0.5, (name, r)
        assert r["max_abs_diff"] == 0.0, (name, r)

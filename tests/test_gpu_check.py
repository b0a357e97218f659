"""benchmarks/gpu_check.sh: its --cpu mode runs in CI time and prints every ratio; the GPU mode refuses to run
without a GPU. The GPU figures themselves come from a run on a GPU machine."""

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent.parent / "benchmarks" / "gpu_check.sh"


@pytest.mark.timeout(400)
def test_gpu_check_cpu_mode_prints_the_ratios(tmp_path):
    """70 s on 2 loaded cores (Madry's CNN, batch 32, 2 batches, 1 round, 7 contenders)."""
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu"], capture_output=True, text=True, timeout=390,
                          env={**os.environ, "GPU_CHECK_JSON": str(tmp_path / "gc.json")})
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    out = proc.stdout
    for line in ("ours / keras_advmi_pgd10_no_xla", "ours, XLA on / keras_advmi_pgd10_no_xla",
                 "ours / keras_advmi_pgd10_one_chain", "ours, bf16 attack / keras_advmi_pgd10",
                 "ours / handwritten_tf_function", "PGD-10 step time / (11 x standard step time)",
                 "gpu_check: OK (cpu"):
        assert line in out, out
    assert (tmp_path / "gc.json").exists()


def test_gpu_check_fails_loudly_without_a_gpu():
    import tensorflow as tf

    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is visible here")
    proc = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    assert proc.returncode != 0 and "TensorFlow sees no GPU" in proc.stderr, proc.stderr[-2000:]

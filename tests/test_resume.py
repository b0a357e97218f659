"""An interrupted fit (SIGKILL mid-epoch) resumes from the last finished epoch with BackupAndRestore."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parent / "scripts" / "resumable_fit.py"
EPOCHS = 4


@pytest.mark.timeout(600)
def test_killed_fit_resumes_and_finishes(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    backup = str(tmp_path / "backup")
    proc = subprocess.Popen([sys.executable, str(SCRIPT), backup, str(EPOCHS)], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    seen = []
    for line in proc.stdout:  # wait until epoch index 2 has begun, then kill it mid-epoch
        seen.append(line.strip())
        if line.startswith("epoch_begin 2"):
            time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, seen
    assert "done" not in " ".join(seen)

    out = subprocess.run([sys.executable, str(SCRIPT), backup, str(EPOCHS)], capture_output=True, text=True,
                         env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.split()
    begins = [int(lines[i + 1]) for i, w in enumerate(lines) if w == "epoch_begin"]
    assert begins == [2, 3], out.stdout  # epochs 0 and 1 were restored, not redone
    steps_per_epoch = -(-1348 // 16)
    assert f"done {EPOCHS * steps_per_epoch}" in out.stdout

"""Import TensorFlow without its start-up banner on stderr.

TensorFlow >= 2.20 logs informational lines through absl before any log level applies
(``TF_CPP_MIN_LOG_LEVEL`` does not silence them): the oneDNN notice, "Could not find cuda drivers",
the CPU-feature notice and, on machines without a GPU, a ``cuInit`` error. They bury a one-line CLI
error. This captures file descriptor 2 while TensorFlow imports and initialises its devices, drops
exactly those known lines and writes everything else back. ``KERAS_ADVMI_TF_LOGS=1`` turns it off.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

_BANNER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} .*\] .*"  # absl INFO/WARNING lines
    r"|E\d{4} .*cuda.*(cuInit|CUDA error).*"
    r"|To enable the following instructions: .*)$")


def import_tensorflow_quietly():
    """Import TensorFlow with its C++ start-up banner filtered out of stderr. The imports below are local by
    design: the point is to run TensorFlow's import while stderr is redirected."""
    if "tensorflow" in sys.modules or os.environ.get("KERAS_ADVMI_TF_LOGS") == "1":
        import tensorflow  # noqa: F401
        return
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (e.g. captured by a notebook)
        import tensorflow  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), fd)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines()
                    if line.strip() and not _BANNER.match(line)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")

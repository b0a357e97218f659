"""Import TensorFlow without its start-up log lines: the ``keras-advmi`` command line's quiet mode.

TensorFlow >= 2.20 writes informational lines through absl before any log level applies
(``TF_CPP_MIN_LOG_LEVEL`` does not silence them): the oneDNN notice, "Could not find cuda drivers",
the CPU-feature notice and, on machines without a GPU, a ``cuInit`` error when it first looks for
devices. They bury a one-line CLI error. ``import_tensorflow_quietly`` captures file descriptor 2 while
TensorFlow imports and initialises its devices, drops exactly those known lines and writes everything
else back; it also sets ``TF_CPP_MIN_LOG_LEVEL=2`` (unless set) and the ``tensorflow`` Python logger to
ERROR (tf.function retracing warnings).

It changes the process (an environment variable, file descriptor 2 for the duration of the import, a
logger's level), so only the command line calls it, in its own process and without ``--verbose``;
``import keras_advmi`` never does.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile

_BANNER = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} .*\] .*"  # absl INFO/WARNING lines
    r"|E\d{4} .*cuda.*(cuInit|CUDA error).*"
    r"|To enable the following instructions: .*)$")


def banner_lines_removed(text: str) -> list[str]:
    """The non-empty lines of ``text`` that are not TensorFlow start-up lines (``_BANNER``)."""
    return [line for line in text.splitlines() if line.strip() and not _BANNER.match(line)]


def import_tensorflow_quietly():
    """Import TensorFlow and list its devices with the start-up lines filtered out of stderr.

    A no-op for the stderr part when TensorFlow is already imported (its lines are out by then) or when
    ``sys.stderr`` has no file descriptor (e.g. captured by a notebook). The imports below are local by
    design: the point is to run TensorFlow's import while stderr is redirected.
    """
    if "tensorflow" not in sys.modules:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")   # C++ INFO and WARNING logs after start-up
        try:
            fd = sys.stderr.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is not None:
            sys.stderr.flush()
            saved = os.dup(fd)
            with tempfile.TemporaryFile() as captured:
                os.dup2(captured.fileno(), fd)
                try:
                    import tensorflow as tf

                    tf.config.list_physical_devices()   # the cuInit error comes here, not at import
                finally:
                    os.dup2(saved, fd)
                    os.close(saved)
                    captured.seek(0)
                    kept = banner_lines_removed(captured.read().decode(errors="replace"))
                    if kept:
                        sys.stderr.write("\n".join(kept) + "\n")
    import tensorflow as tf

    tf.config.list_physical_devices()
    logging.getLogger("tensorflow").setLevel(logging.ERROR)

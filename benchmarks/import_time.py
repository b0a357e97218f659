"""Wall time of `import keras_advmi` against `import tensorflow, keras`, each in a fresh interpreter.

The runs alternate (baseline, package, baseline, ...) so that a change in machine load hits both; each
prints its median over --runs. `import keras_advmi` loads its subpackages on first use, so it should cost
far less than TensorFlow; `first use` (`kam.AdversarialModel`, which loads TensorFlow, Keras and the
package's saveable classes) and `keras-advmi --help` are timed too, for scale.

    python benchmarks/import_time.py --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASES = {
    "import tensorflow, keras": [sys.executable, "-c", "import tensorflow, keras"],
    "import keras_advmi": [sys.executable, "-c", "import keras_advmi"],
    "first use: kam.AdversarialModel": [sys.executable, "-c", "import keras_advmi as kam; kam.AdversarialModel"],
    "keras-advmi --help": [sys.executable, "-m", "keras_advmi", "--help"],
}
BASELINE, PACKAGE = "import tensorflow, keras", "import keras_advmi"


def wall_time(command):
    """Seconds from spawning ``command`` to its exit (it must exit 0)."""
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    return time.perf_counter() - start


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs of each case, interleaved (default 5)")
    parser.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), metavar="CASE",
                        help=f"which to time (default all): {'; '.join(CASES)}")
    parser.add_argument("--json", action="store_true", help="print the medians as one JSON object")
    args = parser.parse_args(argv)
    if args.runs < 1:
        parser.error(f"--runs must be >= 1, got {args.runs}")
    cases = [c for c in CASES if c in args.cases]
    times = {case: [] for case in cases}
    for _ in range(args.runs):
        for case in cases:
            times[case].append(wall_time(CASES[case]))
    medians = {case: statistics.median(t) for case, t in times.items()}
    ratio = medians[PACKAGE] / medians[BASELINE] if {PACKAGE, BASELINE} <= set(medians) else None
    if args.json:
        print(json.dumps({"runs": args.runs, "median_seconds": medians, "ratio": ratio}))
        return 0
    for case in cases:
        print(f"{case:<34} median {medians[case]:6.2f} s   runs: {' '.join(f'{t:.2f}' for t in times[case])}")
    if ratio is not None:
        print(f"ratio import keras_advmi / import tensorflow, keras: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

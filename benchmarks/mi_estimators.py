"""KDE I(X;T) speed and peak memory: keras_advmi.mi.kde_upper vs straightforward NumPy, same formula.

    KERAS_ADVMI_DATA=../shared/data python benchmarks/mi_estimators.py [--n 10000 --dim 1024 --compare-n 2000]

1. Speed, side by side in one run on the same (compare_n x dim) activations: ours vs
   (a) a straightforward NumPy loop over rows (D_i = sum((h - h_i)^2), scipy logsumexp), and
   (b) NumPy vectorised with the Gram identity in float64 (the fast NumPy way).
2. Peak extra memory of ours on the full (n x dim) activations, measured in a fresh subprocess as the
   growth of ru_maxrss across the call (the activations already allocated before).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
from scipy.special import logsumexp

#: The absolute noise variance every estimator here is timed at (the information-plane papers' s2; the
#: kde functions' default, 'relative', would add the median of the pairwise distances to ours only).
NOISE_VAR = 0.1


def numpy_loop_kde_upper(h, noise_var=NOISE_VAR):
    """-(1/N) sum_i log((1/N) sum_j exp(-||h_i - h_j||^2 / (2 s2))), one row at a time."""
    h = np.asarray(h, np.float64)
    n = len(h)
    total = 0.0
    for i in range(n):
        d = ((h - h[i]) ** 2).sum(axis=1)
        total += logsumexp(-d / (2 * noise_var)) - np.log(n)
    return -total / n


def numpy_gram_kde_upper(h, noise_var=NOISE_VAR, chunk=512):
    h = np.asarray(h, np.float64)
    h = h - h.mean(0)
    sq = (h * h).sum(1)
    n = len(h)
    total = 0.0
    for s in range(0, n, chunk):
        d = np.maximum(sq[s:s + chunk, None] + sq[None] - 2 * h[s:s + chunk] @ h.T, 0)
        total += (logsumexp(-d / (2 * noise_var), axis=1) - np.log(n)).sum()
    return -total / n


def activations(n, dim, seed=0):
    # ReLU-like activations with structure (10 clusters), float32 as a layer emits them.
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=1.0, size=(10, dim))
    h = centres[rng.integers(0, 10, n)] + rng.normal(scale=0.01, size=(n, dim))
    return np.maximum(h, 0).astype(np.float32)


def _median_time(fn, repeats):
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return float(np.median(times)), value


def memory_child(n, dim):
    from keras_advmi import mi

    h = activations(n, dim)
    mi.kde_upper(h[:64], NOISE_VAR)  # trace the function, import TF, before the baseline reading
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    value = mi.kde_upper(h, NOISE_VAR)
    seconds = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"value": value, "seconds": seconds, "extra_peak_mib": (after - before) / 1024}))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--compare-n", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.n, args.dim)

    from keras_advmi import mi

    h = activations(args.compare_n, args.dim)
    mi.kde_upper(h[:64], NOISE_VAR)
    t_ours, v_ours = _median_time(lambda: mi.kde_upper(h, NOISE_VAR), args.repeats)
    t_loop, v_loop = _median_time(lambda: numpy_loop_kde_upper(h), 1)
    t_gram, v_gram = _median_time(lambda: numpy_gram_kde_upper(h), args.repeats)
    print(f"speed, N={args.compare_n} d={args.dim} (same data; values agree: "
          f"{abs(v_ours - v_loop) < 1e-6 and abs(v_ours - v_gram) < 1e-6})")
    print(f"  keras_advmi.mi.kde_upper     {t_ours:8.3f} s   I={v_ours:.6f}")
    print(f"  NumPy row loop               {t_loop:8.3f} s   I={v_loop:.6f}   ratio {t_loop / t_ours:6.1f}x")
    print(f"  NumPy Gram, float64 chunks   {t_gram:8.3f} s   I={v_gram:.6f}   ratio {t_gram / t_ours:6.1f}x")

    out = subprocess.run([sys.executable, __file__, "--memory-child", "--n", str(args.n), "--dim", str(args.dim)],
                         capture_output=True, text=True, check=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    full = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"full size, N={args.n} d={args.dim}: {full['seconds']:.2f} s, extra peak memory "
          f"{full['extra_peak_mib']:.0f} MiB (limit 2048), I_upper = {full['value']:.4f} nats")


if __name__ == "__main__":
    main()

#!/usr/bin/env bash
# One-shot GPU check (issue 23): PGD-10 adversarial-training throughput of Madry's MNIST CNN on one GPU, as
# ratios: the standard (clean) step; ours with XLA off and on (and Keras' "auto", which turns XLA on with a
# GPU); attack_chains=1 (the GPU default); the bf16 training attack; the hand-written compiled PGD loop
# (pure TensorFlow, cleverhans' algorithm; and cleverhans itself when it is installed).
# Needs only the package (benchmarks/train_throughput.py does the timing); at most 8 minutes.
#
#   benchmarks/gpu_check.sh            # fails loudly if TensorFlow sees no GPU
#   benchmarks/gpu_check.sh --cpu      # the same on CPU, small counts (its test: tests/test_gpu_check.py)
#
# Env: GPU_CHECK_JSON=path (default gpu_check.json) receives train_throughput's JSON; KERAS_ADVMI_DATA
# for real MNIST (timing does not depend on pixel values: random images without it).
set -euo pipefail
cd "$(dirname "$0")/.."
mode=gpu
if [[ "${1:-}" == "--cpu" ]]; then mode=cpu; elif [[ -n "${1:-}" ]]; then echo "usage: $0 [--cpu]" >&2; exit 2; fi
export TF_CPP_MIN_LOG_LEVEL=2
if [[ $mode == cpu ]]; then export CUDA_VISIBLE_DEVICES=""; fi

python - "$mode" <<'PY'
import sys
import tensorflow as tf
gpus = tf.config.list_physical_devices("GPU")
print(f"gpu_check: TensorFlow {tf.__version__}, built with CUDA: {tf.test.is_built_with_cuda()}, GPUs: {gpus}")
if sys.argv[1] == "gpu" and not gpus:
    sys.exit("gpu_check: FAILED: TensorFlow sees no GPU (drivers? CUDA_VISIBLE_DEVICES? the tensorflow[and-cuda] "
             "wheel?); benchmarks/gpu_check.sh --cpu runs the same check on CPU")
PY

if [[ $mode == gpu ]]; then batch=128 batches=50 rounds=3; else batch=32 batches=2 rounds=1; fi
skip="keras_advmi_fast_at cleverhans_eager art_madry_pgd"
python -c "import cleverhans" 2>/dev/null || skip="$skip cleverhans_tf_function"
# 470 s: XLA compilation and the first traces are most of it on a GPU; the limit keeps the check under 8 min
timeout 470 python benchmarks/train_throughput.py --arch madry_cnn --batch-size "$batch" --batches "$batches" \
    --rounds "$rounds" --skip $skip --json "${GPU_CHECK_JSON:-gpu_check.json}"
echo "gpu_check: OK ($mode, batch $batch, $batches batches x $rounds rounds)"

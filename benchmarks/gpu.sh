#!/usr/bin/env bash
# The checks that need a GPU, as one script for a CUDA host with a time limit: the CUDA tests, the class-incremental
# stream at full scale (all 6,000 train and 1,000 test images per class; as many seeds as finish in PARITY_S
# seconds, each written as it ends) and the 224 px throughput rows (as many as finish in THROUGHPUT_S).
#
#   benchmarks/gpu.sh OUT          # results in OUT: checks.txt (the card, the CUDA tests), parity_full_gpu.{md,json},
#                                  # parity_runs.tgz (every finished run's metrics.json),
#                                  # throughput_<card>.{md,json}, and the logs
#
# The host needs the engine's Python dependencies (README, "GPUs"), Fashion-MNIST's IDX files
# (PIPELINE_FASHION_MNIST_DIR) and, offline, the converted ImageNet weights in PIPELINE_CACHE_DIR; a copy of the
# tree without git names its commit in PIPELINE_COMMIT. PER_CLASS / TEST_PER_CLASS shrink the stream (smoke runs).
set -u
mkdir -p "${1:?usage: benchmarks/gpu.sh OUT}"
out=$(cd "$1" && pwd)
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
parity_out=${PARITY_OUT:-/tmp/parity-gpu}
(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc) >"$out/checks.txt" 2>&1
timeout "${TESTS_S:-100}" "$python" -m pytest -q -p no:cacheprovider tests/test_engine.py -k cuda \
  >>"$out/checks.txt" 2>&1
timeout "${PARITY_S:-400}" "$python" -m benchmarks.parity --per-class "${PER_CLASS:-6000}" \
  --test-per-class "${TEST_PER_CLASS:-1000}" --streams class-incremental --configs default --seeds 3 \
  --name full_gpu --out "$parity_out" >"$out/parity.log" 2>&1
cp "$parity_out"/parity_full_gpu.* "$out/"
(cd "$parity_out/parity-work/models" && find full_gpu -name metrics.json | tar czf "$out/parity_runs.tgz" -T -)
timeout "${THROUGHPUT_S:-60}" "$python" -m benchmarks.throughput --sizes 224 --out "$out" >"$out/throughput.log" 2>&1
ls -la "$out"

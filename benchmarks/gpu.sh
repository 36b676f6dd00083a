#!/usr/bin/env bash
# The checks that need a GPU, as one script for a CUDA host with a time limit. Each step runs for at most its budget
# in seconds (0 skips it) and writes what finished:
#   TESTS_S       the CUDA tests                                            -> checks.txt (with the card)
#   PRODUCTION_S  the production stream's first PRODUCTION_VERSIONS versions, seed 0: chained updates and the
#                 retrain on the card (what the whole version saves in wall time where the retrain is fast; its
#                 chain_wall_shares: where the update's wall goes on a GPU)
#                                                                           -> production/production.{md,json}
#   PARITY_S      the class-incremental stream at full scale (all 6,000 train and 1,000 test images per class; as
#                 many seeds as finish)                                     -> parity_full_gpu.{md,json}, parity_runs.tgz
#   THROUGHPUT_S  the 224 px throughput rows                                -> throughput_<card>.{md,json}
#
#   benchmarks/gpu.sh OUT
#
# The host needs the engine's Python dependencies (docs/scale.md, "GPUs"), Fashion-MNIST's IDX files
# (PIPELINE_FASHION_MNIST_DIR) and, offline, the converted ImageNet weights in PIPELINE_CACHE_DIR; a copy of the
# tree without git names its commit in PIPELINE_COMMIT. PER_CLASS / TEST_PER_CLASS shrink the full-scale stream.
set -u
mkdir -p "${1:?usage: benchmarks/gpu.sh OUT}"
out=$(cd "$1" && pwd)
export PYTHONUNBUFFERED=1
python=${PYTHON:-python3}
parity_out=${PARITY_OUT:-/tmp/parity-gpu}

step() {  # step BUDGET_S LOG command...: the command for at most BUDGET_S seconds, output appended to LOG
  local budget=$1 log=$2
  shift 2
  [ "$budget" -gt 0 ] && timeout "$budget" "$@" >>"$log" 2>&1
}

(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; nproc) >"$out/checks.txt" 2>&1
step "${TESTS_S:-100}" "$out/checks.txt" "$python" -m pytest -q -p no:cacheprovider tests/test_runtime.py -k cuda
step "${PRODUCTION_S:-200}" "$out/production.log" "$python" -m benchmarks.production --no-figure --dense-seeds 0 \
  --versions "${PRODUCTION_VERSIONS:-4}" --work /tmp/production --out "$out/production"
if step "${PARITY_S:-200}" "$out/parity.log" "$python" -m benchmarks.parity --per-class "${PER_CLASS:-6000}" \
  --test-per-class "${TEST_PER_CLASS:-1000}" --streams class-incremental --configs default --seeds 3 \
  --name full_gpu --out "$parity_out" || [ -d "$parity_out/parity-work/models/full_gpu" ]; then
  cp "$parity_out"/parity_full_gpu.* "$out/" 2>/dev/null
  (cd "$parity_out/parity-work/models" && find full_gpu -name metrics.json | tar czf "$out/parity_runs.tgz" -T -)
fi
step "${THROUGHPUT_S:-60}" "$out/throughput.log" "$python" -m benchmarks.throughput --sizes 224 --out "$out"
ls -la "$out"

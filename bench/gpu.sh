#!/usr/bin/env bash
# The benchmark's GPU mode on a bare GPU machine (Python, numpy and JAX with CUDA there; no
# TensorFlow, prefect or mlflow; no network). From the repository root, with keras' wheels
# in .whl/ and the four Fashion-MNIST .gz files in .data/ (see README, "The benchmark"):
#
#   bash bench/gpu.sh fast      # then: bash bench/gpu.sh book
#
# Results: $OUT (the device tool's output folder) if set, else bench/results/.
set -euo pipefail
profile=${1:-fast}
out=${OUT:-bench/results}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target .site .whl/*.whl
export PYTHONPATH=$PWD/.site:$PWD
export KERAS_BACKEND=${KERAS_BACKEND:-jax} XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv || true
# The plain baseline's s/epoch needs 3 epochs, not 25: that keeps the book run within
# about 10 minutes on one H200. Each process gets 5 minutes at most.
python3 -m fmnist.bench --profile "$profile" --data .data --out "$out" --baseline-epochs 3 \
  --timeout 300 "${@:2}"

#!/usr/bin/env bash
# The GPU check, on a machine with NVIDIA GPUs, in at most 5 minutes: a CUDA torch env,
# two kernels with `gpus = 1` on different GPUs, generation on CUDA, and `workbench gpus`
# naming the holders (bench/gpu_check.py says what each step checks). Exit 0 only when
# every step passed.
#
#   bash bench/gpu_check.sh            # from the repository, after `make .venv/.installed`
#
# Leases go to the machine-wide folder: on a shared server the check takes free GPUs only.
# No GPU machine was available where this was written: it ran there only against a FAKE
# nvidia-smi with GPU_CHECK_DEVICE=cpu (tests/gpus/test_gpu_check.py), never on a real GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v nvidia-smi >/dev/null; then
  echo "no GPU here: nvidia-smi is not on PATH (run this on a GPU machine)" >&2
  exit 2
fi
if [ ! -x .venv/bin/python ]; then
  make .venv/.installed >/dev/null
fi
nvidia-smi --query-gpu=index,name,driver_version,memory.total --format=csv,noheader || true
exec timeout "${GPU_CHECK_TIMEOUT:-300}" .venv/bin/python bench/gpu_check.py

#!/usr/bin/env bash
# A GPU check of cambench in a few minutes: device, a bf16/channels-last training
# epoch, every saliency method on CUDA vs the CPU, insertion/deletion on CUDA and the
# gradient CAMs' timing (benchmarks/gpu_check.py says what exactly). Writes
# benchmarks/results/gpu-<card>.txt and exits non-zero when a check fails. Without
# CUDA it checks that torch and cambench import, says so and exits 0.
#
#   benchmarks/gpu_check.sh            # on the GPU machine, from anywhere
#   benchmarks/gpu_check.sh --cpu      # dry run of the same steps on the CPU
set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD/workflow${PYTHONPATH:+:$PYTHONPATH}"
PYTHON="${PYTHON:-python}"
if ! "$PYTHON" -c "import torch, h5py, cambench.saliency, cambench.training.loop"; then
    echo "gpu_check: cannot import torch/cambench with $PYTHON" >&2
    exit 1
fi
cpu=0
for arg in "$@"; do [ "$arg" = "--cpu" ] && cpu=1; done
if [ "$cpu" = 0 ] && ! "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "gpu_check: no CUDA device on this machine; torch and cambench import fine, nothing else to check"
    exit 0
fi
exec timeout "${GPU_CHECK_TIMEOUT:-1200}" "$PYTHON" benchmarks/gpu_check.py "$@"

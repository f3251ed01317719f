#!/usr/bin/env bash
# Hardware acceptance check for Perseus on a GPU node you own (root or CAP_SYS_ADMIN for the full check).
#
#   bash scripts/gpu_check.sh                  NVML reads, counter period, clock lock latency and read-back,
#                                              power limit set/restore, restore after SIGKILL, a 1-stage
#                                              profile and training with a plan (fraction at planned clock)
#   bash scripts/gpu_check.sh --measure-only   changes no GPU setting: NVML reads, counter period and a
#                                              CUDA/NCCL training run at default clocks
#
# Prints PASS/FAIL/SKIP per step; exits non-zero if any step failed. Uses the repository's .venv
# (bootstrapped by run.sh) unless PYTHON points at another interpreter (e.g. one with a CUDA torch).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
if [[ -n "${PYTHON:-}" ]]; then
  exec "$PYTHON" -m perseus.device.hwcheck "$@"
fi
exec bash run.sh gpu-check "$@"  # bootstraps .venv on first use

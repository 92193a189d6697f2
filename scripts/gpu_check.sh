#!/usr/bin/env bash
# The checks only a GPU settles (sara bench gpu: bf16 TRD at N = 32768 against dense and matmul,
# a bf16 FSDP step of TI2V-5B's width with SARA against SFT on NCCL, the timesteps CUDA's
# sharded DiT receives), in at most 8 minutes on one H100. Figures in OUT (default: .).
#   bash scripts/gpu_check.sh            # on the GPU machine
#   bash scripts/gpu_check.sh --dry-run  # the same checks on the CPU at toy sizes
set -euo pipefail
OUT=${OUT:-.}
mkdir -p "$OUT"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | tee "$OUT/gpu.txt" || true
exec timeout 480 "${SARA_PYTHON:-python}" -m sara bench gpu --out "$OUT/gpu_check.json" "$@"

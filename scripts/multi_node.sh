#!/usr/bin/env bash
# Stage 2 on several machines: run this on every node with the same MASTER_ADDR (the first node's
# address) and JOB_ID; torchrun's c10d rendezvous assigns the ranks.
#   NNODES=4 MASTER_ADDR=10.0.0.1 JOB_ID=sara-a14b bash scripts/multi_node.sh configs/stage2/wan2.2-t2v-a14b.yaml
set -euo pipefail
CONFIG=${1:?usage: multi_node.sh CONFIG [key=value ...]}
shift
exec torchrun \
    --nnodes "${NNODES:?set NNODES}" \
    --nproc_per_node "${GPUS:-8}" \
    --rdzv_backend c10d \
    --rdzv_endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" \
    --rdzv_id "${JOB_ID:-sara}" \
    --max_restarts "${MAX_RESTARTS:-3}" \
    -m sara stage2 train --config "$CONFIG" --resume latest "$@"

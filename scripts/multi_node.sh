#!/usr/bin/env bash
# Stage 2 on several machines: run this on every node with the same MASTER_ADDR (the first node's
# address) and JOB_ID; torchrun's c10d rendezvous assigns the ranks.
#   NNODES=4 MASTER_ADDR=10.0.0.1 JOB_ID=sara-a14b bash scripts/multi_node.sh configs/stage2/wan2.2-t2v-a14b.yaml
# As scripts/single_node.sh: planned first, and SHUTDOWN_TIMEOUT (default: the plan's) between
# torchrun's forwarded SIGTERM and its SIGKILL. A run stopped by a signal exits 75 (rank 0):
# torchrun restarts the trainers (MAX_RESTARTS) only when it was not itself told to stop.
set -euo pipefail
CONFIG=${1:?usage: multi_node.sh CONFIG [key=value ...]}
shift
PYTHON=${SARA_PYTHON:-python}
GPUS=${GPUS:-8}
WORLD=$((${NNODES:?set NNODES} * GPUS))
TIMEOUT=${SHUTDOWN_TIMEOUT:-$("$PYTHON" -m sara stage2 plan --config "$CONFIG" "$@" --world "$WORLD" --shutdown-timeout)}
exec torchrun \
    --nnodes "$NNODES" \
    --nproc_per_node "$GPUS" \
    --rdzv_backend c10d \
    --rdzv_endpoint "${MASTER_ADDR:?set MASTER_ADDR}:${MASTER_PORT:-29500}" \
    --rdzv_id "${JOB_ID:-sara}" \
    --max_restarts "${MAX_RESTARTS:-3}" \
    --shutdown-timeout "$TIMEOUT" \
    -m sara stage2 train --config "$CONFIG" --resume latest "$@"

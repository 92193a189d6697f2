#!/usr/bin/env bash
# Stage 2 on the GPUs of one machine. Any `key=value` after the script's arguments overrides the config.
#   bash scripts/single_node.sh configs/stage2/wan2.2-ti2v-5b.yaml parallel.ulysses=2
# The run is planned first (`sara stage2 plan`): a config that cannot start stops here, with one
# line per problem. On SIGTERM torchrun forwards the signal, and the trainers finish the step
# and write a checkpoint before it kills them: SHUTDOWN_TIMEOUT (default: what the plan says
# the checkpoint needs) is how long it waits.
set -euo pipefail
CONFIG=${1:?usage: single_node.sh CONFIG [key=value ...]}
shift
PYTHON=${SARA_PYTHON:-python}
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
TIMEOUT=${SHUTDOWN_TIMEOUT:-$("$PYTHON" -m sara stage2 plan --config "$CONFIG" "$@" --world "$GPUS" --shutdown-timeout)}
exec torchrun --standalone --nproc_per_node "$GPUS" --shutdown-timeout "$TIMEOUT" \
    -m sara stage2 train --config "$CONFIG" --resume latest "$@"

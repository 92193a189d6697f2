#!/usr/bin/env bash
# Stage 2 on the GPUs of one machine. Any `key=value` after the script's arguments overrides the config.
#   bash scripts/single_node.sh configs/stage2/wan2.2-ti2v-5b.yaml parallel.ulysses=2
set -euo pipefail
CONFIG=${1:?usage: single_node.sh CONFIG [key=value ...]}
shift
GPUS=${GPUS:-$(nvidia-smi -L | wc -l)}
exec torchrun --standalone --nproc_per_node "$GPUS" -m sara stage2 train --config "$CONFIG" --resume latest "$@"

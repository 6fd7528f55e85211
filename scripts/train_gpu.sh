#!/usr/bin/env bash
# Train the bigger model on a GPU: a 24 h encoder and hidden size 48, on the default fleet (generated once).
# Arguments go on to `tftmon train` and win over the ones here: scripts/train_gpu.sh --devices 2 --max-epochs 50
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
data="${TFTMON_DATA:-data/fleet}"
[ -d "$data" ] || tftmon generate --out "$data"
exec tftmon train "$data" --accelerator gpu --encoder-hours 24 --hidden-size 48 --max-epochs 30 \
    --max-batches-per-epoch 300 --batch-size 128 "$@"

#!/usr/bin/env bash
# Paper-size Fashion-MNIST (WRN-28-5, batch 250, augmentation) on one GPU: the vicious pair and
# the honest pair, each phase stopped after MINUTES of wall time (default: about 8 minutes in all).
# Usage: scripts/gpu_paper_size.sh [OUT_DIR] [MINUTES_PER_PHASE]
set -euo pipefail
out=${1:-runs/gpu-paper-size}
minutes=${2:-2.5}
common=(--set train.precision=bf16-mixed --set train.channels_last=true --set train.max_minutes="$minutes"
        --set train.epochs=100 --set train.progress=false)
vicious train --preset fashion-mnist-vicious --out "$out/vicious" "${common[@]}"
vicious train --preset fashion-mnist-honest --out "$out/honest" "${common[@]}"
vicious table "$out" --format md 2>/dev/null || true

#!/usr/bin/env bash
# NCL-CIR vs clip4cir under mixed label noise (TME protocol) on the embedded shapes benchmark:
# 2 layouts x noise 0/0.2/0.5/0.8 x training seeds 0,1,2, identical settings (10 epochs, batch 128,
# tiny warm-started backbone), then the markdown table with the noise-detection columns.
# Usage: benchmarks/ncl_cir_noise.sh [OUT_DIR] [more `cirbench run` options, e.g. --device cpu]
set -euo pipefail
out=${1:-runs/ncl_cir_noise}
shift || true
cirbench -q run -m clip4cir -m ncl-cir --noise-rates 0,0.2,0.5,0.8 --seeds 0,1,2 --out "$out" --no-progress "$@"
cirbench table "$out" --format markdown --detection

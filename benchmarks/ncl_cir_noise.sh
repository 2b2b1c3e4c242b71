#!/usr/bin/env bash
# NCL-CIR (the paper's method) vs ncl-cir:robust (cirbench's filter) vs the clip4cir control under
# mixed label noise (TME protocol) on the embedded shapes benchmark: 2 layouts x noise 0/0.2/0.5/0.8 x
# training seeds 0,1,2, identical settings (10 epochs, batch 128, tiny warm-started backbone), then the
# markdown table with the noise-detection columns. Then the weight-map comparison (how the K maps reach
# the embedding, `map_fusion`, and K=1): the paper's ncl-cir, noise 0 / 0.5, seeds 0,1,2, both layouts.
# Usage: benchmarks/ncl_cir_noise.sh [OUT_DIR] [more `cirbench run` options, e.g. --device cpu]
# Set PARTS="main" or PARTS="maps" to run one part only.
set -euo pipefail
out=${1:-runs/ncl_cir_noise}
shift || true
parts=${PARTS:-"main maps"}

if [[ " $parts " == *" maps "* ]]; then
  for cfg in "mean 4" "mean 1" "channel 4" "project 4"; do
    read -r fusion heads <<<"$cfg"
    cirbench -q run -m ncl-cir --set "ncl-cir.map_fusion=$fusion" --set "ncl-cir.heads=$heads" \
      --noise-rates 0,0.5 --seeds 0,1,2 --out "$out/maps-$fusion-k$heads" --no-progress "$@" >/dev/null
    echo "## map_fusion=$fusion heads=$heads"
    cirbench table "$out/maps-$fusion-k$heads" --format markdown --detection
  done
fi

if [[ " $parts " == *" main "* ]]; then
  cirbench -q run -m clip4cir -m ncl-cir -m ncl-cir:robust --noise-rates 0,0.2,0.5,0.8 --seeds 0,1,2 \
    --out "$out/main" --no-progress "$@" >/dev/null
  cirbench table "$out/main" --format markdown --detection
fi

#!/usr/bin/env bash
# CLIP4Cir's two stages on the embedded shapes benchmark: clip4cir with finetune=both and finetune=text
# (stage 1: the towers with the element-wise sum, 5 epochs at the paper's lr 2e-6; stage 2: the Combiner
# over the fine-tuned features, 10 epochs, from the best stage-1 epoch) against finetune=none (the Combiner
# over frozen features) and the sum over the frozen backbone (finetune_lr=0, one epoch, no Combiner);
# clean data, training seeds 0,1,2, both layouts, default run settings otherwise (batch 128, tiny backbone).
# Usage: benchmarks/clip4cir_finetune.sh [OUT_DIR] [more `cirbench run` options, e.g. --device cuda]
# PARTS="both text none sum" selects parts (default: all); results: benchmarks/results/clip4cir_finetune.md
set -euo pipefail
out=${1:-runs/clip4cir_finetune}
shift || true
parts=${PARTS:-"both text none sum"}
common=(-m clip4cir --noise-rates 0 --seeds 0,1,2 --no-progress)
for part in $parts; do
  case $part in
    both|text) cirbench -q run "${common[@]}" --set clip4cir.finetune=$part --set clip4cir.finetune_epochs=5 \
                 --out "$out/finetune-$part" "$@" >/dev/null ;;
    none) cirbench -q run "${common[@]}" --out "$out/finetune-none" "$@" >/dev/null ;;
    sum) cirbench -q run "${common[@]}" --set clip4cir.finetune=both --set clip4cir.finetune_epochs=1 \
           --set clip4cir.finetune_lr=0 --set clip4cir.combiner=false --out "$out/frozen-sum" "$@" >/dev/null ;;
  esac
done
for d in "$out"/*/; do echo "## $(basename "$d")"; cirbench table "$d" --format markdown; done

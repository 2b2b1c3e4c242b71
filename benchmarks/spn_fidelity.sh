#!/usr/bin/env bash
# SPN over clip4cir as the released code does it (issue 13: pool of training-triplet images, released rank
# window, deduplicated bank, one text per generated triplet, brief captions) beside its clip4cir base, on the
# embedded shapes benchmark: both layouts x mixed noise 0/0.2/0.5/0.8 x training seeds 0,1,2, default run
# settings (10 epochs, batch 128, tiny warm-started backbone; SPN defaults). Writes the "after" runs and the
# base of benchmarks/results/spn_fidelity.md, then prints the tables and the robustness summary.
# The "before" column of that file is the same command run on the code before the fixes (see the file).
# Usage: benchmarks/spn_fidelity.sh [OUT_DIR] [more `cirbench run` options, e.g. --device cuda]
set -euo pipefail
out=${1:-runs/spn_fidelity}
shift || true

cirbench -q run -m clip4cir -d shapes-fashioniq -d shapes-cirr --noise-rates 0,0.2,0.5,0.8 --seeds 0,1,2 \
  --out "$out/base-clip4cir" --no-progress "$@" >/dev/null
cirbench -q run -m spn:clip4cir -d shapes-fashioniq -d shapes-cirr --noise-rates 0,0.2,0.5,0.8 --seeds 0,1,2 \
  --out "$out/after-spn_clip4cir" --no-progress "$@" >/dev/null
cirbench table "$out" --format markdown
cirbench robustness "$out" --format markdown

#!/usr/bin/env bash
# Copies what a LOG.md entry cites from a sweep directory into the repository, so that no result
# depends on one machine: compare.md/csv, manifest.json, the figures (SVG), and per run its
# resolved config, eval.json, the evaluation lines of metrics.jsonl, the last train line, and the
# analyses (mi_plan.json, mi_analysis.json, robustness reports). Checkpoints stay behind.
#   scripts/export-results.sh runs/sweeps/planners docs/results/2026-12-01-planners
set -euo pipefail

src=${1:?usage: scripts/export-results.sh SWEEP_DIR DEST}
dest=${2:?usage: scripts/export-results.sh SWEEP_DIR DEST}
[ -d "$src" ] || { echo "$src is not a directory" >&2; exit 1; }
mkdir -p "$dest/runs" "$dest/plots"
for f in compare.md compare.csv manifest.json; do
    [ -f "$src/$f" ] && cp "$src/$f" "$dest/"
done
if [ -d "$src/plots" ]; then
    find "$src/plots" -maxdepth 1 -name '*.svg' -exec cp {} "$dest/plots/" \;
fi
for run in "$src"/*/; do
    run=${run%/}
    name=$(basename "$run")
    [ -f "$run/eval.json" ] || continue
    out=$dest/runs/$name
    mkdir -p "$out"
    cp "$run/config.toml" "$run/eval.json" "$out/"
    grep '"eval/' "$run/metrics.jsonl" > "$out/eval-metrics.jsonl" || true
    grep '"train/' "$run/metrics.jsonl" | tail -1 > "$out/train-last.jsonl" || true
    for f in mi_plan.json mi_analysis.json; do
        [ -f "$run/$f" ] && cp "$run/$f" "$out/"
    done
    if [ -d "$run/evals" ]; then
        find "$run/evals" -maxdepth 1 -name 'robustness-*.json' -exec cp {} "$out/" \;
    fi
done
echo "exported $src to $dest"

#!/usr/bin/env bash
# Copies what a LOG.md entry cites from a sweep directory into the repository, so that no result
# depends on one machine: compare.md/csv, manifest.json, the figures (SVG), and per run its
# resolved config, eval.json, cost.json, a thinned metrics.jsonl (every evaluation line, the training lines of
# the evaluated steps and the last one), and the analyses (mi_plan.json, mi_analysis.json,
# robustness reports). Checkpoints stay behind. The exported runs are themselves a directory that
# `eval compare DEST/runs` and `eval plot DEST/runs` read.
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
    # What the training steps cost (runs from before 2026-12-07 have no cost.json).
    [ -f "$run/cost.json" ] && cp "$run/cost.json" "$out/"
    # The steps that were evaluated, then their lines (training and evaluation) and the last line.
    steps=$(grep '"eval/' "$run/metrics.jsonl" | sed -n 's/^{"step":\([0-9]*\),.*/\1/p' | sort -u | tr '\n' '|')
    {
        grep -E "^\{\"step\":(${steps%|})," "$run/metrics.jsonl" || true
        tail -1 "$run/metrics.jsonl"
    } | awk '!seen[$0]++' > "$out/metrics.jsonl"
    # The analyses, with the variants kept beside them (e.g. mi_plan-inner.json).
    for f in "$run"/mi_plan*.json "$run"/mi_analysis*.json; do
        [ -f "$f" ] && cp "$f" "$out/"
    done
    if [ -d "$run/evals" ]; then
        find "$run/evals" -maxdepth 1 -name 'robustness-*.json' -exec cp {} "$out/" \;
    fi
done
echo "exported $src to $dest"

#!/usr/bin/env bash
# The planning MI at the decision (`analysis plan RUN --decision-only`) for every
# finished path-star run of a sweep directory that has none for its last checkpoint yet, so that
# `eval compare DIR` can show plan/decision beside the evaluation. Resumable: analysed runs are
# skipped, so the script can be re-run while a sweep is still adding runs.
#   scripts/plan-mi.sh runs/sweeps/mi-grid
set -euo pipefail

dir=${1:?usage: scripts/plan-mi.sh SWEEP_DIR}
[ -d "$dir" ] || { echo "$dir is not a directory" >&2; exit 1; }
dir=$(cd "$dir" && pwd)
cd "$(dirname "$0")/.."
target=${CARGO_TARGET_DIR:-$HOME/.cache/lab-target}
CARGO_TARGET_DIR=$target cargo build --release -p analysis --quiet
analysis=$target/release/analysis

for run in "$dir"/*/; do
    run=${run%/}
    [ -f "$run/config.toml" ] && [ -f "$run/eval.json" ] || continue
    # The last step the run was trained to, and whether its analysis is of that step already.
    steps=$(sed -n 's/^steps *= *\([0-9]*\)/\1/p' "$run/config.toml" | head -1)
    [ -f "$run/checkpoints/$(printf 'step_%06d' "$steps").json" ] || continue
    # Done if the analysis is of that step and of the default protocol (the decision token, an
    # MLP critic); an older protocol's file is replaced.
    plan=$run/mi_plan.json
    if [ -f "$plan" ] && grep -q "\"step\": *$steps[,}]" "$plan" && grep -q '"answer": *"decision"' "$plan" \
        && grep -q '"critic": *"mlp"' "$plan"; then
        continue
    fi
    echo "== $run"
    "$analysis" plan "$run" --decision-only 2>&1 | tail -2 || echo "failed: $run (see above)" >&2
done

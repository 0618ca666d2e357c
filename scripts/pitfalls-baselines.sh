#!/usr/bin/env bash
# Trains objectives on the Pitfalls graph G(2,4,10) for several seeds, the runs behind LOG.md's
# comparison tables, then prints the table (scripts/summarize.py). The default list is the
# baselines; the MI-shaped objective and its ablations:
#   OBJECTIVES="ntp mi mi-infonce mi-token-rl mi-joint avatarl" scripts/pitfalls-baselines.sh
#
#   scripts/pitfalls-baselines.sh                 # seeds 0 1 2, 1,500 steps, 2 runs at a time
#   SEEDS="0 1 2 3 4" STEPS=3000 JOBS=1 OUT=runs/pb scripts/pitfalls-baselines.sh
#
# TASK picks the config directory (configs/$TASK/<objective>.toml), for the other task families:
#   TASK=sibling STEPS=1000 OBJECTIVES="ntp teacherless mi" OUT=runs/sibling scripts/pitfalls-baselines.sh
#
# Every run uses the same data (data.seed = 0) and token budget; the seed sets both the model
# initialisation and the batch order. Finished runs (the last checkpoint's sidecar present) are
# skipped, so the script can be re-run after an interruption.
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
STEPS=${STEPS:-1500}
JOBS=${JOBS:-2}
TASK=${TASK:-path-star}
OUT=${OUT:-runs/pitfalls-baselines}
OBJECTIVES=${OBJECTIVES:-"ntp teacherless mtp mtp-sequential fsp-bow fsp-summary fsp-summary-frozen"}
# TRAINER=path runs a binary built beforehand (e.g. a copy, so that rebuilding during a long
# sweep cannot change the runs still queued).
if [ -z "${TRAINER:-}" ]; then
    cargo build --release -p trainer
    TRAINER=${CARGO_TARGET_DIR:-target}/release/trainer
fi
mkdir -p "$OUT"

run() { # objective seed
    local obj=$1 seed=$2 dir="$OUT/$1-s$2"
    [ -f "$dir/checkpoints/step_$(printf %06d "$STEPS").json" ] && return 0
    rm -rf "$dir"
    local extra=()
    if [ "$obj" = fsp-summary-frozen ]; then extra=(--set "objective.reverse_run=$OUT/reverse-lm"); fi
    # AvataRL's critic: the NTP run of seed 0 (phase 1 trains it first).
    if [ "$obj" = avatarl ]; then extra=(--set "objective.critic_run=$OUT/ntp-s0"); fi
    "$TRAINER" train --config "configs/$TASK/$obj.toml" --out "$dir" --quiet \
        --set "schedule.steps=$STEPS" --set "seeds.model=$seed" --set "seeds.data=$seed" "${extra[@]}" \
        > "$dir.log" 2>&1 || { echo "FAILED: $dir (see $dir.log)"; return 1; }
    echo "done: $dir"
}
export -f run
export OUT STEPS TRAINER TASK

# The frozen summariser: one reverse LM (seed 0) that every frozen-summary run reads, trained
# beside the first runs of the queue; the frozen-summary runs go last.
reverse_done="$OUT/reverse-lm/checkpoints/step_$(printf %06d "$STEPS").json"
# Phase 1: objectives that read no other run; phase 2: those that do (after phase 1 and the
# reverse LM are done).
late() { [ "$1" = fsp-summary-frozen ] || [ "$1" = avatarl ]; }
queue() { # phase
    for seed in $SEEDS; do for obj in $OBJECTIVES; do
        if late "$obj"; then phase=2; else phase=1; fi
        if [ "$phase" = "$1" ]; then echo "$obj $seed"; fi
    done; done
}
if [[ " $OBJECTIVES " == *" fsp-summary-frozen "* ]] && [ ! -f "$reverse_done" ]; then
    rm -rf "$OUT/reverse-lm"
    "$TRAINER" train --config "configs/$TASK/reverse-lm.toml" --out "$OUT/reverse-lm" --quiet \
        --set "schedule.steps=$STEPS" > "$OUT/reverse-lm.log" 2>&1 &
fi
queue 1 | xargs -r -P "$JOBS" -n 2 bash -c 'run "$0" "$1"'
wait
queue 2 | xargs -r -P "$JOBS" -n 2 bash -c 'run "$0" "$1"'
python3 scripts/summarize.py "$OUT"

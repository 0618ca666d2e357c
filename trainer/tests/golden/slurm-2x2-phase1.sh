#!/usr/bin/env bash
#SBATCH --job-name=grid-1
#SBATCH --array=0-3
#SBATCH --cpus-per-task=1
#SBATCH --output=/home/me/lab/runs/sweeps/grid/slurm/%x-%a.out
# Sweep grid (from $DIR/sweep.toml), phase 1 of 1: one array task per run. A finished run is skipped,
# an interrupted one resumed, so a failed array can simply be submitted again.
set -euo pipefail
TRAINER=${TRAINER:-/opt/lab/trainer}
cd /home/me/lab
case "$SLURM_ARRAY_TASK_ID" in
  0) run=runs/sweeps/grid/ntp-lr0.001-nodes8-s0 steps=4 args=(--config $DIR/ntp.toml --set schedule.steps=4 --set optimizer.lr=0.001 --set task.nodes=8 --set seeds.model=0 --set seeds.data=0 --set data.seed=0) ;;
  1) run=runs/sweeps/grid/ntp-lr0.001-nodes10-s0 steps=4 args=(--config $DIR/ntp.toml --set schedule.steps=4 --set optimizer.lr=0.001 --set task.nodes=10 --set seeds.model=0 --set seeds.data=0 --set data.seed=0) ;;
  2) run=runs/sweeps/grid/ntp-lr0.003-nodes8-s0 steps=4 args=(--config $DIR/ntp.toml --set schedule.steps=4 --set optimizer.lr=0.003 --set task.nodes=8 --set seeds.model=0 --set seeds.data=0 --set data.seed=0) ;;
  3) run=runs/sweeps/grid/ntp-lr0.003-nodes10-s0 steps=4 args=(--config $DIR/ntp.toml --set schedule.steps=4 --set optimizer.lr=0.003 --set task.nodes=10 --set seeds.model=0 --set seeds.data=0 --set data.seed=0) ;;
  *) echo "no run for array task $SLURM_ARRAY_TASK_ID" >&2; exit 1 ;;
esac
if [ -f "$run/checkpoints/$(printf 'step_%06d' "$steps").json" ]; then echo "$run: done already"; exit 0; fi
if compgen -G "$run/checkpoints/step_*.json" > /dev/null; then exec "$TRAINER" train --resume "$run" --quiet; fi
exec "$TRAINER" train "${args[@]}" --out "$run" --quiet

#!/usr/bin/env bash
# Alternated old/new trainer runs: training-step throughput and metrics.jsonl identity.
set -u
cd /work/main
mkdir -p /tmp/bench
for round in 4 5 6; do
  for bin in old new; do
    for cfg in ntp bst next-lat; do
      extra=()
      [ "$cfg" != ntp ] && extra=(--set schedule.steps=300 --set schedule.eval_every=0)
      out=/tmp/bench/$bin-$cfg-$round
      line=$(/tmp/trainer-$bin train --config configs/path-star/$cfg.toml "${extra[@]}" --out $out --quiet 2>&1 | grep "training steps alone")
      sps=$(echo "$line" | sed -n 's/.*the training steps alone \([0-9]*\) sequences\/s.*/\1/p')
      echo "$round $bin $cfg $sps"
    done
  done
done
